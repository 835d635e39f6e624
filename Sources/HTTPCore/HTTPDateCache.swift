#if canImport(Glibc)
import Glibc
#endif

/// The `Date` header value, formatted at most once per second (RFC 9110 section 6.6.1 asks for
/// the time the response was generated; one-second resolution is what IMF-fixdate has anyway).
///
/// Not thread-safe by design: each event-loop thread owns one, so no lock sits on the hot path.
public final class HTTPDateCache {
    private let wallClock: () -> Int
    private var second = Int.min
    private var formatted: [UInt8] = []

    /// - Parameter wallClock: seconds since the Unix epoch; tests pass a fixed clock.
    public init(wallClock: @escaping () -> Int = { Int(time(nil)) }) {
        self.wallClock = wallClock
    }

    /// The current IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    public var current: [UInt8] {
        let now = wallClock()
        if now != second {
            second = now
            formatted = Array(Self.imfFixdate(now).utf8)
        }
        return formatted
    }

    /// Formats seconds since the epoch as IMF-fixdate, independent of locale and time zone.
    public static func imfFixdate(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return
            "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
