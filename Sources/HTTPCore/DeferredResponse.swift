import Synchronization

/// A response that another thread completes: the answer to a request whose work is too long for
/// an event loop (every other connection of the loop would wait for it).
///
/// The handler starts the work elsewhere and returns `HTTPResponse.deferred(d)`; the work calls
/// `complete` once, from any thread. The protocol session keeps the request in flight and looks
/// for the result on its deadline, every `pollNanoseconds`, so the transport needs no wake-up
/// path of its own: a deferred answer costs one timer per millisecond on its loop while it runs.
public final class DeferredResponse: Sendable {
    /// The answer's parts: a response crosses threads here, and only one whose body is bytes
    /// (a streamed body belongs to its connection's thread).
    private let slot = Mutex<(status: Int, headers: HTTPHeaders, body: [UInt8])?>(nil)

    /// How often a session looks for the result: the most a deferred answer waits once complete.
    public static let pollNanoseconds: UInt64 = 1_000_000

    public init() {}

    /// Sets the response, whose body must be bytes (not a source); a second call is ignored.
    public func complete(_ response: HTTPResponse) {
        precondition(response.source == nil, "a deferred response carries its body as bytes")
        let parts = (status: response.status, headers: response.headers, body: response.body)
        slot.withLock { if $0 == nil { $0 = parts } }
    }

    /// The response, once complete.
    public var result: HTTPResponse? {
        slot.withLock { $0 }.map { HTTPResponse(status: $0.status, headers: $0.headers, body: $0.body) }
    }
}

extension HTTPResponse {
    /// A placeholder for a response `deferred` completes later; never sent as such.
    public static func deferred(_ deferred: DeferredResponse) -> HTTPResponse {
        var r = HTTPResponse(status: 0)
        r.deferred = deferred
        return r
    }
}
