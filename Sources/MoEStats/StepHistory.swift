/// How a layer's decisions are grouped into buckets: by the `step` they carry, or, for a layer
/// whose first decision carried none, by arrival time in intervals of `bucketSeconds`.
public enum Bucketing: UInt8, Sendable, Equatable {
    case step = 1
    case time = 2
}

/// The raw sums of one bucket: every decision of one step (or interval) over all workers.
struct BucketTotals: Sendable, Equatable {
    /// The step, or the interval's index (Unix seconds / bucket seconds); `empty` for a slot never used.
    var key: Int64 = BucketTotals.empty
    var decisions: UInt64 = 0
    var tokens: UInt64 = 0
    var tokensDropped: UInt64 = 0
    var loadBalanceLoss = LossTotals()
    var routerZLoss = LossTotals()
    var auxiliaryLoss = LossTotals()
    var nonfiniteLosses: UInt64 = 0
    /// Highest MaxVio of a single decision of the bucket; negative while none had a token.
    var worstMaxViolation: Double = -1
    /// Distinct workers that reported the bucket (bits set in its worker set).
    var workers: UInt32 = 0
    /// Decisions that carried `expert_demand`.
    var demandDecisions: UInt64 = 0

    /// Keys are steps (non-negative) or arrival intervals, never this.
    static let empty = Int64.min
}

/// The newest buckets of one layer in a ring: recording is O(experts) and allocates nothing once
/// the ring has its slots (a new multiple of 64 workers, or the first `expert_demand`, grows a
/// table once).
///
/// Bucket `k` lives in slot `(k - anchor) mod capacity`, the anchor being the first key seen, so
/// consecutive steps fill the slots in order and the per-expert table, the bulk of the memory
/// (`capacity x experts` counts), grows by doubling with the steps seen instead of being taken
/// whole for a layer that has had a few. A slot still holding an older key is cleared when its new
/// key first arrives, so a gap of steps costs nothing. The kept buckets are those whose key is
/// within `capacity` of the newest; a decision for an older key is counted as late only.
struct StepHistory: Sendable {
    let capacity: Int
    let experts: Int
    let bucketSeconds: Int
    /// Fixed by the layer's first decision.
    private(set) var bucketing: Bucketing?
    /// Newest key seen; nil before the first bucketed decision.
    private(set) var newest: Int64?
    /// Decisions for a bucket older than the oldest kept (counted in the run totals only).
    var lateDecisions: UInt64 = 0
    /// Decisions without a `step` in a layer bucketed by step (counted in the run totals only).
    var unbucketedDecisions: UInt64 = 0
    /// The key that maps to slot 0; nil before the first bucketed decision.
    private(set) var anchor: Int64?
    private(set) var buckets: [BucketTotals]
    /// Token sums, slot-major, for the slots in use so far (`experts` per slot; at most
    /// `capacity` slots).
    private(set) var expertTokens: [UInt64] = []
    /// Sums of demand minus served, laid out as `expertTokens`; empty until the layer's first demand.
    private(set) var expertOverflow: [UInt64] = []
    /// Words of 64 worker bits per slot; bit 0 stands for decisions of no (or an untracked) worker.
    private(set) var workerWords = 1
    private(set) var workerBits: [UInt64]

    init(capacity: Int, experts: Int, bucketSeconds: Int) {
        precondition(capacity >= 1 && experts >= 1 && bucketSeconds >= 1)
        self.capacity = capacity
        self.experts = experts
        self.bucketSeconds = bucketSeconds
        buckets = Array(repeating: BucketTotals(), count: capacity)
        workerBits = Array(repeating: 0, count: capacity)
    }

    /// The slot of `key` (any key once there is an anchor; wrapping, so the mapping stays one
    /// to one for keys within `capacity` of each other wherever they lie).
    @inline(__always)
    func slot(of key: Int64) -> Int {
        let m = (key &- (anchor ?? key)) % Int64(capacity)
        return Int(m < 0 ? m + Int64(capacity) : m)
    }

    /// Makes room in the per-expert tables for slot `s`, doubling what they hold (at most
    /// `capacity` slots, so a ring that has filled never grows again).
    @inline(__always)
    private mutating func ensureStorage(_ s: Int) {
        if expertTokens.count < (s + 1) * experts { grow(toHold: s + 1) }
    }

    private mutating func grow(toHold slots: Int) {
        let held = expertTokens.count / experts
        let target = Swift.min(capacity, Swift.max(slots, held * 2, 8))
        let more = (target - held) * experts
        expertTokens.append(contentsOf: repeatElement(0, count: more))
        if !expertOverflow.isEmpty { expertOverflow.append(contentsOf: repeatElement(0, count: more)) }
    }

    /// The bucket key of a decision: its step, or its arrival interval; nil when it has none (no
    /// step in a layer bucketed by step, or a clock outside any interval).
    mutating func key(step: Int64?, now: Double) -> Int64? {
        let mode: Bucketing
        if let bucketing {
            mode = bucketing
        } else {
            mode = step != nil ? .step : .time
            bucketing = mode
        }
        switch mode {
        case .step:
            return step
        case .time:
            let q = (now / Double(bucketSeconds)).rounded(.down)
            return q.isFinite && abs(q) < 9e18 ? Int64(q) : nil
        }
    }

    /// The slot holding `key`, cleared first if it held an older bucket; nil when `key` is older
    /// than the oldest bucket kept.
    mutating func slot(for key: Int64) -> Int? {
        if let n = newest, key <= n {
            let (age, overflow) = n.subtractingReportingOverflow(key)
            if overflow || age >= Int64(capacity) { return nil }
        } else {
            newest = key
        }
        if anchor == nil { anchor = key }
        let s = slot(of: key)
        ensureStorage(s)
        if buckets[s].key != key { clear(s, for: key) }
        return s
    }

    private mutating func clear(_ s: Int, for key: Int64) {
        buckets[s] = BucketTotals(key: key)
        let base = s * experts
        expertTokens.withUnsafeMutableBufferPointer { t in
            for i in base..<(base + experts) { t[i] = 0 }
        }
        if !expertOverflow.isEmpty {
            expertOverflow.withUnsafeMutableBufferPointer { t in
                for i in base..<(base + experts) { t[i] = 0 }
            }
        }
        for w in (s * workerWords)..<((s + 1) * workerWords) { workerBits[w] = 0 }
    }

    /// Adds one decision to slot `s`. `maxViolation` is the decision's own MaxVio (nil without a
    /// token), `workerBit` its worker's bit (see `WorkerRecord.bit`).
    mutating func add(
        _ d: RoutingDecision, to s: Int, maxViolation: Double?, workerBit: Int
    ) {
        var b = buckets[s]
        b.decisions = b.decisions.addingSaturated(1)
        b.tokens = b.tokens.addingSaturated(d.totalTokens)
        b.tokensDropped = b.tokensDropped.addingSaturated(d.tokensDropped)
        var nonfinite: UInt64 = 0
        if LayerState.recordLoss(d.loadBalanceLoss, into: &b.loadBalanceLoss) { nonfinite += 1 }
        if LayerState.recordLoss(d.routerZLoss, into: &b.routerZLoss) { nonfinite += 1 }
        if LayerState.recordLoss(d.auxiliaryLoss, into: &b.auxiliaryLoss) { nonfinite += 1 }
        b.nonfiniteLosses = b.nonfiniteLosses.addingSaturated(nonfinite)
        if let v = maxViolation, v > b.worstMaxViolation { b.worstMaxViolation = v }

        let word = workerBit >> 6
        if word >= workerWords { widenWorkerSets(to: word + 1) }
        let mask: UInt64 = 1 << UInt64(workerBit & 63)
        let w = s * workerWords + word
        if workerBits[w] & mask == 0 {
            workerBits[w] |= mask
            b.workers += 1
        }

        let base = s * experts
        d.expertCounts.withUnsafeBufferPointer { counts in
            precondition(counts.count == experts, "expert count validated before apply")
            expertTokens.withUnsafeMutableBufferPointer { t in
                for i in 0..<counts.count { t[base + i] = t[base + i].addingSaturated(counts[i]) }
            }
            if let demand = d.expertDemand {
                b.demandDecisions = b.demandDecisions.addingSaturated(1)
                if expertOverflow.isEmpty { expertOverflow = Array(repeating: 0, count: expertTokens.count) }
                demand.withUnsafeBufferPointer { demand in
                    expertOverflow.withUnsafeMutableBufferPointer { o in
                        // Validated: demand[i] >= counts[i].
                        for i in 0..<counts.count { o[base + i] = o[base + i].addingSaturated(demand[i] - counts[i]) }
                    }
                }
            }
        }
        buckets[s] = b
    }

    /// Re-strides the worker sets for `words` words per slot (once per 64 new workers).
    mutating func widenWorkerSets(to words: Int) {
        var wider = [UInt64](repeating: 0, count: capacity * words)
        for s in 0..<capacity {
            for w in 0..<workerWords { wider[s * words + w] = workerBits[s * workerWords + w] }
        }
        workerBits = wider
        workerWords = words
    }

    // MARK: - reading (under the layer's lock: copies and sums only)

    /// Slots of the newest `n` kept buckets that received a decision, oldest first.
    func newestSlots(_ n: Int) -> [Int] {
        guard let top = newest, n > 0 else { return [] }
        var out = [Int]()
        out.reserveCapacity(Swift.min(n, capacity))
        var k = top
        for _ in 0..<capacity {
            let s = slot(of: k)
            if buckets[s].key == k && buckets[s].decisions > 0 {
                out.append(s)
                if out.count == n { break }
            }
            if k == Int64.min { break }
            k -= 1
        }
        out.reverse()
        return out
    }

    /// A copy of slot `s`.
    func bucket(_ s: Int) -> StepBucket {
        let b = buckets[s]
        var totals = StepTotals(experts: 0, withOverflow: false)
        totals.add(b)
        let range = (s * experts)..<((s + 1) * experts)
        totals.expertTokens = Array(expertTokens[range])
        if b.demandDecisions > 0 { totals.expertOverflow = Array(expertOverflow[range]) }
        return StepBucket(key: b.key, workers: Int(b.workers), totals: totals)
    }

    /// The sums of slots `slots`, and how many of them had at least `expected` workers.
    func sum(_ slots: [Int], expected: Int) -> (totals: StepTotals, complete: Int) {
        var hasDemand = false
        for s in slots where buckets[s].demandDecisions > 0 { hasDemand = true }
        var totals = StepTotals(experts: experts, withOverflow: hasDemand)
        var complete = 0
        for s in slots {
            let b = buckets[s]
            totals.add(b)
            if Int(b.workers) >= expected { complete += 1 }
            let base = s * experts
            expertTokens.withUnsafeBufferPointer { t in
                for i in 0..<experts { totals.expertTokens[i] = totals.expertTokens[i].addingSaturated(t[base + i]) }
            }
            if b.demandDecisions > 0 {
                expertOverflow.withUnsafeBufferPointer { o in
                    for i in 0..<experts {
                        totals.expertOverflow![i] = totals.expertOverflow![i].addingSaturated(o[base + i])
                    }
                }
            }
        }
        return (totals, complete)
    }

    /// The slot of the newest kept bucket with at least `expected` workers.
    func lastComplete(expected: Int) -> Int? {
        guard let top = newest else { return nil }
        var k = top
        for _ in 0..<capacity {
            let s = slot(of: k)
            if buckets[s].key == k && buckets[s].decisions > 0 && Int(buckets[s].workers) >= expected { return s }
            if k == Int64.min { break }
            k -= 1
        }
        return nil
    }

    /// The reported form of a key: the step, or the interval's start in Unix seconds.
    func label(_ key: Int64) -> Int64 {
        bucketing == .time ? key.multipliedReportingOverflow(by: Int64(bucketSeconds)).partialValue : key
    }
}

/// Sums over one bucket or a window of buckets: what the per-step and windowed statistics are
/// computed from, by the same rows of `LayerMeasure` as the run-wide ones.
public struct StepTotals: Sendable, Equatable {
    public var decisions: UInt64 = 0
    public var tokens: UInt64 = 0
    public var tokensDropped: UInt64 = 0
    public var loadBalanceLoss = LossTotals()
    public var routerZLoss = LossTotals()
    public var auxiliaryLoss = LossTotals()
    public var nonfiniteLosses: UInt64 = 0
    /// Highest MaxVio of a single decision; nil when no decision had a token.
    public var worstDecisionMaxViolation: Double?
    /// Decisions that carried `expert_demand`.
    public var demandDecisions: UInt64 = 0
    /// Per expert, tokens served (empty when copied without experts).
    public var expertTokens: [UInt64]
    /// Per expert, demand minus served over the decisions that sent a demand; nil without any.
    public var expertOverflow: [UInt64]?

    init(experts: Int, withOverflow: Bool) {
        expertTokens = Array(repeating: 0, count: experts)
        expertOverflow = withOverflow ? Array(repeating: 0, count: experts) : nil
    }

    mutating func add(_ b: BucketTotals) {
        decisions = decisions.addingSaturated(b.decisions)
        tokens = tokens.addingSaturated(b.tokens)
        tokensDropped = tokensDropped.addingSaturated(b.tokensDropped)
        Self.add(b.loadBalanceLoss, to: &loadBalanceLoss)
        Self.add(b.routerZLoss, to: &routerZLoss)
        Self.add(b.auxiliaryLoss, to: &auxiliaryLoss)
        nonfiniteLosses = nonfiniteLosses.addingSaturated(b.nonfiniteLosses)
        if b.worstMaxViolation >= 0 {
            worstDecisionMaxViolation = Swift.max(worstDecisionMaxViolation ?? 0, b.worstMaxViolation)
        }
        demandDecisions = demandDecisions.addingSaturated(b.demandDecisions)
    }

    private static func add(_ b: LossTotals, to a: inout LossTotals) {
        a.sum += b.sum
        a.count = a.count.addingSaturated(b.count)
    }

    /// What the rows of `LayerMeasure` compute from: these sums as a layer's totals. An expert
    /// counts as active at the window's last decision when it received a token in the window, so
    /// the dead-expert rule flags exactly the experts without a token in it.
    public func measureInput(layer: String, experts: Int) -> LayerMeasureInput {
        LayerMeasureInput(totals: LayerTotals(layer: layer, experts: experts, steps: self), window: 1, history: nil)
    }
}

/// One kept bucket, copied out of the ring.
public struct StepBucket: Sendable, Equatable {
    /// The step, or the interval's index (see `LayerHistory.label`).
    public let key: Int64
    /// Distinct workers that reported it.
    public let workers: Int
    public let totals: StepTotals
}

/// A layer's newest buckets and what completeness needs, copied under its lock.
public struct LayerHistory: Sendable {
    public let layer: String
    public let experts: Int
    public let bucketing: Bucketing
    public let bucketSeconds: Int
    /// Oldest first.
    public let buckets: [StepBucket]
    /// The number of workers a complete bucket has at the time of the copy.
    public let expectedWorkers: Int
    public let lateDecisions: UInt64
    public let unbucketedDecisions: UInt64
    /// The number of buckets the layer keeps.
    public let capacity: Int

    /// The reported form of a key: the step, or the interval's start in Unix seconds.
    public func label(_ key: Int64) -> Int64 {
        bucketing == .time ? key.multipliedReportingOverflow(by: Int64(bucketSeconds)).partialValue : key
    }
}

/// The newest N buckets of a layer summed: the windowed summary's input.
public struct StepWindow: Sendable {
    public let layer: String
    public let experts: Int
    public let bucketing: Bucketing
    /// Buckets in the window (at most the steps asked for) and the first and last of them
    /// (reported form: step or Unix seconds); nil bounds for an empty window.
    public let steps: Int
    public let from: Int64?
    public let to: Int64?
    public let completeSteps: Int
    public let expectedWorkers: Int
    public let totals: StepTotals
}

/// The newest complete bucket of a layer: its reported key (step or Unix seconds), workers and sums.
public struct CompleteStep: Sendable, Equatable {
    public let label: Int64
    public let workers: Int
    public let totals: StepTotals
}

extension LayerState {
    /// The newest complete bucket at `now` (see `expectedWorkers`), with its per-expert counts.
    func lastCompleteStep(expected: Int?, now: Double, ttl: Double?) -> CompleteStep? {
        guard let slot = history.lastComplete(expected: expectedWorkers(expected, now: now, ttl: ttl)) else {
            return nil
        }
        let b = history.bucket(slot)
        return CompleteStep(label: history.label(b.key), workers: b.workers, totals: b.totals)
    }
}

/// Per layer, the newest complete bucket and the MaxVio of the newest 100 buckets, for
/// `GET /v1/layers` and `/metrics`.
public struct StepHeadline: Sendable {
    public let layer: String
    /// The newest complete bucket (reported form) and its workers and sums; nil when none.
    public let lastComplete: CompleteStep?
    /// MaxVio of the summed counts of the newest `recentSteps` buckets; nil without a token.
    public let recentMaxViolation: Double?

    /// Buckets the recent MaxVio of `GET /v1/layers` spans.
    public static let recentSteps = 100
}

/// A ring's kept buckets as plain values, for the state file.
struct HistoryImage: Sendable, Equatable {
    struct Bucket: Sendable, Equatable {
        var totals: BucketTotals
        var workerBits: [UInt64]
        var expertTokens: [UInt64]
        var expertOverflow: [UInt64]?
    }

    var bucketing: Bucketing?
    var bucketSeconds: Int
    var capacity: Int
    var newest: Int64?
    var lateDecisions: UInt64
    var unbucketedDecisions: UInt64
    var workerWords: Int
    /// Oldest first.
    var buckets: [Bucket]
}

extension StepHistory {
    /// Copies the kept buckets (under the layer's lock).
    func image() -> HistoryImage {
        let slots = newestSlots(capacity)
        return HistoryImage(
            bucketing: bucketing, bucketSeconds: bucketSeconds, capacity: capacity, newest: newest,
            lateDecisions: lateDecisions, unbucketedDecisions: unbucketedDecisions, workerWords: workerWords,
            buckets: slots.map { s in
                let range = (s * experts)..<((s + 1) * experts)
                return HistoryImage.Bucket(
                    totals: buckets[s], workerBits: Array(workerBits[(s * workerWords)..<((s + 1) * workerWords)]),
                    expertTokens: Array(expertTokens[range]),
                    expertOverflow: buckets[s].demandDecisions > 0 ? Array(expertOverflow[range]) : nil)
            })
    }

    /// A ring of `capacity` buckets holding the newest of a saved ring that fit (a checked image).
    init(restoring image: HistoryImage, capacity: Int, experts: Int) {
        self.init(capacity: capacity, experts: experts, bucketSeconds: image.bucketSeconds)
        bucketing = image.bucketing
        newest = image.newest
        // The oldest bucket kept anchors the ring (buckets come oldest first).
        anchor = image.buckets.first?.totals.key ?? image.newest
        lateDecisions = image.lateDecisions
        unbucketedDecisions = image.unbucketedDecisions
        if image.workerWords > 1 { widenWorkerSets(to: image.workerWords) }
        for b in image.buckets {
            guard let n = newest else { break }
            let (age, overflow) = n.subtractingReportingOverflow(b.totals.key)
            if overflow || age >= Int64(capacity) { continue }
            let s = slot(of: b.totals.key)
            ensureStorage(s)
            buckets[s] = b.totals
            for (i, word) in b.workerBits.enumerated() { workerBits[s * workerWords + i] = word }
            for i in 0..<experts { expertTokens[s * experts + i] = b.expertTokens[i] }
            if let overflow = b.expertOverflow {
                if expertOverflow.isEmpty { expertOverflow = Array(repeating: 0, count: expertTokens.count) }
                for i in 0..<experts { expertOverflow[s * experts + i] = overflow[i] }
            }
        }
    }
}
