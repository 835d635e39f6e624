import MoEStats

/// Renders /metrics from layer snapshots (copied under each layer's lock; rendered here,
/// outside every lock, as swift-prometheus does).
///
/// Names follow Prometheus' naming rules: base units (`_seconds`), `_total` for counters,
/// `_ratio` for 0-1 values. Counters and summary sums and counts come first because they are
/// what aggregates correctly across many daemons (`sum by (layer) (rate(...))`); the derived
/// gauges are conveniences for one daemon's view.
public enum MetricsRenderer {
    /// The daemon's own numbers, gathered by the caller so that rendering reads no global state
    /// (and a test can render a fixed input).
    public struct DaemonState: Sendable {
        public var counters: (requests: [(DaemonCounters.RouteCode, UInt64)], rejected: [(String, UInt64)])
        public var openConnections: Int
        public var layers: Int
        public var process: ProcessMetrics
        public var version: String

        public init(counters: (requests: [(DaemonCounters.RouteCode, UInt64)], rejected: [(String, UInt64)]),
                    openConnections: Int, layers: Int, process: ProcessMetrics, version: String) {
            self.counters = counters
            self.openConnections = openConnections
            self.layers = layers
            self.process = process
            self.version = version
        }
    }

    /// `now` and `workerTTL` split each layer's workers into active and stale.
    public static func render(_ snapshots: [LayerSnapshot], daemon: DaemonState, format: ExpositionFormat,
                              perExpertSeries: Bool, now: Double = 0, workerTTL: Double? = nil) -> [UInt8] {
        let layers = snapshots.sorted { $0.layer < $1.layer }
        let summaries = layers.map { $0.summary(window: nil) }
        var w = MetricsWriter(format: format, capacity: 4096 + layers.reduce(0) { $0 + 600 + $1.experts * 160 })

        func perLayer(_ name: String, _ type: MetricType, _ help: String, _ value: (Int) -> Double?) {
            w.family(name, type, help: help)
            for i in layers.indices {
                if let v = value(i) { w.sample(labels: ["layer": layers[i].layer], v) }
            }
        }

        perLayer("moe_routing_decisions_total", .counter, "Routing decisions recorded.") { Double(layers[$0].totalRoutings) }
        perLayer("moe_routing_tokens_total", .counter, "Tokens routed (sum of total_tokens).") { Double(layers[$0].totalTokens) }
        perLayer("moe_routing_dropped_tokens_total", .counter, "Tokens dropped (sum of tokens_dropped).") {
            Double(layers[$0].tokensDropped)
        }
        if perExpertSeries {
            w.family("moe_expert_tokens_total", .counter, help: "Tokens each expert received.")
            for l in layers {
                for (e, c) in l.expertTokens.enumerated() {
                    w.sample(labels: ["layer": l.layer, "expert": String(e)], Double(c))
                }
            }
        }
        for (name, help, pick) in [
            ("moe_routing_load_balance_loss", "Load-balance loss per decision (finite values only).", \LayerSnapshot.loadBalanceLoss),
            ("moe_routing_router_z_loss", "Router z-loss per decision (finite values only).", \LayerSnapshot.routerZLoss),
            ("moe_routing_auxiliary_loss", "Auxiliary loss per decision (finite values only).", \LayerSnapshot.auxiliaryLoss),
        ] as [(String, String, KeyPath<LayerSnapshot, LossTotals>)] {
            w.family(name, .summary, help: help)
            for l in layers {
                let t = l[keyPath: pick]
                w.sample("_sum", labels: ["layer": l.layer], t.sum)
                w.sample("_count", labels: ["layer": l.layer], Double(t.count))
            }
        }
        perLayer("moe_routing_nonfinite_losses_total", .counter, "Losses received as null or non-finite, kept out of the loss sums.") {
            Double(layers[$0].nonfiniteLosses)
        }
        w.family("moe_routing_latency_seconds", .histogram, help: "Routing latency reported by workers.")
        for l in layers {
            let h = l.latencyHistogram
            w.histogram(labels: [("layer", l.layer)], bounds: h.upperBoundsSeconds, cumulativeCounts: h.cumulativeCounts,
                        count: h.count, sum: h.sumSeconds)
        }
        perLayer("moe_routing_capacity_tokens_total", .counter, "Expert capacity offered (experts x capacity) in decisions with a known capacity.") {
            Double(layers[$0].capacity.totalCapacity)
        }
        perLayer("moe_routing_capacity_used_tokens_total", .counter, "Tokens received in decisions with a known capacity.") {
            Double(layers[$0].capacity.totalUsed)
        }

        perLayer("moe_routing_efficiency_ratio", .gauge, "Share of tokens not dropped, over all decisions.") { i in
            let l = layers[i]
            return l.totalTokens > 0 ? Double(l.totalTokens - l.tokensDropped) / Double(l.totalTokens) : nil
        }
        if perExpertSeries {
            w.family("moe_expert_utilization_ratio", .gauge, help: "Mean share of each decision's tokens the expert received.")
            for (i, l) in layers.enumerated() {
                for (e, u) in summaries[i].expertUtilization.enumerated() {
                    w.sample(labels: ["layer": l.layer, "expert": String(e)], u)
                }
            }
        }
        perLayer("moe_routing_utilization_cv", .gauge, "Coefficient of variation of expert utilization.") { summaries[$0].utilizationCV }
        perLayer("moe_routing_max_violation", .gauge, "MaxVio over the run: max expert load over mean load, minus 1.") {
            summaries[$0].balance.maxViolation
        }
        perLayer("moe_routing_balancedness_ratio", .gauge, "Mean expert load over max expert load.") { summaries[$0].balance.balancedness }
        perLayer("moe_routing_entropy_ratio", .gauge, "Entropy of the expert load distribution over log(experts).") {
            summaries[$0].balance.entropy
        }
        perLayer("moe_routing_dead_experts", .gauge, "Experts that received no token in the last window of decisions.") {
            Double(summaries[$0].balance.deadExperts)
        }
        perLayer("moe_routing_capacity_utilization_ratio", .gauge, "Tokens received over capacity offered, in decisions with a known capacity.") { i in
            let c = layers[i].capacity
            return c.totalCapacity > 0 ? Double(c.totalUsed) / Double(c.totalCapacity) : nil
        }

        w.family("moe_routing_workers", .gauge, help: "Workers that reported to the layer, by whether they did within the worker TTL.")
        for l in layers {
            let counts = l.workerCounts(now: now, ttl: workerTTL)
            w.sample(labels: ["layer": l.layer, "state": "active"], Double(counts.active))
            w.sample(labels: ["layer": l.layer, "state": "stale"], Double(counts.stale))
        }

        w.family("moe_metricsd_http_requests_total", .counter, help: "HTTP requests answered by the router, by route template and status code.")
        for (rc, n) in daemon.counters.requests {
            w.sample(labels: ["route": rc.route, "code": String(rc.code)], Double(n))
        }
        w.family("moe_metricsd_rejected_decisions_total", .counter, help: "Request bodies of decisions refused, by reason (a refused batch counts once).")
        for (reason, n) in daemon.counters.rejected {
            w.sample(labels: ["reason": reason], Double(n))
        }
        w.family("moe_metricsd_open_connections", .gauge, help: "Client connections currently open.")
        w.sample(Double(daemon.openConnections))
        w.family("moe_metricsd_layers", .gauge, help: "Layers held.")
        w.sample(Double(daemon.layers))
        w.family("moe_metricsd_build_info", .info, help: "Always 1; the version label says which build is running.")
        w.sample(labels: ["version": daemon.version], 1)

        let p = daemon.process
        if let v = p.cpuSeconds {
            w.family("process_cpu_seconds_total", .counter, help: "Total user and system CPU time spent in seconds.")
            w.sample(v)
        }
        if let v = p.residentMemoryBytes {
            w.family("process_resident_memory_bytes", .gauge, help: "Resident memory size in bytes.")
            w.sample(v)
        }
        if let v = p.openFDs {
            w.family("process_open_fds", .gauge, help: "Number of open file descriptors.")
            w.sample(v)
        }
        if let v = p.maxFDs {
            w.family("process_max_fds", .gauge, help: "Maximum number of open file descriptors.")
            w.sample(v)
        }
        if let v = p.startTimeSeconds {
            w.family("process_start_time_seconds", .gauge, help: "Start time of the process since unix epoch in seconds.")
            w.sample(v)
        }
        return w.finish()
    }
}
