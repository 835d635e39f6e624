/// Limits shared by both protocols. Each is a documented daemon setting with a safe default.
///
/// Timeouts are seconds: 0 or less (or NaN) means the timeout expires at once (a safe failure,
/// never "no timeout"), and values above 1e9 s (about 31.7 years, infinity included) count as
/// 1e9 s, so no value can overflow a nanosecond deadline (SessionCore's `monotonicDeadline`).
public struct HTTPLimits: Sendable, Equatable {
    /// Longest request line (method, target, version) in bytes; past it, 414.
    public var maxRequestLineBytes: Int = 8 * 1024
    /// Total bytes of the header section (HTTP/2: the header list size); past it, 431.
    public var maxHeaderBytes: Int = 16 * 1024
    /// Most header fields in one request; past it, 431.
    public var maxHeaderCount: Int = 100
    /// Largest request body in bytes; past it, 413.
    public var maxBodyBytes: Int = 16 * 1024 * 1024
    /// Time allowed to receive a request's header section once it has started; past it, 408.
    public var headerTimeoutSeconds: Double = 10
    /// Time allowed between body bytes of a request (each read resets it); past it, 408.
    public var bodyTimeoutSeconds: Double = 30
    /// Time allowed to receive a whole request body, however steadily it trickles in (a byte
    /// per `bodyTimeoutSeconds` would otherwise hold the connection forever); past it, 408.
    public var bodyDeadlineSeconds: Double = 300
    /// Time an idle keep-alive connection is kept before it is closed.
    public var idleTimeoutSeconds: Double = 60
    /// Most concurrent connections; past it, new ones get 503 with Retry-After and are closed.
    public var maxConnections: Int = 1024
    /// Most concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    public var maxConcurrentStreams: Int = 128
    /// Bytes one HTTP/2 connection may hold across its streams: request bodies as they arrive and
    /// responses waiting for the client's flow-control window. A stream that would pass it gets
    /// 503, so streams cannot multiply the per-request bounds.
    public var maxConnectionBufferBytes: Int = 32 * 1024 * 1024
    /// Bytes every connection together may hold (`BufferBudget`): HTTP/2 as above, HTTP/1.1 the
    /// body it is receiving; past it, 503.
    public var maxBufferedBytes: Int = 256 * 1024 * 1024
    /// Longest time a response may take to leave once it has started, however the client paces
    /// its reads or its flow-control window; past it, the response is cut.
    public var responseTimeoutSeconds: Double = 300
    /// Bytes a streamed response body is generated in at a time (`HTTPBodySource`): with the
    /// output high-water mark, what serving one response holds, whatever the size of the state.
    public var responseChunkBytes: Int = 64 * 1024

    public init() {}
}
