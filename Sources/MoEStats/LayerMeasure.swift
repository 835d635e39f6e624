/// One derived measure of a layer: where the JSON summary writes it, whether `GET /v1/layers`
/// lists it (and `GET /v1/summary` spreads it across layers), which `/metrics` gauge exports it,
/// and how it is computed from the layer's raw totals.
///
/// `LayerMeasure.all` is the table every view iterates, in its order: the summary's sections, the
/// headline list and the spread, and the derived gauges of `/metrics`. A new derived statistic is
/// one row here (plus its dashboard column and documentation).
public struct LayerMeasure: Sendable {
    /// The places of the nested JSON summary where rows are written, each after the section's
    /// own raw fields, in table order.
    public enum Section: Sendable, CaseIterable {
        /// Top level, after `tokens_dropped`.
        case layer
        /// Top level, after the per-expert arrays and before the most/least utilized experts.
        case experts
        case utilizationSummary
        /// After `last`, `history_length` and `window`.
        case loadVariance
        /// After `count`.
        case latency
        /// After `total_used`.
        case capacity
        case throughput
        case balance

        /// The section's key in the summary; nil for the top level.
        public var key: String? {
            switch self {
            case .layer, .experts: nil
            case .utilizationSummary: "utilization_summary"
            case .loadVariance: "load_variance"
            case .latency: "latency"
            case .capacity: "capacity"
            case .throughput: "throughput"
            case .balance: "balance"
            }
        }
    }

    /// A `/metrics` gauge family.
    public struct Gauge: Sendable {
        /// Prometheus metric name (base units, `_ratio` for 0-1 values).
        public let name: String
        public let help: String
        /// Factor from the measure's unit value to the series (1 for a ratio).
        public let scale: Double
    }

    /// Whether the measure is also computed over buckets: only rows that read nothing but the
    /// counts, tokens and losses a bucket keeps.
    public enum Steps: Sendable {
        /// Run-wide only (it reads utilization, latency, capacity or the decision history).
        case none
        /// Over a window of buckets (`?steps=N`) too.
        case window
        /// Over a window and over each bucket (`/history`).
        case stepAndWindow
    }

    /// How the measure is computed: one number per layer, or one per expert (exported only when
    /// per-expert series are on; the summary writes its per-expert arrays itself).
    public enum Value: Sendable {
        case perLayer(@Sendable (LayerMeasureInput) -> Double?)
        case perExpert(@Sendable (LayerMeasureInput) -> [Double])
    }

    /// Unique name of the row; for headline rows, the key in `GET /v1/layers` and in the spread.
    public let name: String
    /// Where the full summary writes it (section and key); nil when it does not.
    public let summary: (section: Section, key: String)?
    /// Factor from the measure's unit value to the JSON number (100 for a percentage).
    public let jsonScale: Double
    /// Listed by `GET /v1/layers` and spread across layers by `GET /v1/summary`.
    public let headline: Bool
    /// The `/metrics` gauge; nil when it is not exported. Gauges read only the raw totals (never
    /// `history`), which is all `/metrics` copies.
    public let gauge: Gauge?
    /// Whether windows and buckets report it.
    public let steps: Steps
    public let value: Value

    init(
        _ name: String, in section: Section?, as key: String? = nil, jsonScale: Double = Measures.ratio,
        headline: Bool = false, gauge: Gauge? = nil, steps: Steps = .none, _ value: Value
    ) {
        self.name = name
        summary = section.map { ($0, key ?? name) }
        self.jsonScale = jsonScale
        self.headline = headline
        self.gauge = gauge
        self.steps = steps
        self.value = value
    }

    /// Reported by windowed summaries.
    public var inWindows: Bool { steps != .none }
    /// Reported for each bucket of the history.
    public var inSteps: Bool { steps == .stepAndWindow }

    /// The measure at unit scale; nil for per-expert rows and where the layer has no value.
    public func unitValue(_ input: LayerMeasureInput) -> Double? {
        guard case .perLayer(let f) = value else { return nil }
        return f(input)
    }

    /// The measure as the JSON summary reports it.
    public func jsonValue(_ input: LayerMeasureInput) -> Double? {
        unitValue(input).map { $0 * jsonScale }
    }

    /// The row again under `section` with the same key: not a headline, not a gauge.
    func mirrored(in section: Section) -> LayerMeasure {
        let key = summary?.key ?? name
        return LayerMeasure(
            "\(section.key ?? "").\(key)", in: section, as: key, jsonScale: jsonScale,
            steps: steps == .none ? .none : .window, value)
    }
}

/// What a measure is computed from: the raw totals copied under the layer's lock and the
/// per-expert utilization derived from them once. `history` (the newest decision's counts and
/// the recent variances and latencies) is copied only for the JSON summary.
@dynamicMemberLookup
public struct LayerMeasureInput: Sendable {
    public struct History: Sendable {
        /// Counts of the newest decision.
        public let lastCounts: [UInt64]
        /// Load variances of the newest decisions, oldest first.
        public let loadVariances: [Double]
        /// Latency samples of the newest decisions in milliseconds, ascending.
        public let sortedLatenciesMs: [Double]
    }

    public let totals: LayerTotals
    /// Per expert, the mean share of each decision's tokens it received (0 before any decision).
    public let utilization: [Double]
    /// Sum of `utilization`, accumulated in expert order.
    public let utilizationSum: Double
    /// Window of the trend and the dead-expert rule, in decisions (at least 1).
    public let window: Int
    public let history: History?

    init(totals: LayerTotals, window: Int, history: History?) {
        self.totals = totals
        var utilization = [Double]()
        utilization.reserveCapacity(totals.utilizationSums.count)
        var sum: Double = 0
        for s in totals.utilizationSums {
            let u = Measures.mean(sum: s, count: totals.totalRoutings) ?? 0
            utilization.append(u)
            sum += u
        }
        self.utilization = utilization
        utilizationSum = sum
        self.window = Swift.max(1, window)
        self.history = history
    }

    @inlinable
    public subscript<T>(dynamicMember path: KeyPath<LayerTotals, T>) -> T { totals[keyPath: path] }

    /// Number of experts the dead-expert rule flags.
    var deadExperts: Int {
        var dead = 0
        for active in totals.lastActive
        where Measures.isDead(lastActive: active, routings: totals.totalRoutings, window: window) {
            dead += 1
        }
        return dead
    }

    var averageLatencyMs: Double? { Measures.mean(sum: totals.latencySumMs, count: totals.latencyCount) }

    var tokensPerRouting: Double? { Measures.mean(sum: Double(totals.totalTokens), count: totals.totalRoutings) }

    func latencyPercentile(_ p: Double) -> Double? {
        history.flatMap { Measures.percentile(p, ofSorted: $0.sortedLatenciesMs) }
    }
}

extension LayerMeasure {
    // The rows, by the section of the summary they belong to. The table's order below is the
    // order of the headline list, the spread and the gauges, and within a section the order of
    // its keys; the golden outputs fix all three.

    public static let routingEfficiency = LayerMeasure(
        "routing_efficiency", in: .layer, jsonScale: Measures.percent, headline: true,
        gauge: .init(
            name: "moe_routing_efficiency_ratio", help: "Share of tokens not dropped, over all decisions.",
            scale: Measures.ratio), steps: .stepAndWindow,
        .perLayer { Measures.routingEfficiency(tokens: $0.totalTokens, dropped: $0.tokensDropped) })
    public static let averageLoadBalanceLoss = LayerMeasure(
        "average_load_balance_loss", in: .layer, headline: true, steps: .stepAndWindow,
        .perLayer { $0.loadBalanceLoss.average })
    public static let averageRouterZLoss = LayerMeasure(
        "average_router_z_loss", in: .layer, headline: true, steps: .stepAndWindow, .perLayer { $0.routerZLoss.average }
    )
    public static let averageAuxiliaryLoss = LayerMeasure(
        "average_auxiliary_loss", in: .layer, headline: true, steps: .stepAndWindow,
        .perLayer { $0.auxiliaryLoss.average })
    public static let expertUtilization = LayerMeasure(
        "expert_utilization", in: nil,
        gauge: .init(
            name: "moe_expert_utilization_ratio", help: "Mean share of each decision's tokens the expert received.",
            scale: Measures.ratio),
        .perExpert { $0.utilization })
    public static let utilizationCV = LayerMeasure(
        "utilization_cv", in: .experts, headline: true,
        gauge: .init(
            name: "moe_routing_utilization_cv", help: "Coefficient of variation of expert utilization.",
            scale: Measures.ratio),
        .perLayer { Measures.coefficientOfVariation($0.utilization, sum: $0.utilizationSum) })
    public static let maxViolation = LayerMeasure(
        "max_violation", in: .balance, headline: true,
        gauge: .init(
            name: "moe_routing_max_violation",
            help: "MaxVio over the run: max expert load over mean load, minus 1.", scale: Measures.ratio),
        steps: .stepAndWindow, .perLayer { Measures.maxViolation($0.expertTokens) })
    public static let maxViolationLast = LayerMeasure(
        "max_violation_last", in: .balance, .perLayer { $0.history.flatMap { Measures.maxViolation($0.lastCounts) } })
    public static let balancedness = LayerMeasure(
        "balancedness", in: .balance, headline: true,
        gauge: .init(
            name: "moe_routing_balancedness_ratio", help: "Mean expert load over max expert load.",
            scale: Measures.ratio), steps: .stepAndWindow,
        .perLayer { Measures.balancedness($0.expertTokens) })
    public static let entropy = LayerMeasure(
        "entropy", in: .balance, headline: true,
        gauge: .init(
            name: "moe_routing_entropy_ratio",
            help: "Entropy of the expert load distribution over log(experts).", scale: Measures.ratio),
        steps: .stepAndWindow, .perLayer { Measures.normalizedEntropy($0.expertTokens) })
    public static let deadExperts = LayerMeasure(
        "dead_experts", in: .balance, headline: true,
        gauge: .init(
            name: "moe_routing_dead_experts",
            help: "Experts that received no token in the last window of decisions.", scale: Measures.ratio),
        steps: .stepAndWindow, .perLayer { Double($0.deadExperts) })
    public static let averageLatencyMs = LayerMeasure(
        "average_latency_ms", in: .latency, as: "average_ms", headline: true, .perLayer { $0.averageLatencyMs })
    public static let minLatencyMs = LayerMeasure(
        "min_latency_ms", in: .latency, as: "min_ms", .perLayer { $0.latencyMinMs })
    public static let maxLatencyMs = LayerMeasure(
        "max_latency_ms", in: .latency, as: "max_ms", .perLayer { $0.latencyMaxMs })
    public static let p50LatencyMs = LayerMeasure(
        "p50_latency_ms", in: .latency, as: "p50_ms", .perLayer { $0.latencyPercentile(50) })
    public static let p95LatencyMs = LayerMeasure(
        "p95_latency_ms", in: .latency, as: "p95_ms", .perLayer { $0.latencyPercentile(95) })
    public static let p99LatencyMs = LayerMeasure(
        "p99_latency_ms", in: .latency, as: "p99_ms", headline: true, .perLayer { $0.latencyPercentile(99) })
    public static let capacityUtilization = LayerMeasure(
        "capacity_utilization", in: .capacity, as: "overall_utilization", jsonScale: Measures.percent, headline: true,
        gauge: .init(
            name: "moe_routing_capacity_utilization_ratio",
            help: "Tokens received over capacity offered, in decisions with a known capacity.",
            scale: Measures.ratio),
        .perLayer { Measures.capacityUtilization(used: $0.capacity.totalUsed, offered: $0.capacity.totalCapacity) })
    public static let overflowRatio = LayerMeasure(
        "overflow_ratio", in: .capacity,
        gauge: .init(
            name: "moe_routing_overflow_ratio",
            help: "Tokens demanded but not served over tokens demanded, in decisions that sent expert_demand.",
            scale: Measures.ratio), steps: .stepAndWindow,
        .perLayer { i in
            i.expertOverflow.flatMap { overflow in
                var served: UInt64 = 0, over: UInt64 = 0
                for (s, o) in zip(i.expertTokens, overflow) {
                    served = served.addingSaturated(s)
                    over = over.addingSaturated(o)
                }
                return Measures.overflowRatio(served: served, overflow: over)
            }
        })
    public static let tokensPerRouting = LayerMeasure(
        "tokens_per_routing", in: .throughput, steps: .window, .perLayer { $0.tokensPerRouting })
    public static let tokensPerSecond = LayerMeasure(
        "tokens_per_second", in: .throughput, headline: true,
        .perLayer { i in
            i.tokensPerRouting.flatMap { Measures.perSecond(perDecision: $0, averageLatencyMs: i.averageLatencyMs) }
        })
    public static let routingsPerSecond = LayerMeasure(
        "routings_per_second", in: .throughput,
        .perLayer { Measures.perSecond(perDecision: 1, averageLatencyMs: $0.averageLatencyMs) })
    public static let meanUtilization = LayerMeasure(
        "mean_utilization", in: .utilizationSummary,
        .perLayer { Measures.mean(sum: $0.utilizationSum, count: $0.utilization.count) ?? 0 })
    public static let minUtilization = LayerMeasure(
        "min_utilization", in: .utilizationSummary, .perLayer { $0.utilization.min() ?? 0 })
    public static let maxUtilization = LayerMeasure(
        "max_utilization", in: .utilizationSummary, .perLayer { $0.utilization.max() ?? 0 })
    public static let loadVarianceTrend = LayerMeasure(
        "load_variance_trend", in: .loadVariance, as: "trend",
        .perLayer { i in i.history.map { Measures.trend($0.loadVariances, window: i.window) } })

    /// The table, in order.
    public static let all: [LayerMeasure] = [
        routingEfficiency, averageLoadBalanceLoss, averageRouterZLoss, averageAuxiliaryLoss,
        expertUtilization, utilizationCV,
        maxViolation, maxViolationLast, balancedness, entropy, deadExperts,
        averageLatencyMs, minLatencyMs, maxLatencyMs, p50LatencyMs, p95LatencyMs, p99LatencyMs,
        capacityUtilization, overflowRatio,
        tokensPerRouting, tokensPerSecond, routingsPerSecond,
        meanUtilization, minUtilization, maxUtilization,
        utilizationCV.mirrored(in: .utilizationSummary), routingEfficiency.mirrored(in: .utilizationSummary),
        averageLoadBalanceLoss.mirrored(in: .utilizationSummary), averageRouterZLoss.mirrored(in: .utilizationSummary),
        loadVarianceTrend,
    ]

    /// The headline rows, in order.
    public static let headlines: [LayerMeasure] = all.filter(\.headline)

    /// Position of each row in `all`, by name.
    static let index: [String: Int] = {
        var index = [String: Int]()
        for (i, row) in all.enumerated() { index[row.name] = i }
        return index
    }()
}
