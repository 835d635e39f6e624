import HTTPCore
import Logging
import MoEStats

/// Every setting of the daemon, with its safe default.
///
/// One value holds them all so that a configuration is validated once, as a whole, before
/// anything starts (and, later, before a reload replaces the running one). Each field is a
/// config-file key, an environment variable and a flag; `DaemonSettings.all` is that table.
public struct DaemonConfiguration: Sendable, Equatable {
    /// Addresses to listen on, `HOST:PORT` (`[::1]:PORT` for IPv6). Loopback by default: a
    /// metrics daemon that accepts writes must not face the network unless asked to.
    public var listen: [String] = ["127.0.0.1:9477"]
    public var logLevel: Logger.Level = .info
    /// HTTP limits shared by HTTP/1.1 and HTTP/2.
    public var http = HTTPLimits()
    /// Event-loop threads; 0 means one per CPU core.
    public var eventLoops: Int = 0
    /// How long a graceful shutdown may wait for requests in flight.
    public var shutdownDeadlineSeconds: Double = 10

    /// Most layers the daemon keeps; a decision for one more is refused with 507.
    public var maxLayers: Int = 256
    /// Most experts per layer; a larger decision is refused with 507. With `maxLayers`, what the
    /// copies a /metrics or /v1/summary reader takes can reach: the defaults cover every published
    /// MoE model (at most a few hundred MoE layers, at most a few thousand experts per layer)
    /// without letting a client fill thousands of layers of thousands of experts.
    public var maxExperts: Int = 2048
    /// Decisions over which the load-variance trend and dead experts are computed.
    public var defaultWindow: Int = 100
    /// Upper bounds, in seconds, of the routing-latency histogram buckets (+Inf is implied).
    public var latencyBucketsSeconds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
    /// Top-k used for capacity arithmetic when a decision does not say; 0 means unknown.
    public var defaultTopK: Int = 0
    /// Capacity factor used when a decision names neither `expert_capacity` nor `capacity_factor`;
    /// 0 means "unknown", and capacity statistics stay null.
    public var defaultCapacityFactor: Double = 0

    /// Most decisions in one request (array elements or NDJSON lines).
    public var maxDecisionsPerRequest: Int = 10_000
    /// Most per-token assignments in one decision.
    public var maxAssignments: Int = 1_000_000
    /// Deepest JSON nesting accepted in a request body.
    public var maxJSONDepth: Int = 16

    /// The per-expert series (`moe_expert_*{layer,expert}`) on /metrics: all, none, or each
    /// layer's most and least loaded, for models where layers x experts series would overwhelm
    /// Prometheus.
    public var expertSeries: ExpertSeries = .all

    /// Most workers remembered per layer (worker names come from clients, so the table is bounded).
    public var maxWorkersPerLayer: Int = 4096
    /// Buckets (steps or time intervals) kept per layer for the history and the windows.
    public var historySteps: Int = 512
    /// Length in seconds of the time buckets of a layer whose decisions carry no step.
    public var bucketSeconds: Int = 10
    /// Workers that make a step complete (the job's world size); 0 counts the active workers.
    public var expectedWorkers: Int = 0
    /// A worker silent for longer than this many seconds counts as stale; 0 turns staleness off.
    public var workerTTLSeconds: Double = 300
    /// Layers nobody updated for longer than this many seconds are left out of /metrics, so the
    /// series of finished jobs end; 0 (the default) keeps every layer.
    public var layerTTLSeconds: Double = 0

    /// State file: every layer is saved there periodically and on SIGTERM, and restored on start.
    /// Empty means no state file (statistics live in memory only).
    public var stateFile: String = ""
    /// Seconds between two saves of the state file.
    public var snapshotIntervalSeconds: Double = 60
    /// JSON file with the expert placement to serve from start (the body of `PUT /v1/placement`),
    /// unless the state file restored one. Empty means none.
    public var placementFile: String = ""
    /// Most `POST /v1/plan` computations running at once (each off the event loops); more get 503.
    public var maxConcurrentPlans: Int = 2

    /// File holding the bearer token that POST and DELETE require (the environment variable
    /// `MOE_METRICSD_AUTH_TOKEN` takes precedence). Never a command-line value: arguments are
    /// visible to every user in the process list. Empty means no authentication.
    public var authTokenFile: String = ""
    /// Require the token for reads (GET of /v1 and /metrics) too; /healthz and /readyz stay open.
    public var authReads: Bool = false

    public init() {}
}

/// A configuration that cannot be used, with a message for the operator.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }

    /// The setting key a message starts with (`key: ...`), if any.
    var key: String? {
        guard let colon = message.firstIndex(of: ":") else { return nil }
        let k = message[..<colon]
        return k.contains(" ") ? nil : String(k)
    }
}

extension DaemonConfiguration {
    /// The largest `http.max_connection_buffer_bytes` (4 GiB).
    public static let maxBufferBytes = 1 << 32
    /// The largest `http.max_buffered_bytes` (64 GiB).
    public static let maxBufferedBytes = 1 << 36

    /// Largest `placement.max_concurrent_plans`: each plan holds a copy of its load matrix and a
    /// thread while it runs.
    public static let maxConcurrentPlansLimit = 64

    /// Checks the relations no single setting can check alone; throws the first problem found.
    public func validate() throws(ConfigurationError) {
        if listen.isEmpty { throw ConfigurationError("listen: at least one address is needed") }
        for address in listen {
            guard ListenAddress.isValid(address) else {
                throw ConfigurationError(
                    "listen: \"\(address)\" is not HOST:PORT (use [::1]:PORT for IPv6, port 0-65535)")
            }
        }
        /// Every cap has a maximum too: a typo (an extra zero or three) is refused at start
        /// instead of letting one client make the daemon allocate what it asks.
        func positive(_ name: String, _ v: Int, atMost limit: Int) throws(ConfigurationError) {
            if v <= 0 || v > limit {
                throw ConfigurationError("\(name): must be an integer from 1 to \(limit), got \(v)")
            }
        }
        /// Durations are bounded as well as positive: the transport turns them into nanosecond
        /// deadlines, and an absurd value (1e300) must be refused here, not overflow there.
        func positive(_ name: String, _ v: Double, atMost limit: Double = 86_400) throws(ConfigurationError) {
            if !(v > 0) || !v.isFinite {
                throw ConfigurationError("\(name): must be a positive number of seconds, got \(v)")
            }
            if v > limit { throw ConfigurationError("\(name): must be at most \(Int(limit)) seconds, got \(v)") }
        }
        try positive("http.max_request_line_bytes", http.maxRequestLineBytes, atMost: 1 << 20)
        try positive("http.max_header_bytes", http.maxHeaderBytes, atMost: 1 << 20)
        try positive("http.max_header_count", http.maxHeaderCount, atMost: 10_000)
        try positive("http.max_body_bytes", http.maxBodyBytes, atMost: 1 << 30)
        try positive("http.header_timeout_seconds", http.headerTimeoutSeconds)
        try positive("http.body_timeout_seconds", http.bodyTimeoutSeconds)
        try positive("http.body_deadline_seconds", http.bodyDeadlineSeconds)
        try positive("http.idle_timeout_seconds", http.idleTimeoutSeconds)
        try positive("http.max_connections", http.maxConnections, atMost: 1 << 20)
        try positive("http.max_concurrent_streams", http.maxConcurrentStreams, atMost: 10_000)
        if http.maxConnectionBufferBytes <= 0 || http.maxConnectionBufferBytes > Self.maxBufferBytes {
            throw ConfigurationError(
                "http.max_connection_buffer_bytes: must be from 1 to \(Self.maxBufferBytes), got \(http.maxConnectionBufferBytes)"
            )
        }
        if http.maxBufferedBytes <= 0 || http.maxBufferedBytes > Self.maxBufferedBytes {
            throw ConfigurationError(
                "http.max_buffered_bytes: must be from 1 to \(Self.maxBufferedBytes), got \(http.maxBufferedBytes)")
        }
        try positive("http.response_timeout_seconds", http.responseTimeoutSeconds)
        if http.responseChunkBytes < 1 || http.responseChunkBytes > 16 << 20 {
            throw ConfigurationError(
                "http.response_chunk_bytes: must be from 1 to \(16 << 20), got \(http.responseChunkBytes)")
        }
        if eventLoops < 0 || eventLoops > 256 {
            throw ConfigurationError("http.event_loops: must be 0 (one per core) to 256, got \(eventLoops)")
        }
        try positive("http.shutdown_deadline_seconds", shutdownDeadlineSeconds, atMost: 3_600)
        try positive("stats.max_layers", maxLayers, atMost: 65_536)
        try positive("stats.max_experts", maxExperts, atMost: 65_536)
        try positive("stats.default_window", defaultWindow, atMost: 1_000_000)
        if defaultTopK < 0 {
            throw ConfigurationError(
                "stats.default_top_k: must be 0 (unknown) or a positive integer, got \(defaultTopK)")
        }
        if !defaultCapacityFactor.isFinite || defaultCapacityFactor < 0 {
            throw ConfigurationError(
                "stats.default_capacity_factor: must be 0 (unknown) or a positive number, got \(defaultCapacityFactor)")
        }
        if latencyBucketsSeconds.isEmpty {
            throw ConfigurationError("stats.latency_buckets_seconds: at least one bucket is needed")
        }
        for (i, b) in latencyBucketsSeconds.enumerated() {
            if !b.isFinite || b <= 0 {
                throw ConfigurationError(
                    "stats.latency_buckets_seconds: bucket \(i) must be a positive finite number, got \(b)")
            }
            if i > 0 && b <= latencyBucketsSeconds[i - 1] {
                throw ConfigurationError(
                    "stats.latency_buckets_seconds: buckets must be strictly increasing (bucket \(i) is \(b))")
            }
        }
        if maxWorkersPerLayer < 0 || maxWorkersPerLayer > 1_000_000 {
            throw ConfigurationError(
                "stats.max_workers_per_layer: must be from 0 to 1000000, got \(maxWorkersPerLayer)")
        }
        if historySteps < 1 || historySteps > StatsConfiguration.maxHistorySteps {
            throw ConfigurationError(
                "stats.history_steps: must be 1 to \(StatsConfiguration.maxHistorySteps), got \(historySteps)")
        }
        if bucketSeconds < 1 || bucketSeconds > StatsConfiguration.maxBucketSeconds {
            throw ConfigurationError(
                "stats.bucket_seconds: must be 1 to \(StatsConfiguration.maxBucketSeconds), got \(bucketSeconds)")
        }
        if expectedWorkers < 0 || expectedWorkers > StatsConfiguration.maxExpectedWorkers {
            throw ConfigurationError(
                "stats.expected_workers: must be 0 (the active workers) to \(StatsConfiguration.maxExpectedWorkers), got \(expectedWorkers)"
            )
        }
        if !workerTTLSeconds.isFinite || workerTTLSeconds < 0 || workerTTLSeconds > 1e9 {
            throw ConfigurationError(
                "worker_ttl: must be 0 (off) or a positive number of seconds up to 1e9, got \(workerTTLSeconds)")
        }
        if !layerTTLSeconds.isFinite || layerTTLSeconds < 0 || layerTTLSeconds > 1e9 {
            throw ConfigurationError(
                "layer_ttl: must be 0 (off) or a positive number of seconds up to 1e9, got \(layerTTLSeconds)")
        }
        try positive("snapshot_interval", snapshotIntervalSeconds)
        if maxConcurrentPlans < 1 || maxConcurrentPlans > Self.maxConcurrentPlansLimit {
            throw ConfigurationError(
                "placement.max_concurrent_plans: must be 1 to \(Self.maxConcurrentPlansLimit), got \(maxConcurrentPlans)"
            )
        }
        try positive("decoder.max_decisions", maxDecisionsPerRequest, atMost: 1_000_000)
        try positive("decoder.max_assignments", maxAssignments, atMost: 100_000_000)
        try positive("decoder.max_depth", maxJSONDepth, atMost: 1_000)
    }
}

/// `HOST:PORT` as the listener accepts it.
enum ListenAddress {
    static func isValid(_ s: String) -> Bool {
        guard let colon = s.lastIndex(of: ":") else { return false }
        let host = s[..<colon]
        let port = s[s.index(after: colon)...]
        guard let p = Int(port), (0...65535).contains(p), port.allSatisfy(\.isASCII) else { return false }
        if host.hasPrefix("[") { return host.hasSuffix("]") && host.count > 2 }
        return !host.isEmpty && !host.contains(":")
    }
}
