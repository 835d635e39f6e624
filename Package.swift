// swift-tools-version: 6.1
import PackageDescription

// Modules by layer, dependencies pointing one way (see docs/architecture.md); every module a
// target (tests and the executable included) imports is declared, so the build passes
// `--explicit-target-dependency-import-check error`:
//   JSONOutput                    a small JSON writer (non-finite numbers become null)
//   MoEStats -> JSONOutput        statistics domain: decisions, validation, per-layer engines (pure)
//   MoEPlacement                  expert placement: ranks, replicas, rank loads, the rebalance
//                                 planner (pure, no dependency)
//   SessionCore                   the connection-session contract between the transport and the
//                                 protocols, the monotonic clock and timeout clamp, the debug
//                                 thread-confinement check; a module of its own below both sides,
//                                 so the HTTP modules stay bytes only (no sockets) and the
//                                 transport knows no HTTP, yet both use one contract
//   HTTPCore                      request/response values and the handler interface (pure, no
//                                 error format or media type of its own: the handler supplies them)
//   HTTP1 -> HTTPCore, SessionCore             incremental HTTP/1.1 parser, encoder, session (bytes only)
//   HTTP2 -> HTTPCore, SessionCore, CNGHTTP2   nghttp2 session bridge (bytes only, no sockets)
//   Transport -> SessionCore, CTransport       sockets, listener, epoll event loops (no HTTP)
//   HTTPServer -> Transport, HTTP1, HTTP2, HTTPCore, SessionCore
//   MoEDaemon -> MoEStats, MoEPlacement, JSONOutput, HTTPServer, HTTPCore, SessionCore, CZlib, Logging,
//                Configuration         routes, JSON error body, /metrics, config
//   moe-metricsd -> MoEDaemon, ArgumentParser, Logging, Configuration   the executable
let package = Package(
    name: "moe-metricsd",
    products: [
        .executable(name: "moe-metricsd", targets: ["moe-metricsd"]),
        .library(name: "MoEStats", targets: ["MoEStats"]),
        .library(name: "MoEPlacement", targets: ["MoEPlacement"]),
        .library(name: "HTTPServer", targets: ["HTTPServer", "HTTPCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CNGHTTP2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(name: "CTransport"),
        .target(name: "JSONOutput"),
        .target(name: "MoEStats", dependencies: ["JSONOutput"]),
        .target(name: "MoEPlacement"),
        .target(name: "SessionCore"),
        .target(name: "HTTPCore"),
        .target(name: "HTTP1", dependencies: ["HTTPCore", "SessionCore"]),
        .target(name: "HTTP2", dependencies: ["HTTPCore", "SessionCore", "CNGHTTP2"]),
        .target(name: "Transport", dependencies: ["SessionCore", "CTransport"]),
        .target(
            name: "HTTPServer", dependencies: ["HTTPCore", "HTTP1", "HTTP2", "SessionCore", "Transport"]),
        .target(
            name: "MoEDaemon",
            dependencies: [
                "MoEStats", "MoEPlacement", "JSONOutput", "HTTPCore", "HTTPServer", "SessionCore", "CZlib",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
            ],
            // The dashboard page, compiled into the binary as bytes (PackageResources.dashboard_html).
            resources: [.embedInCode("Resources/dashboard.html")]
        ),
        .executableTarget(
            name: "moe-metricsd",
            dependencies: [
                "MoEDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
            ]
        ),
        // What the test targets share: the `.needs(tool)` trait for those that drive curl, nghttp,
        // promtool, ..., the raw socket client and a seeded generator.
        .target(name: "TestTools", dependencies: ["HTTPCore"], path: "Tests/TestTools"),
        .testTarget(name: "MoEStatsTests", dependencies: ["MoEStats", "JSONOutput", "TestTools"]),
        .testTarget(name: "MoEPlacementTests", dependencies: ["MoEPlacement", "TestTools"]),
        .testTarget(name: "HTTP1Tests", dependencies: ["HTTP1", "HTTPCore", "SessionCore", "TestTools"]),
        .testTarget(
            name: "HTTP2Tests",
            dependencies: ["HTTP2", "HTTPCore", "SessionCore", "CNGHTTP2", "HTTPServer", "TestTools"]),
        .testTarget(
            name: "HTTPServerTests", dependencies: ["HTTPServer", "HTTPCore", "SessionCore", "Transport", "TestTools"]),
        .testTarget(
            name: "MoEDaemonTests",
            dependencies: [
                "MoEDaemon", "MoEStats", "HTTPCore", "HTTP1", "HTTPServer", "CZlib", "TestTools",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
            ]
        ),
        .testTarget(name: "EndToEndTests", dependencies: ["moe-metricsd", "CZlib", "TestTools"]),
    ],
    swiftLanguageModes: [.v6]
)
