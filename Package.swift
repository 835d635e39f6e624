// swift-tools-version: 6.1
import PackageDescription

// Modules by layer, dependencies pointing one way (see README "Architecture"):
//   JSONOutput                    a small JSON writer (non-finite numbers become null)
//   MoEStats -> JSONOutput        statistics domain: decisions, validation, per-layer engines (pure)
//   HTTPCore -> JSONOutput        request/response values and the handler interface (pure)
//   HTTP1 -> HTTPCore             incremental HTTP/1.1 parser and response encoder (pure, bytes only)
//   HTTP2 -> HTTPCore, CNGHTTP2   nghttp2 session bridge (bytes only, no sockets)
//   Transport -> CTransport       sockets, listener, epoll event loops (no HTTP)
//   HTTPServer -> Transport, HTTP1, HTTP2
//   MoEDaemon -> MoEStats, HTTPServer, CZlib, Logging, Configuration   routes, /metrics, config
//   moe-metricsd -> MoEDaemon, ArgumentParser                   the executable
let package = Package(
    name: "moe-metricsd",
    products: [
        .executable(name: "moe-metricsd", targets: ["moe-metricsd"]),
        .library(name: "MoEStats", targets: ["MoEStats"]),
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
        .target(name: "HTTPCore", dependencies: ["JSONOutput"]),
        .target(name: "HTTP1", dependencies: ["HTTPCore"]),
        .target(name: "HTTP2", dependencies: ["HTTPCore", "CNGHTTP2"]),
        .target(name: "Transport", dependencies: ["CTransport"]),
        .target(name: "HTTPServer", dependencies: ["HTTPCore", "HTTP1", "HTTP2", "Transport"]),
        .target(
            name: "MoEDaemon",
            dependencies: [
                "MoEStats", "HTTPCore", "HTTPServer", "CZlib",
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
        .testTarget(name: "MoEStatsTests", dependencies: ["MoEStats"]),
        .testTarget(name: "HTTP1Tests", dependencies: ["HTTP1", "HTTPCore"]),
        .testTarget(name: "HTTP2Tests", dependencies: ["HTTP2", "HTTPCore", "CNGHTTP2", "HTTPServer"]),
        .testTarget(name: "HTTPServerTests", dependencies: ["HTTPServer", "HTTPCore", "Transport"]),
        .testTarget(name: "MoEDaemonTests", dependencies: ["MoEDaemon", "MoEStats", "HTTPCore", "CZlib"]),
        .testTarget(name: "EndToEndTests", dependencies: ["moe-metricsd", "CZlib"]),
    ],
    swiftLanguageModes: [.v6]
)
