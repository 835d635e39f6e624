import HTTPCore
import SessionCore

/// One HTTP/1.1 connection's state machine: bytes in, responses out, over a caller-supplied clock.
///
/// Requests are answered in the order they arrive, so pipelining (RFC 9112 section 9.3.2) needs
/// nothing more than handling every request the parser completes before returning. Every refusal
/// is the handler's `refusal` response with `Connection: close`, written here in one place; there
/// is never a response in flight when one is written, since the handler is synchronous.
///
/// Timeouts follow the parser's phase: the header timeout runs from the first byte of a request
/// (so a client trickling header bytes is still cut off), the body timeout from the latest body
/// bytes, and the idle timeout from the end of the previous response.
public final class HTTP1ServerSession: ConnectionSession {
    private let handler: any HTTPHandler
    // `@exclusivity(unchecked)` on the per-request state below: the session is confined to its
    // connection's event-loop thread (checked in debug builds, `assertConfined`) and never hands
    // these out, so the runtime's dynamic access checks (a `swift_beginAccess` call per touch on
    // the request path) guard nothing the compiler's static checks do not already cover.
    @exclusivity(unchecked) private var parser: HTTP1Parser
    private let dates: HTTPDateCache
    @exclusivity(unchecked) private var phase: HTTP1Parser.Phase = .idle
    /// When the current phase's timer started (monotonic nanoseconds).
    @exclusivity(unchecked) private var anchor: UInt64
    /// When the current request's body began (the end of its header section).
    @exclusivity(unchecked) private var bodyStart: UInt64 = 0
    @exclusivity(unchecked) private var shuttingDown = false
    @exclusivity(unchecked) private var finished = false
    /// The response whose body is being streamed (see `HTTPBodySource`), if any: it is written
    /// a piece at a time while the output is below its high-water mark, and the next pipelined
    /// request waits until it is done.
    private var streaming: Streaming?

    private struct Streaming {
        let source: any HTTPBodySource
        /// HTTP/1.1 chunks; a 1.0 client gets the bare bytes, then the connection closes.
        let chunked: Bool
        let keepAlive: Bool
        /// When the response started: the start of its total deadline.
        let since: UInt64
    }
    /// A response another thread completes, and how to send it; later requests wait behind it,
    /// since HTTP/1.1 answers in order (RFC 9112 section 9.3.2).
    private var waiting: (response: DeferredResponse, version: HTTPVersion, headOnly: Bool, keepAlive: Bool)?
    /// When to look for the waiting response next.
    private var pollAt: UInt64 = 0
    #if DEBUG
    /// The thread of the first call; every later call must come from it.
    private var owner = ThreadOwner()
    #endif

    /// The server's budget for bytes held by all connections (`HTTPLimits.maxBufferedBytes`),
    /// which a partly received body takes from as it arrives; nil for none.
    private let budget: BufferBudget?
    /// Bytes of the current body taken from `budget`.
    @exclusivity(unchecked) private var reserved = 0

    public init(
        handler: any HTTPHandler, limits: HTTPLimits, now: UInt64, dateCache: HTTPDateCache = HTTPDateCache(),
        budget: BufferBudget? = nil
    ) {
        self.handler = handler
        self.parser = HTTP1Parser(limits: limits)
        self.dates = dateCache
        self.anchor = now
        self.budget = budget
    }

    deinit {
        if reserved > 0 { budget?.release(reserved) }
    }

    /// Traps in debug builds unless called on the thread of the session's first call; compiles to
    /// nothing in release builds.
    @inline(__always) private func assertConfined(_ what: StaticString = #function) {
        #if DEBUG
        owner.check(what)
        #endif
    }

    public func receive(_ bytes: UnsafeRawBufferPointer, now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        if finished { return .closeAfterWrite }
        parser.append(bytes)
        return process(now: now, output: &output)
    }

    public func peerClosed(now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        // Every complete request was answered as it arrived; a partial one cannot be finished.
        finished = true
        return .closeAfterWrite
    }

    public var deadline: UInt64? {
        assertConfined()
        if finished { return nil }
        if waiting != nil { return pollAt }
        let limits = parser.limits
        if let streaming { return monotonicDeadline(after: limits.responseTimeoutSeconds, from: streaming.since) }
        switch phase {
        case .idle: return monotonicDeadline(after: limits.idleTimeoutSeconds, from: anchor)
        case .head: return monotonicDeadline(after: limits.headerTimeoutSeconds, from: anchor)
        case .body:
            // The pause between body bytes, and the body as a whole: each read moves the first.
            return min(
                monotonicDeadline(after: limits.bodyTimeoutSeconds, from: anchor),
                monotonicDeadline(after: limits.bodyDeadlineSeconds, from: bodyStart))
        case .failed: return nil
        }
    }

    public func deadlineExpired(now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        if finished { return .closeAfterWrite }
        if let w = waiting {
            guard let response = w.response.result else {
                pollAt = now &+ DeferredResponse.pollNanoseconds
                return .keepOpen
            }
            waiting = nil
            let keep = w.keepAlive && !shuttingDown
            HTTP1ResponseEncoder.encode(
                response, requestVersion: w.version, headOnly: w.headOnly, keepAlive: keep, date: dates.current,
                into: &output)
            if !keep {
                finished = true
                return .closeAfterWrite
            }
            // The idle timer starts at the end of this response; pipelined requests go on.
            anchor = now
            return process(now: now, output: &output)
        }
        finished = true
        if streaming != nil {
            // The body has started: no status can replace it, so the connection is cut and the
            // client sees a body without its last chunk.
            streaming = nil
            return .closeAfterWrite
        }
        switch phase {
        case .idle, .failed:
            // An idle keep-alive connection is closed without a word (RFC 9112 section 9.5).
            break
        case .head, .body:
            writeError(
                HTTP1ParseError(status: 408, "request not completed in time"), version: .http1_1, output: &output)
        }
        return .closeAfterWrite
    }

    public func beginShutdown(now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        shuttingDown = true
        if finished || (waiting == nil && parser.phase == .idle && streaming == nil) {
            finished = true
            return .closeAfterWrite
        }
        // A partly received request is finished and answered with `Connection: close`.
        return .keepOpen
    }

    public var isIdle: Bool {
        assertConfined()
        return finished || (waiting == nil && parser.phase == .idle && streaming == nil)
    }

    /// Limits for the requests that follow (configuration reload).
    public func update(limits: HTTPLimits) {
        assertConfined()
        parser.limits = limits
    }

    /// Output size past which pipelined requests wait in the parser's buffer until the transport
    /// has drained the output (then it calls `receive` with no bytes). Without it, one 64 KB read
    /// of tiny pipelined requests could demand thousands of large responses at once.
    public static let outputHighWaterBytes = 1 << 20

    /// A connection's turn: after this many requests answered in one call, the rest wait in the
    /// parser's buffer for the transport's next pass over its connections, so one client
    /// pipelining requests cannot keep its event loop (and every other connection on it) busy.
    public static let requestsPerTurn = 16

    /// Also the end of a turn: this many bytes of response bodies rendered in one call, HEAD
    /// bodies included though they are not sent (RFC 9110 section 9.3.2), since rendering them
    /// costs as much as for GET.
    public static let renderedBytesPerTurn = 256 * 1024

    /// Also the end of a turn: 1 ms of answering pipelined requests after the first (timed on
    /// the real clock, whatever clock the caller passes).
    public static let turnNanoseconds: UInt64 = 1_000_000

    @exclusivity(unchecked) public private(set) var hasBufferedInput = false

    private func process(now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        var completed = false
        hasBufferedInput = false
        var answered = 0
        var rendered = 0
        var turnOver = false
        var turnStart: UInt64? = nil
        while waiting == nil {
            if let current = streaming {
                guard pump(current, output: &output) else {
                    // More once the output has drained: the transport calls back then.
                    hasBufferedInput = true
                    return .keepOpen
                }
                streaming = nil
                completed = true
                if !current.keepAlive {
                    finished = true
                    return .closeAfterWrite
                }
            }
            if output.count >= Self.outputHighWaterBytes || answered >= Self.requestsPerTurn
                || rendered >= Self.renderedBytesPerTurn || turnOver
            {
                hasBufferedInput = parser.bufferedByteCount > 0
                break
            }
            guard let event = parser.next() else { break }
            switch event {
            case .continueExpected(let head):
                // A request refused whatever its body (no valid token) is refused now, before
                // the client sends the body (RFC 9110 section 10.1.1); the unsent body would
                // misframe the connection, so it closes.
                if let refusal = handler.precheck(head) {
                    HTTP1ResponseEncoder.encode(
                        refusal, requestVersion: head.version, keepAlive: false, date: dates.current, into: &output)
                    finished = true
                    return .closeAfterWrite
                }
                output.append(contentsOf: HTTP1ResponseEncoder.continueResponse)
            case .request(let request, let keepAlive):
                completed = true
                let response = handler.handle(request)
                if let deferred = response.deferred {
                    waiting = (deferred, request.version, request.method == "HEAD", keepAlive)
                    pollAt = now &+ DeferredResponse.pollNanoseconds
                    continue
                }
                answered += 1
                rendered += response.body.count
                // The clock is read only when pipelined input waits: not for the usual lone request.
                if parser.bufferedByteCount > 0 {
                    let t = monotonicNanoseconds()
                    if let turnStart { turnOver = t &- turnStart >= Self.turnNanoseconds } else { turnStart = t }
                }
                let headOnly = request.method == "HEAD"
                let status = response.status
                let streamed =
                    response.source != nil && !headOnly && status >= 200 && status != 204 && status != 304
                let keep = keepAlive && !shuttingDown && !(streamed && request.version == .http1_0)
                HTTP1ResponseEncoder.encode(
                    response, requestVersion: request.version, headOnly: headOnly,
                    keepAlive: keep, date: dates.current, into: &output)
                if streamed, let source = response.source {
                    streaming = Streaming(
                        source: source, chunked: request.version != .http1_0, keepAlive: keep, since: now)
                    continue
                }
                if !keep {
                    finished = true
                    return .closeAfterWrite
                }
            case .failure(let error):
                writeError(error, version: .http1_1, output: &output)
                finished = true
                return .closeAfterWrite
            }
        }
        if !holdBody() {
            // Past the server's budget: the body cannot be read, so the connection closes
            // (RFC 9110 section 15.6.4: 503 with Retry-After for a temporary condition).
            let response = handler.refusal(
                status: 503, message: "server holds more than \(budget?.limit ?? 0) bytes of request bodies",
                headers: ["retry-after": "1"])
            HTTP1ResponseEncoder.encode(
                response, requestVersion: .http1_1, keepAlive: false, date: dates.current, into: &output)
            finished = true
            // The body is dropped now, not when the closing connection goes (it may linger).
            parser = HTTP1Parser(limits: parser.limits)
            budget?.release(reserved)
            reserved = 0
            return .closeAfterWrite
        }
        // Input piling up behind a deferred answer is held like pipelined input behind a backed-up
        // output: the transport stops reading (and offers a turn each pass, which returns at once)
        // until the answer is sent, so a client cannot grow the buffer while a plan runs.
        if waiting != nil && parser.bufferedByteCount >= Self.outputHighWaterBytes { hasBufferedInput = true }
        let newPhase = parser.phase
        if newPhase == .body && (phase != .body || completed) { bodyStart = now }
        if completed || newPhase != phase || newPhase == .body { anchor = now }
        phase = newPhase
        return .keepOpen
    }

    /// Brings the bytes taken from the budget to the body held now (a request answered gives
    /// its body back); false when the budget cannot cover it.
    private func holdBody() -> Bool {
        guard let budget else { return true }
        let held = parser.bodyByteCount
        if held < reserved {
            budget.release(reserved - held)
        } else if held > reserved {
            guard budget.reserve(held - reserved) else { return false }
        }
        reserved = held
        return true
    }

    /// Writes pieces of the streamed body until the output reaches its high-water mark; true
    /// once the body is complete.
    private func pump(_ current: Streaming, output: inout [UInt8]) -> Bool {
        let piece = parser.limits.responseChunkBytes
        // Room for a whole fill at once: growing by doubling would copy the bytes again and
        // again (the transport releases a large buffer once it is sent).
        let fill = Self.outputHighWaterBytes + 2 * piece
        if output.capacity < fill { output.reserveCapacity(fill) }
        while output.count < Self.outputHighWaterBytes {
            let more =
                current.chunked
                ? HTTP1ResponseEncoder.appendChunk(from: current.source, atMost: piece, into: &output)
                : current.source.next(into: &output, atMost: piece)
            if !more { return true }
        }
        return false
    }

    private func writeError(_ error: HTTP1ParseError, version: HTTPVersion, output: inout [UInt8]) {
        let response = handler.refusal(status: error.status, message: error.message, headers: HTTPHeaders())
        HTTP1ResponseEncoder.encode(
            response, requestVersion: version, keepAlive: false, date: dates.current, into: &output)
    }
}
