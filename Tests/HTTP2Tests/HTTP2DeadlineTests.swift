import HTTP2
import HTTPCore
import Testing

/// The idle deadline is defined for every configured timeout: a huge or infinite one is clamped
/// to `HTTPLimits.maxTimeoutSeconds` instead of trapping in the Double-to-UInt64 conversion.
@Test(arguments: [1e300, Double.infinity, 2e10])
func hugeIdleTimeoutIsClamped(seconds: Double) {
    var limits = HTTPLimits()
    limits.idleTimeoutSeconds = seconds
    let session = HTTP2ServerSession(handler: ClosureHandler { _ in HTTPResponse(status: 204) }, limits: limits, now: 5)
    #expect(session.deadline == 5 + UInt64(HTTPLimits.maxTimeoutSeconds * 1e9))
}

@Test func zeroIdleTimeoutExpiresAtOnce() {
    var limits = HTTPLimits()
    limits.idleTimeoutSeconds = 0
    let session = HTTP2ServerSession(handler: ClosureHandler { _ in HTTPResponse(status: 204) }, limits: limits, now: 5)
    #expect(session.deadline == 5)
}
