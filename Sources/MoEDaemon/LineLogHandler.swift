import Foundation
import Logging
import Synchronization

/// A swift-log handler writing one plain line per event to stderr.
///
/// Under systemd (`JOURNAL_STREAM` set, see systemd.exec(5)) each line starts with the
/// `<N>` syslog priority prefix, which journald turns into the entry's priority
/// (`SyslogLevelPrefix=`, on by default), and carries no timestamp, since journald adds its own.
/// Elsewhere a line starts with an RFC 3339 UTC timestamp. Never any ANSI colour.
public struct LineLogHandler: LogHandler {
    /// The level every handler made with this control obeys; a reload changes it for all at once.
    public final class LevelControl: Sendable {
        private let level: Mutex<Logger.Level>
        public init(_ level: Logger.Level) { self.level = Mutex(level) }
        public var current: Logger.Level {
            get { level.withLock { $0 } }
            set { level.withLock { $0 = newValue } }
        }
    }

    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let journal: Bool
    private let control: LevelControl

    public init(
        label: String, level: LevelControl,
        journal: Bool = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
    ) {
        self.label = label
        self.control = level
        self.journal = journal
    }

    public var logLevel: Logger.Level {
        get { control.current }
        set { control.current = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        Self.write(
            Self.format(
                level: event.level, message: "\(event.message)",
                metadata: metadata.merging(event.metadata ?? [:]) { $1 },
                journal: journal, now: Date()))
    }

    /// Writes one line at `level` whatever the configured level, for the few lines a user must
    /// always see (the bound addresses: with port 0 they are the only way to learn the port).
    public static func emit(
        _ level: Logger.Level, _ message: String,
        journal: Bool = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
    ) {
        write(format(level: level, message: message, metadata: [:], journal: journal, now: Date()))
    }

    private static func write(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Foundation.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if n <= 0 { if n < 0 && errno == EINTR { continue }; return }
                offset += n
            }
        }
    }

    /// One line: `<N>level message key=value` for journald, `TIMESTAMP level message key=value` otherwise.
    /// Newlines inside the message are escaped so that one event stays one journal entry.
    static func format(level: Logger.Level, message: String, metadata: Logger.Metadata, journal: Bool, now: Date)
        -> String
    {
        var line = journal ? "<\(syslogPriority(level))>" : now.formatted(.iso8601) + " "
        line += level.rawValue
        line += " "
        line += message.replacingOccurrences(of: "\n", with: "\\n")
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) {
            line += " \(k)=\("\(v)".replacingOccurrences(of: "\n", with: "\\n"))"
        }
        return line
    }

    /// syslog(3) priorities for swift-log levels (journald maps them to its own).
    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }
}
