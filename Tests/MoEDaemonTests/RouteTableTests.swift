import Foundation
import HTTPCore
import Logging
import Testing

@testable import MoEDaemon

/// The route table is the one declaration of the API: everything else (matching, `Allow`, 404 and
/// 405, the request counter's rows, the README's API table) must agree with it.
@Suite struct RouteTableTests {
    static let table = DaemonRouter.routes
    /// Every method a client might send, the table's and others.
    static let methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "QUERY"]

    /// The paths a row answers: its template with a layer name in place of `{layer}`, and its aliases.
    static func paths(_ route: DaemonRouter.Route) -> [String] {
        ([route.template] + route.aliases).map { $0.replacingOccurrences(of: "{layer}", with: "l0") }
    }

    /// Answers other than 200 to the requests of the test below: no placement is set, and a
    /// placement or a plan needs a body of its own (a decision is not one).
    static let withoutBody = [
        "GET /v1/placement": 404, "HEAD /v1/placement": 404, "PUT /v1/placement": 400, "POST /v1/plan": 422,
    ]

    static func router() -> DaemonRouter {
        let router = DaemonRouter(
            configuration: DaemonConfiguration(), version: "test", logger: Logger(label: "test"),
            clock: { 1000 })
        router.isReady = true
        return router
    }

    @Test func everyRowAnswersItsMethodsAndRefusesTheOthersWithItsAllow() {
        let router = Self.router()
        for route in Self.table.routes {
            #expect(!route.methods.isEmpty, "\(route.template)")
            for path in Self.paths(route) {
                for method in Self.methods {
                    // The layer exists before every request, so a read or reset of it succeeds.
                    #expect(
                        router.handle(.make("POST", "/v1/decisions", body: decision(layer: "l0", [1, 1]))).status == 200
                    )
                    let body = method == "POST" ? decision(layer: "l0", [1, 1]) : ""
                    let r = router.handle(.make(method, path, body: body))
                    if route.allowedMethods.contains(method) {
                        let expected = Self.withoutBody["\(method) \(route.template)"] ?? 200
                        #expect(r.status == expected, "\(method) \(path): \(r.text)")
                    } else {
                        #expect(r.status == 405, "\(method) \(path)")
                        #expect(r.headers["allow"] == route.allow, "\(method) \(path)")
                        #expect(r.json["error"] as? String == "method \(method) not allowed on \(route.template)")
                    }
                }
            }
        }
    }

    /// With a token configured: liveness, readiness and unknown paths stay open, the dashboard
    /// is open for reads, writes always need the token, other reads need it with `auth_reads`.
    @Test(arguments: [false, true])
    func accessRulesWithAToken(authReads: Bool) {
        var c = DaemonConfiguration()
        c.authReads = authReads
        let router = DaemonRouter(configuration: c, version: "test", logger: Logger(label: "test"), clock: { 1000 })
        router.update(settings: c.routerSettings(token: AuthToken("t0k")))
        router.isReady = true
        let open: Set<String> = ["/healthz", "/readyz"]
        var unauthorized = 0
        for route in Self.table.routes {
            for path in Self.paths(route) {
                for method in Self.methods {
                    let isRead = method == "GET" || method == "HEAD"
                    let needsToken = !open.contains(route.template) && (!isRead || (authReads && route.template != "/"))
                    let r = router.handle(.make(method, path))
                    if needsToken {
                        #expect(r.status == 401, "\(method) \(path)")
                        #expect(r.headers["www-authenticate"] == "Bearer realm=\"moe-metricsd\"", "\(method) \(path)")
                        if route.ingests { unauthorized += 1 }
                    } else {
                        #expect(r.status != 401, "\(method) \(path)")
                    }
                }
            }
        }
        for method in Self.methods { #expect(router.handle(.make(method, "/no/such/path")).status == 404, "\(method)") }
        // A refused request on an ingest route also counts as a rejected decision.
        let rejected = router.counters.snapshot().rejected.first { $0.0 == "unauthorized" }?.1
        #expect(unauthorized == 2 * (authReads ? Self.methods.count : Self.methods.count - 2))
        #expect(rejected == UInt64(unauthorized))
    }

    @Test func allowListsHeadAfterGet() {
        for route in Self.table.routes {
            let names = route.methods.map(\.name)
            #expect(!names.contains("HEAD"), "HEAD is derived from GET, not declared: \(route.template)")
            var expected: [String] = []
            for name in names { expected += name == "GET" ? ["GET", "HEAD"] : [name] }
            #expect(route.allow == expected.joined(separator: ", "), "\(route.template)")
            #expect(route.allowedMethods == expected, "\(route.template)")
        }
    }

    @Test func counterHasOneRowPerRouteAndOther() {
        #expect(DaemonCounters.routes == Self.table.routes.map(\.template) + ["other"])
        #expect(Self.table.unmatchedRow == Self.table.routes.count)
        let router = Self.router()
        for route in Self.table.routes {
            for path in Self.paths(route) { _ = router.handle(.make("PATCH", path)) }
        }
        _ = router.handle(.make("GET", "/no/such/path"))
        let labels = Set(router.counters.snapshot().requests.map(\.0.route))
        #expect(labels == Set(DaemonCounters.routes))
    }

    @Test func pathsMatchTheirTemplates() {
        let table = Self.table
        for (row, route) in table.routes.enumerated() {
            for path in Self.paths(route) {
                let (matched, layer) = table.match(path)
                #expect(matched == row, "\(path)")
                #expect(layer == (route.template.contains("{layer}") ? "l0" : nil), "\(path)")
            }
        }
        let decisions = table.match("/v1/layers/enc.3%3Amoe/decisions")
        #expect(table.routes[decisions.row].template == "/v1/layers/{layer}/decisions")
        #expect(decisions.layer == "enc.3:moe")
        // A decoded segment may hold a slash or a space; the handler decides whether it is a name.
        #expect(table.match("/v1/layers/a%2Fb").layer == "a/b")
        #expect(table.match("/v1/layers/a+b").layer == "a+b")
        #expect(table.match("/v1/layers/decisions").layer == "decisions")
    }

    @Test(arguments: [
        "/nope", "/v1", "/v1/", "/v1/layers//decisions", "/v1/layers/a/b", "/v1/layers/a/decisions/",
        "/v1/layers/a/decisions/x", "/v1/layers/%zz", "/v1/layers/%zz/decisions", "//v1/layers/a", "/v1/decisions/",
        "/v1/layers/", "/dashboard/", "/V1/layers", "/metrics/", "/v1/%6Cayers/a", "/v1/layers/{layer}/x",
    ])
    func otherPathsMatchNothing(path: String) {
        #expect(Self.table.match(path).row == Self.table.unmatchedRow)
        #expect(Self.router().handle(.make("GET", path)).status == 404)
    }

    /// The README's "HTTP API" table lists exactly the (method, path) pairs the table declares,
    /// HEAD aside (it goes wherever GET does, as the README says below the table).
    @Test func readmeAPITableListsEveryRoute() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let lines = readme.components(separatedBy: "\n")
        let heading = try #require(lines.firstIndex(of: "## HTTP API"), "README has no \"## HTTP API\" section")
        var documented = Set<String>()
        var inTable = false
        for line in lines[(heading + 1)...] {
            if line.hasPrefix("#") { break }
            guard line.hasPrefix("|") else {
                if inTable { break } else { continue }
            }
            inTable = true
            let cells = line.split(separator: "|", omittingEmptySubsequences: false)
            guard cells.count > 1 else { continue }
            // Code spans are the odd pieces between backticks: `GET /`, `GET /dashboard`.
            let spans = cells[1].split(separator: "`", omittingEmptySubsequences: false).enumerated()
                .filter { $0.offset % 2 == 1 }.map { String($0.element) }
            for span in spans {
                let words = span.split(separator: " ")
                if words.count == 2, words[0].allSatisfy(\.isUppercase), words[1].hasPrefix("/") {
                    documented.insert(span)
                }
            }
        }
        let declared = Set(
            Self.table.routes.flatMap { route in
                route.methods.flatMap { m in ([route.template] + route.aliases).map { "\(m.name) \($0)" } }
            })
        #expect(!documented.isEmpty)
        #expect(
            documented.subtracting(declared).isEmpty,
            "in the README, not in the table: \(documented.subtracting(declared).sorted())")
        #expect(
            declared.subtracting(documented).isEmpty,
            "in the table, not in the README: \(declared.subtracting(documented).sorted())")
    }
}
