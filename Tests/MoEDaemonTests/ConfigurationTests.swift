import Configuration
import Foundation
import Logging
import Testing

@testable import MoEDaemon

@Suite struct ConfigurationTests {
    /// Writes `json` to a fresh temporary file and returns its path; the caller removes it.
    func tempFile(_ json: String) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("moe-metricsd-config-\(UUID().uuidString).json").path
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func defaultsWithoutSources() throws {
        let c = try DaemonConfiguration.load(ConfigurationSources())
        #expect(c == DaemonConfiguration())
        #expect(c.listen == ["127.0.0.1:9477"])
    }

    @Test func flagBeatsEnvironmentBeatsFileBeatsDefault() throws {
        let path = try tempFile(
            """
            {"http": {"max_body_bytes": 1000, "max_header_count": 11, "max_connections": 12},
             "stats": {"max_layers": 7}, "log_level": "debug"}
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let c = try DaemonConfiguration.load(
            ConfigurationSources(
                filePath: path,
                environment: [
                    "MOE_METRICSD_HTTP_MAX_HEADER_COUNT": "21", "MOE_METRICSD_HTTP_MAX_CONNECTIONS": "22",
                    "UNRELATED_HTTP_MAX_CONNECTIONS": "99",
                ],
                flags: ["http.max_connections": .int(33)]))
        #expect(c.http.maxBodyBytes == 1000)  // file only
        #expect(c.http.maxHeaderCount == 21)  // env over file
        #expect(c.http.maxConnections == 33)  // flag over env and file
        #expect(c.maxLayers == 7)
        #expect(c.logLevel == .debug)
        #expect(c.maxExperts == DaemonConfiguration().maxExperts)  // default
    }

    @Test func listsFromEachSource() throws {
        let path = try tempFile(
            #"{"listen": ["127.0.0.1:1", "[::1]:2"], "stats": {"latency_buckets_seconds": [1, 2.5]}}"#)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fromFile = try DaemonConfiguration.load(ConfigurationSources(filePath: path))
        #expect(fromFile.listen == ["127.0.0.1:1", "[::1]:2"])
        #expect(fromFile.latencyBucketsSeconds == [1, 2.5])
        let fromEnv = try DaemonConfiguration.load(
            ConfigurationSources(
                filePath: path,
                environment: [
                    "MOE_METRICSD_LISTEN": "127.0.0.1:3, 127.0.0.1:4",
                    "MOE_METRICSD_STATS_LATENCY_BUCKETS_SECONDS": "0.1,0.2",
                ]))
        #expect(fromEnv.listen == ["127.0.0.1:3", "127.0.0.1:4"])
        #expect(fromEnv.latencyBucketsSeconds == [0.1, 0.2])
        let single = try tempFile(#"{"listen": "127.0.0.1:5"}"#)
        defer { try? FileManager.default.removeItem(atPath: single) }
        #expect(try DaemonConfiguration.load(ConfigurationSources(filePath: single)).listen == ["127.0.0.1:5"])
    }

    @Test func boolsAndDoubles() throws {
        let c = try DaemonConfiguration.load(
            ConfigurationSources(
                environment: [
                    "MOE_METRICSD_AUTH_READS": "TRUE",
                    "MOE_METRICSD_HTTP_IDLE_TIMEOUT_SECONDS": "2.5",
                ]))
        #expect(c.authReads == true)
        #expect(c.http.idleTimeoutSeconds == 2.5)
    }

    func expectError(_ sources: ConfigurationSources, mentioning parts: [String]) {
        do {
            _ = try DaemonConfiguration.load(sources)
            Issue.record("expected a configuration error mentioning \(parts)")
        } catch {
            for p in parts { #expect(error.message.contains(p), "\(error.message) should mention \(p)") }
        }
    }

    @Test func wrongTypeNamesTheSource() throws {
        expectError(
            ConfigurationSources(environment: ["MOE_METRICSD_HTTP_MAX_BODY_BYTES": "lots"]),
            mentioning: ["http.max_body_bytes", "MOE_METRICSD_HTTP_MAX_BODY_BYTES", "integer"])
        let path = try tempFile(#"{"stats": {"max_layers": "many"}}"#)
        defer { try? FileManager.default.removeItem(atPath: path) }
        expectError(ConfigurationSources(filePath: path), mentioning: ["stats.max_layers", path])
    }

    /// Every cap has a maximum, documented beside it in docs/configuration.md: one past it is
    /// refused, the maximum itself is taken.
    @Test(arguments: [
        ("http.max_request_line_bytes", 1 << 20), ("http.max_header_bytes", 1 << 20),
        ("http.max_header_count", 10_000), ("http.max_body_bytes", 1 << 30), ("http.max_connections", 1 << 20),
        ("http.max_concurrent_streams", 10_000), ("http.max_connection_buffer_bytes", 1 << 32),
        ("http.max_buffered_bytes", 1 << 36), ("http.response_chunk_bytes", 16 << 20), ("stats.max_layers", 65_536),
        ("stats.max_experts", 65_536), ("stats.default_window", 1_000_000), ("stats.max_workers_per_layer", 1_000_000),
        ("decoder.max_decisions", 1_000_000), ("decoder.max_assignments", 100_000_000), ("decoder.max_depth", 1_000),
    ])
    func capsHaveADocumentedMaximum(key: String, maximum: Int) throws {
        expectError(ConfigurationSources(flags: [key: .int(maximum + 1)]), mentioning: [key, String(maximum)])
        _ = try DaemonConfiguration.load(ConfigurationSources(flags: [key: .int(maximum)]))
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let doc = try String(contentsOf: root.appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        let row = try #require(doc.split(separator: "\n").first { $0.hasPrefix("| `\(key)` |") })
        #expect(row.contains(" to \(maximum) |"), "\(row)")
    }

    @Test func invalidValuesNameTheSource() {
        expectError(
            ConfigurationSources(flags: ["http.max_body_bytes": .int(0)]),
            mentioning: ["http.max_body_bytes", "--http-max-body-bytes"])
        expectError(
            ConfigurationSources(environment: ["MOE_METRICSD_LISTEN": "localhost"]),
            mentioning: ["listen", "MOE_METRICSD_LISTEN"])
        expectError(ConfigurationSources(environment: ["MOE_METRICSD_LOG_LEVEL": "loud"]), mentioning: ["log_level"])
        expectError(
            ConfigurationSources(flags: ["stats.latency_buckets_seconds": .doubleArray([1, 0.5])]),
            mentioning: ["stats.latency_buckets_seconds", "increasing"])
        expectError(
            ConfigurationSources(flags: ["stats.default_capacity_factor": .double(-1)]),
            mentioning: ["stats.default_capacity_factor"])
        expectError(
            ConfigurationSources(flags: ["http.shutdown_deadline_seconds": .double(1e300)]),
            mentioning: ["http.shutdown_deadline_seconds", "at most"])
        expectError(
            ConfigurationSources(environment: ["MOE_METRICSD_HTTP_HEADER_TIMEOUT_SECONDS": "1e300"]),
            mentioning: ["http.header_timeout_seconds", "MOE_METRICSD_HTTP_HEADER_TIMEOUT_SECONDS"])
        expectError(
            ConfigurationSources(flags: ["http.idle_timeout_seconds": .double(.nan)]),
            mentioning: ["http.idle_timeout_seconds"])
        expectError(ConfigurationSources(flags: ["worker_ttl": .double(-1)]), mentioning: ["worker_ttl"])
    }

    @Test func fileProblems() throws {
        expectError(ConfigurationSources(filePath: "/nonexistent/moe-metricsd.json"), mentioning: ["cannot be read"])
        let notJSON = try tempFile("{listen: 1")
        defer { try? FileManager.default.removeItem(atPath: notJSON) }
        expectError(ConfigurationSources(filePath: notJSON), mentioning: ["invalid JSON at byte 1"])
        let array = try tempFile("[1]")
        defer { try? FileManager.default.removeItem(atPath: array) }
        expectError(ConfigurationSources(filePath: array), mentioning: ["top level"])
        let typo = try tempFile(#"{"http": {"max_body_byte": 1}}"#)
        defer { try? FileManager.default.removeItem(atPath: typo) }
        expectError(ConfigurationSources(filePath: typo), mentioning: ["unknown setting http.max_body_byte"])
    }

    /// Edits gone wrong that Foundation's parser would let through, each refused with a message
    /// that names the problem.
    @Test(arguments: [
        (#"{"http": {"max_body_bytes": 1000, "max_body_bytes": 2000}}"#, "duplicate key \"max_body_bytes\""),
        (#"{"log_level": "info", "log_level": "debug"}"#, "duplicate key \"log_level\""),
        (#"{"http": {"max_body_bytes": 1000,}}"#, "invalid JSON at byte"),
        (#"{"htp": {}}"#, "unknown setting htp"),
        (#"{"http": {"nested": {}}}"#, "unknown setting http.nested"),
        (#"{"http": 5}"#, "http is a section"),
        (#"{"log_level": null}"#, "log_level must be a string, not null"),
        (#"{"http": {"max_body_bytes": {"value": 5}}}"#, "http.max_body_bytes must be an integer, not an object"),
    ])
    func strictFile(json: String, message: String) throws {
        let path = try tempFile(json)
        defer { try? FileManager.default.removeItem(atPath: path) }
        expectError(ConfigurationSources(filePath: path), mentioning: [message])
    }

    @Test func emptyKnownSectionIsFine() throws {
        let path = try tempFile(#"{"http": {}, "stats": {"max_layers": 7}}"#)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try DaemonConfiguration.load(ConfigurationSources(filePath: path)).maxLayers == 7)
    }

    @Test func commentKeysAreIgnored() throws {
        let path = try tempFile(#"{"_comment": "hi", "http": {"_note": "x", "max_body_bytes": 5}}"#)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try DaemonConfiguration.load(ConfigurationSources(filePath: path)).http.maxBodyBytes == 5)
    }

    @Test func unknownEnvironmentVariablesAreReported() {
        let unknown = DaemonSettings.unknownEnvironmentVariables(in: [
            "MOE_METRICSD_HTTP_MAX_BODY_BYTE": "1", "MOE_METRICSD_LISTEN": "127.0.0.1:1", "HOME": "/root",
        ])
        #expect(unknown == ["MOE_METRICSD_HTTP_MAX_BODY_BYTE"])
    }

    @Test func namesDerivedFromKeys() throws {
        let s = try #require(DaemonSettings.setting("http.max_body_bytes"))
        #expect(s.environmentVariable == "MOE_METRICSD_HTTP_MAX_BODY_BYTES")
        #expect(s.flag == "--http-max-body-bytes")
        #expect(Set(DaemonSettings.all.map(\.key)).count == DaemonSettings.all.count)
    }

    /// Every setting read back from its own environment variable, so none is unreachable.
    @Test func everySettingHasAWorkingEnvironmentVariable() throws {
        for s in DaemonSettings.all {
            let value: String
            switch s.kind {
            case .int: value = "3"
            case .double: value = "3.5"
            case .bool: value = s.defaultValue == "true" ? "false" : "true"
            case .string: value = s.key == "metrics.expert_series" ? "top:3" : "warning"
            case .stringList: value = "127.0.0.1:3"
            case .doubleList: value = "0.5,3"
            }
            let c = try DaemonConfiguration.load(ConfigurationSources(environment: [s.environmentVariable: value]))
            #expect(c != DaemonConfiguration(), "\(s.environmentVariable) had no effect")
            #expect(s.describe(c) != s.defaultValue, "\(s.key)")
        }
    }

    /// The shipped config file lists every setting with its default.
    @Test func shippedConfigFileHasEveryDefault() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let path = root.appendingPathComponent("config/moe-metricsd.json").path
        let c = try DaemonConfiguration.load(ConfigurationSources(filePath: path))
        #expect(c == DaemonConfiguration())
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for s in DaemonSettings.all {
            let leaf = s.key.split(separator: ".").last.map(String.init) ?? s.key
            #expect(text.contains("\"\(leaf)\""), "config file lacks \(s.key)")
        }
    }
}

@Suite struct LogFormatTests {
    @Test func journaldLinesCarryPriorityAndNoTimestamp() {
        let line = LineLogHandler.format(
            level: .warning, message: "two\nlines", metadata: ["b": "2", "a": "1"],
            journal: true, now: Date(timeIntervalSince1970: 0))
        #expect(line == "<4>warning two\\nlines a=1 b=2")
    }

    @Test func terminalLinesStartWithATimestamp() {
        let line = LineLogHandler.format(
            level: .info, message: "listening on 127.0.0.1:1", metadata: [:],
            journal: false, now: Date(timeIntervalSince1970: 0))
        #expect(line == "1970-01-01T00:00:00Z info listening on 127.0.0.1:1")
        #expect(!line.contains("\u{1B}"))
    }
}

@Suite struct DocumentationTests {
    /// The configuration document's table names every setting with its variable, flag and default.
    @Test func configurationDocumentsEverySetting() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let doc = try String(contentsOf: root.appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        for s in DaemonSettings.all {
            let row = "| `\(s.key)` | `\(s.environmentVariable)` | `\(s.flag)` | `\(s.defaultValue)` |"
            #expect(doc.contains(row), "docs/configuration.md lacks the row \(row)")
        }
    }
}
