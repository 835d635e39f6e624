import Foundation
import TestTools
import Testing

/// The built binary, started as a user starts it, driven with curl, checked with promtool and
/// scraped by a real Prometheus server. Every process a test starts is stopped in a `defer`.
@Suite struct DaemonEndToEndTests {
    static let d1 =
        #"{"layer":"l0","expert_capacities":[6,2],"total_tokens":8,"tokens_dropped":0,"load_balance_loss":0.1,"router_z_loss":0.01,"auxiliary_loss":0.2,"latency_ms":2}"#
    static let d2 =
        #"{"layer":"l0","expert_capacities":[4,4],"total_tokens":10,"tokens_dropped":2,"load_balance_loss":0.3,"router_z_loss":0.03,"auxiliary_loss":0.4,"latency_ms":4}"#
    static let d3 =
        #"{"layer":"l0","expert_capacities":[2,6],"total_tokens":8,"tokens_dropped":0,"load_balance_loss":0.2,"router_z_loss":0.02,"auxiliary_loss":0.3,"latency_ms":6}"#
    static let d4 =
        #"{"expert_capacities":[8,0],"total_tokens":8,"tokens_dropped":0,"load_balance_loss":0.2,"router_z_loss":0.02,"auxiliary_loss":0.3,"latency_ms":8}"#

    /// Posts the four decisions: one alone, one in an array, two as NDJSON (the last to the
    /// layer's own path, without a `layer` field).
    func postAll(_ daemon: RunningDaemon) throws {
        let single = try curl(
            "\(daemon.base)/v1/decisions", ["-H", "Content-Type: application/json", "--data-binary", Self.d1])
        #expect(single.status == 200)
        #expect(single.json["accepted"] as? Int == 1)
        let array = try curl(
            "\(daemon.base)/v1/decisions", ["-H", "Content-Type: application/json", "--data-binary", "[\(Self.d2)]"])
        #expect(array.json["accepted"] as? Int == 1)
        let nd1 = try curl(
            "\(daemon.base)/v1/decisions",
            ["-H", "Content-Type: application/x-ndjson", "--data-binary", Self.d3 + "\n"])
        #expect(nd1.json["accepted"] as? Int == 1)
        let nd2 = try curl(
            "\(daemon.base)/v1/layers/l0/decisions",
            ["-H", "Content-Type: application/x-ndjson", "--data-binary", Self.d4 + "\n"])
        #expect(nd2.status == 200, "\(nd2.body)")
    }

    func close(_ a: Any?, _ b: Double, _ what: String) {
        guard let v = (a as? NSNumber)?.doubleValue else {
            Issue.record("\(what) is \(String(describing: a)), expected \(b)")
            return
        }
        #expect(abs(v - b) <= 1e-9 * max(1, abs(b)), "\(what) = \(v), expected \(b)")
    }

    @Test(.needs("curl")) func postsAndSummariesValueByValue() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        try postAll(daemon)
        let r = try curl("\(daemon.base)/v1/layers/l0")
        #expect(r.status == 200)
        #expect(r.headers["content-type"] == "application/json")
        let s = r.json
        #expect(s["layer"] as? String == "l0")
        #expect(s["experts"] as? Int == 2)
        #expect(s["total_routings"] as? Int == 4)
        #expect(s["total_tokens"] as? Int == 34)
        #expect(s["tokens_dropped"] as? Int == 2)
        close(s["routing_efficiency"], 32.0 / 34.0 * 100, "routing_efficiency")
        close(s["average_load_balance_loss"], 0.2, "average_load_balance_loss")
        close(s["average_router_z_loss"], 0.02, "average_router_z_loss")
        close(s["average_auxiliary_loss"], 0.3, "average_auxiliary_loss")
        #expect(s["expert_token_counts"] as? [Int] == [20, 12])
        let utilization = s["expert_utilization"] as? [Double] ?? []
        #expect(utilization.count == 2)
        if utilization.count == 2 {
            close(utilization[0], (0.75 + 0.4 + 0.25 + 1.0) / 4, "expert_utilization[0]")
            close(utilization[1], (0.25 + 0.4 + 0.75 + 0.0) / 4, "expert_utilization[1]")
        }
        let most = s["most_utilized_expert"] as? [String: Any]
        #expect(most?["expert"] as? Int == 0)
        let least = s["least_utilized_expert"] as? [String: Any]
        #expect(least?["expert"] as? Int == 1)
        let latency = s["latency"] as? [String: Any] ?? [:]
        #expect(latency["count"] as? Int == 4)
        close(latency["average_ms"], 5, "latency.average_ms")
        close(latency["min_ms"], 2, "latency.min_ms")
        close(latency["max_ms"], 8, "latency.max_ms")
        #expect((s["nonfinite_losses"] as? Int) == 0)

        let list = try curl("\(daemon.base)/v1/layers").json["layers"] as? [[String: Any]] ?? []
        #expect(list.count == 1)
        #expect(list.first?["total_tokens"] as? Int == 34)

        let summary = try curl("\(daemon.base)/v1/summary").json
        let totals = summary["totals"] as? [String: Any] ?? [:]
        #expect(totals["layers"] as? Int == 1)
        #expect(totals["total_tokens"] as? Int == 34)
        #expect(totals["tokens_dropped"] as? Int == 2)
        #expect(totals["total_routings"] as? Int == 4)
        let spread = summary["spread"] as? [String: [String: Any]] ?? [:]
        close(spread["average_load_balance_loss"]?["mean"], 0.2, "spread.average_load_balance_loss.mean")

        // curl -I writes the header section where the body would go: no JSON may follow it.
        let head = try curl("\(daemon.base)/v1/layers/l0", ["-I"])
        #expect(head.status == 200)
        #expect(head.headers["content-type"] == "application/json")
        #expect(!head.body.contains("{"))
    }

    @Test(.needs("curl")) func everyErrorStatusLeavesStatisticsUnchanged() throws {
        let daemon = try RunningDaemon([
            "--http-max-body-bytes", "4096", "--stats-max-layers", "2", "--stats-max-experts", "16",
        ])
        defer { daemon.stop() }
        try postAll(daemon)
        let before = try curl("\(daemon.base)/v1/summary").body
        let json = ["-H", "Content-Type: application/json"]
        let big = "[" + Array(repeating: Self.d1, count: 40).joined(separator: ",") + "]"
        let cases: [(String, [String], Int)] = [
            ("malformed", json + ["--data-binary", "{\"layer\":"], 400),
            ("unknown path", [], 404),
            ("unknown layer", [], 404),
            ("method", ["-X", "PUT"], 405),
            (
                "conflict", json + ["--data-binary", #"{"layer":"l0","expert_capacities":[1,1,1],"total_tokens":3}"#],
                409
            ),
            ("too large", json + ["--data-binary", big], 413),
            ("content type", ["-H", "Content-Type: text/csv", "--data-binary", Self.d1], 415),
            (
                "invalid",
                json + [
                    "--data-binary", #"{"layer":"l0","expert_capacities":[1,1],"total_tokens":2,"tokens_dropped":3}"#,
                ], 422
            ),
            (
                "too many layers",
                json + [
                    "--data-binary",
                    #"[{"layer":"n1","expert_capacities":[1],"total_tokens":1},{"layer":"n2","expert_capacities":[1],"total_tokens":1}]"#,
                ], 507
            ),
            (
                "too many experts",
                json + [
                    "--data-binary",
                    "{\"layer\":\"n3\",\"expert_capacities\":[\(Array(repeating: "1", count: 17).joined(separator: ","))],\"total_tokens\":17}",
                ], 507
            ),
            ("bad window", [], 400),
        ]
        for (name, args, status) in cases {
            let url: String
            switch name {
            case "unknown path": url = "\(daemon.base)/v2/nothing"
            case "unknown layer": url = "\(daemon.base)/v1/layers/nope"
            case "method": url = "\(daemon.base)/v1/summary"
            case "bad window": url = "\(daemon.base)/v1/layers/l0?window=zero"
            default: url = "\(daemon.base)/v1/decisions"
            }
            let r = try curl(url, args)
            #expect(r.status == status, "\(name): \(r.status) \(r.body)")
            #expect(r.json["error"] is String, "\(name): body \(r.body)")
            if status == 405 { #expect(r.headers["allow"] == "GET, HEAD", "\(name)") }
            let after = try curl("\(daemon.base)/v1/summary").body
            #expect(after == before, "\(name) changed the statistics")
        }
    }

    /// Every choice of `metrics.expert_series` gives an exposition promtool accepts.
    @Test(.needs("curl", "promtool"), arguments: ["all", "top:1", "none"])
    func metricsPassPromtoolInBothCodings(expertSeries: String) throws {
        let promtool = try tool("promtool")
        let daemon = try RunningDaemon(["--metrics-expert-series", expertSeries])
        defer { daemon.stop() }
        try postAll(daemon)
        _ = try curl("\(daemon.base)/v1/layers/nope")
        let plain = try curl("\(daemon.base)/metrics")
        #expect(plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        #expect(plain.body.contains("moe_routing_tokens_total{layer=\"l0\"} 34\n"))
        let expertLines = plain.body.split(separator: "\n").filter { $0.hasPrefix("moe_expert_tokens_total{") }
        switch expertSeries {
        case "none": #expect(expertLines.isEmpty)
        case "top:1":
            #expect(!expertLines.isEmpty && expertLines.allSatisfy { $0.contains(",load=\"") })
            #expect(expertLines.contains { $0.contains(",load=\"most\"}") })
        default: #expect(!expertLines.isEmpty && !expertLines.contains { $0.contains(",load=") })
        }
        let check = try run(promtool, ["check", "metrics"], stdin: Data(plain.body.utf8))
        #expect(check.status == 0)
        #expect(check.stdout.isEmpty && check.stderr.isEmpty, "promtool said: \(check.stdout)\(check.stderr)")

        let gzipped = try curl("\(daemon.base)/metrics", ["--compressed"])
        #expect(gzipped.headers["content-encoding"] == "gzip")
        #expect(gzipped.body.contains("moe_routing_tokens_total{layer=\"l0\"} 34\n"))

        let om = try curl("\(daemon.base)/metrics", ["-H", "Accept: application/openmetrics-text; version=1.0.0"])
        #expect(om.headers["content-type"]?.hasPrefix("application/openmetrics-text; version=1.0.0") == true)
        #expect(om.body.hasSuffix("# EOF\n"))
    }

    @Test(.needs("curl", "prometheus")) func prometheusScrapesThePostedTotals() throws {
        let prometheus = try tool("prometheus")
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        try postAll(daemon)
        let dir = try temporaryDirectory("prometheus")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = """
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
            scrape_configs:
              - job_name: moe-metricsd
                static_configs:
                  - targets: ["127.0.0.1:\(daemon.port)"]
            """
        try Data(config.utf8).write(to: dir.appendingPathComponent("prometheus.yml"))
        let port = try freePort()
        let server = try ChildProcess(
            prometheus,
            [
                "--config.file=\(dir.appendingPathComponent("prometheus.yml").path)",
                "--storage.tsdb.path=\(dir.appendingPathComponent("data").path)",
                "--web.listen-address=127.0.0.1:\(port)",
            ])
        defer { server.stop() }
        guard
            server.waitForLine(timeout: 60, { $0.contains("Server is ready to receive web requests") ? true : nil })
                != nil
        else {
            Issue.record("Prometheus did not become ready; its log:\n\(server.log)")
            return
        }
        // Scrapes happen every second; poll the query API for at most 60 s.
        let deadline = Date().addingTimeInterval(60)
        var last = ""
        while Date() < deadline {
            let r = try curl("http://127.0.0.1:\(port)/api/v1/query?query=moe_routing_tokens_total")
            last = r.body
            let results = ((r.json["data"] as? [String: Any])?["result"] as? [[String: Any]]) ?? []
            if let first = results.first {
                #expect(results.count == 1)
                #expect((first["metric"] as? [String: String])?["layer"] == "l0")
                #expect((first["value"] as? [Any])?.last as? String == "34")
                let dropped = try curl("http://127.0.0.1:\(port)/api/v1/query?query=moe_routing_dropped_tokens_total")
                #expect(dropped.body.contains("\"2\""), "\(dropped.body)")
                let up = try curl("http://127.0.0.1:\(port)/api/v1/query?query=up")
                #expect(up.body.contains("\"1\""), "\(up.body)")
                return
            }
            usleep(250_000)
        }
        Issue.record(
            "Prometheus never returned moe_routing_tokens_total; last answer: \(last)\nits log:\n\(server.log)")
    }

    @Test(.needs("curl")) func http2PriorKnowledge() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let r = try curl(
            "\(daemon.base)/v1/decisions",
            ["--http2-prior-knowledge", "-H", "Content-Type: application/json", "--data-binary", Self.d1])
        #expect(r.status == 200, "\(r.body)")
        let s = try curl("\(daemon.base)/v1/layers/l0", ["--http2-prior-knowledge"])
        #expect(s.json["total_tokens"] as? Int == 8)
    }

    @Test(.needs("curl")) func sigtermStopsCleanlyWithStatusZero() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        #expect(try curl("\(daemon.base)/readyz").status == 200)
        daemon.child.signal(SIGTERM)
        #expect(daemon.child.waitForExit(timeout: 20) == 0, "\(daemon.child.log)")
        // The last line may still be in the pipe when the exit is seen: wait for it (bounded).
        #expect(
            daemon.child.waitForLine(timeout: 10) { $0.hasSuffix("info stopped") ? true : nil } == true,
            "\(daemon.child.log)")
    }

    @Test func sigintStopsCleanlyWithStatusZero() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        daemon.child.signal(SIGINT)
        #expect(daemon.child.waitForExit(timeout: 20) == 0, "\(daemon.child.log)")
    }

    @Test(.needs("curl")) func settingsFromEnvironmentAndFile() throws {
        let dir = try temporaryDirectory("config")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("c.json")
        try Data(#"{"metrics": {"expert_series": "none"}, "stats": {"max_layers": 1}}"#.utf8).write(to: file)
        var env = ProcessInfo.processInfo.environment
        env["MOE_METRICSD_STATS_MAX_LAYERS"] = "5"
        let daemon = try RunningDaemon(["--config", file.path], environment: env)
        defer { daemon.stop() }
        try postAll(daemon)
        let metrics = try curl("\(daemon.base)/metrics").body
        #expect(!metrics.contains("moe_expert_tokens_total"))  // from the file
        let two = try curl(
            "\(daemon.base)/v1/decisions",
            [
                "-H", "Content-Type: application/json", "--data-binary",
                #"[{"layer":"a","expert_capacities":[1],"total_tokens":1},{"layer":"b","expert_capacities":[1],"total_tokens":1}]"#,
            ])
        #expect(two.status == 200, "environment must override the file's max_layers: \(two.body)")
    }

    @Test(.needs("curl")) func sighupReloadsTheFileAndRefusesABadOne() throws {
        let dir = try temporaryDirectory("reload")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("c.json")
        try Data(#"{"metrics": {"expert_series": "all"}}"#.utf8).write(to: file)
        let daemon = try RunningDaemon(["--config", file.path])
        defer { daemon.stop() }
        try postAll(daemon)
        #expect(try curl("\(daemon.base)/metrics").body.contains("moe_expert_tokens_total"))

        try Data(#"{"metrics": {"expert_series": "none"}}"#.utf8).write(to: file)
        daemon.child.signal(SIGHUP)
        #expect(
            daemon.child.waitForLine(timeout: 20) { $0.contains("configuration reloaded") ? true : nil } == true,
            "\(daemon.child.log)")
        let after = try curl("\(daemon.base)/metrics").body
        #expect(!after.contains("moe_expert_tokens_total"))
        #expect(after.contains("moe_routing_tokens_total{layer=\"l0\"} 34\n"))  // statistics kept

        try Data(#"{"metrics": {"expert_series": "top:0"}}"#.utf8).write(to: file)
        daemon.child.signal(SIGHUP)
        #expect(
            daemon.child.waitForLine(timeout: 20) { $0.contains("new configuration refused") ? true : nil } == true,
            "\(daemon.child.log)")
        #expect(!(try curl("\(daemon.base)/metrics").body.contains("moe_expert_tokens_total")))
        #expect(try curl("\(daemon.base)/readyz").status == 200)
    }

    @Test func invalidConfigurationExitsWithStatus2() throws {
        let binary = try daemonBinary()
        let bad = try run(binary, ["--listen", "not-an-address", "--check-config"])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("listen"))
        let badType = try run("/usr/bin/env", ["MOE_METRICSD_HTTP_MAX_BODY_BYTES=huge", binary, "--check-config"])
        #expect(badType.status == 2)
        #expect(badType.stderr.contains("MOE_METRICSD_HTTP_MAX_BODY_BYTES"))
        // A flag's value is read by the environment's rules: same spellings, same exit status.
        let hugeFlag = try run(binary, ["--http-max-body-bytes", "99999999999999999999", "--check-config"])
        #expect(hugeFlag.status == 2, "\(hugeFlag.stderr)")
        #expect(hugeFlag.stderr.contains("--http-max-body-bytes"))
        let twice = try run(
            binary,
            [
                "--auth-reads", "TRUE", "--metrics-expert-series", "NONE",
                "--stats-latency-buckets-seconds", "0.1,0.5", "--stats-latency-buckets-seconds", "2",
                "--check-config",
            ])
        #expect(twice.status == 0, "\(twice.stderr)")
        #expect(twice.stdout.contains("auth_reads = true"), "\(twice.stdout)")
        #expect(twice.stdout.contains("metrics.expert_series = none"), "\(twice.stdout)")
        #expect(twice.stdout.contains("stats.latency_buckets_seconds = 0.1,0.5,2"), "\(twice.stdout)")
        let notBool = try run(binary, ["--auth-reads", "perhaps", "--check-config"])
        #expect(notBool.status == 2)
        #expect(notBool.stderr.contains("--auth-reads"))
        let missing = try run(binary, ["--config", "/nonexistent/x.json"])
        #expect(missing.status == 2)
        let noToken = try run(binary, ["--auth-token-file", "/nonexistent/token", "--check-config"])
        #expect(noToken.status == 2)
        #expect(noToken.stderr.contains("auth_token_file"))
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let good = try run(
            binary, ["--config", root.appendingPathComponent("config/moe-metricsd.json").path, "--check-config"])
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.stdout.contains("http.max_body_bytes = 16777216"))
    }

    @Test func helpListsEverySetting() throws {
        let binary = try daemonBinary()
        let help = try run(binary, ["--help"])
        #expect(help.status == 0)
        let check = try run(binary, ["--check-config"])
        let keys = check.stdout.split(separator: "\n").dropFirst().compactMap { $0.split(separator: " ").first }
        #expect(keys.count > 20)
        for key in keys {
            let flag = "--" + key.replacingOccurrences(of: ".", with: "-").replacingOccurrences(of: "_", with: "-")
            #expect(help.stdout.contains(flag), "--help lacks \(flag)")
        }
        let version = try run(binary, ["--version"])
        #expect(version.status == 0 && !version.stdout.isEmpty)
    }

    @Test(.needs("systemd-analyze")) func systemdUnitVerifies() throws {
        let analyze = try tool("systemd-analyze")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let unit = try String(contentsOf: root.appendingPathComponent("systemd/moe-metricsd.service"), encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/local/bin/moe-metricsd "))
        // Verify a copy whose ExecStart names the built binary, since verify checks that it exists.
        let dir = try temporaryDirectory("unit")
        defer { try? FileManager.default.removeItem(at: dir) }
        let copy = dir.appendingPathComponent("moe-metricsd.service")
        try Data(unit.replacingOccurrences(of: "/usr/local/bin/moe-metricsd", with: try daemonBinary()).utf8).write(
            to: copy)
        let r = try run(analyze, ["verify", copy.path])
        #expect(r.status == 0, "systemd-analyze verify: \(r.stdout)\(r.stderr)")
        #expect(!r.stderr.contains("moe-metricsd.service:"), "systemd-analyze complained: \(r.stderr)")
        for required in [
            "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "Restart=on-failure",
            "EnvironmentFile=-/etc/default/moe-metricsd", "StateDirectory=moe-metricsd", "DynamicUser=yes",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ] {
            #expect(unit.contains(required + "\n"), "unit lacks \(required)")
        }
    }
}
