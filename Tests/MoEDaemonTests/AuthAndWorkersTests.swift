import Foundation
import HTTPCore
import Logging
import MoEStats
import Synchronization
import Testing

@testable import MoEDaemon

@Suite struct AuthTokenTests {
    @Test func trimsAndCompares() throws {
        let token = try #require(AuthToken("  s3cret\n"))
        #expect(token.accepts(authorization: "Bearer s3cret"))
        #expect(token.accepts(authorization: "bearer  s3cret "))
        #expect(!token.accepts(authorization: nil))
        #expect(!token.accepts(authorization: "Bearer s3cre"))
        #expect(!token.accepts(authorization: "Bearer s3cret2"))
        #expect(!token.accepts(authorization: "Basic s3cret"))
        #expect(!token.accepts(authorization: "s3cret"))
        #expect(AuthToken(" \n") == nil)
    }

    @Test func constantTimeEqualityIsEquality() {
        #expect(AuthToken.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!AuthToken.constantTimeEqual([1, 2, 3], [1, 2]))
        #expect(!AuthToken.constantTimeEqual([1, 2], [1, 2, 0]))
        #expect(!AuthToken.constantTimeEqual([9, 2, 3], [1, 2, 3]))
        #expect(AuthToken.constantTimeEqual([], []))
    }

    @Test func environmentBeatsFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("token-\(UUID().uuidString)").path
        try Data("from-file\n".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var c = DaemonConfiguration()
        c.authTokenFile = path
        #expect(try AuthToken.resolve(c, environment: [:]) == AuthToken("from-file"))
        #expect(try AuthToken.resolve(c, environment: ["MOE_METRICSD_AUTH_TOKEN": "env"]) == AuthToken("env"))
        #expect(try AuthToken.resolve(DaemonConfiguration(), environment: [:]) == nil)
        #expect(throws: ConfigurationError.self) {
            try AuthToken.resolve(c, environment: ["MOE_METRICSD_AUTH_TOKEN": " "])
        }
        c.authTokenFile = path + ".missing"
        #expect(throws: ConfigurationError.self) { try AuthToken.resolve(c, environment: [:]) }
    }
}

/// A clock tests move by hand.
final class TestClock: Sendable {
    private let value: Mutex<Double>
    init(_ start: Double) { value = Mutex(start) }
    var now: Double {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}

@Suite struct AuthAndWorkersRouterTests {
    func makeRouter(
        _ configure: (inout DaemonConfiguration) -> Void = { _ in }, token: String? = nil,
        clock: TestClock = TestClock(1000)
    ) -> DaemonRouter {
        var c = DaemonConfiguration()
        configure(&c)
        let router = DaemonRouter(
            configuration: c, version: "test", logger: Logger(label: "test"), clock: { clock.now })
        router.update(settings: c.routerSettings(token: token.flatMap(AuthToken.init)))
        return router
    }

    func post(_ router: DaemonRouter, _ body: String, auth: String? = nil) -> HTTPResponse {
        var headers: HTTPHeaders = ["content-type": "application/json"]
        if let auth { headers.add("authorization", auth) }
        return router.handle(
            HTTPRequest(method: "POST", target: "/v1/decisions", headers: headers, body: Array(body.utf8)))
    }

    func request(_ router: DaemonRouter, _ method: String, _ target: String, auth: String? = nil) -> HTTPResponse {
        var headers = HTTPHeaders()
        if let auth { headers.add("authorization", auth) }
        var response = router.handle(HTTPRequest(method: method, target: target, headers: headers))
        response.collectBody()
        return response
    }

    @Test func writesNeedTheToken() {
        let router = makeRouter(token: "t0k")
        let refused = post(router, decision([1, 1]))
        #expect(refused.status == 401)
        #expect(refused.headers["www-authenticate"] == "Bearer realm=\"moe-metricsd\"")
        let wrong = post(router, decision([1, 1]), auth: "Bearer nope")
        #expect(wrong.status == 401)
        #expect(wrong.headers["www-authenticate"]?.contains("invalid_token") == true)
        #expect(router.registry.layerCount == 0)
        #expect(post(router, decision([1, 1]), auth: "Bearer t0k").status == 200)
        #expect(request(router, "DELETE", "/v1/layers/l0").status == 401)
        #expect(request(router, "DELETE", "/v1/layers").status == 401)
        #expect(router.registry.layerCount == 1)
        // Reads stay open by default.
        #expect(request(router, "GET", "/v1/layers/l0").status == 200)
        #expect(request(router, "GET", "/metrics").status == 200)
        #expect(request(router, "DELETE", "/v1/layers/l0", auth: "Bearer t0k").status == 200)
        #expect(
            request(router, "GET", "/metrics").text.contains(
                "moe_metricsd_rejected_decisions_total{reason=\"unauthorized\"} 2\n"))
    }

    @Test func readsCanBeProtected() {
        let router = makeRouter({ $0.authReads = true }, token: "t0k")
        for path in ["/v1/layers", "/v1/summary", "/metrics", "/v1/layers/x"] {
            #expect(request(router, "GET", path).status == 401, "\(path)")
        }
        #expect(request(router, "GET", "/v1/summary", auth: "Bearer t0k").status == 200)
        #expect(request(router, "GET", "/healthz").status == 200)
        #expect(request(router, "GET", "/").status == 200)
    }

    @Test func noTokenNoAuthentication() {
        let router = makeRouter()
        #expect(post(router, decision([1, 1])).status == 200)
    }

    @Test func workersGoStaleAfterTheTTL() {
        let clock = TestClock(1000)
        let router = makeRouter({ $0.workerTTLSeconds = 300 }, clock: clock)
        let w1 = #"{"layer":"l0","worker":"w1","expert_capacities":[1,1],"total_tokens":2}"#
        let w2 = #"{"layer":"l0","worker":7,"expert_capacities":[1,1],"total_tokens":2}"#
        #expect(post(router, "[\(w1),\(w2)]").status == 200)
        var text = request(router, "GET", "/metrics").text
        #expect(text.contains("moe_routing_workers{layer=\"l0\",state=\"active\"} 2\n"))
        #expect(text.contains("moe_routing_workers{layer=\"l0\",state=\"stale\"} 0\n"))
        clock.now = 1301
        #expect(post(router, w1).status == 200)
        text = request(router, "GET", "/metrics").text
        #expect(text.contains("moe_routing_workers{layer=\"l0\",state=\"active\"} 1\n"))
        #expect(text.contains("moe_routing_workers{layer=\"l0\",state=\"stale\"} 1\n"))
        let summary = request(router, "GET", "/v1/layers/l0").json
        let workers = summary["workers"] as? [String: Any]
        #expect(workers?["stale"] as? Int == 1)
        #expect(workers?["active"] as? Int == 1)
    }

    @Test func idleLayersLeaveMetricsAfterTheLayerTTL() {
        let clock = TestClock(1000)
        let router = makeRouter({ $0.layerTTLSeconds = 60 }, clock: clock)
        #expect(post(router, #"{"layer":"old","expert_capacities":[1],"total_tokens":1}"#).status == 200)
        clock.now = 1100
        #expect(post(router, #"{"layer":"new","expert_capacities":[1],"total_tokens":1}"#).status == 200)
        let text = request(router, "GET", "/metrics").text
        #expect(text.contains("moe_routing_tokens_total{layer=\"new\"} 1\n"))
        #expect(!text.contains("layer=\"old\""))
        #expect(request(router, "GET", "/v1/layers/old").status == 200)  // still in the JSON API
    }
}

@Suite struct StateFileTests {
    @Test func atomicWriteReadAndSetAside() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("state-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = StateFile(path: dir.appendingPathComponent("state.bin").path)
        #expect(try file.read() == nil)
        try file.write([1, 2, 3])
        #expect(try file.read() == [1, 2, 3])
        try file.write([4])
        #expect(try file.read() == [4])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["state.bin"])  // no temporary left
        let aside = try file.setAside(now: 42)
        #expect(aside.hasSuffix("state.bin.corrupt-42"))
        #expect(try file.read() == nil)
        #expect(FileManager.default.contents(atPath: aside) == Data([4]))
    }

    @Test func unwritableDirectoryIsAnError() {
        let file = StateFile(path: "/nonexistent-dir/state.bin")
        #expect(throws: StateFile.IOError.self) { try file.write([1]) }
    }

    @Test func registryRoundTripThroughTheFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("state-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = StateFile(path: dir.appendingPathComponent("state.bin").path)
        let a = DaemonRouter(
            configuration: DaemonConfiguration(), version: "t", logger: Logger(label: "t"), clock: { 5 })
        #expect(a.handle(.make("POST", "/v1/decisions", body: decision([3, 1]))).status == 200)
        try file.write(a.registry.exportState())
        let b = DaemonRouter(
            configuration: DaemonConfiguration(), version: "t", logger: Logger(label: "t"), clock: { 5 })
        #expect(Daemon.restore(from: file, into: b, discardCorrupt: false, logger: Logger(label: "t")))
        #expect(b.handle(.make("GET", "/v1/layers/l0")).text == a.handle(.make("GET", "/v1/layers/l0")).text)
        try file.write([0xDE, 0xAD])
        let c = DaemonRouter(configuration: DaemonConfiguration(), version: "t", logger: Logger(label: "t"))
        #expect(!Daemon.restore(from: file, into: c, discardCorrupt: false, logger: Logger(label: "t")))
        #expect(try file.read() == [0xDE, 0xAD])  // left untouched
        #expect(Daemon.restore(from: file, into: c, discardCorrupt: true, logger: Logger(label: "t")))
        #expect(try file.read() == nil)
        #expect(c.registry.layerCount == 0)
    }

    @Test func thePlacementTravelsInTheStateFileAndABadOneRefusesTheWholeFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("state-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = StateFile(path: dir.appendingPathComponent("state.bin").path)
        let a = DaemonRouter(
            configuration: DaemonConfiguration(), version: "t", logger: Logger(label: "t"), clock: { 5 })
        #expect(a.handle(.make("POST", "/v1/decisions", body: decision([3, 1, 2, 2]))).status == 200)
        #expect(
            a.handle(.make("PUT", "/v1/placement", body: #"{"ranks":2,"physical_to_logical":[0,1,2,3,0,0]}"#)).status
                == 200)
        try file.write(a.registry.exportState(placement: a.savedPlacement))
        let b = DaemonRouter(
            configuration: DaemonConfiguration(), version: "t", logger: Logger(label: "t"), clock: { 5 })
        #expect(Daemon.restore(from: file, into: b, discardCorrupt: false, logger: Logger(label: "t")))
        #expect(b.placement == a.placement)
        #expect(b.handle(.make("GET", "/v1/layers/l0")).text == a.handle(.make("GET", "/v1/layers/l0")).text)
        // The contiguous default is saved as `"physical_to_logical": null` and read back as it.
        #expect(a.handle(.make("PUT", "/v1/placement", body: #"{"ranks":2,"nodes":2}"#)).status == 200)
        try file.write(a.registry.exportState(placement: a.savedPlacement))
        #expect(
            a.savedPlacement.map { String(decoding: $0, as: UTF8.self) }?.contains(#""physical_to_logical":null"#)
                == true)
        let contiguous = DaemonRouter(
            configuration: DaemonConfiguration(), version: "t", logger: Logger(label: "t"), clock: { 5 })
        #expect(Daemon.restore(from: file, into: contiguous, discardCorrupt: false, logger: Logger(label: "t")))
        #expect(contiguous.placement == a.placement && contiguous.placement?.nodes == 2)
        // What GET answers, PUT takes.
        let got = a.handle(.make("GET", "/v1/placement")).text
        #expect(contiguous.handle(.make("PUT", "/v1/placement", body: got)).status == 200)

        // A placement that does not decode: nothing is restored, and the file is left as it is.
        let bad = a.registry.exportState(placement: Array(#"{"ranks":0}"#.utf8))
        try file.write(bad)
        let c = DaemonRouter(configuration: DaemonConfiguration(), version: "t", logger: Logger(label: "t"))
        #expect(!Daemon.restore(from: file, into: c, discardCorrupt: false, logger: Logger(label: "t")))
        #expect(c.registry.layerCount == 0 && c.placement == nil)
        #expect(try file.read() == bad)
    }
}
