#if canImport(Glibc)
import Glibc
#endif

/// Monotonic nanoseconds (`CLOCK_MONOTONIC`), the clock every session deadline is expressed in.
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Longest timeout or deadline the transport and the HTTP sessions honour: about 31.7 years,
/// which is "never" for a server, while 1e18 nanoseconds still fits in a `UInt64` deadline and in
/// the `Int64` of a Dispatch time.
public let maxTimeoutSeconds: Double = 1e9

/// Seconds as nanoseconds for a timeout, defined for every `Double`: NaN, 0 and negative values
/// are 0 (the timeout expires at once, a safe failure rather than "no timeout") and values above
/// `maxTimeoutSeconds`, infinity included, are that maximum. `UInt64(seconds * 1e9)` alone traps
/// for 1e300, infinity or NaN.
public func timeoutNanoseconds(_ seconds: Double) -> UInt64 {
    guard seconds > 0 else { return 0 }  // false for NaN as well
    return UInt64(min(seconds, maxTimeoutSeconds) * 1e9)
}

/// The monotonic time `seconds` after `now` (see `timeoutNanoseconds`), saturating at
/// `UInt64.max` rather than wrapping into the past.
public func monotonicDeadline(after seconds: Double, from now: UInt64) -> UInt64 {
    let (sum, overflow) = now.addingReportingOverflow(timeoutNanoseconds(seconds))
    return overflow ? .max : sum
}
