/// Every statistic of one layer, as the JSON summary reports it.
///
/// Units: `routing_efficiency` and `overall_utilization` are percentages, utilizations are
/// fractions, latencies are milliseconds (only Prometheus switches to 0-1 ratios and seconds, its
/// base units). A value that does not exist yet is nil (JSON `null`), never 0, NaN or infinity: a
/// 0 before the first latency sample or an infinite minimum would read as a measurement.
///
/// The derived numbers are the rows of `LayerMeasure.all`, held in `measures` and read with
/// `summary[row]`; the nested views below (`balance`, `latency`, ...) name the existing rows.
public struct LayerSummary: Sendable, Equatable {
    public struct ExpertUtilization: Sendable, Equatable {
        public var expert: Int
        public var utilization: Double

        public init(expert: Int, utilization: Double) {
            self.expert = expert
            self.utilization = utilization
        }
    }

    public struct UtilizationSummary: Sendable, Equatable {
        public var meanUtilization: Double
        public var minUtilization: Double
        public var maxUtilization: Double
        public var utilizationCV: Double?
        public var routingEfficiency: Double?
        public var averageLoadBalanceLoss: Double?
        public var averageRouterZLoss: Double?
    }

    public struct LoadVariance: Sendable, Equatable {
        /// Variance of the newest decision's counts (tokens squared).
        public var last: Double?
        /// Variances kept (at most 1000).
        public var historyLength: Int
        /// Window the trend and dead experts were computed over, in decisions.
        public var window: Int
        /// Least-squares slope of the newest `window` variances against their index (0 with fewer
        /// than 2 points).
        public var trend: Double
    }

    public struct Latency: Sendable, Equatable {
        public var count: UInt64
        public var averageMs: Double?
        public var minMs: Double?
        public var maxMs: Double?
        public var p50Ms: Double?
        public var p95Ms: Double?
        public var p99Ms: Double?

        public init(
            count: UInt64, averageMs: Double?, minMs: Double?, maxMs: Double?,
            p50Ms: Double?, p95Ms: Double?, p99Ms: Double?
        ) {
            self.count = count
            self.averageMs = averageMs
            self.minMs = minMs
            self.maxMs = maxMs
            self.p50Ms = p50Ms
            self.p95Ms = p95Ms
            self.p99Ms = p99Ms
        }
    }

    public struct Capacity: Sendable, Equatable {
        /// EMA (alpha 0.1, from 0) of per-decision utilization, a fraction; nil without capacity.
        public var averageUtilization: Double?
        /// Highest per-decision utilization, a fraction; nil without capacity.
        public var peakUtilization: Double?
        /// Decisions that dropped tokens.
        public var capacityExceededCount: UInt64
        /// Sum of experts x capacity in tokens; nil without capacity.
        public var totalCapacity: UInt64?
        /// Tokens received in decisions with a known capacity; nil without capacity.
        public var totalUsed: UInt64?
        /// total_used / total_capacity x 100 (a percentage); nil without capacity.
        public var overallUtilization: Double?
    }

    public struct Throughput: Sendable, Equatable {
        public var tokensPerRouting: Double?
        /// tokens_per_routing x 1000 / average latency in ms; nil without latency.
        public var tokensPerSecond: Double?
        /// 1000 / average latency in ms; nil without latency.
        public var routingsPerSecond: Double?
    }

    public struct Balance: Sendable, Equatable {
        /// MaxVio over the run: (max - mean) / mean of the experts' cumulative token counts.
        public var maxViolation: Double?
        /// MaxVio of the newest decision's counts.
        public var maxViolationLast: Double?
        /// mean / max of the cumulative token counts (1 = perfectly balanced).
        public var balancedness: Double?
        /// Shannon entropy of the cumulative load distribution divided by log(E), 0..1.
        public var entropy: Double?
        /// Number of experts that received no token in the newest `window` decisions.
        public var deadExperts: Int
        /// Their indices, ascending (not part of the JSON summary).
        public var deadExpertIndices: [Int]
    }

    /// The layer's workers as seen at the summary's `now`.
    public struct Workers: Sendable, Equatable {
        public struct Entry: Sendable, Equatable {
            public var worker: String
            /// Unix seconds of its newest decision.
            public var lastSeen: Double
            /// Seconds since then; nil when the summary was computed without a `now`.
            public var ageSeconds: Double?
            /// Silent for longer than `ttlSeconds` (false without a TTL or a `now`).
            public var stale: Bool
            public var decisions: UInt64
        }

        /// Workers that are not stale (every worker without a TTL or a `now`).
        public var active: Int
        /// Workers silent for longer than `ttlSeconds`.
        public var stale: Int
        /// The TTL the flags were computed with; nil when none was given.
        public var ttlSeconds: Double?
        /// Decisions from workers not remembered because the per-layer table was full.
        public var untrackedDecisions: UInt64
        /// Every remembered worker, sorted by name.
        public var list: [Entry]
    }

    public var layer: String
    public var experts: Int
    public var totalRoutings: UInt64
    public var totalTokens: UInt64
    public var tokensDropped: UInt64
    public var expertUtilization: [Double]
    public var expertTokenCounts: [UInt64]
    /// Last maximum and first minimum of `expertUtilization`, nil without experts.
    public var mostUtilizedExpert: ExpertUtilization?
    public var leastUtilizedExpert: ExpertUtilization?
    /// The value of each row of `LayerMeasure.all` as the summary reports it (`jsonValue`), in
    /// table order.
    public var measures: [Double?]
    /// Variance of the newest decision's counts, and how many variances are kept.
    public var lastLoadVariance: Double?
    public var loadVarianceHistoryLength: Int
    /// Window of the trend and the dead-expert rule, in decisions.
    public var window: Int
    public var latencyCount: UInt64
    /// The raw capacity fields (nil without capacity) and the count of decisions that dropped tokens.
    public var capacityAverageUtilization: Double?
    public var capacityPeakUtilization: Double?
    public var capacityExceededCount: UInt64
    public var totalCapacity: UInt64?
    public var totalUsed: UInt64?
    /// Indices of the experts the dead-expert rule flags, ascending (not part of the JSON summary).
    public var deadExpertIndices: [Int]
    public var nonfiniteLosses: UInt64
    public var workers: Workers
    /// Decisions that sent `expert_demand`, and per expert their demand minus served (nil without any).
    public var demandDecisions: UInt64
    public var expertOverflow: [UInt64]?

    /// The value of `measure` as the summary reports it (percentages as percentages).
    public subscript(measure: LayerMeasure) -> Double? {
        LayerMeasure.index[measure.name].flatMap { measures[$0] }
    }

    public var routingEfficiency: Double? { self[.routingEfficiency] }
    public var averageLoadBalanceLoss: Double? { self[.averageLoadBalanceLoss] }
    public var averageRouterZLoss: Double? { self[.averageRouterZLoss] }
    public var averageAuxiliaryLoss: Double? { self[.averageAuxiliaryLoss] }
    public var utilizationCV: Double? { self[.utilizationCV] }

    public var utilizationSummary: UtilizationSummary {
        .init(
            meanUtilization: self[.meanUtilization] ?? 0, minUtilization: self[.minUtilization] ?? 0,
            maxUtilization: self[.maxUtilization] ?? 0, utilizationCV: utilizationCV,
            routingEfficiency: routingEfficiency, averageLoadBalanceLoss: averageLoadBalanceLoss,
            averageRouterZLoss: averageRouterZLoss)
    }

    public var loadVariance: LoadVariance {
        .init(
            last: lastLoadVariance, historyLength: loadVarianceHistoryLength, window: window,
            trend: self[.loadVarianceTrend] ?? 0)
    }

    public var latency: Latency {
        .init(
            count: latencyCount, averageMs: self[.averageLatencyMs], minMs: self[.minLatencyMs],
            maxMs: self[.maxLatencyMs], p50Ms: self[.p50LatencyMs], p95Ms: self[.p95LatencyMs],
            p99Ms: self[.p99LatencyMs])
    }

    public var capacity: Capacity {
        .init(
            averageUtilization: capacityAverageUtilization, peakUtilization: capacityPeakUtilization,
            capacityExceededCount: capacityExceededCount, totalCapacity: totalCapacity, totalUsed: totalUsed,
            overallUtilization: self[.capacityUtilization])
    }

    public var throughput: Throughput {
        .init(
            tokensPerRouting: self[.tokensPerRouting], tokensPerSecond: self[.tokensPerSecond],
            routingsPerSecond: self[.routingsPerSecond])
    }

    public var balance: Balance {
        .init(
            maxViolation: self[.maxViolation], maxViolationLast: self[.maxViolationLast],
            balancedness: self[.balancedness], entropy: self[.entropy],
            deadExperts: deadExpertIndices.count, deadExpertIndices: deadExpertIndices)
    }
}

extension LayerSnapshot {
    /// Computes every statistic from the copied state. `window` (in decisions) bounds the
    /// load-variance trend and the dead-expert check; nil means the registry's default; values
    /// below 1 are treated as 1.
    ///
    /// `now` (Unix seconds, passed in: the module reads no clock) gives each worker its age, and
    /// with `workerTTL` (seconds) flags workers silent for longer as stale; without them ages are
    /// nil and no worker is stale.
    public func summary(window: Int?, now: Double? = nil, workerTTL: Double? = nil) -> LayerSummary {
        let input = measureInput(window: window)

        // Most and least utilized: the last maximum and the first minimum.
        var most: LayerSummary.ExpertUtilization?, least: LayerSummary.ExpertUtilization?
        for (i, u) in input.utilization.enumerated() {
            if most == nil || u >= most!.utilization { most = .init(expert: i, utilization: u) }
            if least == nil || u < least!.utilization { least = .init(expert: i, utilization: u) }
        }
        var dead: [Int] = []
        for (i, active) in totals.lastActive.enumerated()
        where Measures.isDead(lastActive: active, routings: totals.totalRoutings, window: input.window) {
            dead.append(i)
        }
        let capacity = totals.capacity, hasCapacity = capacity.decisions > 0

        return LayerSummary(
            layer: totals.layer, experts: totals.experts,
            totalRoutings: totals.totalRoutings, totalTokens: totals.totalTokens, tokensDropped: totals.tokensDropped,
            expertUtilization: input.utilization, expertTokenCounts: totals.expertTokens,
            mostUtilizedExpert: most, leastUtilizedExpert: least,
            measures: LayerMeasure.all.map { $0.jsonValue(input) },
            lastLoadVariance: loadVariances.last, loadVarianceHistoryLength: loadVariances.count,
            window: input.window, latencyCount: totals.latencyCount,
            capacityAverageUtilization: hasCapacity ? capacity.averageUtilization : nil,
            capacityPeakUtilization: hasCapacity ? capacity.peakUtilization : nil,
            capacityExceededCount: totals.capacityExceededCount,
            totalCapacity: hasCapacity ? capacity.totalCapacity : nil,
            totalUsed: hasCapacity ? capacity.totalUsed : nil,
            deadExpertIndices: dead,
            nonfiniteLosses: totals.nonfiniteLosses,
            workers: workersSummary(now: now, ttl: workerTTL),
            demandDecisions: totals.demandDecisions, expertOverflow: totals.expertOverflow)
    }

    /// What the rows of `LayerMeasure` compute the summary from, at `window` (nil: the default).
    public func measureInput(window: Int?) -> LayerMeasureInput {
        LayerMeasureInput(
            totals: totals, window: window ?? totals.defaultWindow,
            history: .init(
                lastCounts: lastCounts, loadVariances: loadVariances,
                sortedLatenciesMs: recentLatenciesMs.sorted()))
    }

    private func workersSummary(now: Double?, ttl: Double?) -> LayerSummary.Workers {
        var list = [LayerSummary.Workers.Entry]()
        list.reserveCapacity(workers.count)
        var stale = 0
        for w in workers {
            let isStale = now.map { w.isStale(now: $0, ttl: ttl) } ?? false
            if isStale { stale += 1 }
            list.append(
                .init(
                    worker: w.worker, lastSeen: w.lastSeen, ageSeconds: now.map { w.age(now: $0) },
                    stale: isStale, decisions: w.decisions))
        }
        return .init(
            active: workers.count - stale, stale: stale, ttlSeconds: ttl,
            untrackedDecisions: untrackedWorkerDecisions, list: list)
    }
}
