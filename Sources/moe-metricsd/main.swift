import ArgumentParser
import Configuration
import Foundation
import Logging
import MoEDaemon

/// The command line. Each setting of the config file is also a flag here; flags win over
/// `MOE_METRICSD_*` environment variables, which win over the file, which wins over defaults.
/// Options are optional without defaults so that an absent flag lets the lower sources speak.
struct MoEMetricsd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe-metricsd",
        abstract: "Collects MoE routing decisions over HTTP; serves JSON summaries and Prometheus /metrics.",
        discussion: """
            Every setting can come from a flag, an environment variable (MOE_METRICSD_ followed by the \
            setting's key in capitals, dots as underscores, e.g. MOE_METRICSD_HTTP_MAX_BODY_BYTES) or \
            the JSON config file, in that order of precedence. Invalid settings exit with status 2.
            """,
        version: BuildInfo.version)

    @Option(name: .long, help: "JSON config file.")
    var config: String?

    @Option(
        name: .long, help: "Address to listen on, HOST:PORT or [IPv6]:PORT; repeat for several. Default 127.0.0.1:9477."
    )
    var listen: [String] = []

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical. Default info.")
    var logLevel: String?

    @Flag(name: .long, help: "Validate the configuration, print the effective settings and exit (0 valid, 2 invalid).")
    var checkConfig = false

    @Option(name: .long, help: "Longest request line in bytes (414 past it).") var httpMaxRequestLineBytes: String?
    @Option(name: .long, help: "Largest header section in bytes (431 past it).") var httpMaxHeaderBytes: String?
    @Option(name: .long, help: "Most header fields per request (431 past it).") var httpMaxHeaderCount: String?
    @Option(name: .long, help: "Largest request body in bytes (413 past it).") var httpMaxBodyBytes: String?
    @Option(name: .long, help: "Seconds to receive a request's headers (408 past it).") var httpHeaderTimeoutSeconds:
        String?
    @Option(name: .long, help: "Longest pause between body bytes in seconds (408 past it).") var httpBodyTimeoutSeconds:
        String?
    @Option(name: .long, help: "Longest time to receive a whole request body in seconds (408 past it).")
    var httpBodyDeadlineSeconds: String?
    @Option(name: .long, help: "Seconds an idle keep-alive connection is kept.") var httpIdleTimeoutSeconds: String?
    @Option(name: .long, help: "Most concurrent connections (503 past it).") var httpMaxConnections: String?
    @Option(name: .long, help: "Most concurrent HTTP/2 streams per connection.") var httpMaxConcurrentStreams: String?
    @Option(name: .long, help: "Bytes one HTTP/2 connection may hold across its streams; past it, 503.")
    var httpMaxConnectionBufferBytes: String?
    @Option(name: .long, help: "Bytes all HTTP/2 connections together may hold; past it, 503.")
    var httpMaxBufferedBytes: String?
    @Option(name: .long, help: "Longest time a started response may take to leave.")
    var httpResponseTimeoutSeconds: String?
    @Option(name: .long, help: "Bytes a streamed response is generated in at a time.")
    var httpResponseChunkBytes: String?
    @Option(name: .long, help: "Event-loop threads; 0 = one per core.") var httpEventLoops: String?
    @Option(name: .long, help: "Seconds to finish requests in flight on SIGTERM/SIGINT.")
    var httpShutdownDeadlineSeconds: String?
    @Option(name: .long, help: "Most layers kept (507 past it).") var statsMaxLayers: String?
    @Option(name: .long, help: "Most experts per layer (507 past it).") var statsMaxExperts: String?
    @Option(name: .long, help: "Default window in decisions for trend and dead experts.") var statsDefaultWindow:
        String?
    @Option(
        name: .long, parsing: .upToNextOption,
        help: "Latency histogram bucket bounds in seconds, increasing; several values, repeated flags or commas.")
    var statsLatencyBucketsSeconds: [String] = []
    @Option(name: .long, help: "Top-k assumed when a decision sends neither expert_capacity nor top_k; 0 = unknown.")
    var statsDefaultTopK: String?
    @Option(name: .long, help: "Capacity factor assumed when a decision sends none; 0 = unknown.")
    var statsDefaultCapacityFactor: String?
    @Option(name: .long, help: "Most decisions per request (422 past it).") var decoderMaxDecisions: String?
    @Option(name: .long, help: "Most per-token assignments per decision (422 past it).") var decoderMaxAssignments:
        String?
    @Option(name: .long, help: "Deepest JSON nesting per request (400 past it).") var decoderMaxDepth: String?
    @Option(name: .long, help: "Per-expert series on /metrics: all, none or top:N.") var metricsExpertSeries: String?
    @Option(name: .long, help: "Most workers remembered per layer.") var statsMaxWorkersPerLayer: String?
    @Option(name: .long, help: "Steps (or time buckets) kept per layer, 1 to 100000.") var statsHistorySteps: String?
    @Option(name: .long, help: "Seconds per time bucket for layers without steps, 1 to 86400.") var statsBucketSeconds:
        String?
    @Option(name: .long, help: "Workers that make a step complete; 0 = the active workers.") var statsExpectedWorkers:
        String?
    @Option(name: .long, help: "Seconds after which a silent worker is stale; 0 = never.") var workerTtl: String?
    @Option(name: .long, help: "Seconds after which an idle layer leaves /metrics; 0 = never.") var layerTtl: String?
    @Option(name: .long, help: "State file, restored on start and saved periodically and on SIGTERM.") var stateFile:
        String?
    @Option(name: .long, help: "Seconds between two saves of the state file.") var snapshotInterval: String?
    @Option(name: .long, help: "JSON file with the expert placement set at start when the state file holds none.")
    var placementFile: String?
    @Option(name: .long, help: "Most POST /v1/plan computations at once, 1 to 64; more get 503.")
    var placementMaxConcurrentPlans: String?
    @Option(name: .long, help: "File holding the bearer token writes require (or set MOE_METRICSD_AUTH_TOKEN).")
    var authTokenFile: String?
    @Option(name: .long, help: "Require the token for reads too: true or false.") var authReads: String?

    @Flag(name: .long, help: "If the state file cannot be restored, move it aside (FILE.corrupt-TIME) and start empty.")
    var discardCorruptState = false

    /// The flags given, by setting key, as typed: `DaemonConfiguration.load` reads them by the
    /// environment variables' rules, so each value is checked (and refused with exit status 2)
    /// exactly as the same value in `MOE_METRICSD_*` would be.
    func flagArguments() -> [String: [String]] {
        var f: [String: [String]] = [:]
        if !listen.isEmpty { f["listen"] = listen }
        if !statsLatencyBucketsSeconds.isEmpty { f["stats.latency_buckets_seconds"] = statsLatencyBucketsSeconds }
        let single: [(String, String?)] = [
            ("log_level", logLevel),
            ("http.max_request_line_bytes", httpMaxRequestLineBytes), ("http.max_header_bytes", httpMaxHeaderBytes),
            ("http.max_header_count", httpMaxHeaderCount), ("http.max_body_bytes", httpMaxBodyBytes),
            ("http.header_timeout_seconds", httpHeaderTimeoutSeconds),
            ("http.body_timeout_seconds", httpBodyTimeoutSeconds),
            ("http.body_deadline_seconds", httpBodyDeadlineSeconds),
            ("http.idle_timeout_seconds", httpIdleTimeoutSeconds), ("http.max_connections", httpMaxConnections),
            ("http.max_concurrent_streams", httpMaxConcurrentStreams),
            ("http.max_connection_buffer_bytes", httpMaxConnectionBufferBytes),
            ("http.max_buffered_bytes", httpMaxBufferedBytes),
            ("http.response_timeout_seconds", httpResponseTimeoutSeconds),
            ("http.response_chunk_bytes", httpResponseChunkBytes), ("http.event_loops", httpEventLoops),
            ("http.shutdown_deadline_seconds", httpShutdownDeadlineSeconds),
            ("stats.max_layers", statsMaxLayers), ("stats.max_experts", statsMaxExperts),
            ("stats.default_window", statsDefaultWindow), ("stats.default_top_k", statsDefaultTopK),
            ("stats.default_capacity_factor", statsDefaultCapacityFactor),
            ("stats.max_workers_per_layer", statsMaxWorkersPerLayer),
            ("stats.history_steps", statsHistorySteps), ("stats.bucket_seconds", statsBucketSeconds),
            ("stats.expected_workers", statsExpectedWorkers),
            ("decoder.max_decisions", decoderMaxDecisions), ("decoder.max_assignments", decoderMaxAssignments),
            ("decoder.max_depth", decoderMaxDepth), ("metrics.expert_series", metricsExpertSeries),
            ("worker_ttl", workerTtl), ("layer_ttl", layerTtl), ("state_file", stateFile),
            ("snapshot_interval", snapshotInterval), ("placement.file", placementFile),
            ("placement.max_concurrent_plans", placementMaxConcurrentPlans),
            ("auth_token_file", authTokenFile), ("auth_reads", authReads),
        ]
        for (key, value) in single { if let value { f[key] = [value] } }
        return f
    }

    func run() throws {
        let sources = ConfigurationSources(
            filePath: config, environment: ProcessInfo.processInfo.environment,
            flagArguments: flagArguments())
        let configuration: DaemonConfiguration
        do {
            configuration = try DaemonConfiguration.load(sources)
        } catch {
            FileHandle.standardError.write(Data("moe-metricsd: invalid configuration: \(error.message)\n".utf8))
            throw ExitCode(2)
        }
        do {
            _ = try AuthToken.resolve(configuration, environment: ProcessInfo.processInfo.environment)
            try Daemon.checkPlacementFile(configuration)
        } catch {
            FileHandle.standardError.write(Data("moe-metricsd: invalid configuration: \(error.message)\n".utf8))
            throw ExitCode(2)
        }
        if checkConfig {
            for name in DaemonSettings.unknownEnvironmentVariables(in: ProcessInfo.processInfo.environment) {
                FileHandle.standardError.write(
                    Data(
                        "moe-metricsd: warning: ignoring environment variable \(name): no setting has that name\n".utf8)
                )
            }
            var out = "configuration OK\n"
            for s in DaemonSettings.all { out += "\(s.key) = \(s.describe(configuration))\n" }
            FileHandle.standardOutput.write(Data(out.utf8))
            return
        }
        let level = LineLogHandler.LevelControl(configuration.logLevel)
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: level) }
        let logger = Logger(label: "moe-metricsd")
        logger.info("moe-metricsd \(BuildInfo.version) starting", metadata: config.map { ["config": "\($0)"] } ?? [:])
        for name in DaemonSettings.unknownEnvironmentVariables(in: ProcessInfo.processInfo.environment) {
            logger.warning("ignoring environment variable \(name): no setting has that name")
        }
        let status = Daemon.run(
            configuration: configuration, sources: sources, discardCorruptState: discardCorruptState,
            logLevel: level, logger: logger)
        if status != 0 { throw ExitCode(status) }
    }
}

MoEMetricsd.main()
