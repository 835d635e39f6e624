import HTTPCore
import MoEPlacement
import MoEStats
import Synchronization

/// Renders /metrics from layer views (copied under each layer's lock; rendered here, outside
/// every lock, so a scrape never holds a layer's lock while it formats).
///
/// Names follow Prometheus' naming rules: base units (`_seconds`), `_total` for counters,
/// `_ratio` for 0-1 values. Counters and summary sums and counts come first because they are
/// what aggregates correctly across many daemons (`sum by (layer) (rate(...))`); the derived
/// gauges, the rows of `LayerMeasure.all` that have one, are conveniences for one daemon's view.
///
/// A large model's exposition is tens of thousands of series scraped every few seconds, so the
/// renderer works from `LayerMetrics` (only the raw totals the gauges need, no sorting) and
/// writes bytes directly: each layer's label set is escaped once, expert indices and bucket bounds
/// are formatted once per scrape, integers are written digit by digit, and the output buffer is
/// reserved from the previous scrape's size so it does not grow by doubling.
public enum MetricsRenderer {
    /// The daemon's own numbers, gathered by the caller so that rendering reads no global state
    /// (and a test can render a fixed input).
    public struct DaemonState: Sendable {
        public var counters: (requests: [(DaemonCounters.RouteCode, UInt64)], rejected: [(String, UInt64)])
        public var openConnections: Int
        /// Bytes held against `http.max_buffered_bytes` (request bodies, pending HTTP/2 responses).
        public var bufferedBytes: Int
        public var layers: Int
        public var process: ProcessMetrics
        public var version: String

        public init(
            counters: (requests: [(DaemonCounters.RouteCode, UInt64)], rejected: [(String, UInt64)]),
            openConnections: Int, bufferedBytes: Int = 0, layers: Int, process: ProcessMetrics, version: String
        ) {
            self.counters = counters
            self.openConnections = openConnections
            self.bufferedBytes = bufferedBytes
            self.layers = layers
            self.process = process
            self.version = version
        }
    }

    /// Size of the previous exposition, to reserve the next one's buffer at once.
    private static let previousSize = Atomic<Int>(0)

    /// `now` and `workerTTL` split each layer's workers into active and stale.
    public static func render(
        _ snapshots: [LayerSnapshot], daemon: DaemonState, format: ExpositionFormat,
        expertSeries: ExpertSeries, now: Double = 0, workerTTL: Double? = nil,
        rankFigures: [String: PlacementFigures] = [:]
    ) -> [UInt8] {
        render(
            snapshots.map(LayerMetrics.init), daemon: daemon, format: format, expertSeries: expertSeries,
            now: now, workerTTL: workerTTL, rankFigures: rankFigures)
    }

    /// The same exposition from the metrics-only views (`LayerRegistry.metricsViews()`), whole.
    /// `rankFigures`: each layer's figures under the placement set, if one is (by layer name).
    public static func render(
        _ views: [LayerMetrics], daemon: DaemonState, format: ExpositionFormat,
        expertSeries: ExpertSeries, now: Double = 0, workerTTL: Double? = nil,
        rankFigures: [String: PlacementFigures] = [:]
    ) -> [UInt8] {
        let body = MetricsBody(
            views, daemon: daemon, format: format, expertSeries: expertSeries, now: now, workerTTL: workerTTL,
            rankFigures: rankFigures)
        let previous = previousSize.load(ordering: .relaxed)
        var out: [UInt8] = []
        out.reserveCapacity(previous > 0 ? previous + previous / 16 + 4096 : body.estimatedSize)
        while body.next(into: &out, atMost: Int.max) {}
        previousSize.store(out.count, ordering: .relaxed)
        return out
    }
}

/// The exposition of `MetricsRenderer`, written a piece at a time as a response body
/// (`HTTPBodySource`): family by family and, within a family, layer by layer, so a scrape of a
/// large model holds the layer copies and one piece of text, never the whole text. Pieces end on
/// line boundaries; drained whole, the bytes are exactly `MetricsRenderer.render`'s.
public final class MetricsBody: HTTPBodySource {
    /// One step of the exposition: a part written once, or a family's lines for one layer.
    private enum Step {
        case once((inout MetricsWriter) -> Void)
        case eachLayer((inout MetricsWriter, Int) -> Void)
    }

    private var writer: MetricsWriter
    private var steps: [Step] = []
    private var step = 0
    private var layer = 0
    private let layerCount: Int
    /// A guess at the whole exposition's size, for a caller that collects it.
    let estimatedSize: Int

    /// `now` and `workerTTL` split each layer's workers into active and stale; `rankFigures` are
    /// each layer's figures under the placement set, if one is (by layer name).
    public init(
        _ views: [LayerMetrics], daemon: MetricsRenderer.DaemonState, format: ExpositionFormat,
        expertSeries: ExpertSeries, now: Double = 0, workerTTL: Double? = nil,
        rankFigures: [String: PlacementFigures] = [:]
    ) {
        var sorted = views
        // Usually sorted already (the registry lists layers by name); checking is one pass.
        if !sorted.indices.dropFirst().allSatisfy({ sorted[$0 - 1].layer <= sorted[$0].layer }) {
            sorted.sort { $0.layer < $1.layer }
        }
        let layers = sorted
        layerCount = layers.count
        var estimate = 4096
        var maxExperts = 0
        for l in layers {
            estimate += 600 + (expertSeries == .all ? l.experts * 160 : 0)
            maxExperts = max(maxExperts, l.experts)
        }
        estimatedSize = estimate
        writer = MetricsWriter(format: format, capacity: 0)

        // Escaped once per scrape: each layer's `{layer="..."` and each expert's `,expert="N"`.
        let labels = layers.map { PreparedLabels([("layer", $0.layer)]) }
        let expertLabels = IndexLabels(name: "expert", count: expertSeries == .all ? maxExperts : 0)
        // With `top:N`, each layer's chosen experts (by tokens), shared by every per-expert family.
        var chosen: [[(expert: Int, labels: [UInt8])]] = []
        if case .extremes(let n) = expertSeries {
            chosen = layers.map { ExpertSeries.extremes(n, tokens: $0.expertTokens) }
        }
        /// Writes one layer's per-expert values: every expert, or the chosen ones.
        func perExpert(_ w: inout MetricsWriter, _ i: Int, _ values: [Double]) {
            if chosen.isEmpty {
                w.samples(prepared: labels[i], indexed: expertLabels, values: values)
            } else {
                for (e, extra) in chosen[i] where e < values.count {
                    w.sample(prepared: labels[i], extra: extra, values[e])
                }
            }
        }
        var steps: [Step] = []

        func family(_ name: String, _ type: MetricType, _ help: String) {
            steps.append(.once { $0.family(name, type, help: help) })
        }
        func perLayer(_ name: String, _ type: MetricType, _ help: String, _ value: @escaping (LayerMetrics) -> Double?)
        {
            family(name, type, help)
            steps.append(
                .eachLayer { w, i in
                    if let v = value(layers[i]) { w.sample(prepared: labels[i], v) }
                })
        }

        perLayer("moe_routing_decisions_total", .counter, "Routing decisions recorded.") { Double($0.totalRoutings) }
        perLayer("moe_routing_tokens_total", .counter, "Tokens routed (sum of total_tokens).") {
            Double($0.totalTokens)
        }
        perLayer("moe_routing_dropped_tokens_total", .counter, "Tokens dropped (sum of tokens_dropped).") {
            Double($0.tokensDropped)
        }
        if expertSeries != .none {
            family("moe_expert_tokens_total", .counter, "Tokens each expert received.")
            steps.append(
                .eachLayer { w, i in
                    if chosen.isEmpty {
                        w.samples(prepared: labels[i], indexed: expertLabels, counts: layers[i].expertTokens)
                    } else {
                        perExpert(&w, i, layers[i].expertTokens.map { Double($0) })
                    }
                })
        }
        if !rankFigures.isEmpty {
            // Rank series only with a placement: one per rank, bounded by ExpertPlacement.maxRanks.
            let rankLabels = IndexLabels(name: "rank", count: rankFigures.values.map(\.rankLoads.count).max() ?? 0)
            family(
                "moe_rank_tokens_total", .counter,
                "Tokens each rank received under the placement set (a replica carries its expert's tokens / k).")
            steps.append(
                .eachLayer { w, i in
                    if let f = rankFigures[layers[i].layer] {
                        w.samples(prepared: labels[i], indexed: rankLabels, values: f.rankLoads)
                    }
                })
            perLayer(
                "moe_rank_balancedness_ratio", .gauge, "Mean over max of the rank loads under the placement set."
            ) { rankFigures[$0.layer]?.balancedness }
            perLayer(
                "moe_rank_overload_ratio", .gauge,
                "Busiest rank's load over the mean rank load under the placement set."
            ) { rankFigures[$0.layer]?.overload }
            perLayer("moe_rank_worst", .gauge, "The busiest rank under the placement set.") {
                rankFigures[$0.layer]?.worstRank.map(Double.init)
            }
        }
        for (name, help, pick) in [
            (
                "moe_routing_load_balance_loss", "Load-balance loss per decision (finite values only).",
                \LayerMetrics.loadBalanceLoss
            ),
            (
                "moe_routing_router_z_loss", "Router z-loss per decision (finite values only).",
                \LayerMetrics.routerZLoss
            ),
            (
                "moe_routing_auxiliary_loss", "Auxiliary loss per decision (finite values only).",
                \LayerMetrics.auxiliaryLoss
            ),
        ] as [(String, String, KeyPath<LayerMetrics, LossTotals>)] {
            family(name, .summary, help)
            steps.append(
                .eachLayer { w, i in
                    let t = layers[i][keyPath: pick]
                    w.sample("_sum", prepared: labels[i], t.sum)
                    w.sample("_count", prepared: labels[i], Double(t.count))
                })
        }
        perLayer(
            "moe_routing_nonfinite_losses_total", .counter,
            "Losses received as null or non-finite, kept out of the loss sums."
        ) {
            Double($0.nonfiniteLosses)
        }
        perLayer(
            "moe_routing_late_decisions_total", .counter,
            "Decisions for a step older than the oldest the history keeps (in the run totals, in no step)."
        ) {
            Double($0.lateDecisions)
        }
        family("moe_routing_latency_seconds", .histogram, "Routing latency reported by workers.")
        // Layers created under the same configuration share their bounds: format them once.
        var bounds: [Double] = []
        var le: [[UInt8]] = []
        steps.append(
            .eachLayer { w, i in
                let h = layers[i].latencyHistogram
                if i == 0 || h.upperBoundsSeconds != bounds {
                    bounds = h.upperBoundsSeconds
                    le = w.leLabels(bounds)
                }
                w.histogram(
                    prepared: labels[i], le: le, cumulativeCounts: h.cumulativeCounts, count: h.count,
                    sum: h.sumSeconds)
            })
        perLayer(
            "moe_routing_capacity_tokens_total", .counter,
            "Expert capacity offered (experts x capacity) in decisions with a known capacity."
        ) {
            Double($0.capacity.totalCapacity)
        }
        perLayer(
            "moe_routing_capacity_used_tokens_total", .counter, "Tokens received in decisions with a known capacity."
        ) {
            Double($0.capacity.totalUsed)
        }

        // The derived gauges: the rows of the table of layer measures that have one, in order.
        for measure in LayerMeasure.all {
            guard let gauge = measure.gauge else { continue }
            switch measure.value {
            case .perLayer:
                perLayer(gauge.name, .gauge, gauge.help) { $0.gaugeValue(measure) }
            case .perExpert(let values):
                guard expertSeries != .none else { continue }
                family(gauge.name, .gauge, gauge.help)
                steps.append(
                    .eachLayer { w, i in
                        let v = values(layers[i].input)
                        perExpert(&w, i, gauge.scale == 1 ? v : v.map { $0 * gauge.scale })
                    })
            }
        }

        // The newest complete step (every expected worker reported it): the global batch's numbers.
        perLayer(
            "moe_routing_last_complete_step", .gauge,
            "Newest step every expected worker reported (the start of a time bucket, in Unix seconds, for layers without steps)."
        ) { $0.lastCompleteStep.map { Double($0.label) } }
        perLayer(
            "moe_routing_last_complete_step_max_violation", .gauge,
            "MaxVio of the newest complete step's counts summed over workers."
        ) { $0.lastCompleteStepValue(.maxViolation) }
        perLayer(
            "moe_routing_last_complete_step_balancedness_ratio", .gauge,
            "Balancedness of the newest complete step's counts summed over workers."
        ) { $0.lastCompleteStepValue(.balancedness) }
        perLayer(
            "moe_routing_last_complete_step_workers", .gauge, "Workers that reported the newest complete step."
        ) { $0.lastCompleteStep.map { Double($0.workers) } }

        family(
            "moe_routing_workers", .gauge,
            "Workers that reported to the layer, by whether they did within the worker TTL.")
        let active = PreparedLabels.extra("state", "active"), stale = PreparedLabels.extra("state", "stale")
        steps.append(
            .eachLayer { w, i in
                let counts = layers[i].workerCounts(now: now, ttl: workerTTL)
                w.sample(prepared: labels[i], extra: active, Double(counts.active))
                w.sample(prepared: labels[i], extra: stale, Double(counts.stale))
            })

        steps.append(.once { w in Self.writeDaemon(daemon, to: &w) })
        self.steps = steps
    }

    public func next(into output: inout [UInt8], atMost: Int) -> Bool {
        let start = output.count
        // The writer appends straight to the caller's buffer: no piece is copied.
        writer.exchangeBuffer(&output)
        defer { writer.exchangeBuffer(&output) }
        while step < steps.count {
            if writer.count - start >= atMost { return true }
            switch steps[step] {
            case .once(let write):
                write(&writer)
                step += 1
            case .eachLayer(let write):
                while layer < layerCount && writer.count - start < atMost {
                    write(&writer, layer)
                    layer += 1
                }
                if layer == layerCount {
                    layer = 0
                    step += 1
                }
            }
        }
        writer.end()
        step += 1
        return false
    }

    /// The daemon's own series and the process collector's, after every layer's.
    private static func writeDaemon(_ daemon: MetricsRenderer.DaemonState, to w: inout MetricsWriter) {
        w.family(
            "moe_metricsd_http_requests_total", .counter,
            help:
                "HTTP requests answered, by route template and status code (refusals of the HTTP layers under route other)."
        )
        for (rc, n) in daemon.counters.requests {
            w.sample(labels: ["route": rc.route, "code": String(rc.code)], Double(n))
        }
        w.family(
            "moe_metricsd_rejected_decisions_total", .counter,
            help: "Request bodies of decisions refused, by reason (a refused batch counts once).")
        for (reason, n) in daemon.counters.rejected {
            w.sample(labels: ["reason": reason], Double(n))
        }
        w.family("moe_metricsd_open_connections", .gauge, help: "Client connections currently open.")
        w.sample(Double(daemon.openConnections))
        w.family(
            "moe_metricsd_buffered_bytes", .gauge,
            help: "Bytes of request bodies and HTTP/2 responses held, against http.max_buffered_bytes.")
        w.sample(Double(daemon.bufferedBytes))
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
            w.family(
                "process_start_time_seconds", .gauge, help: "Start time of the process since unix epoch in seconds.")
            w.sample(v)
        }
    }
}
