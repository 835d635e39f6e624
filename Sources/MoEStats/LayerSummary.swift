#if canImport(Glibc)
import Glibc  // log(); the C math library only, no I/O
#elseif canImport(Musl)
import Musl
#endif

/// Every statistic of one layer, as the JSON summary reports it.
///
/// Names and units follow the reference (`stats.rs` of torsh) where it has them, so existing
/// dashboards and scripts keep working: `routing_efficiency` and `overall_utilization` are
/// percentages, utilizations are fractions, latencies are milliseconds (defect 5 of the reference:
/// only Prometheus switches to 0-1 ratios and seconds). A value that does not exist yet is nil
/// (JSON `null`), never 0, NaN or infinity: the reference's 0 before the first latency sample and
/// its infinite minimum (defect 6) are not numbers anyone can trust.
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
        /// than 2 points, as the reference).
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

        public init(count: UInt64, averageMs: Double?, minMs: Double?, maxMs: Double?,
                    p50Ms: Double?, p95Ms: Double?, p99Ms: Double?) {
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
    public var routingEfficiency: Double?
    public var averageLoadBalanceLoss: Double?
    public var averageRouterZLoss: Double?
    public var averageAuxiliaryLoss: Double?
    public var expertUtilization: [Double]
    public var expertTokenCounts: [UInt64]
    public var utilizationCV: Double?
    public var mostUtilizedExpert: ExpertUtilization?
    public var leastUtilizedExpert: ExpertUtilization?
    public var utilizationSummary: UtilizationSummary
    public var loadVariance: LoadVariance
    public var latency: Latency
    public var capacity: Capacity
    public var throughput: Throughput
    public var balance: Balance
    public var nonfiniteLosses: UInt64
    public var workers: Workers
}

extension LayerSnapshot {
    /// Population coefficient of variation of `values`, whose sum (accumulated in order) is
    /// `sum`; nil when the mean is 0. One definition for the summary and `LayerMetrics`, so the
    /// JSON field and its series never differ.
    static func coefficientOfVariation(_ values: [Double], sum: Double) -> Double? {
        let mean = values.isEmpty ? 0 : sum / Double(values.count)
        guard mean > 0 else { return nil }
        var squares: Double = 0
        for v in values { squares += (v - mean) * (v - mean) }
        return (squares / Double(values.count)).squareRoot() / mean
    }

    /// An expert is dead when it never received a token, or none in the newest `window`
    /// decisions (`lastActive` is the routing number of its newest token, 0 for never).
    static func isDead(lastActive: UInt64, routings: UInt64, window: Int) -> Bool {
        lastActive == 0 || routings - lastActive >= UInt64(Swift.max(1, window))
    }

    /// Computes every statistic from the copied state. `window` (in decisions) bounds the
    /// load-variance trend and the dead-expert check; nil means the registry's default; values
    /// below 1 are treated as 1.
    ///
    /// `now` (Unix seconds, passed in: the module reads no clock) gives each worker its age, and
    /// with `workerTTL` (seconds) flags workers silent for longer as stale; without them ages are
    /// nil and no worker is stale.
    public func summary(window: Int?, now: Double? = nil, workerTTL: Double? = nil) -> LayerSummary {
        let window = Swift.max(1, window ?? defaultWindow)
        let n = Double(totalRoutings)

        let utilization = utilizationSums.map { totalRoutings > 0 ? $0 / n : 0 }
        let efficiency: Double? = totalTokens > 0
            ? Double(totalTokens - tokensDropped) / Double(totalTokens) * 100 : nil

        // Utilization spread, most/least utilized (last maximum, first minimum: Rust's max_by
        // keeps the last of equal elements, min_by the first).
        var sum: Double = 0, minU = Double.infinity, maxU = -Double.infinity
        var most: LayerSummary.ExpertUtilization?, least: LayerSummary.ExpertUtilization?
        for (i, u) in utilization.enumerated() {
            sum += u
            if most == nil || u >= most!.utilization { most = .init(expert: i, utilization: u) }
            if least == nil || u < least!.utilization { least = .init(expert: i, utilization: u) }
            minU = Swift.min(minU, u)
            maxU = Swift.max(maxU, u)
        }
        let meanU = utilization.isEmpty ? 0 : sum / Double(utilization.count)
        let cv = Self.coefficientOfVariation(utilization, sum: sum)

        let averageLatency: Double? = latencyHistogram.count > 0 ? latencySumMs / Double(latencyHistogram.count) : nil
        let sorted = recentLatenciesMs.sorted()
        func percentile(_ p: Double) -> Double? {
            guard !sorted.isEmpty else { return nil }
            let index = Int((p / 100) * Double(sorted.count - 1))
            return sorted[Swift.min(index, sorted.count - 1)]
        }

        let tokensPerRouting: Double? = totalRoutings > 0 ? Double(totalTokens) / n : nil
        var tokensPerSecond: Double?, routingsPerSecond: Double?
        if let averageLatency, averageLatency > 0 {
            routingsPerSecond = 1000 / averageLatency
            if let tokensPerRouting { tokensPerSecond = tokensPerRouting * 1000 / averageLatency }
        }

        let hasCapacity = capacity.decisions > 0
        let capacitySummary = LayerSummary.Capacity(
            averageUtilization: hasCapacity ? capacity.averageUtilization : nil,
            peakUtilization: hasCapacity ? capacity.peakUtilization : nil,
            capacityExceededCount: capacityExceededCount,
            totalCapacity: hasCapacity ? capacity.totalCapacity : nil,
            totalUsed: hasCapacity ? capacity.totalUsed : nil,
            overallUtilization: hasCapacity && capacity.totalCapacity > 0
                ? Double(capacity.totalUsed) / Double(capacity.totalCapacity) * 100 : nil)

        var dead: [Int] = []
        for (i, active) in lastActive.enumerated() where Self.isDead(lastActive: active, routings: totalRoutings, window: window) {
            dead.append(i)
        }
        let balance = LayerSummary.Balance(
            maxViolation: Self.maxViolation(expertTokens),
            maxViolationLast: Self.maxViolation(lastCounts),
            balancedness: Self.balancedness(expertTokens),
            entropy: Self.normalizedEntropy(expertTokens),
            deadExperts: dead.count,
            deadExpertIndices: dead)

        return LayerSummary(
            layer: layer, experts: experts,
            totalRoutings: totalRoutings, totalTokens: totalTokens, tokensDropped: tokensDropped,
            routingEfficiency: efficiency,
            averageLoadBalanceLoss: loadBalanceLoss.average,
            averageRouterZLoss: routerZLoss.average,
            averageAuxiliaryLoss: auxiliaryLoss.average,
            expertUtilization: utilization,
            expertTokenCounts: expertTokens,
            utilizationCV: cv,
            mostUtilizedExpert: most, leastUtilizedExpert: least,
            utilizationSummary: .init(
                meanUtilization: meanU,
                minUtilization: utilization.isEmpty ? 0 : minU,
                maxUtilization: utilization.isEmpty ? 0 : maxU,
                utilizationCV: cv, routingEfficiency: efficiency,
                averageLoadBalanceLoss: loadBalanceLoss.average,
                averageRouterZLoss: routerZLoss.average),
            loadVariance: .init(last: loadVariances.last, historyLength: loadVariances.count,
                                window: window, trend: Self.trend(loadVariances, window: window)),
            latency: .init(count: latencyHistogram.count, averageMs: averageLatency,
                           minMs: latencyMinMs, maxMs: latencyMaxMs,
                           p50Ms: percentile(50), p95Ms: percentile(95), p99Ms: percentile(99)),
            capacity: capacitySummary,
            throughput: .init(tokensPerRouting: tokensPerRouting, tokensPerSecond: tokensPerSecond,
                              routingsPerSecond: routingsPerSecond),
            balance: balance,
            nonfiniteLosses: nonfiniteLosses,
            workers: workersSummary(now: now, ttl: workerTTL))
    }

    private func workersSummary(now: Double?, ttl: Double?) -> LayerSummary.Workers {
        var list = [LayerSummary.Workers.Entry]()
        list.reserveCapacity(workers.count)
        var stale = 0
        for w in workers {
            let isStale = now.map { w.isStale(now: $0, ttl: ttl) } ?? false
            if isStale { stale += 1 }
            list.append(.init(worker: w.worker, lastSeen: w.lastSeen, ageSeconds: now.map { w.age(now: $0) },
                              stale: isStale, decisions: w.decisions))
        }
        return .init(active: workers.count - stale, stale: stale, ttlSeconds: ttl,
                     untrackedDecisions: untrackedWorkerDecisions, list: list)
    }

    /// The reference's `recent_load_variance_trend`: least-squares slope of the newest `window`
    /// values against 0..m-1, 0 with fewer than two. Computed with centred sums in doubles, which
    /// is the same slope without the cancellation of `n*sum_xy - sum_x*sum_y` in floats.
    static func trend(_ values: [Double], window: Int) -> Double {
        let m = Swift.min(window, values.count)
        guard m >= 2 else { return 0 }
        let recent = values[(values.count - m)...]
        let meanX = Double(m - 1) / 2
        var meanY: Double = 0
        for y in recent { meanY += y }
        meanY /= Double(m)
        var sxy: Double = 0, sxx: Double = 0
        for (i, y) in recent.enumerated() {
            let dx = Double(i) - meanX
            sxy += dx * (y - meanY)
            sxx += dx * dx
        }
        return sxx > 0 ? sxy / sxx : 0
    }

    /// MaxVio (DeepSeek): (max load - mean load) / mean load; nil when no expert has a token.
    static func maxViolation(_ counts: [UInt64]) -> Double? {
        guard !counts.isEmpty else { return nil }
        var sum: Double = 0, maxC: Double = 0
        for c in counts { sum += Double(c); maxC = Swift.max(maxC, Double(c)) }
        let mean = sum / Double(counts.count)
        return mean > 0 ? (maxC - mean) / mean : nil
    }

    /// Balancedness (vLLM, SGLang): mean load / max load; nil when no expert has a token.
    static func balancedness(_ counts: [UInt64]) -> Double? {
        guard !counts.isEmpty else { return nil }
        var sum: Double = 0, maxC: Double = 0
        for c in counts { sum += Double(c); maxC = Swift.max(maxC, Double(c)) }
        return maxC > 0 ? sum / Double(counts.count) / maxC : nil
    }

    /// Entropy of the load distribution p_i = count_i / sum, divided by log(E) so that 1 means
    /// uniform; nil with no token or a single expert (log 1 = 0).
    static func normalizedEntropy(_ counts: [UInt64]) -> Double? {
        guard counts.count > 1 else { return nil }
        var sum: Double = 0
        for c in counts { sum += Double(c) }
        guard sum > 0 else { return nil }
        var h: Double = 0
        for c in counts where c > 0 {
            let p = Double(c) / sum
            h -= p * log(p)
        }
        return h / log(Double(counts.count))
    }
}
