import Foundation
import HTTPCore
import Logging
import MoEStats
import Testing

@testable import MoEDaemon

/// Problems a user found trying the daemon: empty bodies, request content codings, state files
/// rewritten for nothing, repeated query parameters, large JSON never compressed, layer order.
@Suite struct UserReportTests {
    let router: DaemonRouter

    init() {
        var c = DaemonConfiguration()
        c.http.maxBodyBytes = 64 * 1024
        router = DaemonRouter(configuration: c, version: "test", logger: Logger(label: "test"), clock: { 1000 })
    }

    func post(_ body: [UInt8], contentType: String = "application/json", encoding: [String] = []) -> HTTPResponse {
        var headers: HTTPHeaders = ["content-type": contentType]
        for e in encoding { headers.add("content-encoding", e) }
        return router.handle(HTTPRequest(method: "POST", target: "/v1/decisions", headers: headers, body: body))
    }

    /// The answer with a streamed body collected, as a client would read it.
    func get(_ target: String, headers: HTTPHeaders = HTTPHeaders()) -> HTTPResponse {
        var response = router.handle(.make("GET", target, headers: headers))
        response.collectBody()
        return response
    }

    @Test func emptyAndBlankBodiesAreOneMistake() {
        #expect(post(Array(decision([1, 1]).utf8)).status == 200)
        let before = get("/v1/summary").text
        let answers = [
            post([]), post([], contentType: "application/x-ndjson"),
            post(Array("\n \r\n\t\n".utf8), contentType: "application/x-ndjson"), post(Array("  \n".utf8)),
            post(Array("[]".utf8)), post(Array(" [\n] ".utf8)),
        ]
        for r in answers {
            #expect(r.status == 400, "\(r.text)")
            #expect(r.json["error"] as? String == DaemonRouter.emptyBodyMessage)
        }
        #expect(get("/v1/summary").text == before)
    }

    /// Layers whose token counters reached the top of UInt64 once wrapped the fleet totals of
    /// `/v1/summary` to a small number, and a wrapped total below the dropped tokens trapped on
    /// `tokens - dropped`: the totals saturate now, like the counters they add up.
    @Test func fleetTotalsSaturateInsteadOfWrapping() throws {
        let huge = RoutingDecision(layer: "big", expertCounts: [0, 0], totalTokens: .max)
        let dropped = RoutingDecision(layer: "small", expertCounts: [0, 0], totalTokens: 4, tokensDropped: 4)
        _ = try router.registry.ingest([huge, dropped], defaultLayer: nil, now: 1000)
        let r = get("/v1/summary")
        #expect(r.status == 200, "\(r.text)")
        let totals = try #require(r.json["totals"] as? [String: Any])
        #expect((totals["total_tokens"] as? NSNumber)?.uint64Value == UInt64.max, "\(totals)")
        #expect((totals["tokens_dropped"] as? NSNumber)?.uint64Value == 4)
        #expect(totals["routing_efficiency"] as? Double == 100 * Double(UInt64.max - 4) / Double(UInt64.max))
    }

    /// Every rejection reason is exposed at 0 before it first happens, `too_large` included, so
    /// that `increase()` sees the first one.
    @Test func everyRejectionReasonStartsAtZero() {
        let text = get("/metrics").text
        for reason in [
            "conflict", "invalid", "malformed", "too_large", "too_many_experts", "too_many_layers",
            "unauthorized", "unsupported_media_type",
        ] {
            #expect(text.contains("moe_metricsd_rejected_decisions_total{reason=\"\(reason)\"} 0\n"), "\(reason)")
        }
    }

    /// A 404 names the path it could not find, but a long target does not come back whole.
    @Test func unknownLongPathsAreEchoedBounded() {
        let long = "/" + String(repeating: "a", count: 9000)
        let r = get(long)
        #expect(r.status == 404)
        #expect(r.body.count < 400, "\(r.body.count) bytes")
        #expect((r.json["error"] as? String)?.hasPrefix("no such path: /aaa") == true)
        #expect((get("/nope").json["error"] as? String) == "no such path: /nope")
    }

    @Test func gzipRequestBodiesAreInflated() throws {
        let nd = decision([2, 2]) + "\n" + decision([1, 3]) + "\n"
        let gz = try #require(Gzip.compress(Array(nd.utf8)))
        let r = post(gz, contentType: "application/x-ndjson", encoding: ["gzip"])
        #expect(r.status == 200, "\(r.text)")
        #expect(r.json["accepted"] as? Int == 2)
        #expect(post(try #require(Gzip.compress(Array(decision([1, 1]).utf8))), encoding: ["X-GZIP"]).status == 200)
        #expect(post(Array(decision([1, 1]).utf8), encoding: ["identity"]).status == 200)
        #expect(router.registry.snapshot("l0")?.totalRoutings == 4)
    }

    @Test func badContentCodingsAreRefusedAndChangeNothing() throws {
        #expect(post(Array(decision([1, 1]).utf8)).status == 200)
        let before = get("/v1/summary").text
        let plainLabelledGzip = post(Array(decision([1, 1]).utf8), encoding: ["gzip"])
        #expect(plainLabelledGzip.status == 400)
        #expect((plainLabelledGzip.json["error"] as? String)?.contains("gzip") == true)
        var cut = try #require(Gzip.compress(Array(decision([1, 1]).utf8)))
        cut.removeLast(3)
        #expect(post(cut, encoding: ["gzip"]).status == 400)
        let trailing = try #require(Gzip.compress(Array(decision([1, 1]).utf8))) + [0x00]
        #expect(post(trailing, encoding: ["gzip"]).status == 400)
        #expect(post([], encoding: ["gzip"]).status == 400)
        // 100 kB of spaces and one decision: 1 kB on the wire, past the 64 KiB limit once inflated.
        let bomb = try #require(Gzip.compress(Array((String(repeating: " ", count: 100_000) + decision([1, 1])).utf8)))
        #expect(bomb.count < 64 * 1024)
        let tooLarge = post(bomb, encoding: ["gzip"])
        #expect(tooLarge.status == 413, "\(tooLarge.text)")
        for coding in [["br"], ["deflate"], ["gzip, gzip"], ["gzip", "br"]] {
            let r = post(Array(decision([1, 1]).utf8), encoding: coding)
            #expect(r.status == 415, "\(coding)")
            #expect(r.headers["accept-encoding"] == "gzip, identity")
            #expect(r.json["error"] is String)
        }
        #expect(get("/v1/summary").text == before)
    }

    @Test func inflateStopsAtTheLimit() throws {
        let input = [UInt8](repeating: 0x41, count: 200_000)
        let gz = try #require(Gzip.compress(input))
        #expect(Gzip.inflate(gz, limit: 200_000) == .inflated(input))
        #expect(Gzip.inflate(gz, limit: 199_999) == .tooLarge)
        #expect(Gzip.inflate(Array("not gzip".utf8), limit: 1000) == .corrupt)
    }

    @Test func stateIsWrittenOnlyAfterAChange() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("persist-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("state.bin").path
        let persistence = Persistence(file: StateFile(path: path), router: router, logger: Logger(label: "test"))
        #expect(persistence.save() == .written)  // no file yet: the first save writes one
        #expect(FileManager.default.fileExists(atPath: path))
        try FileManager.default.removeItem(atPath: path)
        #expect(persistence.save() == .unchanged)
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(post(Array(decision([1, 1]).utf8)).status == 200)
        #expect(persistence.save() == .written)
        #expect(persistence.save() == .unchanged)
        #expect(post(Array("{".utf8)).status == 400)  // a refused request changes nothing
        #expect(persistence.save() == .unchanged)
        #expect(router.handle(.make("DELETE", "/v1/layers/l0")).status == 200)
        #expect(persistence.save() == .written)
        #expect(router.handle(.make("DELETE", "/v1/layers")).status == 200)
        #expect(persistence.save() == .written)

        let restored = Persistence(
            file: StateFile(path: path), router: router, logger: Logger(label: "test"), upToDate: true)
        #expect(restored.save() == .unchanged)
    }

    @Test func repeatedWindowIsRefused() {
        #expect(post(Array(decision([1, 1]).utf8)).status == 200)
        for target in [
            "/v1/layers/l0?window=5&window=7", "/v1/summary?window=5&window=5", "/v1/summary?window=5&%77indow=7",
        ] {
            let r = get(target)
            #expect(r.status == 400, "\(target)")
            #expect(r.json["field"] as? String == "window", "\(target)")
        }
        #expect(get("/v1/layers/l0?window=5&other=7").status == 200)
    }

    @Test func largeJSONIsGzippedWhenAllowed() throws {
        let batch = (0..<8).map { decision(layer: "layer.\($0)", Array(repeating: 3, count: 64)) }.joined(
            separator: ",")
        #expect(post(Array("[\(batch)]".utf8)).status == 200)
        let plain = get("/v1/summary")
        #expect(plain.body.count > DaemonRouter.gzipThreshold)
        #expect(plain.headers["content-encoding"] == nil)
        #expect(plain.headers["vary"] == "Accept-Encoding")
        for path in ["/v1/summary", "/v1/layers", "/v1/layers/layer.0"] {
            let gz = get(path, headers: ["accept-encoding": "gzip"])
            #expect(gz.headers["content-encoding"] == "gzip", "\(path)")
            #expect(gz.headers["vary"] == "Accept-Encoding", "\(path)")
            #expect(inflateWithZlib(gz.body) == get(path).body, "\(path)")
        }
        // Small answers are not worth compressing, but still vary.
        let small = get("/v1/layers/nope", headers: ["accept-encoding": "gzip"])
        #expect(small.headers["content-encoding"] == nil)
        let health = get("/healthz", headers: ["accept-encoding": "gzip"])
        #expect(health.headers["content-encoding"] == nil)
    }

    @Test func layersAreInNaturalOrder() throws {
        let names = ["syn.10", "syn.2", "syn.1", "enc", "syn.02b"]
        let batch = names.map { decision(layer: $0, [1, 1]) }.joined(separator: ",")
        var c = DaemonConfiguration()
        c.maxLayers = 10
        let r = DaemonRouter(configuration: c, version: "test", logger: Logger(label: "test"), clock: { 1000 })
        #expect(r.handle(.make("POST", "/v1/decisions", body: "[\(batch)]")).status == 200)
        let expected = ["enc", "syn.1", "syn.2", "syn.02b", "syn.10"]
        let list = try #require(r.handle(.make("GET", "/v1/layers")).json["layers"] as? [[String: Any]])
        #expect(list.map { $0["layer"] as? String } == expected)
        var response = r.handle(.make("GET", "/v1/summary"))
        response.collectBody()
        let summary = try #require(response.json["layers"] as? [[String: Any]])
        #expect(summary.map { $0["layer"] as? String } == expected)
    }

    @Test func dashboardPluralisesLayers() {
        let html = get("/").text
        #expect(html.contains("\" layer affected\""))
        #expect(html.contains("sessionStorage"))
    }
}
