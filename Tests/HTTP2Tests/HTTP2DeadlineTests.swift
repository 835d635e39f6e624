import Dispatch
import HTTP2
import HTTPCore
import SessionCore
import Testing

/// The idle deadline is defined for every configured timeout: a huge or infinite one is clamped
/// to `maxTimeoutSeconds` instead of trapping in the Double-to-UInt64 conversion.
@Test(arguments: [1e300, Double.infinity, 2e10])
func hugeIdleTimeoutIsClamped(seconds: Double) {
    var limits = HTTPLimits()
    limits.idleTimeoutSeconds = seconds
    let session = HTTP2ServerSession(handler: ClosureHandler { _ in HTTPResponse(status: 204) }, limits: limits, now: 5)
    #expect(session.deadline == 5 + UInt64(maxTimeoutSeconds * 1e9))
}

@Test func zeroIdleTimeoutExpiresAtOnce() {
    var limits = HTTPLimits()
    limits.idleTimeoutSeconds = 0
    let session = HTTP2ServerSession(handler: ClosureHandler { _ in HTTPResponse(status: 204) }, limits: limits, now: 5)
    #expect(session.deadline == 5)
}

#if DEBUG
/// The session (and the nghttp2 session inside it, which is not thread-safe) is confined to the
/// thread of its first call; debug builds trap on a call from any other.
@Test func anHTTP2SessionCalledFromAnotherThreadTraps() async {
    await #expect(processExitsWith: .failure) {
        let session = HTTP2ServerSession(
            handler: ClosureHandler { _ in HTTPResponse(status: 204) },
            limits: HTTPLimits(), now: 5)
        _ = session.deadline
        nonisolated(unsafe) let shared = session
        let done = DispatchSemaphore(value: 0)
        DispatchQueue(label: "another thread").async {
            var output: [UInt8] = []
            _ = shared.beginShutdown(now: 6, output: &output)
            done.signal()
        }
        done.wait()
    }
}
#endif
