import Foundation
import TestTools
import Testing

/// Restarts, crashes, corrupt state files and the write token, with the built binary.
@Suite struct DurabilityEndToEndTests {
    let post = ["-H", "Content-Type: application/json", "--data-binary"]

    @Test(.needs("curl")) func restartKeepsEverySummaryField() throws {
        let dir = try temporaryDirectory("state")
        defer { try? FileManager.default.removeItem(at: dir) }
        let state = dir.appendingPathComponent("state.bin").path
        let first = try RunningDaemon(["--state-file", state])
        defer { first.stop() }
        try DaemonEndToEndTests().postAll(first)
        let worker =
            #"{"layer":"l1","worker":"rank-3","expert_capacities":[5,0,1],"total_tokens":6,"load_balance_loss":null,"latency_ms":0.25}"#
        #expect(try curl("\(first.base)/v1/decisions", post + [worker]).status == 200)
        let before = try ["/v1/layers/l0", "/v1/layers/l1"].map { try curl("\(first.base)\($0)").json }
        let metricsBefore = try curl("\(first.base)/metrics").body
        first.child.signal(SIGTERM)
        #expect(first.child.waitForExit(timeout: 20) == 0, "\(first.child.log)")

        let second = try RunningDaemon(["--state-file", state])
        defer { second.stop() }
        #expect(
            second.child.waitForLine(timeout: 5) { $0.contains("restored 2 layers") ? true : nil } == true,
            "\(second.child.log)")
        let after = try ["/v1/layers/l0", "/v1/layers/l1"].map { try curl("\(second.base)\($0)").json }
        for (b, a) in zip(before, after) {
            for key in b.keys.sorted() where key != "workers" {
                #expect(
                    NSDictionary(dictionary: ["v": b[key] as Any]) == NSDictionary(dictionary: ["v": a[key] as Any]),
                    "\(b["layer"] ?? "") field \(key): \(String(describing: b[key])) then \(String(describing: a[key]))"
                )
            }
            // Worker ages move with the clock; names, counts and last-seen times must not.
            let bw = (b["workers"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
            let aw = (a["workers"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
            #expect(bw.map { $0["worker"] as? String } == aw.map { $0["worker"] as? String })
        }
        let metricsAfter = try curl("\(second.base)/metrics").body
        for line in metricsBefore.split(separator: "\n")
        where line.hasPrefix("moe_routing_") || line.hasPrefix("moe_expert_") {
            #expect(metricsAfter.contains(line + "\n"), "after restart, /metrics lacks: \(line)")
        }
    }

    @Test(.needs("curl")) func killMinusNineLosesAtMostOneInterval() throws {
        let dir = try temporaryDirectory("state")
        defer { try? FileManager.default.removeItem(at: dir) }
        let state = dir.appendingPathComponent("state.bin").path
        let daemon = try RunningDaemon(["--state-file", state, "--snapshot-interval", "0.2", "--log-level", "debug"])
        defer { daemon.stop() }
        try DaemonEndToEndTests().postAll(daemon)
        // Wait for a save that happened after the posts (the readiness signal is its log line).
        // Saves are skipped while nothing changes, so there may be exactly one more.
        let saves = { daemon.child.lines.filter { $0.contains("state saved") }.count }
        let savesBefore = saves()
        let saved = daemon.child.waitForLine(timeout: 20) { _ -> Bool? in saves() > savesBefore ? true : nil }
        #expect(saved == true, "\(daemon.child.log)")
        // A save already under way when the posts returned may predate the last of them; the
        // change it missed makes the next tick (0.2 s) save again, so give that one a moment.
        let first = saves()
        _ = daemon.child.waitForLine(timeout: 1) { _ -> Bool? in saves() > first ? true : nil }
        daemon.child.signal(SIGKILL)
        _ = daemon.child.waitForExit(timeout: 20)

        let second = try RunningDaemon(["--state-file", state])
        defer { second.stop() }
        let s = try curl("\(second.base)/v1/layers/l0").json
        #expect(s["total_tokens"] as? Int == 34)
        #expect(s["total_routings"] as? Int == 4)
    }

    @Test func unusableStateDirectoryStopsTheStartWithStatus2() throws {
        let dir = try temporaryDirectory("state")
        defer { try? FileManager.default.removeItem(at: dir) }
        let binary = try daemonBinary()
        let missing = try run(
            binary, ["--listen", "127.0.0.1:0", "--state-file", dir.appendingPathComponent("missing/s.bin").path],
            timeout: 30)
        #expect(missing.status == 2, "\(missing.stderr)")
        #expect(missing.stderr.contains("cannot be saved"), "\(missing.stderr)")
        #expect(missing.stderr.contains("No such file or directory"), "\(missing.stderr)")
        #expect(!missing.stderr.contains("listening on"), "\(missing.stderr)")

        let plainFile = dir.appendingPathComponent("file")
        try Data().write(to: plainFile)
        let notDirectory = try run(
            binary, ["--listen", "127.0.0.1:0", "--state-file", plainFile.appendingPathComponent("s.bin").path],
            timeout: 30)
        #expect(notDirectory.status == 2, "\(notDirectory.stderr)")
        #expect(notDirectory.stderr.contains("not a directory"), "\(notDirectory.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["file"])
    }

    @Test(.needs("curl")) func finalSaveFailureExitsNonZero() throws {
        let dir = try temporaryDirectory("state")
        defer { try? FileManager.default.removeItem(at: dir) }
        let sub = dir.appendingPathComponent("sub")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        let daemon = try RunningDaemon([
            "--state-file", sub.appendingPathComponent("state.bin").path, "--snapshot-interval", "3600",
        ])
        defer { daemon.stop() }
        try DaemonEndToEndTests().postAll(daemon)
        try FileManager.default.removeItem(at: sub)
        daemon.child.signal(SIGTERM)
        #expect(daemon.child.waitForExit(timeout: 20) == 1, "\(daemon.child.log)")
        #expect(
            daemon.child.waitForLine(timeout: 10) { $0.contains(" error state not saved") ? true : nil } == true,
            "\(daemon.child.log)")
    }

    @Test(.needs("curl")) func corruptStateStopsTheStartUnlessDiscarded() throws {
        let dir = try temporaryDirectory("state")
        defer { try? FileManager.default.removeItem(at: dir) }
        let state = dir.appendingPathComponent("state.bin").path
        try Data("not a state file".utf8).write(to: URL(fileURLWithPath: state))
        let binary = try daemonBinary()
        let refused = try run(binary, ["--listen", "127.0.0.1:0", "--state-file", state], timeout: 30)
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("cannot be restored"), "\(refused.stderr)")
        #expect(FileManager.default.contents(atPath: state) == Data("not a state file".utf8))

        let daemon = try RunningDaemon(["--state-file", state, "--discard-corrupt-state"])
        defer { daemon.stop() }
        let aside = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter {
            $0.hasPrefix("state.bin.corrupt-")
        }
        #expect(aside.count == 1)
        #expect(try curl("\(daemon.base)/v1/layers").json["layers"] as? [Any] != nil)
    }

    @Test(.needs("curl")) func tokenGuardsWrites() throws {
        var env = ProcessInfo.processInfo.environment
        env["MOE_METRICSD_AUTH_TOKEN"] = "sekr1t"
        let daemon = try RunningDaemon([], environment: env)
        defer { daemon.stop() }
        let refused = try curl("\(daemon.base)/v1/decisions", post + [DaemonEndToEndTests.d1])
        #expect(refused.status == 401)
        #expect(refused.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
        #expect(try curl("\(daemon.base)/v1/layers/l0").status == 404)
        let accepted = try curl(
            "\(daemon.base)/v1/decisions", ["-H", "Authorization: Bearer sekr1t"] + post + [DaemonEndToEndTests.d1])
        #expect(accepted.status == 200)
        #expect(try curl("\(daemon.base)/v1/layers/l0").status == 200)
    }
}

/// What users copy from the README: the example files, and the port with a quiet log level.
@Suite struct ReadmeExamplesEndToEndTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test(.needs("curl")) func exampleFilesArePostedAsTheReadmeShows() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let one = try curl(
            "\(daemon.base)/v1/decisions",
            [
                "-H", "Content-Type: application/json", "--data-binary",
                "@" + Self.root.appendingPathComponent("examples/decision.json").path,
            ])
        #expect(one.status == 200, "\(one.body)")
        #expect(one.json["accepted"] as? Int == 1)
        let nd = try curl(
            "\(daemon.base)/v1/decisions",
            [
                "-H", "Content-Type: application/x-ndjson", "--data-binary",
                "@" + Self.root.appendingPathComponent("examples/decisions.ndjson").path,
            ])
        #expect(nd.status == 200, "\(nd.body)")
        #expect(nd.json["accepted"] as? Int == 3)
        let layers = try curl("\(daemon.base)/v1/layers").json["layers"] as? [[String: Any]] ?? []
        #expect(layers.map { $0["layer"] as? String } == ["decoder.0.moe", "decoder.1.moe", "decoder.2.moe"])
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.contains("@examples/decision.json"))
        #expect(readme.contains("@examples/decisions.ndjson"))
        #expect(!readme.contains("@decision.json") && !readme.contains("@decisions.ndjson"))
    }

    /// Every metric family the daemon exposes (with the example files posted) has a row in
    /// docs/metrics.md, so a new metric cannot ship undocumented.
    @Test(.needs("curl")) func everyExposedMetricIsDocumented() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        for (file, type) in [
            ("examples/decision.json", "application/json"), ("examples/decisions.ndjson", "application/x-ndjson"),
        ] {
            let r = try curl(
                "\(daemon.base)/v1/decisions",
                [
                    "-H", "Content-Type: \(type)", "--data-binary",
                    "@" + Self.root.appendingPathComponent(file).path,
                ])
            #expect(r.status == 200, "\(r.body)")
        }
        let exposition = try curl("\(daemon.base)/metrics").body
        let families = exposition.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("# TYPE ") else { return nil }
            return line.dropFirst("# TYPE ".count).split(separator: " ").first.map(String.init)
        }
        #expect(families.count > 20, "\(exposition)")
        let doc = try String(contentsOf: Self.root.appendingPathComponent("docs/metrics.md"), encoding: .utf8)
        let undocumented = families.filter { !doc.contains("`\($0)`") }
        #expect(undocumented.isEmpty, "docs/metrics.md does not document \(undocumented)")
    }

    @Test(.needs("curl", "gzip")) func gzippedPostWithCurl() throws {
        let gzip = try tool("gzip")
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let dir = try temporaryDirectory("gzip")
        defer { try? FileManager.default.removeItem(at: dir) }
        let copy = dir.appendingPathComponent("d.ndjson")
        try FileManager.default.copyItem(at: Self.root.appendingPathComponent("examples/decisions.ndjson"), to: copy)
        #expect(try run(gzip, [copy.path]).status == 0)  // leaves d.ndjson.gz
        let r = try curl(
            "\(daemon.base)/v1/decisions",
            [
                "-H", "Content-Type: application/x-ndjson", "-H", "Content-Encoding: gzip",
                "--data-binary", "@" + copy.path + ".gz",
            ])
        #expect(r.status == 200, "\(r.body)")
        #expect(r.json["accepted"] as? Int == 3)
        let unsupported = try curl(
            "\(daemon.base)/v1/decisions",
            [
                "-H", "Content-Type: application/x-ndjson", "-H", "Content-Encoding: br",
                "--data-binary", "@" + copy.path + ".gz",
            ])
        #expect(unsupported.status == 415)
    }

    @Test(.needs("curl")) func listeningLineShownAtEveryLogLevel() throws {
        let daemon = try RunningDaemon(["--log-level", "critical"])  // throws without the line
        defer { daemon.stop() }
        #expect(try curl("\(daemon.base)/healthz").status == 200)
        #expect(
            daemon.child.lines.contains { $0.contains(" notice listening on 127.0.0.1:\(daemon.port)") },
            "\(daemon.child.log)")
    }
}
