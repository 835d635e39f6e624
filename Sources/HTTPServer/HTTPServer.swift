import HTTP1
import HTTPCore
import Synchronization
import Transport

/// What the daemon configures about its HTTP server.
public struct HTTPServerConfiguration: Sendable {
    /// "HOST:PORT" or "[IPV6]:PORT"; port 0 lets the OS pick. Loopback by default: exposing the
    /// daemon beyond the host is a decision, not an accident.
    public var listen: [String] = ["127.0.0.1:9477"]
    public var limits = HTTPLimits()
    /// Event-loop threads; one per core by default.
    public var eventLoops: Int = TransportConfiguration.availableCores
    /// How long `shutdown()` waits for requests in flight before closing what is left.
    public var shutdownDeadlineSeconds: Double = 10
    /// Receives one line per server event (listening, shutting down); nil logs nothing.
    public var log: (@Sendable (String) -> Void)?

    public init() {}
}

/// The daemon's HTTP server: HTTP/1.1 and h2c on POSIX sockets and epoll event loops.
///
/// Glue only: the transport owns sockets and threads, the protocol sessions own HTTP; this type
/// picks the protocol per connection (see `ProtocolDetectingSession`) and turns a connection
/// past the cap into a 503 with `Retry-After` (RFC 9110 section 15.6.4), whose body is the
/// handler's `connectionRefusal`.
public final class HTTPServer: Sendable {
    private let configuration: HTTPServerConfiguration
    private let limits: LimitsBox
    /// What all connections may hold together (`HTTPLimits.maxBufferedBytes`).
    private let budget: BufferBudget
    private let transport: TCPServer

    public init(configuration: HTTPServerConfiguration, handler: any HTTPHandler) {
        self.configuration = configuration
        let limits = LimitsBox(configuration.limits)
        self.limits = limits
        let budget = BufferBudget(limit: configuration.limits.maxBufferedBytes)
        self.budget = budget
        var transportConfiguration = TransportConfiguration()
        transportConfiguration.listen = configuration.listen
        transportConfiguration.eventLoops = max(1, configuration.eventLoops)
        transportConfiguration.maxConnections = configuration.limits.maxConnections
        transportConfiguration.log = configuration.log
        transport = TCPServer(configuration: transportConfiguration, rejection: Self.rejection(handler)) { _ in
            // One Date cache per loop thread: confined, so no lock on the response path.
            let dates = HTTPDateCache()
            return { now in
                ProtocolDetectingSession(
                    handler: handler, limits: limits.current, now: now, dates: dates, budget: budget)
            }
        }
    }

    /// Binds and starts serving; returns the bound addresses ("127.0.0.1:41234", "[::1]:41235").
    /// Throws a `SocketError` that names the address and the reason (address in use, bad address).
    public func start() throws -> [String] {
        let addresses = try transport.start()
        configuration.log?("listening on \(addresses.joined(separator: ", "))")
        return addresses
    }

    /// Graceful: stop accepting, finish requests in flight, close idle connections; returns within
    /// `shutdownDeadlineSeconds`.
    public func shutdown() {
        configuration.log?("shutting down (deadline \(configuration.shutdownDeadlineSeconds) s)")
        transport.shutdown(deadlineSeconds: configuration.shutdownDeadlineSeconds)
    }

    /// Connections currently open.
    public var openConnections: Int { transport.openConnections }
    /// Bytes held against `HTTPLimits.maxBufferedBytes` by every connection now.
    public var bufferedBytes: Int { budget.heldBytes }

    /// New limits for connections accepted from now on (configuration reload).
    public func update(limits newLimits: HTTPLimits) {
        limits.current = newLimits
        budget.limit = newLimits.maxBufferedBytes
        transport.setMaxConnections(newLimits.maxConnections)
    }

    /// The answer past the connection cap, written before any request is read, so it carries
    /// only what needs no request: HTTP/1.1 status line, Retry-After, the handler's body.
    static func rejection(_ handler: any HTTPHandler) -> [UInt8] {
        let response = handler.connectionRefusal(
            status: 503, message: "too many connections",
            headers: ["retry-after": "1"])
        var bytes: [UInt8] = []
        HTTP1ResponseEncoder.encode(response, keepAlive: false, date: [], into: &bytes)
        return bytes
    }
}

/// The limits new connections start with; changed by `update(limits:)` from any thread.
final class LimitsBox: Sendable {
    private let value: Mutex<HTTPLimits>
    init(_ limits: HTTPLimits) { value = Mutex(limits) }
    var current: HTTPLimits {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}
