import Foundation

/// The standard `process_*` metrics, read from `/proc/self` at scrape time, as Prometheus'
/// client libraries define them (resident memory, CPU seconds, open and maximum file
/// descriptors, start time in seconds since the epoch).
public struct ProcessMetrics: Sendable, Equatable {
    public var residentMemoryBytes: Double?
    public var cpuSeconds: Double?
    public var openFDs: Double?
    public var maxFDs: Double?
    public var startTimeSeconds: Double?

    /// Reads the current values; a value that cannot be read is nil and is left out of /metrics.
    public static func read() -> ProcessMetrics {
        var m = ProcessMetrics()
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        {
            // Fields after the command name, which may itself contain spaces and parentheses
            // (proc(5)): field 3 (state) is index 0 here.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 21 {
                if let utime = Double(fields[11]), let stime = Double(fields[12]), ticks > 0 {
                    m.cpuSeconds = (utime + stime) / ticks
                }
                if let rss = Double(fields[21]) { m.residentMemoryBytes = rss * pageSize }
                if let startTicks = Double(fields[19]), ticks > 0, let boot = bootTime() {
                    m.startTimeSeconds = boot + startTicks / ticks
                }
            }
        }
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            m.openFDs = Double(entries.count)
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            m.maxFDs = limit.rlim_cur == rlim_t.max ? nil : Double(limit.rlim_cur)
        }
        return m
    }

    private static func bootTime() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}
