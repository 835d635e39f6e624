import CZlib
import Foundation
import HTTPCore
import Logging
import MoEStats
import Testing

@testable import MoEDaemon

extension HTTPRequest {
    /// A request with defaults, for tests.
    static func make(
        _ method: String = "GET", _ target: String, body: String = "",
        contentType: String? = "application/json", headers extra: HTTPHeaders = HTTPHeaders()
    ) -> HTTPRequest {
        var headers = extra
        if let contentType, !body.isEmpty { headers.add("content-type", contentType) }
        return HTTPRequest(method: method, target: target, headers: headers, body: Array(body.utf8))
    }
}

extension HTTPResponse {
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
    }
}

/// A decision with `counts` per expert; total is their sum unless given.
func decision(
    layer: String? = "l0", _ counts: [Int], total: Int? = nil, dropped: Int = 0, lbl: Double = 0.1,
    z: Double = 0.01, aux: Double = 0.2, latencyMs: Double? = 2
) -> String {
    var fields: [String] = []
    if let layer { fields.append("\"layer\":\"\(layer)\"") }
    fields.append("\"expert_capacities\":[\(counts.map(String.init).joined(separator: ","))]")
    fields.append("\"total_tokens\":\(total ?? counts.reduce(0, +))")
    fields.append("\"tokens_dropped\":\(dropped)")
    fields.append("\"load_balance_loss\":\(lbl)")
    fields.append("\"router_z_loss\":\(z)")
    fields.append("\"auxiliary_loss\":\(aux)")
    if let latencyMs { fields.append("\"latency_ms\":\(latencyMs)") }
    return "{" + fields.joined(separator: ",") + "}"
}

@Suite struct RouterTests {
    let router: DaemonRouter

    init() {
        var c = DaemonConfiguration()
        c.maxLayers = 3
        c.maxExperts = 8
        router = DaemonRouter(configuration: c, version: "test", logger: Logger(label: "test"), clock: { 1000 })
    }

    func post(_ body: String, path: String = "/v1/decisions", contentType: String? = "application/json") -> HTTPResponse
    {
        router.handle(.make("POST", path, body: body, contentType: contentType))
    }

    /// The answer with a streamed body collected, as a client would read it.
    func get(_ target: String, headers: HTTPHeaders = HTTPHeaders()) -> HTTPResponse {
        var response = router.handle(.make("GET", target, headers: headers))
        response.collectBody()
        return response
    }

    /// The state that must not change after a refused request.
    func state() -> String { get("/v1/summary").text }

    @Test func singleArrayAndNDJSONPosts() {
        let one = post(decision([3, 1]))
        #expect(one.status == 200)
        #expect(one.json["accepted"] as? Int == 1)
        let array = post("[\(decision([1, 1])),\(decision([0, 4], dropped: 1))]")
        #expect(array.json["accepted"] as? Int == 2)
        let nd = post(decision([2, 2]) + "\n" + decision([1, 3]) + "\n", contentType: "application/x-ndjson")
        #expect(nd.status == 200)
        #expect(nd.json["accepted"] as? Int == 2)
        let snapshot = router.registry.snapshot("l0")
        #expect(snapshot?.totalRoutings == 5)
        #expect(snapshot?.totalTokens == 18)
        #expect(snapshot?.tokensDropped == 1)
        #expect(snapshot?.expertTokens == [7, 11])
    }

    @Test func noContentTypeIsJSONAndCharsetIsAccepted() {
        #expect(post(decision([1]), contentType: nil).status == 200)
        #expect(post(decision([1]), contentType: "application/json; charset=utf-8").status == 200)
        #expect(post(decision([1]), contentType: "Application/JSON").status == 200)
    }

    @Test func layerFromThePath() {
        let r = post(decision(layer: nil, [1, 2]), path: "/v1/layers/enc.3%3Amoe/decisions")
        #expect(r.status == 200)
        #expect(router.registry.snapshot("enc.3:moe")?.totalTokens == 3)
        let bad = post(decision(layer: nil, [1, 2]), path: "/v1/layers/has%20space/decisions")
        #expect(bad.status == 422)
        #expect(bad.json["field"] as? String == "layer")
    }

    @Test func errorStatusesChangeNothing() {
        #expect(post(decision([2, 2])).status == 200)
        let before = state()
        let cases: [(HTTPResponse, Int, String?)] = [
            (post("{not json"), 400, nil),
            (post(""), 400, nil),
            (post(decision([1, 1], total: 1, dropped: 2)), 422, "tokens_dropped"),
            (post("[\(decision([1, 1])),\(decision([1, 1, 1]))]"), 409, nil),
            (post(decision([1, 1]), contentType: "text/plain"), 415, nil),
            (post(decision([1, 1]), contentType: "application/x-www-form-urlencoded"), 415, nil),
            (post(decision([1, 1]), contentType: "application/json; charset=latin1"), 415, nil),
            (post(decision([1, 1, 1, 1, 1, 1, 1, 1, 1])), 507, nil),
            (
                post("[\(decision(layer: "a", [1])),\(decision(layer: "b", [1])),\(decision(layer: "c", [1]))]"), 507,
                "layer"
            ),
        ]
        for (i, (response, status, field)) in cases.enumerated() {
            #expect(response.status == status, "case \(i): \(response.text)")
            #expect(response.headers["content-type"] == "application/json")
            #expect(response.json["error"] is String, "case \(i)")
            if let field { #expect(response.json["field"] as? String == field, "case \(i)") }
            #expect(state() == before, "case \(i) changed the statistics")
        }
        // The conflicting decision is named by its index in the batch.
        #expect(cases[3].0.json["index"] as? Int == 1)
        #expect(cases[4].0.headers["accept-post"] == "application/json, application/x-ndjson")
    }

    @Test func unknownPathsAndLayers() {
        #expect(get("/nope").status == 404)
        #expect(get("/v1/layers/x/y/z").status == 404)
        #expect(get("/v1/layers/missing").status == 404)
        #expect(get("/v1/layers/missing").json["field"] as? String == "layer")
        #expect(router.handle(.make("DELETE", "/v1/layers/missing")).status == 404)
    }

    @Test(arguments: [
        ("PUT", "/v1/decisions", "POST"), ("GET", "/v1/decisions", "POST"),
        ("GET", "/v1/layers/l0/decisions", "POST"), ("POST", "/v1/layers", "GET, HEAD, DELETE"),
        ("PATCH", "/v1/layers/l0", "GET, HEAD, DELETE"), ("POST", "/metrics", "GET, HEAD"),
        ("DELETE", "/v1/summary", "GET, HEAD"), ("POST", "/healthz", "GET, HEAD"), ("PUT", "/readyz", "GET, HEAD"),
    ])
    func methodNotAllowedSaysWhatIs(method: String, path: String, allow: String) {
        let r = router.handle(.make(method, path))
        #expect(r.status == 405)
        #expect(r.headers["allow"] == allow)
        #expect(r.json["error"] is String)
    }

    @Test func layerSummaryAndWindow() {
        #expect(post("[\(decision([4, 0])),\(decision([4, 0])),\(decision([2, 2]))]").status == 200)
        let full = get("/v1/layers/l0")
        #expect(full.status == 200)
        #expect(full.json["total_routings"] as? Int == 3)
        #expect(full.json["expert_token_counts"] as? [Int] == [10, 2])
        let windowed = get("/v1/layers/l0?window=1")
        #expect((windowed.json["load_variance"] as? [String: Any])?["window"] as? Int == 1)
        for bad in ["0", "-1", "x", "1.5", "", "99999999999"] {
            let r = get("/v1/layers/l0?window=\(bad)")
            #expect(r.status == 400, "window=\(bad)")
            #expect(r.json["field"] as? String == "window")
        }
        #expect(get("/v1/summary?window=abc").status == 400)
    }

    @Test func layersListAndSummaryAcrossLayers() throws {
        #expect(
            post("[\(decision(layer: "a", [1, 3], dropped: 1)),\(decision(layer: "b", [2, 2, 0, 0]))]").status == 200)
        let list = get("/v1/layers")
        let layers = try #require(list.json["layers"] as? [[String: Any]])
        #expect(layers.map { $0["layer"] as? String } == ["a", "b"])
        #expect(layers[0]["tokens_dropped"] as? Int == 1)
        #expect(layers[1]["experts"] as? Int == 4)

        let s = get("/v1/summary").json
        let totals = try #require(s["totals"] as? [String: Any])
        #expect(totals["layers"] as? Int == 2)
        #expect(totals["total_tokens"] as? Int == 8)
        #expect(totals["tokens_dropped"] as? Int == 1)
        #expect(totals["total_routings"] as? Int == 2)
        #expect(totals["routing_efficiency"] as? Double == 87.5)
        let spread = try #require(s["spread"] as? [String: [String: Any]])
        let efficiency = try #require(spread["routing_efficiency"])
        #expect(efficiency["min"] as? Double == 75)
        #expect(efficiency["max"] as? Double == 100)
        #expect(efficiency["mean"] as? Double == 87.5)
        let dead = try #require(spread["dead_experts"])
        #expect(dead["max"] as? Double == 2)
        #expect((s["layers"] as? [[String: Any]])?.count == 2)
    }

    @Test func emptySummaryHasNullSpread() throws {
        let s = get("/v1/summary").json
        #expect((s["totals"] as? [String: Any])?["layers"] as? Int == 0)
        let spread = try #require(s["spread"] as? [String: [String: Any]])
        #expect(spread["routing_efficiency"]?["min"] is NSNull)
    }

    @Test func deleteOneAndAll() {
        #expect(post("[\(decision(layer: "a", [1])),\(decision(layer: "b", [1]))]").status == 200)
        #expect(router.handle(.make("DELETE", "/v1/layers/a")).status == 200)
        #expect(get("/v1/layers/a").status == 404)
        #expect(get("/v1/layers/b").status == 200)
        #expect(router.handle(.make("DELETE", "/v1/layers")).status == 200)
        #expect(router.registry.layerCount == 0)
    }

    @Test func headAnswersLikeGet() {
        #expect(post(decision([1, 1])).status == 200)
        for path in ["/v1/layers", "/v1/layers/l0", "/v1/summary", "/metrics", "/healthz"] {
            let g = get(path)
            let h = router.handle(.make("HEAD", path))
            #expect(h.status == g.status, "\(path)")
            #expect(h.headers["content-type"] == g.headers["content-type"], "\(path)")
        }
    }

    @Test func healthAndReadiness() {
        #expect(get("/healthz").status == 200)
        #expect(get("/readyz").status == 503)
        router.isReady = true
        #expect(get("/readyz").status == 200)
        router.isReady = false
        #expect(get("/readyz").status == 503)
    }

    @Test func dashboardPage() {
        for path in ["/", "/dashboard"] {
            let r = get(path)
            #expect(r.status == 200)
            #expect(r.headers["content-type"] == "text/html; charset=utf-8")
            #expect(r.text.contains("<html"))
        }
    }

    @Test func metricsTextFormat() throws {
        #expect(post(decision(layer: "enc.0:moe", [3, 1], latencyMs: 3)).status == 200)
        let r = get("/metrics")
        #expect(r.status == 200)
        #expect(r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        let text = r.text
        for name in [
            "moe_routing_decisions_total", "moe_routing_tokens_total", "moe_routing_dropped_tokens_total",
            "moe_expert_tokens_total", "moe_routing_load_balance_loss", "moe_routing_router_z_loss",
            "moe_routing_auxiliary_loss", "moe_routing_latency_seconds", "moe_routing_efficiency_ratio",
            "moe_expert_utilization_ratio", "moe_routing_utilization_cv", "moe_routing_max_violation",
            "moe_routing_balancedness_ratio", "moe_routing_entropy_ratio", "moe_routing_dead_experts",
            "moe_routing_capacity_utilization_ratio", "moe_routing_nonfinite_losses_total",
            "moe_metricsd_http_requests_total", "moe_metricsd_rejected_decisions_total",
            "moe_metricsd_open_connections", "moe_metricsd_layers", "moe_metricsd_build_info",
            "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
            "process_max_fds", "process_start_time_seconds",
        ] {
            #expect(text.components(separatedBy: "# TYPE \(name) ").count == 2, "TYPE of \(name) once")
            #expect(text.components(separatedBy: "# HELP \(name) ").count == 2, "HELP of \(name) once")
        }
        #expect(text.contains("moe_routing_tokens_total{layer=\"enc.0:moe\"} 4\n"))
        #expect(text.contains("moe_expert_tokens_total{layer=\"enc.0:moe\",expert=\"0\"} 3\n"))
        #expect(text.contains("moe_routing_load_balance_loss_count{layer=\"enc.0:moe\"} 1\n"))
        #expect(text.contains("moe_routing_latency_seconds_bucket{layer=\"enc.0:moe\",le=\"0.0025\"} 0\n"))
        #expect(text.contains("moe_routing_latency_seconds_bucket{layer=\"enc.0:moe\",le=\"0.005\"} 1\n"))
        #expect(text.contains("moe_routing_latency_seconds_count{layer=\"enc.0:moe\"} 1\n"))
        #expect(text.contains("moe_routing_efficiency_ratio{layer=\"enc.0:moe\"} 1\n"))
        #expect(text.contains("moe_metricsd_http_requests_total{route=\"/v1/decisions\",code=\"200\"} 1\n"))
        #expect(text.contains("moe_metricsd_layers 1\n"))
        #expect(text.contains("moe_metricsd_build_info{version=\"test\"} 1\n"))
        #expect(!text.contains("# EOF"))
    }

    @Test func requestCountersUseRouteTemplates() {
        _ = post(decision(layer: nil, [1]), path: "/v1/layers/secret-name/decisions")
        _ = get("/v1/layers/other")
        _ = get("/random/path")
        _ = post("{")
        let text = get("/metrics").text
        #expect(
            text.contains("moe_metricsd_http_requests_total{route=\"/v1/layers/{layer}/decisions\",code=\"200\"} 1\n"))
        #expect(text.contains("moe_metricsd_http_requests_total{route=\"/v1/layers/{layer}\",code=\"404\"} 1\n"))
        #expect(text.contains("moe_metricsd_http_requests_total{route=\"other\",code=\"404\"} 1\n"))
        #expect(text.contains("moe_metricsd_rejected_decisions_total{reason=\"malformed\"} 1\n"))
        #expect(!text.contains("route=\"/v1/layers/other\""))
        #expect(!text.contains("/random/path"))
    }

    @Test func metricsOpenMetricsAndGzip() throws {
        #expect(post(decision([1, 1])).status == 200)
        let om = get("/metrics", headers: ["accept": "application/openmetrics-text; version=1.0.0"])
        #expect(om.headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8")
        #expect(om.text.hasSuffix("# EOF\n"))
        #expect(om.text.contains("# TYPE moe_routing_tokens counter\n"))
        #expect(om.text.contains("moe_routing_tokens_total{layer=\"l0\"} 2\n"))

        let gz = get("/metrics", headers: ["accept-encoding": "gzip, deflate"])
        #expect(gz.headers["content-encoding"] == "gzip")
        #expect(gz.headers["vary"]?.contains("Accept-Encoding") == true)
        let inflated = try #require(inflateWithZlib(gz.body))
        #expect(String(decoding: inflated, as: UTF8.self).contains("moe_routing_tokens_total{layer=\"l0\"} 2\n"))
        #expect(get("/metrics").headers["content-encoding"] == nil)
    }

    @Test func perExpertSeriesSwitchOff() {
        #expect(post(decision([1, 1])).status == 200)
        var s = router.currentSettings
        s.expertSeries = .none
        router.update(settings: s)
        let text = get("/metrics").text
        #expect(!text.contains("moe_expert_tokens_total"))
        #expect(!text.contains("moe_expert_utilization_ratio"))
        #expect(text.contains("moe_routing_tokens_total{layer=\"l0\"} 2\n"))
    }

    /// `top:N`: per layer, the N experts with the most tokens and the N with the fewest (ties to
    /// the lower index), in every per-expert family, labelled by which; the layer series stay.
    @Test func expertSeriesTopKeepsEachLayersExtremes() throws {
        let counts = [5, 0, 9, 9, 1, 3, 7, 0]
        #expect(post(decision(counts)).status == 200)
        #expect(post(decision(layer: "l1", [2, 1])).status == 200)
        var s = router.currentSettings
        s.expertSeries = try #require(ExpertSeries(parsing: "TOP:2"))
        router.update(settings: s)
        let text = get("/metrics").text
        let tokens = text.split(separator: "\n").filter { $0.hasPrefix("moe_expert_tokens_total{") }
        // By tokens, descending, ties to the lower index: 2, 3 most; of the rest the two fewest: 1, 7.
        // Computed here from `counts` independently of the renderer's order of lines.
        let order = counts.indices.sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }
        var expected = Set(
            order.prefix(2).map { "moe_expert_tokens_total{layer=\"l0\",expert=\"\($0)\",load=\"most\"} \(counts[$0])" }
        )
        expected.formUnion(
            order.suffix(2).map {
                "moe_expert_tokens_total{layer=\"l0\",expert=\"\($0)\",load=\"least\"} \(counts[$0])"
            })
        // A layer of two experts: each is in one set only.
        expected.insert("moe_expert_tokens_total{layer=\"l1\",expert=\"0\",load=\"most\"} 2")
        expected.insert("moe_expert_tokens_total{layer=\"l1\",expert=\"1\",load=\"most\"} 1")
        #expect(Set(tokens.map(String.init)) == expected)
        let utilization = text.split(separator: "\n").filter {
            $0.hasPrefix("moe_expert_utilization_ratio{layer=\"l0\"")
        }
        #expect(utilization.count == 4)
        #expect(utilization.allSatisfy { $0.contains(",load=\"most\"}") || $0.contains(",load=\"least\"}") })
        #expect(text.contains("moe_routing_tokens_total{layer=\"l0\"} 34\n"))
        for bad in ["top:0", "top:1025", "top", "some", "top:-1"] { #expect(ExpertSeries(parsing: bad) == nil) }
        #expect(ExpertSeries(parsing: "top:1024") == .extremes(1024))
    }
}

/// Inflates a gzip member with zlib directly (not through the code under test).
func inflateWithZlib(_ input: [UInt8]) -> [UInt8]? {
    var stream = z_stream()
    guard inflateInit2_(&stream, 31, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
    defer { inflateEnd(&stream) }
    var out = [UInt8](repeating: 0, count: 4 * 1024 * 1024)
    var input = input
    let rc = input.withUnsafeMutableBufferPointer { i in
        out.withUnsafeMutableBufferPointer { o in
            stream.next_in = i.baseAddress
            stream.avail_in = uInt(i.count)
            stream.next_out = o.baseAddress
            stream.avail_out = uInt(o.count)
            return inflate(&stream, Z_FINISH)
        }
    }
    guard rc == Z_STREAM_END else { return nil }
    return Array(out.prefix(Int(stream.total_out)))
}

/// The ingest path's shortcuts give the same answers as the general code they skip.
@Suite struct RouterFastPathTests {
    @Test(arguments: [
        "application/json", "APPLICATION/JSON", "Application/Json", "application/x-ndjson", "Application/X-NDJSON",
        "application/jsonx", "application/jso", "application/json; charset=utf-8", "application/json;charset=latin1",
        " application/json", "application/json ", "application/ndjson", "application/jsonl", "text/plain", "",
        "application/json\u{212A}", "applicatioN/x-ndjsoN; charset=\"UTF-8\"", "application/x-ndjsonx",
    ])
    func bodyFormatShortcutMatchesTheGeneralParse(contentType: String) {
        #expect(DaemonRouter.bodyFormat(contentType) == DaemonRouter.parsedBodyFormat(contentType), "\(contentType)")
        if let quick = DaemonRouter.commonBodyFormat(contentType) {
            #expect(quick == DaemonRouter.parsedBodyFormat(contentType), "\(contentType)")
        }
    }

    @Test func bodyFormatShortcutTakesTheCommonValues() {
        #expect(DaemonRouter.commonBodyFormat("application/json") == .json)
        #expect(DaemonRouter.commonBodyFormat("Application/JSON") == .json)
        #expect(DaemonRouter.commonBodyFormat("application/x-ndjson") == .ndjson)
        #expect(DaemonRouter.commonBodyFormat("application/json; charset=utf-8") == nil)
        #expect(DaemonRouter.commonBodyFormat("application/jsonl") == nil)
        #expect(DaemonRouter.bodyFormat(nil) == .json)
    }

    @Test(arguments: [0, 1, 64, 1_000_000, Int.max])
    func acceptedBodyIsTheJSONObject(count: Int) {
        #expect(DaemonRouter.acceptedBody(count) == Array("{\"accepted\":\(count)}\n".utf8))
        #expect(DaemonRouter.acceptedBody(count) == DaemonRouter.makeAcceptedBody(count))
        let parsed = try? JSONSerialization.jsonObject(with: Data(DaemonRouter.acceptedBody(count))) as? [String: Any]
        #expect((parsed?["accepted"] as? NSNumber)?.int64Value == Int64(count))
    }

    @Test func contentEncodingAbsentIdentityOrUnknown() {
        let router = DaemonRouter(
            configuration: DaemonConfiguration(), version: "test", logger: Logger(label: "test"),
            clock: { 1000 })
        func post(_ encodings: [String]) -> HTTPResponse {
            var headers: HTTPHeaders = ["content-type": "application/json"]
            for e in encodings { headers.add("content-encoding", e) }
            return router.handle(
                HTTPRequest(
                    method: "POST", target: "/v1/decisions", headers: headers,
                    body: Array(decision([1, 1]).utf8)))
        }
        #expect(post([]).status == 200)
        #expect(post(["identity"]).status == 200)
        #expect(post(["Identity", ""]).status == 200)
        let br = post(["br"])
        #expect(br.status == 415)
        #expect(br.headers["accept-encoding"] == "gzip, identity")
        #expect(post(["identity", "br"]).status == 415)
    }
}

/// Request counters: the lock-free table and the general path agree, and requests the HTTP layer
/// refused are counted under "other".
@Suite struct RequestCounterTests {
    @Test func everyRouteHasItsRow() {
        let table = DaemonRouter.routes
        #expect(DaemonCounters.routes == table.routes.map(\.template) + ["other"])
        #expect(DaemonCounters.routes[table.unmatchedRow] == "other")
        for (i, code) in DaemonCounters.codes.enumerated() {
            #expect(DaemonCounters.column(code) == i)
        }
        for code in [-1, 0, 99, 100, 201, 418, 599, 600, 1000] {
            #expect(DaemonCounters.column(code) == nil, "\(code)")
        }
    }

    @Test func tableAndGeneralPathGiveTheSameSnapshot() throws {
        let byName = DaemonCounters(), byRow = DaemonCounters()
        let calls: [(String, Int)] = [
            ("/v1/decisions", 200), ("/v1/decisions", 200), ("/v1/layers/{layer}", 404),
            ("other", 431), ("/metrics", 200), ("/v1/decisions", 418), ("/v1/decisions", 422),
        ]
        for (route, code) in calls {
            byName.recordRequest(route: route, code: code)
            byRow.recordRequest(routeIndex: try #require(DaemonCounters.routes.firstIndex(of: route)), code: code)
        }
        let a = byName.snapshot().requests.map { "\($0.0.route) \($0.0.code) \($0.1)" }
        let b = byRow.snapshot().requests.map { "\($0.0.route) \($0.0.code) \($0.1)" }
        #expect(a == b)
        #expect(
            a == [
                "/metrics 200 1", "/v1/decisions 200 2", "/v1/decisions 418 1", "/v1/decisions 422 1",
                "/v1/layers/{layer} 404 1", "other 431 1",
            ])
        // A label outside the templates still counts.
        byName.recordRequest(route: "custom", code: 200)
        #expect(byName.snapshot().requests.contains { $0.0.route == "custom" && $0.1 == 1 })
    }

    @Test func protocolRefusalsAreCountedUnderOther() {
        let router = DaemonRouter(
            configuration: DaemonConfiguration(), version: "test", logger: Logger(label: "test"),
            clock: { 1000 })
        for status in [408, 413, 431, 431, 400] { _ = router.refusal(status: status, message: "refused", headers: [:]) }
        let other = router.counters.snapshot().requests.filter { $0.0.route == "other" }.map { "\($0.0.code) \($0.1)" }
        #expect(other == ["400 1", "408 1", "413 1", "431 2"])
    }
}
