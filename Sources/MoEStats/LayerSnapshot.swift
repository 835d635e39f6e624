/// The raw running totals of one layer that every view of it starts from: the JSON summary
/// (`LayerSnapshot`) and `/metrics` (`LayerMetrics`) both copy exactly this under the layer's
/// lock, and the table of layer measures (`LayerMeasure`) computes from it outside the lock.
///
/// These are plain sums and counts, which is also what Prometheus needs to aggregate many
/// daemons correctly. A raw value a new measure needs is added here (and saved in `LayerImage`).
public struct LayerTotals: Sendable {
    public let layer: String
    /// Number of experts (fixed for the layer's life).
    public let experts: Int
    /// Decisions recorded.
    public let totalRoutings: UInt64
    /// Sum of `total_tokens`.
    public let totalTokens: UInt64
    /// Sum of `tokens_dropped`.
    public let tokensDropped: UInt64
    /// Per expert, the sum of the tokens it received.
    public let expertTokens: [UInt64]
    /// Per expert, the sum of count / total_tokens over decisions.
    public let utilizationSums: [Double]
    /// Per expert, the routing number (1-based) of the newest decision that gave it a token; 0 = never.
    public let lastActive: [UInt64]
    public let loadBalanceLoss: LossTotals
    public let routerZLoss: LossTotals
    public let auxiliaryLoss: LossTotals
    /// Losses received as `null` (serde's NaN or infinity) or non-finite, over the three losses.
    public let nonfiniteLosses: UInt64
    /// Latency bucket upper bounds in seconds and the per-bucket (not cumulative) counts.
    public let latencyBoundsSeconds: [Double]
    public let latencyBucketCounts: [UInt64]
    /// Latency samples, their sum, minimum and maximum in milliseconds (nil before the first).
    public let latencyCount: UInt64
    public let latencySumMs: Double
    public let latencyMinMs: Double?
    public let latencyMaxMs: Double?
    /// Capacity sums over the decisions with a known capacity.
    public let capacity: CapacityTotals
    /// Decisions that dropped tokens (the summary's `capacity_exceeded_count`).
    public let capacityExceededCount: UInt64
    /// Unix seconds of the newest decision.
    public let lastUpdated: Double
    /// The registry's default window when the copy was taken.
    public let defaultWindow: Int
    /// Decisions that sent `expert_demand`, and per expert their demand minus served (nil without any).
    public let demandDecisions: UInt64
    public let expertOverflow: [UInt64]?

    /// Copies `state`; called under the layer's lock, so it only copies. Arrays are copied element
    /// by element (`map`), never shared: a shared buffer would make the layer's next write copy it
    /// under the lock.
    init(layer: String, state s: LayerState, defaultWindow: Int) {
        self.layer = layer
        experts = s.experts
        totalRoutings = s.totalRoutings
        totalTokens = s.totalTokens
        tokensDropped = s.tokensDropped
        expertTokens = s.expertTokens.map { $0 }
        utilizationSums = s.utilizationSums.map { $0 }
        lastActive = s.lastActive.map { $0 }
        loadBalanceLoss = s.loadBalanceLoss
        routerZLoss = s.routerZLoss
        auxiliaryLoss = s.auxiliaryLoss
        nonfiniteLosses = s.nonfiniteLosses
        latencyBoundsSeconds = s.latencyBoundsSeconds
        latencyBucketCounts = s.latencyBucketCounts.map { $0 }
        latencyCount = s.latencyCount
        latencySumMs = s.latencySumMs
        latencyMinMs = s.latencyCount > 0 ? s.latencyMinMs : nil
        latencyMaxMs = s.latencyCount > 0 ? s.latencyMaxMs : nil
        capacity = s.capacity
        capacityExceededCount = s.capacityExceededCount
        lastUpdated = s.lastUpdated
        self.defaultWindow = defaultWindow
        demandDecisions = s.demandDecisions
        expertOverflow = s.demandDecisions > 0 ? s.expertOverflow.map { $0 } : nil
    }

    /// The sums of a bucket or a window as a layer's totals, so that the rows of `LayerMeasure`
    /// compute the per-step and windowed statistics exactly as the run-wide ones. What buckets do
    /// not hold (utilization sums, latencies, capacity) is empty; the rows reading it are not
    /// reported for steps and windows (`LayerMeasure.steps`).
    init(layer: String, experts: Int, steps t: StepTotals) {
        self.layer = layer
        self.experts = experts
        totalRoutings = t.decisions
        totalTokens = t.tokens
        tokensDropped = t.tokensDropped
        expertTokens = t.expertTokens
        utilizationSums = []
        lastActive = t.expertTokens.map { $0 > 0 ? t.decisions : 0 }
        loadBalanceLoss = t.loadBalanceLoss
        routerZLoss = t.routerZLoss
        auxiliaryLoss = t.auxiliaryLoss
        nonfiniteLosses = t.nonfiniteLosses
        latencyBoundsSeconds = []
        latencyBucketCounts = []
        latencyCount = 0
        latencySumMs = 0
        latencyMinMs = nil
        latencyMaxMs = nil
        capacity = CapacityTotals()
        capacityExceededCount = 0
        lastUpdated = 0
        defaultWindow = 1
        demandDecisions = t.demandDecisions
        expertOverflow = t.expertOverflow
    }

    /// The latency histogram in Prometheus form: cumulative counts (saturating, as the layer's
    /// counters are), the sum in seconds. Computed on each use, outside the lock.
    public var latencyHistogram: LatencyHistogram {
        var cumulative = [UInt64]()
        cumulative.reserveCapacity(latencyBucketCounts.count)
        var running: UInt64 = 0
        for c in latencyBucketCounts {
            running = running.addingSaturated(c)
            cumulative.append(running)
        }
        return LatencyHistogram(
            upperBoundsSeconds: latencyBoundsSeconds, cumulativeCounts: cumulative,
            sumSeconds: latencySumMs / 1000, count: latencyCount)
    }

    /// Whether nobody updated the layer for longer than `ttl` seconds at `now` (a layer TTL lets
    /// the daemon leave such layers out of `/metrics`, so series of finished jobs end).
    public func isIdle(now: Double, ttl: Double) -> Bool {
        now - lastUpdated > ttl
    }
}

/// Everything the JSON summary of one layer is computed from, copied under the layer's lock: the
/// raw totals, the recent history, and the workers by name.
///
/// Every statistic is computed from this value by `summary(window:)`, outside any lock, so readers
/// hold a layer's lock only for a copy. The totals' fields read as the snapshot's own
/// (`snapshot.totalTokens`). `/metrics` needs much less and copies less: see `LayerMetrics`.
@dynamicMemberLookup
public struct LayerSnapshot: Sendable {
    public let totals: LayerTotals
    /// Counts of the newest decision.
    public let lastCounts: [UInt64]
    /// Load variance of the newest decisions (at most 1000), oldest first.
    public let loadVariances: [Double]
    /// Latency samples of the newest decisions (at most 1000), oldest first, in milliseconds.
    public let recentLatenciesMs: [Double]
    /// Workers that reported to this layer, sorted by name (at most `maxWorkersPerLayer`).
    public private(set) var workers: [WorkerActivity]
    /// Decisions from workers left out of `workers` because the table was full.
    public let untrackedWorkerDecisions: UInt64
    /// The newest complete step when the copy was taken, and the decisions too old for the history.
    public let lastCompleteStep: CompleteStep?
    public let lateDecisions: UInt64

    /// Copies `state` (see `LayerTotals.init`); `expectedWorkers`, `now` and `ttl` decide the
    /// newest complete step (see `LayerRegistry.history`).
    init(
        layer: String, state s: LayerState, defaultWindow: Int, expectedWorkers: Int? = nil, now: Double = 0,
        ttl: Double? = nil
    ) {
        totals = LayerTotals(layer: layer, state: s, defaultWindow: defaultWindow)
        lastCounts = s.lastCounts.map { $0 }
        loadVariances = s.loadVariances.chronological()
        recentLatenciesMs = s.recentLatenciesMs.chronological()
        var list = [WorkerActivity]()
        list.reserveCapacity(s.workers.count)
        for (name, record) in s.workers {
            list.append(WorkerActivity(worker: name, lastSeen: record.lastSeen, decisions: record.decisions))
        }
        workers = list
        untrackedWorkerDecisions = s.untrackedWorkerDecisions
        lastCompleteStep = s.lastCompleteStep(expected: expectedWorkers, now: now, ttl: ttl)
        lateDecisions = s.history.lateDecisions
    }

    @inlinable
    public subscript<T>(dynamicMember path: KeyPath<LayerTotals, T>) -> T { totals[keyPath: path] }

    /// Puts `workers` in name order; done after the layer's lock is released.
    mutating func sortWorkers() {
        workers.sort { $0.worker < $1.worker }
    }

    /// How many workers reported within `ttl` seconds of `now` (active) and how many have been
    /// silent for longer (stale): the `moe_routing_workers{state}` gauge. `now` is passed in (the
    /// module reads no clock) so that tests can move time. A nil `ttl` counts every worker active.
    public func workerCounts(now: Double, ttl: Double?) -> WorkerCounts {
        var stale = 0
        for w in workers where w.isStale(now: now, ttl: ttl) { stale += 1 }
        return WorkerCounts(active: workers.count - stale, stale: stale)
    }

    /// Whether nobody updated the layer for longer than `ttl` seconds at `now`.
    public func isIdle(now: Double, ttl: Double) -> Bool { totals.isIdle(now: now, ttl: ttl) }
}

/// One worker as a layer remembers it.
public struct WorkerActivity: Sendable, Equatable {
    /// The `worker` field of its decisions.
    public var worker: String
    /// Unix seconds of its newest decision.
    public var lastSeen: Double
    /// Decisions it sent to the layer.
    public var decisions: UInt64

    public init(worker: String, lastSeen: Double, decisions: UInt64) {
        self.worker = worker
        self.lastSeen = lastSeen
        self.decisions = decisions
    }

    /// Seconds since its newest decision at `now`; 0 if that is in the future (a clock stepped
    /// back), so an age is never negative.
    public func age(now: Double) -> Double {
        Self.age(lastSeen: lastSeen, now: now)
    }

    /// Silent for longer than `ttl` seconds at `now`; never with a nil `ttl`.
    public func isStale(now: Double, ttl: Double?) -> Bool {
        Self.isStale(lastSeen: lastSeen, now: now, ttl: ttl)
    }

    /// The rules above on a bare time, for views that keep only the times (`LayerMetrics`).
    static func age(lastSeen: Double, now: Double) -> Double { Swift.max(0, now - lastSeen) }

    static func isStale(lastSeen: Double, now: Double, ttl: Double?) -> Bool {
        guard let ttl else { return false }
        return age(lastSeen: lastSeen, now: now) > ttl
    }
}

/// Workers of a layer split by whether they reported within a TTL.
public struct WorkerCounts: Sendable, Equatable {
    public var active: Int
    public var stale: Int

    public init(active: Int, stale: Int) {
        self.active = active
        self.stale = stale
    }
}
