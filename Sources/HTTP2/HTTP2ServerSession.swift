import CNGHTTP2
import HTTPCore
import SessionCore

/// One HTTP/2 cleartext (h2c, prior knowledge) connection, bridged to libnghttp2 over bytes.
///
/// The transport detects the client preface (RFC 9113 section 3.4) and hands this session every
/// byte from the first one; nghttp2 checks the preface itself. The session never touches a socket:
/// `receive` feeds `nghttp2_session_mem_recv`, then every completed stream is answered by the
/// handler, then `nghttp2_session_mem_send` is drained into `output`. Following nghttp2's own
/// examples, `mem_recv`/`mem_send` are never called from inside a callback, and `mem_send` is
/// always drained after receiving or submitting so nothing is left queued.
///
/// Limits, in HTTP/2 terms:
/// - `maxConcurrentStreams` is advertised as SETTINGS_MAX_CONCURRENT_STREAMS; nghttp2 refuses
///   streams beyond it with RST_STREAM(REFUSED_STREAM) (RFC 9113 section 5.1.2).
/// - `maxHeaderBytes` is advertised as SETTINGS_MAX_HEADER_LIST_SIZE and enforced here (nghttp2
///   does not enforce its own advertised value); over it, or over `maxHeaderCount`, the stream
///   gets a 431 response.
/// - A body over `maxBodyBytes` (declared by content-length or counted as DATA arrives) gets a
///   413 response at once, followed by RST_STREAM(NO_ERROR) so the client stops sending.
/// - Each stream has its own timer (see `HTTP2Stream.Phase`): a header block not complete within
///   `headerTimeoutSeconds`, or a body with no DATA for `bodyTimeoutSeconds`, gets the handler's
///   408 refusal on that stream alone, then RST_STREAM(NO_ERROR) if the client is still sending (RFC 9113
///   section 8.1); a response that cannot progress for `bodyTimeoutSeconds` (the client keeps its
///   flow-control window shut) is cut with RST_STREAM(CANCEL). Other streams carry on: a stream
///   error concerns one stream (RFC 9113 section 5.4.2).
/// - A connection with no open stream is closed after `idleTimeoutSeconds` with GOAWAY(NO_ERROR).
/// - Flow control: 1 MiB stream windows and a 16 MiB connection window, so a large POST is
///   not throttled to the 64 KiB default (RFC 9113 section 6.9.2) round trip by round trip.
///
/// nghttp2 sessions are not thread-safe and this one takes no lock: every call comes from the
/// connection's event-loop thread, which debug builds check (`assertConfined`).
public final class HTTP2ServerSession: ConnectionSession {
    /// SETTINGS_INITIAL_WINDOW_SIZE we advertise for every stream.
    public static let streamWindowBytes: Int32 = 1 << 20
    /// The connection-level receive window, raised by WINDOW_UPDATE right after SETTINGS.
    public static let connectionWindowBytes: Int32 = 16 << 20

    private let handler: any HTTPHandler
    let limits: HTTPLimits
    /// What every connection of the server may hold together; `heldBytes` is this one's share.
    let budget: BufferBudget
    /// Bytes this connection's streams hold (request bodies, pending responses), at most
    /// `limits.maxConnectionBufferBytes`.
    var heldBytes = 0
    private var session: OpaquePointer?
    var streams: [Int32: HTTP2Stream] = [:]
    /// The stream the latest lookup found (see `stream(_:)`); never a closed one.
    var lastStream: HTTP2Stream?
    /// Streams whose request is complete (or rejected), in arrival order, answered after mem_recv.
    var ready: [Int32] = []
    /// Streams whose response another thread completes (see `DeferredResponse`), looked for on
    /// the session's deadline every `DeferredResponse.pollNanoseconds`, from `pollAt`.
    private var waiting: [(stream: HTTP2Stream, response: DeferredResponse, isHead: Bool)] = []
    private var pollAt: UInt64 = 0
    /// Response header buffers reused by every `submit` (see there).
    private var nvBytes: [UInt8] = []
    private var nvSpans: [NameValueSpan] = []
    private var nvList: [nghttp2_nv] = []
    /// The clock of the call in progress, for callbacks (which nghttp2 calls without one).
    var now: UInt64
    /// When the connection started or lost its last stream: the idle timer's start. Frames that
    /// open no stream (PING, SETTINGS, WINDOW_UPDATE) do not move it, so a client that only
    /// pings is still closed after the idle timeout.
    var idleSince: UInt64
    private var shuttingDown = false
    /// Set when nghttp2 reported a fatal error: the connection is done whatever it wants.
    private var failed = false

    /// The `date` field of every response (RFC 9110 section 6.6.1: an origin server with a clock
    /// sends it); shared with the HTTP/1.1 sessions of the same event loop.
    private let dates: HTTPDateCache

    #if DEBUG
    /// The thread of the first call; every later call must come from it.
    private var owner = ThreadOwner()
    #endif

    /// Traps in debug builds unless called on the thread of the session's first call; compiles to
    /// nothing in release builds.
    @inline(__always) private func assertConfined(_ what: StaticString = #function) {
        #if DEBUG
        owner.check(what)
        #endif
    }

    /// `budget` is shared by every connection of a server; without one, the session has its own
    /// of `limits.maxBufferedBytes`.
    public init(
        handler: any HTTPHandler, limits: HTTPLimits, now: UInt64, dateCache: HTTPDateCache = HTTPDateCache(),
        budget: BufferBudget? = nil
    ) {
        self.handler = handler
        self.budget = budget ?? BufferBudget(limit: limits.maxBufferedBytes)
        self.dates = dateCache
        self.limits = limits
        self.now = now
        self.idleSince = now

        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        HTTP2ServerSession.installCallbacks(callbacks)
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        var s: OpaquePointer?
        let rv = nghttp2_session_server_new2(&s, callbacks, Unmanaged.passUnretained(self).toOpaque(), option)
        nghttp2_option_del(option)
        nghttp2_session_callbacks_del(callbacks)
        guard rv == 0, let s else {
            failed = true
            return
        }
        session = s

        // The server connection preface is a SETTINGS frame (RFC 9113 section 3.4); it is queued
        // now and leaves with the first drain.
        var settings = [
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                value: UInt32(clamping: max(1, limits.maxConcurrentStreams))),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                value: UInt32(HTTP2ServerSession.streamWindowBytes)),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                value: UInt32(clamping: max(0, limits.maxHeaderBytes))),
            // No SETTINGS_NO_RFC7540_PRIORITIES (RFC 9218 section 2.1), although we ignore
            // priorities: announcing it makes nghttp2 forget a closed stream at once (even with its
            // server fallback), so frames on closed streams would go unanswered instead of being
            // the STREAM_CLOSED errors RFC 9113 section 5.1 requires. nghttp2 keeps at most
            // SETTINGS_MAX_CONCURRENT_STREAMS closed streams for that.
        ]
        if nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count) != 0 {
            failed = true
        }
        if nghttp2_session_set_local_window_size(
            s, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0,
            HTTP2ServerSession.connectionWindowBytes) != 0
        {
            failed = true
        }
    }

    deinit {
        if let session { nghttp2_session_del(session) }
    }

    // MARK: ConnectionSession

    public func receive(_ bytes: UnsafeRawBufferPointer, now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        self.now = now
        guard let session, !failed else { return .closeAfterWrite }
        var remaining = bytes
        while !remaining.isEmpty {
            let base = remaining.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let n = nghttp2_session_mem_recv(session, base, remaining.count)
            if n < 0 {
                // Fatal for the connection (bad client magic, flooding, out of memory). nghttp2
                // has queued a GOAWAY where one is due; flush it, then close.
                failed = true
                break
            }
            if n == 0 { break }
            remaining = UnsafeRawBufferPointer(rebasing: remaining[n...])
            answerReadyStreams(session)
        }
        answerReadyStreams(session)
        submitCompleted(session)
        drain(session, into: &output)
        return disposition(session)
    }

    public func peerClosed(now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        // Every complete request has already been answered synchronously; nothing more can
        // arrive, so flush what is queued and close.
        self.now = now
        if let session { drain(session, into: &output) }
        return .closeAfterWrite
    }

    public var deadline: UInt64? {
        assertConfined()
        if failed { return nil }
        if streams.isEmpty { return monotonicDeadline(after: limits.idleTimeoutSeconds, from: idleSince) }
        var earliest = waiting.isEmpty ? UInt64.max : pollAt
        for stream in streams.values { earliest = min(earliest, stream.deadline(limits)) }
        return earliest
    }

    public func deadlineExpired(now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        self.now = now
        guard let session, !failed else { return .closeAfterWrite }
        submitCompleted(session)
        if streams.isEmpty {
            if now < monotonicDeadline(after: limits.idleTimeoutSeconds, from: idleSince) {
                return disposition(session)
            }
            // GOAWAY(NO_ERROR) with the last stream we processed, then close (RFC 9113 section 6.8).
            nghttp2_session_terminate_session(session, NGHTTP2_NO_ERROR.rawValue)
            drain(session, into: &output)
            return .closeAfterWrite
        }
        // Only the late streams are answered; in id order, so the output is deterministic.
        let late = streams.values.filter { now >= $0.deadline(limits) }.sorted { $0.id < $1.id }
        for stream in late {
            if !stream.responded {
                // No response yet: a 408 like HTTP/1.1's, then RST_STREAM(NO_ERROR) once it is
                // sent if the client has not finished its request (RFC 9113 section 8.1).
                stream.reject(408, "request not completed in time")
                stream.resetAfterResponse = true
                enqueue(stream)
            } else if !stream.cancelled {
                // The response has started (its HEADERS are gone), so no status can replace it.
                stream.cancelled = true
                stream.anchor = now
                nghttp2_submit_rst_stream(
                    session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id,
                    NGHTTP2_CANCEL.rawValue)
            } else {
                stream.anchor = now
            }
        }
        answerReadyStreams(session)
        drain(session, into: &output)
        return disposition(session)
    }

    public func beginShutdown(now: UInt64, output: inout [UInt8]) -> SessionDisposition {
        assertConfined()
        self.now = now
        guard let session, !failed else { return .closeAfterWrite }
        if !shuttingDown {
            shuttingDown = true
            // GOAWAY names the last stream we will process; streams up to it are finished, later
            // ones are refused by nghttp2 (RFC 9113 section 6.8).
            let last = nghttp2_session_get_last_proc_stream_id(session)
            nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, NGHTTP2_NO_ERROR.rawValue, nil, 0)
        }
        drain(session, into: &output)
        return disposition(session)
    }

    public var isIdle: Bool {
        assertConfined()
        return streams.isEmpty
    }

    /// Output size past which a drain stops until the transport has sent what it holds.
    public static let outputHighWaterBytes = 1 << 20

    /// The last drain stopped at `outputHighWaterBytes` with frames still to send.
    private var drainCapped = false

    public var hasBufferedInput: Bool { drainCapped }

    // MARK: Driving nghttp2

    /// Copies every frame nghttp2 has queued into `output`.
    private func drain(_ session: OpaquePointer, into output: inout [UInt8]) {
        drainCapped = false
        while true {
            if output.count >= Self.outputHighWaterBytes {
                // The rest waits until the transport has sent this (`hasBufferedInput`): a client
                // with a large window cannot make one drain copy a whole large body.
                drainCapped = true
                return
            }
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n < 0 {
                failed = true
                return
            }
            guard n > 0, let data else { return }
            output.append(contentsOf: UnsafeBufferPointer(start: data, count: n))
        }
    }

    /// Close only when nghttp2 wants neither to read nor to write (nghttp2 API guide); the
    /// transport writes `output` before closing, so a final GOAWAY is never lost.
    private func disposition(_ session: OpaquePointer) -> SessionDisposition {
        if failed { return .closeAfterWrite }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            return .closeAfterWrite
        }
        return .keepOpen
    }

    /// Runs the handler for each complete stream and submits its response.
    private func answerReadyStreams(_ session: OpaquePointer) {
        guard !ready.isEmpty else { return }
        // Indexing, not a copy of the list: submitting calls no callback, so nothing is added
        // to `ready` while it is walked.
        var i = 0
        while i < ready.count {
            let id = ready[i]
            i += 1
            guard let stream = self.stream(id), !stream.responded else { continue }
            stream.responded = true
            let isHead = stream.method == "HEAD"
            var response: HTTPResponse
            if let refusal = stream.precheckRefusal {
                response = refusal
            } else if let status = stream.rejection {
                let headers: HTTPHeaders = status == 503 ? ["retry-after": "1"] : HTTPHeaders()
                response = handler.refusal(status: status, message: stream.rejectionMessage, headers: headers)
            } else if let request = makeRequest(stream) {
                response = handler.handle(request)
                if let deferred = response.deferred {
                    // The request body is gone; the answer comes later (`submitCompleted`).
                    release(stream)
                    if waiting.isEmpty { pollAt = now &+ DeferredResponse.pollNanoseconds }
                    waiting.append((stream, deferred, isHead))
                    continue
                }
            } else {
                response = handler.refusal(
                    status: 400, message: "request without :method or :path", headers: HTTPHeaders())
            }
            // The request body is gone; the response takes its place until it has left.
            release(stream)
            // A streamed body holds at most one piece at a time.
            let pending = response.source != nil ? limits.responseChunkBytes : response.body.count
            if !isHead && pending > 0, let refusal = hold(pending, for: stream) {
                response = handler.refusal(status: 503, message: refusal, headers: ["retry-after": "1"])
            }
            submit(response, on: stream, isHead: isHead, session: session)
        }
        ready.removeAll(keepingCapacity: true)
    }

    /// The handler's verdict on a header section whose client waits for 100 (Continue); the
    /// fields stay with the stream for the request that may follow.
    func precheck(_ stream: HTTP2Stream) -> HTTPResponse? {
        guard let method = stream.method, let path = stream.path else { return nil }
        return handler.precheck(
            HTTPRequest(
                method: method, path: path, query: stream.query, version: .http2, headers: Self.headers(of: stream),
                body: []))
    }

    /// The request's fields. nghttp2 refuses upper-case field names (RFC 9113 section 8.2.1):
    /// nothing to fold. Routes that read Host see the same value over both protocols (RFC 9113
    /// section 8.3.1: :authority replaces Host).
    private static func headers(of stream: HTTP2Stream) -> HTTPHeaders {
        var headers = HTTPHeaders(lowercasedFields: stream.headers)
        if let authority = stream.authority, !stream.hasHost { headers.add("host", authority) }
        return headers
    }

    /// Submits the deferred responses that are complete, on streams the client has not closed;
    /// looks again in `DeferredResponse.pollNanoseconds` for the others.
    private func submitCompleted(_ session: OpaquePointer) {
        guard !waiting.isEmpty else { return }
        waiting.removeAll { w in
            guard self.stream(w.stream.id) === w.stream else { return true }
            guard let response = w.response.result else { return false }
            w.stream.anchor = now
            submit(response, on: w.stream, isHead: w.isHead, session: session)
            return true
        }
        pollAt = now &+ DeferredResponse.pollNanoseconds
    }

    private func makeRequest(_ stream: HTTP2Stream) -> HTTPRequest? {
        guard let method = stream.method, let path = stream.path else { return nil }
        let headers = Self.headers(of: stream)
        stream.headers = []
        let body = stream.body
        stream.body = []
        return HTTPRequest(
            method: method, path: path, query: stream.query, version: .http2, headers: headers, body: body)
    }

    private func submit(_ response: HTTPResponse, on stream: HTTP2Stream, isHead: Bool, session: OpaquePointer) {
        let status = response.status
        let bodyAllowed = !isHead && status != 204 && status != 304 && status >= 200
        // One contiguous buffer holds every name and value; nghttp2 copies the list inside
        // nghttp2_submit_response, so the buffers only have to outlive the call. The session
        // keeps them (emptied) for the next response instead of allocating them per stream; they
        // are moved into locals while in use, which spares an exclusivity check per append.
        var bytes: [UInt8] = []
        var spans: [NameValueSpan] = []
        var list: [nghttp2_nv] = []
        swap(&bytes, &nvBytes)
        swap(&spans, &nvSpans)
        swap(&list, &nvList)
        bytes.removeAll(keepingCapacity: true)
        spans.removeAll(keepingCapacity: true)
        list.removeAll(keepingCapacity: true)
        Self.appendField(":status", decimal: status, to: &bytes, &spans)
        // `date` is ours too, as over HTTP/1.1: one per response, from the shared cache.
        for f in response.headers where !HTTP2ServerSession.isConnectionSpecific(f.name) && f.name != "date" {
            let n = bytes.count
            bytes.append(contentsOf: f.name.utf8)
            let v = bytes.count
            bytes.append(contentsOf: f.value.utf8)
            spans.append(NameValueSpan(name: n, nameCount: v - n, value: v, valueCount: bytes.count - v))
        }
        if status != 204 && status != 304 && response.source == nil {
            Self.appendField("content-length", decimal: response.body.count, to: &bytes, &spans)
        }
        let dateName = bytes.count
        bytes.append(contentsOf: "date".utf8)
        let dateValue = bytes.count
        bytes.append(contentsOf: dates.current)
        spans.append(NameValueSpan(name: dateName, nameCount: 4, value: dateValue, valueCount: bytes.count - dateValue))
        stream.phase = .responding
        stream.anchor = now
        stream.respondingSince = now
        let withBody = bodyAllowed && (!response.body.isEmpty || response.source != nil)
        if withBody {
            stream.responseBody = response.body
            stream.responseOffset = 0
            stream.source = response.source
        }
        let rv: Int32 = bytes.withUnsafeMutableBufferPointer { buf in
            let base = buf.baseAddress!
            for s in spans {
                list.append(
                    nghttp2_nv(
                        name: base + s.name, value: base + s.value, namelen: s.nameCount,
                        valuelen: s.valueCount, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
            }
            return list.withUnsafeMutableBufferPointer { nva in
                if withBody {
                    var provider = nghttp2_data_provider(
                        source: nghttp2_data_source(ptr: nil),
                        read_callback: HTTP2ServerSession.readResponseBody)
                    return nghttp2_submit_response(session, stream.id, nva.baseAddress, nva.count, &provider)
                }
                return nghttp2_submit_response(session, stream.id, nva.baseAddress, nva.count, nil)
            }
        }
        swap(&bytes, &nvBytes)
        swap(&spans, &nvSpans)
        swap(&list, &nvList)
        if rv != 0 {
            nghttp2_submit_rst_stream(
                session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id,
                NGHTTP2_INTERNAL_ERROR.rawValue)
        }
    }

    /// Where one field's name and value sit in the response header buffer.
    struct NameValueSpan {
        var name: Int
        var nameCount: Int
        var value: Int
        var valueCount: Int
    }

    /// Appends a field whose value is a decimal, written as digits without an intermediate String.
    static func appendField(
        _ name: StaticString, decimal value: Int, to bytes: inout [UInt8],
        _ spans: inout [NameValueSpan]
    ) {
        let n = bytes.count
        bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        let v = bytes.count
        if value < 0 {
            bytes.append(contentsOf: String(value).utf8)
        } else {
            var divisor = 1
            while divisor <= value / 10 { divisor *= 10 }
            repeat {
                bytes.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                divisor /= 10
            } while divisor > 0
        }
        spans.append(NameValueSpan(name: n, nameCount: v - n, value: v, valueCount: bytes.count - v))
    }

    /// Sends an interim 100 (Continue) response; called from a callback, which may submit.
    func submitContinue(_ streamID: Int32) {
        guard let session else { return }
        var name = Array(":status".utf8)
        var value = Array("100".utf8)
        name.withUnsafeMutableBufferPointer { n in
            value.withUnsafeMutableBufferPointer { v in
                var nv = nghttp2_nv(
                    name: n.baseAddress, value: v.baseAddress, namelen: n.count, valuelen: v.count,
                    flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                _ = nghttp2_submit_headers(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, nil, &nv, 1, nil)
            }
        }
    }

    /// Connection-specific fields are malformed in HTTP/2 (RFC 9113 section 8.2.2); framing is ours.
    static func isConnectionSpecific(_ name: String) -> Bool {
        switch name {
        case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "content-length":
            true
        default:
            false
        }
    }
}
