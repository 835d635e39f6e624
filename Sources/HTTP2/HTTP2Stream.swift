import HTTPCore

/// What we know about one request stream while its frames arrive and its response leaves.
///
/// Header and body bytes are copied in here inside nghttp2's callbacks: the pointers nghttp2
/// passes are valid only for the duration of the callback (nghttp2 API guide, "Remarks").
final class HTTP2Stream {
    let id: Int32
    var method: String?
    var path: String?
    var authority: String?
    var headers: [HTTPHeaders.Field] = []
    /// Header list size as SETTINGS_MAX_HEADER_LIST_SIZE counts it: name + value + 32 per field
    /// (RFC 9113 section 6.5.2).
    var headerListSize = 0
    var body: [UInt8] = []
    /// The request carried `expect: 100-continue` (RFC 9110 section 10.1.1).
    var expectsContinue = false
    /// The status we answer instead of calling the handler (413, 431, 400), once decided.
    var rejection: Int?
    var rejectionMessage = ""
    /// True once the request is complete (END_STREAM seen) or answered early.
    var queued = false
    var responded = false
    /// Set when we answer before the request ended: after the response's END_STREAM we ask the
    /// client to stop sending with RST_STREAM(NO_ERROR) (RFC 9113 section 8.1).
    var resetAfterResponse = false
    /// The response body, read by the data provider from `responseOffset`.
    var responseBody: [UInt8] = []
    var responseOffset = 0

    init(id: Int32) { self.id = id }

    func reject(_ status: Int, _ message: String) {
        guard rejection == nil else { return }
        rejection = status
        rejectionMessage = message
        headers = []
        body = []
    }
}
