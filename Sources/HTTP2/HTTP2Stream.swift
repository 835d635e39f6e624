import HTTPCore
import SessionCore

/// What we know about one request stream while its frames arrive and its response leaves.
///
/// Header and body bytes are copied in here inside nghttp2's callbacks: the pointers nghttp2
/// passes are valid only for the duration of the callback (nghttp2 API guide, "Remarks").
///
/// Each stream carries its own deadline, so one late stream is answered alone (408, or
/// RST_STREAM once a response has started) while the others on the connection carry on; RFC 9113
/// section 5.4.2 makes a stream error affect that stream only.
final class HTTP2Stream {
    /// Where the stream is; each phase has its own timer (`HTTPLimits`).
    enum Phase {
        /// HEADERS seen, header block not complete: `headerTimeoutSeconds` from the first frame.
        case headers
        /// Header block complete, END_STREAM not yet seen: `bodyTimeoutSeconds` from the latest
        /// DATA (each chunk restarts it, as each read does over HTTP/1.1).
        case body
        /// Response submitted: `bodyTimeoutSeconds` from the latest frame sent on the stream, so a
        /// client that never opens its flow-control window cannot hold the stream for ever, and
        /// `responseTimeoutSeconds` from the submission, so one that opens it a byte at a time
        /// cannot either.
        case responding
    }

    let id: Int32
    var phase = Phase.headers
    /// When the current phase's timer started (monotonic nanoseconds).
    var anchor: UInt64
    var method: String?
    /// The `:path` pseudo-header split into path and query (see `setTarget`).
    var path: String?
    var query: String?
    var authority: String?
    /// A `host` field was sent beside `:authority`.
    var hasHost = false
    var headers: [HTTPHeaders.Field] = []
    /// Header list size as SETTINGS_MAX_HEADER_LIST_SIZE counts it: name + value + 32 per field
    /// (RFC 9113 section 6.5.2).
    var headerListSize = 0
    var body: [UInt8] = []
    /// The request carried `expect: 100-continue` (RFC 9110 section 10.1.1).
    var expectsContinue = false
    /// The handler's answer to the header section alone, for a client waiting for 100 (Continue):
    /// given instead of asking for the body (see `HTTPHandler.precheck`).
    var precheckRefusal: HTTPResponse?
    /// The status we answer instead of calling the handler (408, 413, 431, 400), once decided.
    var rejection: Int?
    var rejectionMessage = ""
    /// True once the request is complete (END_STREAM seen) or answered early.
    var queued = false
    var responded = false
    /// RST_STREAM was submitted because the response could not be finished in time.
    var cancelled = false
    /// Set when we answer before the request ended: after the response's END_STREAM we ask the
    /// client to stop sending with RST_STREAM(NO_ERROR) (RFC 9113 section 8.1).
    var resetAfterResponse = false
    /// The response body, read by the data provider from `responseOffset`; for a streamed body,
    /// the current piece.
    var responseBody: [UInt8] = []
    var responseOffset = 0
    /// The rest of a streamed body, asked for a piece when the current one has left.
    var source: (any HTTPBodySource)?
    /// When the response was submitted: the start of its total deadline.
    var respondingSince: UInt64 = 0
    /// Bytes this stream holds against the connection's and the server's budgets (its request
    /// body as it arrives, then its pending response).
    var heldBytes = 0

    init(id: Int32, now: UInt64) {
        self.id = id
        self.anchor = now
    }

    /// The instant this stream must have made progress by (see `Phase`).
    func deadline(_ limits: HTTPLimits) -> UInt64 {
        switch phase {
        case .headers: monotonicDeadline(after: limits.headerTimeoutSeconds, from: anchor)
        case .body: monotonicDeadline(after: limits.bodyTimeoutSeconds, from: anchor)
        case .responding:
            min(
                monotonicDeadline(after: limits.bodyTimeoutSeconds, from: anchor),
                monotonicDeadline(after: limits.responseTimeoutSeconds, from: respondingSince))
        }
    }

    /// Splits `:path` at its first `?`. An ASCII target is split on the bytes, so only the two
    /// Strings kept are built; any other goes through `HTTPRequest(target:)`, which splits on
    /// characters, so both give the request value they always gave.
    func setTarget(_ value: UnsafeBufferPointer<UInt8>) {
        var ascii = true
        var question: Int?
        for i in value.indices {
            let b = value[i]
            if b >= 0x80 {
                ascii = false
                break
            }
            if b == UInt8(ascii: "?") && question == nil { question = i }
        }
        guard ascii else {
            let split = HTTPRequest(method: "", target: String(decoding: value, as: UTF8.self))
            path = split.path
            query = split.query
            return
        }
        if let q = question {
            path = String(decoding: UnsafeBufferPointer(rebasing: value[..<q]), as: UTF8.self)
            query = String(decoding: UnsafeBufferPointer(rebasing: value[(q + 1)...]), as: UTF8.self)
        } else {
            path = String(decoding: value, as: UTF8.self)
            query = nil
        }
    }

    func reject(_ status: Int, _ message: String) {
        guard rejection == nil else { return }
        rejection = status
        rejectionMessage = message
        headers = []
        body = []
    }
}
