import Synchronization

/// Sum and count of one loss over the finite values received.
///
/// Averages cannot be combined across daemons; sums and counts can, so Prometheus gets these and
/// computes `sum / count` itself.
public struct LossTotals: Sendable, Equatable {
    /// Sum of the finite values received.
    public var sum: Double = 0
    /// Number of finite values received (absent and non-finite losses are not counted).
    public var count: UInt64 = 0

    public init(sum: Double = 0, count: UInt64 = 0) {
        self.sum = sum
        self.count = count
    }

    /// The mean of the finite values, or nil before the first one.
    public var average: Double? { Measures.mean(sum: sum, count: count) }
}

/// Capacity sums over the decisions whose capacity is known.
public struct CapacityTotals: Sendable, Equatable {
    /// Decisions that had a known, non-zero capacity.
    public var decisions: UInt64 = 0
    /// Smoothed per-decision utilization: EMA with alpha 0.1 starting from 0, as a fraction.
    public var averageUtilization: Double = 0
    /// Highest per-decision utilization (tokens received / (experts x capacity)), as a fraction.
    public var peakUtilization: Double = 0
    /// Sum of experts x capacity, in tokens.
    public var totalCapacity: UInt64 = 0
    /// Sum of tokens the experts received in those decisions.
    public var totalUsed: UInt64 = 0

    public init() {}
}

/// The routing-latency histogram in Prometheus form.
public struct LatencyHistogram: Sendable, Equatable {
    /// Bucket upper bounds in seconds, ascending (the `le` label; `+Inf` is implicit).
    public var upperBoundsSeconds: [Double]
    /// CUMULATIVE counts: `cumulativeCounts[i]` is the number of samples <= `upperBoundsSeconds[i]`,
    /// as the Prometheus text format's `_bucket` lines need them. The `+Inf` bucket is `count`.
    public var cumulativeCounts: [UInt64]
    /// Sum of all samples in seconds.
    public var sumSeconds: Double
    /// Number of samples.
    public var count: UInt64
}

extension UInt64 {
    /// Counters saturate instead of trapping: a hostile or buggy worker must not crash the daemon.
    @inline(__always)
    func addingSaturated(_ other: UInt64) -> UInt64 {
        let (r, overflow) = addingReportingOverflow(other)
        return overflow ? .max : r
    }
}

/// What a layer remembers of one worker: when it last reported and how often.
struct WorkerRecord: Sendable, Equatable {
    /// Unix seconds of its newest decision (the registry's injected `now`).
    var lastSeen: Double
    /// Decisions it sent to the layer.
    var decisions: UInt64
    /// Its bit in the step buckets' worker sets: its position in the order workers were added,
    /// plus one (bit 0 stands for decisions of no tracked worker).
    var bit: Int
}

/// Capacity of the ring buffers (load variance, latency): the summary's trend and percentiles
/// look at most this many decisions back.
let historyCapacity = 1000

/// The mutable statistics of one layer. Only ever touched under its `LayerStatistics` lock.
struct LayerState: Sendable {
    let experts: Int
    var totalRoutings: UInt64 = 0
    var totalTokens: UInt64 = 0
    var tokensDropped: UInt64 = 0
    var expertTokens: [UInt64]
    /// Per expert, the sum over decisions of count / total_tokens (0 for a decision of no tokens);
    /// divided by `totalRoutings` it is the summary's `expert_utilization`, the cumulative mean
    /// (an EMA with alpha = 1/n).
    var utilizationSums: [Double]
    /// Counts of the newest decision (MaxVio of the last batch).
    var lastCounts: [UInt64]
    /// Per expert, the routing number (1-based) of the newest decision that gave it a token; 0 = never.
    var lastActive: [UInt64]
    var loadBalanceLoss = LossTotals()
    var routerZLoss = LossTotals()
    var auxiliaryLoss = LossTotals()
    var nonfiniteLosses: UInt64 = 0
    var loadVariances = RingBuffer(capacity: historyCapacity)
    var recentLatenciesMs = RingBuffer(capacity: historyCapacity)
    var latencyCount: UInt64 = 0
    var latencySumMs: Double = 0
    var latencyMinMs: Double = .infinity
    var latencyMaxMs: Double = 0
    let latencyBoundsSeconds: [Double]
    /// Per-bucket (not cumulative) counts; samples above the last bound are `latencyCount - sum`.
    var latencyBucketCounts: [UInt64]
    var capacity = CapacityTotals()
    var capacityExceededCount: UInt64 = 0
    var lastUpdated: Double = 0
    /// Workers that reported, by name; at most the configured `maxWorkersPerLayer` entries.
    /// Set only in this file (`restoreWorkers` for a restore), so that `lastWorker` stays valid.
    private(set) var workers: [String: WorkerRecord] = [:]
    /// The worker of the newest decision that named one, and its position in `workers`: a job's
    /// worker usually sends every layer's decisions in turn, so most decisions name the same
    /// worker as the one before and are counted without hashing its name. Dictionary positions
    /// stay valid until a key is added or removed; adding one clears this.
    private var lastWorker: (name: String, index: Dictionary<String, WorkerRecord>.Index)? = nil
    /// Decisions whose worker could not be added because the table was full.
    var untrackedWorkerDecisions: UInt64 = 0
    /// Per expert, demand minus served over the decisions that sent `expert_demand`; empty until
    /// the first one (most routers send no demand, so most layers never pay for it).
    var expertOverflow: [UInt64] = []
    /// Decisions that sent `expert_demand`.
    var demandDecisions: UInt64 = 0
    /// The newest buckets (steps or arrival intervals).
    var history: StepHistory

    init(experts: Int, latencyBoundsSeconds: [Double], historySteps: Int = 512, bucketSeconds: Int = 10) {
        self.experts = experts
        history = StepHistory(capacity: historySteps, experts: experts, bucketSeconds: bucketSeconds)
        expertTokens = Array(repeating: 0, count: experts)
        utilizationSums = Array(repeating: 0, count: experts)
        lastCounts = Array(repeating: 0, count: experts)
        lastActive = Array(repeating: 0, count: experts)
        self.latencyBoundsSeconds = latencyBoundsSeconds
        latencyBucketCounts = Array(repeating: 0, count: latencyBoundsSeconds.count)
    }

    /// Applies one validated decision: O(E + buckets), no allocation once the rings are full.
    /// `capacity` is the per-expert capacity resolved by the registry (nil when unknown).
    /// `maxWorkers` bounds the worker table (see `StatsConfiguration.maxWorkersPerLayer`).
    mutating func record(_ d: RoutingDecision, capacity perExpert: UInt64?, now: Double, maxWorkers: Int) {
        precondition(d.expertCounts.count == experts, "expert count validated before apply")
        totalRoutings = totalRoutings.addingSaturated(1)
        totalTokens = totalTokens.addingSaturated(d.totalTokens)
        tokensDropped = tokensDropped.addingSaturated(d.tokensDropped)

        var nonfinite: UInt64 = 0
        if Self.recordLoss(d.loadBalanceLoss, into: &loadBalanceLoss) { nonfinite += 1 }
        if Self.recordLoss(d.routerZLoss, into: &routerZLoss) { nonfinite += 1 }
        if Self.recordLoss(d.auxiliaryLoss, into: &auxiliaryLoss) { nonfinite += 1 }
        nonfiniteLosses = nonfiniteLosses.addingSaturated(nonfinite)

        // The per-expert loop works on the arrays' buffers: indexing them as properties of a
        // struct inside a Mutex re-checked each array's uniqueness and bounds per expert. The
        // lengths are checked here, once: every per-expert array has `experts` elements.
        precondition(
            expertTokens.count == experts && utilizationSums.count == experts
                && lastCounts.count == experts && lastActive.count == experts,
            "per-expert arrays sized for the layer")
        let totalTokensOfDecision = d.totalTokens
        let tokens = Double(totalTokensOfDecision)
        let routing = totalRoutings
        var used: UInt64 = 0
        var sum: Double = 0
        var largest: UInt64 = 0
        var squares: Double = 0
        d.expertCounts.withUnsafeBufferPointer { counts in
            expertTokens.withUnsafeMutableBufferPointer { expertTokens in
                utilizationSums.withUnsafeMutableBufferPointer { utilizationSums in
                    lastCounts.withUnsafeMutableBufferPointer { lastCounts in
                        lastActive.withUnsafeMutableBufferPointer { lastActive in
                            for i in 0..<counts.count {
                                let c = counts[i]
                                let x = Double(c)  // converted once (UInt64 to Double takes several instructions)
                                expertTokens[i] = expertTokens[i].addingSaturated(c)
                                if totalTokensOfDecision > 0 { utilizationSums[i] += x / tokens }
                                lastCounts[i] = c
                                if c > 0 { lastActive[i] = routing }
                                used = used.addingSaturated(c)
                                largest = Swift.max(largest, c)
                                sum += x
                            }
                        }
                    }
                }
            }
            // Population variance of this decision's counts (divided by E, not E - 1).
            let mean = sum / Double(experts)
            if used <= UInt64(Int64.max) {
                // No count above Int64.max (their saturated sum is not), so the signed
                // conversion, one instruction, gives the same doubles.
                for c in counts {
                    let diff = Double(Int64(bitPattern: c)) - mean
                    squares += diff * diff
                }
            } else {
                for c in counts {
                    let diff = Double(c) - mean
                    squares += diff * diff
                }
            }
        }
        loadVariances.append(squares / Double(experts))

        // A sample whose addition would overflow the sum (1.7e308 twice) is kept out of every
        // latency statistic, as losses are: an infinite sum would make `_sum` +Inf for good.
        if let ms = d.latencyMs, ms.isFinite, ms >= 0, (latencySumMs + ms).isFinite {
            latencyCount = latencyCount.addingSaturated(1)
            latencySumMs += ms
            latencyMinMs = Swift.min(latencyMinMs, ms)
            latencyMaxMs = Swift.max(latencyMaxMs, ms)
            recentLatenciesMs.append(ms)
            let seconds = ms / 1000
            // Prometheus buckets are "less than or equal" (`le`).
            var i = 0
            let bounds = latencyBoundsSeconds.count
            while i < bounds && !(seconds <= latencyBoundsSeconds[i]) { i += 1 }
            if i < bounds, i < latencyBucketCounts.count {
                latencyBucketCounts[i] = latencyBucketCounts[i].addingSaturated(1)
            }
        }

        // A decision that dropped tokens counts as exceeding capacity, whether its capacity is known or not.
        if d.tokensDropped > 0 { capacityExceededCount = capacityExceededCount.addingSaturated(1) }
        if let perExpert, perExpert > 0 {
            let (total, overflow) = perExpert.multipliedReportingOverflow(by: UInt64(experts))
            if !overflow {
                let u = Double(used) / Double(total)
                capacity.decisions += 1
                capacity.averageUtilization = 0.1 * u + 0.9 * capacity.averageUtilization
                capacity.peakUtilization = Swift.max(capacity.peakUtilization, u)
                capacity.totalCapacity = capacity.totalCapacity.addingSaturated(total)
                capacity.totalUsed = capacity.totalUsed.addingSaturated(used)
            }
        }
        if let demand = d.expertDemand {
            demandDecisions = demandDecisions.addingSaturated(1)
            if expertOverflow.isEmpty { expertOverflow = Array(repeating: 0, count: experts) }
            precondition(demand.count == experts && expertOverflow.count == experts, "demand validated before apply")
            for i in 0..<experts {
                expertOverflow[i] = expertOverflow[i].addingSaturated(demand[i] - d.expertCounts[i])
            }
        }
        var workerBit = 0
        if let worker = d.worker { workerBit = recordWorker(worker, now: now, maxWorkers: maxWorkers) }
        if let key = history.key(step: d.step, now: now) {
            if let slot = history.slot(for: key) {
                history.add(
                    d, to: slot,
                    maxViolation: Measures.maxViolation(sum: sum, largest: Double(largest), experts: experts),
                    workerBit: workerBit)
            } else {
                history.lateDecisions = history.lateDecisions.addingSaturated(1)
            }
        } else {
            history.unbucketedDecisions = history.unbucketedDecisions.addingSaturated(1)
        }
        lastUpdated = now
    }

    /// Updates a known worker in place (no allocation); adds a new one only below the cap, and
    /// otherwise counts the decision as untracked, so hostile worker names cannot grow memory.
    /// Returns the worker's bit in the bucket worker sets (0 for an untracked one).
    private mutating func recordWorker(_ worker: String, now: Double, maxWorkers: Int) -> Int {
        let known: Dictionary<String, WorkerRecord>.Index?
        if let last = lastWorker, last.name == worker {
            known = last.index
        } else {
            known = workers.index(forKey: worker)
            if let known { lastWorker = (worker, known) }
        }
        if let i = known {
            workers.values[i].lastSeen = now
            workers.values[i].decisions = workers.values[i].decisions.addingSaturated(1)
            return workers.values[i].bit
        } else if workers.count < maxWorkers {
            let bit = workers.count + 1
            workers[worker] = WorkerRecord(lastSeen: now, decisions: 1, bit: bit)
            lastWorker = nil  // the insertion may have moved every entry
            return bit
        } else {
            untrackedWorkerDecisions = untrackedWorkerDecisions.addingSaturated(1)
            return 0
        }
    }

    /// Workers that make a bucket complete at `now`: `expected` when set, else the workers that
    /// reported within `ttl` seconds (every worker without a TTL), and at least 1.
    func expectedWorkers(_ expected: Int?, now: Double, ttl: Double?) -> Int {
        if let expected { return Swift.max(1, expected) }
        var active = 0
        for w in workers.values where !WorkerActivity.isStale(lastSeen: w.lastSeen, now: now, ttl: ttl) { active += 1 }
        return Swift.max(1, active)
    }

    /// Replaces the worker table (a restore from a state file).
    mutating func restoreWorkers(_ table: [String: WorkerRecord]) {
        workers = table
        lastWorker = nil
    }

    /// Adds a finite loss to its totals; returns true for a non-finite one (kept out of them).
    static func recordLoss(_ loss: Loss, into totals: inout LossTotals) -> Bool {
        switch loss {
        case .absent:
            return false
        case .nonFinite:
            return true
        case .value(let v):
            // A finite value whose addition would overflow the sum (1e308 twice) is kept out like a
            // non-finite one: an infinite sum would poison the average and `_sum` for good.
            let sum = totals.sum + v
            guard v.isFinite, sum.isFinite else { return true }
            totals.sum = sum
            totals.count = totals.count.addingSaturated(1)
            return false
        }
    }
}

/// The statistics engine of one layer: its state behind its own lock.
///
/// One lock per layer (not one for the registry) so that workers feeding different layers never
/// wait for each other; the lock is held only to apply a decision or to copy a snapshot, and every
/// derived statistic is computed from the snapshot outside it. The expert count is fixed for the layer's life, so it is read without the lock.
final class LayerStatistics: Sendable {
    let name: String
    let experts: Int
    let state: LayerLock<LayerState>

    init(name: String, experts: Int, latencyBoundsSeconds: [Double], historySteps: Int = 512, bucketSeconds: Int = 10) {
        self.name = name
        self.experts = experts
        state = LayerLock(
            LayerState(
                experts: experts, latencyBoundsSeconds: latencyBoundsSeconds, historySteps: historySteps,
                bucketSeconds: bucketSeconds))
    }

    /// A layer brought back from a state file.
    init(name: String, restoring restored: LayerState) {
        self.name = name
        experts = restored.experts
        state = LayerLock(restored)
    }

    /// Copies the state under the lock; nil for a layer that has no decision yet (created by a
    /// batch still being applied). The worker list is sorted after the lock is released.
    func snapshot(defaultWindow: Int, expectedWorkers: Int? = nil, now: Double = 0, ttl: Double? = nil)
        -> LayerSnapshot?
    {
        var copy = state.withLock { s -> LayerSnapshot? in
            guard s.totalRoutings > 0 else { return nil }
            return LayerSnapshot(
                layer: name, state: s, defaultWindow: defaultWindow, expectedWorkers: expectedWorkers, now: now,
                ttl: ttl)
        }
        copy?.sortWorkers()
        return copy
    }
}
