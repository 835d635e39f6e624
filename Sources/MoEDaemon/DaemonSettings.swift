import Configuration
import HTTPCore
import Logging

/// One setting: its config-file key, environment variable, flag, type and meaning.
///
/// The table is the single source of truth for the loader, `--check-config` and the help text,
/// so a setting cannot exist in one place and be forgotten in another.
public struct DaemonSetting: Sendable {
    public enum Kind: Sendable {
        case int, double, bool, string, stringList, doubleList

        var configType: ConfigType {
            switch self {
            case .int: .int
            case .double: .double
            case .bool: .bool
            case .string: .string
            case .stringList: .stringArray
            case .doubleList: .doubleArray
            }
        }

        var noun: String {
            switch self {
            case .int: "an integer"
            case .double: "a number"
            case .bool: "true or false"
            case .string: "a string"
            case .stringList: "a list of strings"
            case .doubleList: "a list of numbers"
            }
        }
    }

    /// Dotted key; in the JSON file each component is one level of nesting.
    public let key: String
    public let kind: Kind
    public let help: String
    /// The value of this setting in a configuration, as text (for documentation and dumps).
    public let describe: @Sendable (DaemonConfiguration) -> String
    let apply: @Sendable (inout DaemonConfiguration, ConfigContent) throws(ConfigurationError) -> Void

    /// `MOE_METRICSD_` followed by the key upper-cased, dots as underscores.
    public var environmentVariable: String {
        "MOE_METRICSD_" + key.uppercased().map { $0 == "." ? "_" : String($0) }.joined()
    }

    /// `--` followed by the key with dots and underscores as dashes.
    public var flag: String {
        "--" + key.map { $0 == "." || $0 == "_" ? "-" : String($0) }.joined()
    }

    public var defaultValue: String { describe(DaemonConfiguration()) }
}

/// The table of every setting, in the order docs/configuration.md and `--check-config` list them.
public enum DaemonSettings {
    public static let all: [DaemonSetting] = [
        string(
            "listen", list: true,
            "Addresses to listen on, HOST:PORT or [IPv6]:PORT; port 0 picks a free port. Repeat the flag, or separate with commas in the environment.",
            get: { $0.listen.joined(separator: ",") },
            set: { c, v throws(ConfigurationError) in c.listen = v }),
        DaemonSetting(
            key: "log_level", kind: .string,
            help: "Least severe level logged: trace, debug, info, notice, warning, error, critical.",
            describe: { $0.logLevel.rawValue },
            apply: { c, v throws(ConfigurationError) in
                guard case .string(let s) = v, let level = Logger.Level(rawValue: s.asciiLowercased()) else {
                    throw ConfigurationError(
                        "log_level: must be one of trace, debug, info, notice, warning, error, critical")
                }
                c.logLevel = level
            }),
        int(
            "http.max_request_line_bytes", "Longest request line in bytes (HTTP/2: the :path); longer gets 414.",
            \.http.maxRequestLineBytes),
        int(
            "http.max_header_bytes", "Largest header section in bytes (HTTP/2: header list size); larger gets 431.",
            \.http.maxHeaderBytes),
        int("http.max_header_count", "Most header fields in a request; more gets 431.", \.http.maxHeaderCount),
        int("http.max_body_bytes", "Largest request body in bytes; larger gets 413.", \.http.maxBodyBytes),
        double(
            "http.header_timeout_seconds", "Time to receive a request's headers once started; then 408.",
            \.http.headerTimeoutSeconds),
        double("http.body_timeout_seconds", "Longest pause between body bytes; then 408.", \.http.bodyTimeoutSeconds),
        double(
            "http.body_deadline_seconds", "Longest time to receive a whole request body; then 408.",
            \.http.bodyDeadlineSeconds),
        double(
            "http.idle_timeout_seconds", "How long an idle keep-alive connection is kept.", \.http.idleTimeoutSeconds),
        int(
            "http.max_connections", "Most concurrent connections; past it, 503 with Retry-After.", \.http.maxConnections
        ),
        int(
            "http.max_concurrent_streams", "Most concurrent HTTP/2 streams per connection.", \.http.maxConcurrentStreams
        ),
        int(
            "http.max_connection_buffer_bytes",
            "Bytes one HTTP/2 connection may hold across its streams (request bodies, responses waiting for the client's flow-control window); past it, 503.",
            \.http.maxConnectionBufferBytes),
        int(
            "http.max_buffered_bytes",
            "Bytes all connections together may hold: HTTP/2 as above, HTTP/1.1 its request body as it arrives; past it, 503.",
            \.http.maxBufferedBytes),
        double(
            "http.response_timeout_seconds",
            "Longest time a response may take to leave once started, however slowly the client reads; then it is cut.",
            \.http.responseTimeoutSeconds),
        int(
            "http.response_chunk_bytes",
            "Bytes a streamed response (/metrics, /v1/summary) is generated in at a time, as the client reads.",
            \.http.responseChunkBytes),
        int("http.event_loops", "Event-loop threads; 0 means one per CPU core.", \.eventLoops),
        double(
            "http.shutdown_deadline_seconds", "Longest wait for requests in flight on SIGTERM or SIGINT.",
            \.shutdownDeadlineSeconds),
        int("stats.max_layers", "Most layers kept; a decision for one more gets 507.", \.maxLayers),
        int("stats.max_experts", "Most experts per layer; a larger decision gets 507.", \.maxExperts),
        int(
            "stats.default_window",
            "Decisions over which the variance trend and dead experts are computed (?window=N overrides per request).",
            \.defaultWindow),
        DaemonSetting(
            key: "stats.latency_buckets_seconds", kind: .doubleList,
            help: "Upper bounds in seconds of the routing-latency histogram buckets, increasing (+Inf is implied).",
            describe: { $0.latencyBucketsSeconds.map { PrometheusNumber.format($0) }.joined(separator: ",") },
            apply: { c, v throws(ConfigurationError) in
                switch v {
                case .doubleArray(let a): c.latencyBucketsSeconds = a
                case .intArray(let a): c.latencyBucketsSeconds = a.map(Double.init)
                default: throw ConfigurationError("stats.latency_buckets_seconds: expected a list of numbers")
                }
            }),
        int(
            "stats.default_top_k",
            "Top-k assumed, with the capacity factor, when a decision sends neither expert_capacity nor top_k; 0 means unknown.",
            \.defaultTopK),
        double(
            "stats.default_capacity_factor",
            "Capacity factor assumed when a decision sends neither expert_capacity nor capacity_factor; 0 means unknown (capacity statistics stay null).",
            \.defaultCapacityFactor),
        int(
            "decoder.max_decisions", "Most decisions in one request (array elements or NDJSON lines); more gets 422.",
            \.maxDecisionsPerRequest),
        int(
            "decoder.max_assignments", "Most per-token expert assignments in one decision; more gets 422.",
            \.maxAssignments),
        int("decoder.max_depth", "Deepest JSON nesting accepted in a request body; deeper gets 400.", \.maxJSONDepth),
        DaemonSetting(
            key: "metrics.expert_series", kind: .string,
            help:
                "Per-expert series on /metrics (moe_expert_tokens_total and the per-expert gauges): all; none; or top:N, each layer's N most and N least loaded experts, labelled load=\"most\" or \"least\". See docs/metrics.md for what each costs.",
            describe: { $0.expertSeries.description },
            apply: { c, v throws(ConfigurationError) in
                guard case .string(let s) = v, let choice = ExpertSeries(parsing: s) else {
                    throw ConfigurationError(
                        "metrics.expert_series: must be all, none, or top:N with N from 1 to \(ExpertSeries.maxExtremes)"
                    )
                }
                c.expertSeries = choice
            }),
        int(
            "stats.max_workers_per_layer",
            "Most distinct workers remembered per layer; decisions from more are counted but not tracked.",
            \.maxWorkersPerLayer),
        int(
            "stats.history_steps",
            "Steps (or time buckets) kept per layer for /history and ?steps=N windows, 1 to 100000; memory is layers x experts x this x 8 bytes.",
            \.historySteps),
        int(
            "stats.bucket_seconds",
            "Length in seconds (1 to 86400) of the time buckets of a layer whose decisions carry no step.",
            \.bucketSeconds),
        int(
            "stats.expected_workers",
            "Workers that make a step complete (the job's world size), up to 1000000; 0 counts the workers active within worker_ttl.",
            \.expectedWorkers),
        double(
            "worker_ttl",
            "Seconds after which a silent worker counts as stale (moe_routing_workers{state=\"stale\"}); 0 turns staleness off.",
            \.workerTTLSeconds),
        double(
            "layer_ttl", "Seconds after which a layer nobody updated is left out of /metrics; 0 keeps every layer.",
            \.layerTTLSeconds),
        string(
            "state_file", list: false,
            "State file saved periodically and on SIGTERM, restored on start; empty for none.",
            get: { $0.stateFile }, set: { c, v throws(ConfigurationError) in c.stateFile = v.first ?? "" }),
        double("snapshot_interval", "Seconds between two saves of the state file.", \.snapshotIntervalSeconds),
        string(
            "placement.file", list: false,
            "JSON file with the expert placement (a PUT /v1/placement body) set at start when the state file holds none; empty for none.",
            get: { $0.placementFile }, set: { c, v throws(ConfigurationError) in c.placementFile = v.first ?? "" }),
        int(
            "placement.max_concurrent_plans",
            "Most POST /v1/plan computations running at once, off the event loops, 1 to 64; more get 503 with Retry-After.",
            \.maxConcurrentPlans),
        string(
            "auth_token_file", list: false,
            "File holding the bearer token POST and DELETE require (MOE_METRICSD_AUTH_TOKEN overrides it); empty for no authentication.",
            get: { $0.authTokenFile }, set: { c, v throws(ConfigurationError) in c.authTokenFile = v.first ?? "" }),
        DaemonSetting(
            key: "auth_reads", kind: .bool,
            help: "Require the token for reads too (/v1 GETs, /metrics); /healthz and /readyz stay open.",
            describe: { $0.authReads ? "true" : "false" },
            apply: { c, v throws(ConfigurationError) in
                guard case .bool(let b) = v else { throw ConfigurationError("auth_reads: expected true or false") }
                c.authReads = b
            }),
    ]

    /// The setting for a dotted key.
    public static func setting(_ key: String) -> DaemonSetting? { all.first { $0.key == key } }

    /// `MOE_METRICSD_*` variables in `environment` that name no setting: most likely typos, which
    /// the daemon reports at startup (the file and the flags refuse unknown names outright).
    public static func unknownEnvironmentVariables(in environment: [String: String]) -> [String] {
        let known = Set(all.map(\.environmentVariable) + [AuthToken.environmentVariable])
        return environment.keys.filter { $0.hasPrefix("MOE_METRICSD_") && !known.contains($0) }.sorted()
    }

    private static func int(
        _ key: String, _ help: String,
        _ path: WritableKeyPath<DaemonConfiguration, Int> & Sendable
    ) -> DaemonSetting {
        DaemonSetting(
            key: key, kind: .int, help: help, describe: { String($0[keyPath: path]) },
            apply: { c, v throws(ConfigurationError) in
                guard case .int(let i) = v else { throw ConfigurationError("\(key): expected an integer") }
                c[keyPath: path] = i
            })
    }

    private static func double(
        _ key: String, _ help: String,
        _ path: WritableKeyPath<DaemonConfiguration, Double> & Sendable
    ) -> DaemonSetting {
        DaemonSetting(
            key: key, kind: .double, help: help, describe: { PrometheusNumber.format($0[keyPath: path]) },
            apply: { c, v throws(ConfigurationError) in
                switch v {
                case .double(let d): c[keyPath: path] = d
                case .int(let i): c[keyPath: path] = Double(i)
                default: throw ConfigurationError("\(key): expected a number")
                }
            })
    }

    private static func string(
        _ key: String, list: Bool, _ help: String,
        get: @escaping @Sendable (DaemonConfiguration) -> String,
        set: @escaping @Sendable (inout DaemonConfiguration, [String]) throws(ConfigurationError) -> Void
    ) -> DaemonSetting {
        DaemonSetting(
            key: key, kind: list ? .stringList : .string, help: help, describe: get,
            apply: { c, v throws(ConfigurationError) in
                switch v {
                case .stringArray(let a):
                    try set(&c, a.map { $0.trimmingWhitespace() }.filter { !$0.isEmpty })
                case .string(let s) where !list:
                    try set(&c, [s.trimmingWhitespace()].filter { !$0.isEmpty })
                case .string(let s):
                    try set(&c, s.split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty })
                default: throw ConfigurationError("\(key): expected \(list ? "a list of strings" : "a string")")
                }
            })
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
