import Synchronization

/// A response that another thread completes: the answer to a request whose work is too long for
/// an event loop (every other connection of the loop would wait for it).
///
/// The handler starts the work elsewhere and returns `HTTPResponse.deferred(d)`; the work calls
/// `complete` once, from any thread. The protocol session keeps the request in flight and looks
/// for the result on its deadline, every `pollNanoseconds`, so the transport needs no wake-up
/// path of its own: a deferred answer costs one timer per millisecond on its loop while it runs.
public final class DeferredResponse: Sendable {
    private let slot = Mutex<HTTPResponse?>(nil)

    /// How often a session looks for the result: the most a deferred answer waits once complete.
    public static let pollNanoseconds: UInt64 = 1_000_000

    public init() {}

    /// Sets the response; a second call is ignored.
    public func complete(_ response: HTTPResponse) {
        slot.withLock { if $0 == nil { $0 = response } }
    }

    /// The response, once complete.
    public var result: HTTPResponse? { slot.withLock { $0 } }
}

extension HTTPResponse {
    /// A placeholder for a response `deferred` completes later; never sent as such.
    public static func deferred(_ deferred: DeferredResponse) -> HTTPResponse {
        var r = HTTPResponse(status: 0)
        r.deferred = deferred
        return r
    }
}
