import CTransport
import Dispatch
import SessionCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Settings of the socket layer.
public struct TransportConfiguration: Sendable {
    /// "HOST:PORT" or "[IPV6]:PORT"; port 0 lets the OS pick.
    public var listen: [String] = ["127.0.0.1:0"]
    /// Event-loop threads; each owns its connections for their whole life.
    public var eventLoops: Int = TransportConfiguration.availableCores
    /// Most concurrent connections; past it, `rejection` is written and the connection closed.
    public var maxConnections: Int = 1024
    /// How long a closing connection keeps discarding input after our last byte (RFC 9112 section 9.6);
    /// 0 or less closes right after the last byte, and values are capped at `maxTimeoutSeconds`.
    public var lingerSeconds: Double = 2
    /// Receives transport failures worth an operator's attention (accept failing for lack of
    /// descriptors); nil drops them.
    public var log: (@Sendable (String) -> Void)?

    public init() {}

    /// The processors this process may run on.
    public static var availableCores: Int {
        let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        return n > 0 ? n : 1
    }
}

/// A TCP server: listeners plus N event-loop threads, each with its own epoll instance.
///
/// Every loop accepts on every listener (loop 0 on the listening sockets, the others on duplicate
/// descriptors; EPOLLEXCLUSIVE wakes one waiting loop per connection) and hands the sockets out
/// round-robin (through the target loop's inbox and eventfd), after which one thread owns each connection for its whole life, so
/// nothing on the read/write path takes a lock. `sessionFactory` is called once on each loop's
/// own thread and returns that loop's session maker, so per-loop state (a cached `Date` header)
/// needs no lock either.
public final class TCPServer: Sendable {
    public typealias SessionFactory = @Sendable (_ loopIndex: Int) -> (_ now: UInt64) -> any ConnectionSession

    private let configuration: TransportConfiguration
    private let factory: SessionFactory
    private let shared: TransportShared
    private let state = Mutex<State>(State())

    private struct State: ~Copyable {
        var loops: [EventLoop] = []
        /// Signalled by each loop thread as it exits (threads are detached, so that a handler
        /// stuck past the deadline cannot hold `shutdown` hostage).
        var exited: [DispatchSemaphore] = []
        var listenerFDs: [Int32] = []
        var started = false
        var stopped = false
    }

    /// - Parameter rejection: the bytes written to a connection past `maxConnections` before it is
    ///   closed (the HTTP layer supplies a 503 with `Retry-After`).
    public init(configuration: TransportConfiguration, rejection: [UInt8], sessionFactory: @escaping SessionFactory) {
        self.configuration = configuration
        self.factory = sessionFactory
        self.shared = TransportShared(
            maxConnections: configuration.maxConnections, rejection: rejection,
            lingerSeconds: configuration.lingerSeconds)
    }

    /// Connections currently open, across all loops.
    public var openConnections: Int { max(0, shared.openConnections.load(ordering: .relaxed)) }

    /// Changes the connection cap for connections accepted from now on.
    public func setMaxConnections(_ n: Int) { shared.maxConnections.store(n, ordering: .relaxed) }

    /// Binds every address, starts the loops and returns the bound addresses ("127.0.0.1:41234",
    /// "[::1]:41235"). Throws the first bind error, leaving nothing open.
    public func start() throws(SocketError) -> [String] {
        try state.withLock { (state) throws(SocketError) -> [String] in
            guard !state.started else { throw SocketError(call: "start", errno: 0, detail: "server already started") }
            var listeners: [Listener] = []
            do throws(SocketError) {
                for address in configuration.listen { listeners.append(try Listener.open(address)) }
                if listeners.isEmpty { throw SocketError(call: "start", errno: 0, detail: "no listen address") }
                var loops: [EventLoop] = []
                for i in 0..<max(1, configuration.eventLoops) { loops.append(try EventLoop(index: i, shared: shared)) }
                for loop in loops {
                    loop.peers = loops.count > 1 ? loops : []
                    loop.log = configuration.log
                }
                // Every loop accepts: loop 0 on the listening sockets themselves, each other loop
                // on descriptors of its own for them, which it closes itself at shutdown.
                loops[0].listeners = listeners.map(\.fd)
                for loop in loops.dropFirst() {
                    for l in listeners {
                        do throws(SocketError) {
                            loop.listeners.append(try Syscall.duplicate(l.fd))
                        } catch {
                            for other in loops.dropFirst() { for fd in other.listeners { Syscall.close(fd) } }
                            throw error
                        }
                    }
                }
                state.loops = loops
                state.listenerFDs = listeners.map(\.fd)
            } catch {
                for l in listeners { Syscall.close(l.fd) }
                throw error
            }
            for loop in state.loops {
                let exited = DispatchSemaphore(value: 0)
                let box = Unmanaged.passRetained(LoopStart(loop: loop, factory: factory, exited: exited))
                var thread = pthread_t()
                let rc = pthread_create(
                    &thread, nil,
                    { raw in
                        let start = Unmanaged<LoopStart>.fromOpaque(raw!).takeRetainedValue()
                        start.loop.run(sessionFactory: start.factory(start.loop.index))
                        start.exited.signal()
                        return nil
                    }, box.toOpaque())
                if rc != 0 {
                    box.release()
                    throw SocketError(call: "pthread_create", errno: rc)
                }
                pthread_detach(thread)
                state.exited.append(exited)
            }
            state.started = true
            return listeners.map(\.boundAddress)
        }
    }

    /// Graceful shutdown: stop accepting at once, let every session finish what is in flight,
    /// close idle connections, and return once all loops are done or `deadlineSeconds` passed
    /// (connections still open then are closed). `deadlineSeconds` of 0 or less (or NaN) closes
    /// what is open at once; above `maxTimeoutSeconds` it counts as that maximum.
    public func shutdown(deadlineSeconds: Double) {
        let (loops, exited, listenerFDs) = state.withLock { state -> ([EventLoop], [DispatchSemaphore], [Int32]) in
            if state.stopped || !state.started { return ([], [], []) }
            state.stopped = true
            return (state.loops, state.exited, state.listenerFDs)
        }
        guard !loops.isEmpty else { return }
        // shutdown(2) on a listening socket makes the kernel refuse new connections right away,
        // even while the loops are busy; each loop closes its own descriptors. It also makes the loops'
        // accept(2) fail with EINVAL, which `stopping` tells it to read as the end of accepting.
        shared.stopping.store(true, ordering: .releasing)
        for fd in listenerFDs { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        // Clamped (`timeoutNanoseconds`): `UInt64(seconds * 1e9)` alone traps for 1e300 s or NaN.
        let waitNanoseconds = timeoutNanoseconds(deadlineSeconds)
        let deadline = monotonicDeadline(after: deadlineSeconds, from: monotonicNanoseconds())
        for loop in loops { loop.send(.shutdown(deadline: deadline)) }
        // A loop closes whatever is left at the deadline; the extra second covers that work. Only
        // a handler blocking its loop past it makes us return with that loop still running.
        let giveUp = DispatchTime.now() + .nanoseconds(Int(waitNanoseconds) + 1_000_000_000)
        for (i, done) in exited.enumerated() where done.wait(timeout: giveUp) == .timedOut {
            configuration.log?("event loop \(i) still busy after the shutdown deadline; not waiting for it")
        }
    }
}

/// What a new loop thread needs, passed through pthread_create's argument.
private final class LoopStart {
    let loop: EventLoop
    let factory: TCPServer.SessionFactory
    let exited: DispatchSemaphore
    init(loop: EventLoop, factory: @escaping TCPServer.SessionFactory, exited: DispatchSemaphore) {
        self.loop = loop
        self.factory = factory
        self.exited = exited
    }
}
