// swift-tools-version: 6.1
import PackageDescription

// A package of its own so that building or testing moe-metricsd never builds the benchmark
// framework and its dependencies. It depends on the daemon's package by path.
//
//   swift package --package-path Benchmarks benchmark      in-process microbenchmarks
//   scripts/bench                                        everything, against nginx, nghttpd, Pushgateway
//   swift build -c release --package-path Benchmarks --product BareServer
//                                                        the HTTP server alone, answering 204 (bare scenario)
//   swift build -c release --package-path Benchmarks --product PlannerBench
//                                                        the rebalance planner's timing (planner scenario)
let package = Package(
    name: "moe-metricsd-benchmarks",
    dependencies: [
        .package(name: "moe-metricsd", path: ".."),
        // The malloc interposer trait gives the allocation counts reported beside the times.
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The benchmark plugin discovers executable targets whose sources live under Benchmarks/.
        .executableTarget(
            name: "DecodeRecord",
            dependencies: [
                .product(name: "MoEStats", package: "moe-metricsd"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/DecodeRecord",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Our HTTP server with no daemon routes, answering 204 to everything: the peer of nginx's
        // `return 204` in the bare scenario. The benchmark plugin runs every executable target
        // whose directory sits directly in a directory named Benchmarks (this package's root is
        // one), hence the extra level: BareServer/Sources.
        .executableTarget(
            name: "BareServer",
            dependencies: [.product(name: "HTTPServer", package: "moe-metricsd")],
            path: "BareServer/Sources"
        ),
        // The rebalance planner on DeepSeek-V3's shape, timed and compared with EPLB's own plans.
        .executableTarget(
            name: "PlannerBench",
            dependencies: [.product(name: "MoEPlacement", package: "moe-metricsd")],
            path: "PlannerBench/Sources"
        ),
    ],
    swiftLanguageModes: [.v6]
)
