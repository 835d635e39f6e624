import Foundation
import SessionCore
import Synchronization
import TestTools
import Testing

@testable import Transport

#if canImport(Glibc)
import Glibc
#endif

/// A session that echoes nothing and is always idle, so shutdown closes it at once.
final class IdleSession: ConnectionSession {
    func receive(_ bytes: UnsafeRawBufferPointer, now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        .keepOpen
    }
    func peerClosed(now: UInt64, output: inout [UInt8]) -> SessionDisposition { .closeAfterWrite }
    var deadline: UInt64? { nil }
    func deadlineExpired(now: UInt64, output: inout [UInt8]) -> SessionDisposition { .closeAfterWrite }
    func beginShutdown(now: UInt64, output: inout [UInt8]) -> SessionDisposition { .closeAfterWrite }
    var isIdle: Bool { true }
    var hasBufferedInput: Bool { false }
}

/// Collects the transport's log lines.
final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

@Suite(.serialized, .timeLimit(.minutes(1))) struct TransportShutdownTests {
    /// Starts a TCPServer of `loops` loops with idle sessions on an OS-chosen loopback port.
    static func start(loops: Int, log: LogLines) throws -> (TCPServer, String) {
        var configuration = TransportConfiguration()
        configuration.listen = ["127.0.0.1:0", "[::1]:0"]
        configuration.eventLoops = loops
        configuration.lingerSeconds = 0.05  // the client never closes; do not wait long for it
        configuration.log = { log.append($0) }
        let server = TCPServer(configuration: configuration, rejection: []) { _ in { _ in IdleSession() } }
        let addresses = try server.start()
        return (server, try #require(addresses.first))
    }

    /// Shutting down must stop accepting without accept(2) failing on a listener that is being
    /// shut down or closed: every such failure used to be logged and paused on, many times over.
    @Test(arguments: [1, 2])
    func shutdownStopsAcceptingSilently(loops: Int) throws {
        let log = LogLines()
        for _ in 0..<50 {
            let (server, address) = try Self.start(loops: loops, log: log)
            let client = try RawClient(address)
            try client.send("x")
            server.shutdown(deadlineSeconds: 2)
            _ = client
        }
        let acceptLines = log.all.filter { $0.contains("accept") }
        #expect(acceptLines.count == 0, "first: \(acceptLines.first ?? "")")
    }

    /// Seconds to nanoseconds is defined for every Double, at the boundary and beyond it.
    @Test func timeoutConversionIsClampedAtTheMaximum() {
        #expect(maxTimeoutSeconds == 1e9)
        #expect(timeoutNanoseconds(1.5) == 1_500_000_000)
        #expect(timeoutNanoseconds(maxTimeoutSeconds) == 1_000_000_000_000_000_000)
        #expect(timeoutNanoseconds(maxTimeoutSeconds.nextDown) < 1_000_000_000_000_000_000)
        for big in [maxTimeoutSeconds.nextUp, 1e300, Double.greatestFiniteMagnitude, Double.infinity] {
            #expect(timeoutNanoseconds(big) == 1_000_000_000_000_000_000, "\(big)")
        }
        for none in [0, -0.0, -1, -Double.infinity, Double.nan, Double.leastNonzeroMagnitude] {
            #expect(timeoutNanoseconds(none) == 0, "\(none)")
        }
        #expect(monotonicDeadline(after: 2, from: 5) == 2_000_000_005)
        #expect(monotonicDeadline(after: 1e300, from: .max - 10) == .max)
        #expect(monotonicDeadline(after: .nan, from: 42) == 42)
    }

    /// A shutdown deadline of 1e300 s used to trap (Double to UInt64 overflow); now it is
    /// clamped, and shutdown still returns as soon as the loops are done.
    @Test(arguments: [1e300, Double.infinity, Double.nan, -5, 0])
    func shutdownAcceptsAnyDeadline(seconds: Double) throws {
        var configuration = TransportConfiguration()
        configuration.listen = ["127.0.0.1:0"]
        configuration.eventLoops = 2
        configuration.lingerSeconds = seconds
        let server = TCPServer(configuration: configuration, rejection: []) { _ in { _ in IdleSession() } }
        let address = try #require(try server.start().first)
        do {
            let client = try RawClient(address)
            try client.send("x")
        }
        // The client has closed: the server's linger (as long as `seconds`) ends at its EOF. A
        // client kept open would hold a shutdown with a deadline of ~31 years for that long.
        server.shutdown(deadlineSeconds: seconds)
        #expect(server.openConnections == 0)
    }

    /// After shutdown the ports refuse connections: the listeners are closed, not just ignored.
    @Test func listenersAreClosedAfterShutdown() throws {
        let log = LogLines()
        let (server, address) = try Self.start(loops: 2, log: log)
        server.shutdown(deadlineSeconds: 1)
        #expect(throws: (any Error).self) { _ = try RawClient(address) }
    }
}
