/// What `/metrics` exports of one layer, and nothing more.
///
/// A scrape of a large model renders tens of thousands of series, and scrapes come every few
/// seconds; the JSON summary (`LayerSnapshot.summary(window:)`) computes far more than the
/// exposition uses: it sorts up to 1000 latency samples for percentiles, fits the load-variance
/// trend, and lists workers and dead experts one by one. This view computes only the exported
/// values, in one pass per array and without sorting, with the very same arithmetic as the summary
/// (same operands, same order), so a series never differs from the JSON field it mirrors.
public struct LayerMetrics: Sendable {
    public let layer: String
    /// Number of experts (fixed for the layer's life).
    public let experts: Int
    public let totalRoutings: UInt64
    public let totalTokens: UInt64
    public let tokensDropped: UInt64
    /// Per expert, the sum of the tokens it received.
    public let expertTokens: [UInt64]
    /// Per expert, the mean share of each decision's tokens it received (the summary's
    /// `expert_utilization`).
    public let expertUtilization: [Double]
    public let loadBalanceLoss: LossTotals
    public let routerZLoss: LossTotals
    public let auxiliaryLoss: LossTotals
    public let nonfiniteLosses: UInt64
    public let latencyHistogram: LatencyHistogram
    public let capacity: CapacityTotals
    /// Coefficient of variation of `expertUtilization`; nil when the mean is 0.
    public let utilizationCV: Double?
    /// MaxVio of the cumulative token counts.
    public let maxViolation: Double?
    public let balancedness: Double?
    public let entropy: Double?
    /// Experts with no token in the newest `window` decisions (the registry's default window).
    public let deadExperts: Int
    /// Unix seconds of each remembered worker's newest decision (order irrelevant: only counted).
    public let workerLastSeen: [Double]
    /// Unix seconds of the layer's newest decision.
    public let lastUpdated: Double

    /// The view of a full snapshot: equal, series by series, to what its summary reports.
    public init(_ s: LayerSnapshot) {
        var lastSeen = [Double]()
        lastSeen.reserveCapacity(s.workers.count)
        for w in s.workers { lastSeen.append(w.lastSeen) }
        self.init(layer: s.layer, experts: s.experts, totalRoutings: s.totalRoutings, totalTokens: s.totalTokens,
                  tokensDropped: s.tokensDropped, expertTokens: s.expertTokens, utilizationSums: s.utilizationSums,
                  lastActive: s.lastActive, loadBalanceLoss: s.loadBalanceLoss, routerZLoss: s.routerZLoss,
                  auxiliaryLoss: s.auxiliaryLoss, nonfiniteLosses: s.nonfiniteLosses,
                  latencyHistogram: s.latencyHistogram, capacity: s.capacity, window: s.defaultWindow,
                  workerLastSeen: lastSeen, lastUpdated: s.lastUpdated)
    }

    /// Copies only what the view needs from the live state: called under the layer's lock, so it
    /// copies (the arrays element by element, never sharing a buffer the layer appends to: see
    /// `LayerSnapshot.init`) and computes nothing; `init(copy:)` does the arithmetic outside.
    static func copy(layer: String, state s: LayerState, defaultWindow: Int) -> Copy {
        var lastSeen = [Double]()
        lastSeen.reserveCapacity(s.workers.count)
        for r in s.workers.values { lastSeen.append(r.lastSeen) }
        return Copy(layer: layer, experts: s.experts, totalRoutings: s.totalRoutings, totalTokens: s.totalTokens,
                    tokensDropped: s.tokensDropped, expertTokens: s.expertTokens.map { $0 },
                    utilizationSums: s.utilizationSums.map { $0 }, lastActive: s.lastActive.map { $0 },
                    loadBalanceLoss: s.loadBalanceLoss, routerZLoss: s.routerZLoss, auxiliaryLoss: s.auxiliaryLoss,
                    nonfiniteLosses: s.nonfiniteLosses, bucketCounts: s.latencyBucketCounts.map { $0 },
                    bounds: s.latencyBoundsSeconds, latencySumMs: s.latencySumMs, latencyCount: s.latencyCount,
                    capacity: s.capacity, window: defaultWindow, workerLastSeen: lastSeen,
                    lastUpdated: s.lastUpdated)
    }

    /// The raw numbers copied under a layer's lock.
    struct Copy: Sendable {
        var layer: String
        var experts: Int
        var totalRoutings: UInt64
        var totalTokens: UInt64
        var tokensDropped: UInt64
        var expertTokens: [UInt64]
        var utilizationSums: [Double]
        var lastActive: [UInt64]
        var loadBalanceLoss: LossTotals
        var routerZLoss: LossTotals
        var auxiliaryLoss: LossTotals
        var nonfiniteLosses: UInt64
        /// Per-bucket (not cumulative) counts, as the layer keeps them.
        var bucketCounts: [UInt64]
        var bounds: [Double]
        var latencySumMs: Double
        var latencyCount: UInt64
        var capacity: CapacityTotals
        var window: Int
        var workerLastSeen: [Double]
        var lastUpdated: Double
    }

    init(copy c: Copy) {
        self.init(layer: c.layer, experts: c.experts, totalRoutings: c.totalRoutings, totalTokens: c.totalTokens,
                  tokensDropped: c.tokensDropped, expertTokens: c.expertTokens, utilizationSums: c.utilizationSums,
                  lastActive: c.lastActive, loadBalanceLoss: c.loadBalanceLoss, routerZLoss: c.routerZLoss,
                  auxiliaryLoss: c.auxiliaryLoss, nonfiniteLosses: c.nonfiniteLosses,
                  latencyHistogram: LatencyHistogram(perBucket: c.bucketCounts, bounds: c.bounds,
                                                     sumMs: c.latencySumMs, count: c.latencyCount),
                  capacity: c.capacity, window: c.window, workerLastSeen: c.workerLastSeen,
                  lastUpdated: c.lastUpdated)
    }

    // swiftlint:disable:next function_parameter_count
    private init(layer: String, experts: Int, totalRoutings: UInt64, totalTokens: UInt64, tokensDropped: UInt64,
                 expertTokens: [UInt64], utilizationSums: [Double], lastActive: [UInt64],
                 loadBalanceLoss: LossTotals, routerZLoss: LossTotals, auxiliaryLoss: LossTotals,
                 nonfiniteLosses: UInt64, latencyHistogram: LatencyHistogram, capacity: CapacityTotals,
                 window: Int, workerLastSeen: [Double], lastUpdated: Double) {
        self.layer = layer
        self.experts = experts
        self.totalRoutings = totalRoutings
        self.totalTokens = totalTokens
        self.tokensDropped = tokensDropped
        self.expertTokens = expertTokens
        self.loadBalanceLoss = loadBalanceLoss
        self.routerZLoss = routerZLoss
        self.auxiliaryLoss = auxiliaryLoss
        self.nonfiniteLosses = nonfiniteLosses
        self.latencyHistogram = latencyHistogram
        self.capacity = capacity
        self.workerLastSeen = workerLastSeen
        self.lastUpdated = lastUpdated

        // Utilization and its CV exactly as `summary(window:)` computes them: the same divisions,
        // the sum accumulated in expert order, then the squared deviations in expert order.
        let n = Double(totalRoutings)
        var utilization = [Double]()
        utilization.reserveCapacity(utilizationSums.count)
        var sum: Double = 0
        for s in utilizationSums {
            let u = totalRoutings > 0 ? s / n : 0
            utilization.append(u)
            sum += u
        }
        expertUtilization = utilization
        utilizationCV = LayerSnapshot.coefficientOfVariation(utilization, sum: sum)

        maxViolation = LayerSnapshot.maxViolation(expertTokens)
        balancedness = LayerSnapshot.balancedness(expertTokens)
        entropy = LayerSnapshot.normalizedEntropy(expertTokens)

        // The summary's dead-expert rule with its default window, counted instead of listed.
        var dead = 0
        for active in lastActive where LayerSnapshot.isDead(lastActive: active, routings: totalRoutings, window: window) {
            dead += 1
        }
        deadExperts = dead
    }

    /// How many workers reported within `ttl` seconds of `now` and how many did not: the same
    /// split as `LayerSnapshot.workerCounts(now:ttl:)`.
    public func workerCounts(now: Double, ttl: Double?) -> WorkerCounts {
        var stale = 0
        for lastSeen in workerLastSeen where WorkerActivity.isStale(lastSeen: lastSeen, now: now, ttl: ttl) { stale += 1 }
        return WorkerCounts(active: workerLastSeen.count - stale, stale: stale)
    }

    /// Whether nobody updated the layer for longer than `ttl` seconds at `now`.
    public func isIdle(now: Double, ttl: Double) -> Bool {
        now - lastUpdated > ttl
    }
}

extension LatencyHistogram {
    /// The Prometheus form of per-bucket counts: running sums (saturating, as the layer's
    /// counters do), the sum converted to seconds.
    init(perBucket: [UInt64], bounds: [Double], sumMs: Double, count: UInt64) {
        var cumulative = [UInt64]()
        cumulative.reserveCapacity(perBucket.count)
        var running: UInt64 = 0
        for c in perBucket {
            running = running.addingSaturated(c)
            cumulative.append(running)
        }
        self.init(upperBoundsSeconds: bounds, cumulativeCounts: cumulative, sumSeconds: sumMs / 1000, count: count)
    }
}
