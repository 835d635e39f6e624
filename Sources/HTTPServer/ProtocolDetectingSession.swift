import HTTP1
import HTTP2
import HTTPCore
import SessionCore

/// The session a new connection starts with: it looks at the first bytes and becomes HTTP/2 or
/// HTTP/1.1.
///
/// A client speaking h2c with prior knowledge opens with the 24-byte preface
/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 section 3.4), which no HTTP/1.1 request line can
/// start with; while the bytes so far are a prefix of it we wait, then hand every byte received,
/// the preface included, to the chosen session.
final class ProtocolDetectingSession: ConnectionSession {
    static let http2Preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private let handler: any HTTPHandler
    private let limits: HTTPLimits
    private let dates: HTTPDateCache
    private let budget: BufferBudget
    private var inner: (any ConnectionSession)?
    /// Bytes that are so far a strict prefix of the preface.
    private var pending: [UInt8] = []
    private var anchor: UInt64
    #if DEBUG
    /// The thread of the first call; every later call must come from it.
    private var owner = ThreadOwner()
    #endif

    init(handler: any HTTPHandler, limits: HTTPLimits, now: UInt64, dates: HTTPDateCache, budget: BufferBudget) {
        self.handler = handler
        self.limits = limits
        self.dates = dates
        self.budget = budget
        self.anchor = now
    }

    /// Traps in debug builds unless called on the thread of the session's first call; compiles to
    /// nothing in release builds.
    @inline(__always) private func assertConfined(_ what: StaticString = #function) {
        #if DEBUG
        owner.check(what)
        #endif
    }

    func receive(_ bytes: UnsafeRawBufferPointer, now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        if let inner { return inner.receive(bytes, now: now, output: &output) }
        if pending.isEmpty {
            if bytes.isEmpty { return .keepOpen }
            anchor = now
            let session = choose(bytes)
            if let session {
                inner = session
                return session.receive(bytes, now: now, output: &output)
            }
            pending.append(contentsOf: bytes)
            return .keepOpen
        }
        pending.append(contentsOf: bytes)
        guard let session = choose(UnsafeRawBufferPointer(start: nil, count: 0), all: pending) else { return .keepOpen }
        inner = session
        let buffered = pending
        pending = []
        return buffered.withUnsafeBytes { session.receive($0, now: now, output: &output) }
    }

    /// The session the bytes call for, or nil while they are still a strict prefix of the preface.
    private func choose(_ bytes: UnsafeRawBufferPointer, all: [UInt8]? = nil) -> (any ConnectionSession)? {
        let isPrefix: Bool
        let count: Int
        if let all {
            count = all.count
            isPrefix = zip(all, Self.http2Preface).allSatisfy { $0 == $1 }
        } else {
            count = bytes.count
            isPrefix = zip(bytes, Self.http2Preface).allSatisfy { $0 == $1 }
        }
        if !isPrefix {
            return HTTP1ServerSession(handler: handler, limits: limits, now: anchor, dateCache: dates, budget: budget)
        }
        if count < Self.http2Preface.count { return nil }
        return HTTP2ServerSession(handler: handler, limits: limits, now: anchor, dateCache: dates, budget: budget)
    }

    func peerClosed(now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        if let inner { return inner.peerClosed(now: now, output: &output) }
        return .closeAfterWrite
    }

    var deadline: UInt64? {
        assertConfined()
        if let inner { return inner.deadline }
        let seconds = pending.isEmpty ? limits.idleTimeoutSeconds : limits.headerTimeoutSeconds
        return monotonicDeadline(after: seconds, from: anchor)
    }

    func deadlineExpired(now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        if let inner { return inner.deadlineExpired(now: now, output: &output) }
        return .closeAfterWrite
    }

    func beginShutdown(now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        if let inner { return inner.beginShutdown(now: now, output: &output) }
        return .closeAfterWrite
    }

    var isIdle: Bool {
        assertConfined()
        return inner?.isIdle ?? pending.isEmpty
    }

    var hasBufferedInput: Bool { inner?.hasBufferedInput ?? false }
}
