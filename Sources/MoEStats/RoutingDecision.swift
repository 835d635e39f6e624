/// One MoE layer's routing outcome for one batch, as a worker reports it.
///
/// The core fields mirror torsh's `RoutingDecision` as serde_json writes it; the envelope fields
/// (`layer`, `worker`, `step`, `topK`, `expertCapacity`, `capacityFactor`, `latencyMs`) travel in
/// the same JSON object. A value of this type has passed every check that needs no layer state
/// (see `DecisionDecoder`); checks against a layer (its expert count, the caps) happen on ingest.
public struct RoutingDecision: Sendable, Equatable {
    /// Target layer name: 1 to 64 characters of `[A-Za-z0-9_.:-]` (an integer is written in
    /// decimal). Nil when the request path names the layer instead.
    public var layer: String?
    /// The rank or host that sent it (an integer is written in decimal).
    public var worker: String?
    public var step: Int64?
    public var topK: Int? { didSet { loadsChecked = false } }
    /// Per-expert capacity in tokens used for this batch, when the worker knows it.
    public var expertCapacity: Int?
    public var capacityFactor: Double?
    /// Routing latency the worker measured, finite and non-negative.
    public var latencyMs: Double?
    /// Tokens each expert received (`expert_capacities` in torsh, alias `tokens_per_expert`);
    /// its length is the layer's expert count.
    public var expertCounts: [UInt64] { didSet { loadsChecked = false } }
    public var totalTokens: UInt64 { didSet { loadsChecked = false } }
    public var tokensDropped: UInt64
    /// Tokens each expert was asked for before capacity clipping (DeepSpeed's `exp_counts`), when
    /// the router counts them: as many as `expertCounts`, each at least the served count.
    public var expertDemand: [UInt64]?
    public var loadBalanceLoss: Loss
    public var routerZLoss: Loss
    public var auxiliaryLoss: Loss
    /// Number of per-token assignment lists that were sent and validated (they are not kept).
    public var assignmentCount: Int
    /// True only while `loadProblem` is known to be nil for the current `expertCounts`,
    /// `totalTokens` and `topK`: the decoder sets it after checking them, and any change to one of
    /// the three (in place or not) clears it, so `LayerRegistry` re-checks only decisions it
    /// cannot know to be checked (built by hand, or changed since decoding). Not part of equality.
    var loadsChecked = false

    public init(
        layer: String? = nil, worker: String? = nil, step: Int64? = nil, topK: Int? = nil,
        expertCapacity: Int? = nil, capacityFactor: Double? = nil, latencyMs: Double? = nil,
        expertCounts: [UInt64], totalTokens: UInt64, tokensDropped: UInt64 = 0, expertDemand: [UInt64]? = nil,
        loadBalanceLoss: Loss = .absent, routerZLoss: Loss = .absent, auxiliaryLoss: Loss = .absent,
        assignmentCount: Int = 0
    ) {
        self.layer = layer
        self.worker = worker
        self.step = step
        self.topK = topK
        self.expertCapacity = expertCapacity
        self.capacityFactor = capacityFactor
        self.latencyMs = latencyMs
        self.expertCounts = expertCounts
        self.totalTokens = totalTokens
        self.tokensDropped = tokensDropped
        self.expertDemand = expertDemand
        self.loadBalanceLoss = loadBalanceLoss
        self.routerZLoss = routerZLoss
        self.auxiliaryLoss = auxiliaryLoss
        self.assignmentCount = assignmentCount
    }
}

extension RoutingDecision {
    /// Equality of what was sent; `loadsChecked` records what is known about it, not part of it.
    public static func == (a: RoutingDecision, b: RoutingDecision) -> Bool {
        a.layer == b.layer && a.worker == b.worker && a.step == b.step && a.topK == b.topK
            && a.expertCapacity == b.expertCapacity && a.capacityFactor == b.capacityFactor
            && a.latencyMs == b.latencyMs && a.expertCounts == b.expertCounts
            && a.totalTokens == b.totalTokens && a.tokensDropped == b.tokensDropped
            && a.expertDemand == b.expertDemand
            && a.loadBalanceLoss == b.loadBalanceLoss && a.routerZLoss == b.routerZLoss
            && a.auxiliaryLoss == b.auxiliaryLoss && a.assignmentCount == b.assignmentCount
    }
}

extension RoutingDecision {
    /// Why a decision's loads cannot have come from routing `totalTokens` tokens.
    enum LoadProblem: Equatable {
        /// One expert received more tokens than the batch held.
        case expertAboveTotal(expert: Int, load: UInt64)
        /// The loads add up to more than `topK` assignments per token.
        case sumAboveTopK(sum: UInt64, topK: Int)
    }

    /// The first impossible load, or nil. A router sends each token to at most `top_k` distinct
    /// experts, so one expert receives at most `totalTokens` tokens whatever `top_k` is, and the
    /// loads add up to at most `top_k × totalTokens` when `top_k` is known. Without these checks an
    /// utilization of 50000 (400000 tokens of an 8-token batch) or a load from a batch of 0 tokens
    /// would stay in the run's statistics until the layer is reset.
    static func loadProblem(_ counts: [UInt64], totalTokens: UInt64, topK: Int?) -> LoadProblem? {
        // One branch-free pass (the compiler vectorizes it): the largest count and the wrapping
        // sum. The sum is exact when it cannot have wrapped: every count at most totalTokens and
        // `counts.count × totalTokens` representable; otherwise it is added again with overflow
        // checks (only for absurd values, which are refused anyway).
        var largest: UInt64 = 0
        var wrapping: UInt64 = 0
        for c in counts {
            largest = Swift.max(largest, c)
            wrapping &+= c
        }
        if largest > totalTokens { return firstAboveTotal(counts, totalTokens: totalTokens) }
        var sum = wrapping
        var overflow = false
        if UInt64(counts.count).multipliedReportingOverflow(by: totalTokens).overflow {
            sum = 0
            for c in counts {
                let (s, o) = sum.addingReportingOverflow(c)
                if o { overflow = true; break }
                sum = s
            }
        }
        return sumProblem(sum, overflow: overflow, totalTokens: totalTokens, topK: topK)
    }

    /// The same check from the sum and largest count the decoder computed while reading the
    /// counts (`sum` exact: the decoder refuses a sum that overflows), without another pass.
    static func loadProblem(
        _ counts: [UInt64], sum: UInt64, largest: UInt64,
        totalTokens: UInt64, topK: Int?
    ) -> LoadProblem? {
        if largest > totalTokens { return firstAboveTotal(counts, totalTokens: totalTokens) }
        return sumProblem(sum, overflow: false, totalTokens: totalTokens, topK: topK)
    }

    /// Why a demand cannot go with the served counts: another length, or an expert served more
    /// than it was asked for. Nil when it can.
    static func demandProblem(_ demand: [UInt64], served: [UInt64]) -> (message: String, field: String)? {
        guard demand.count == served.count else {
            return (
                "expert_demand has \(demand.count) entries but expert_capacities has \(served.count)", "expert_demand"
            )
        }
        for i in 0..<demand.count where demand[i] < served[i] {
            return (
                "expert \(i) served \(served[i]) tokens, more than its demand \(demand[i])", "expert_demand[\(i)]"
            )
        }
        return nil
    }

    private static func firstAboveTotal(_ counts: [UInt64], totalTokens: UInt64) -> LoadProblem? {
        guard let i = counts.firstIndex(where: { $0 > totalTokens }) else { return nil }
        return .expertAboveTotal(expert: i, load: counts[i])
    }

    /// `overflow`: the true sum does not fit in `UInt64`.
    private static func sumProblem(_ sum: UInt64, overflow: Bool, totalTokens: UInt64, topK: Int?) -> LoadProblem? {
        if let k = topK, k >= 1 {
            let (limit, limitOverflow) = UInt64(k).multipliedReportingOverflow(by: totalTokens)
            // Each count is at most totalTokens, so an overflowing sum means more than
            // `counts.count × totalTokens`; it can only exceed the limit if the limit fits.
            if !limitOverflow && (overflow || sum > limit) {
                return .sumAboveTopK(sum: overflow ? .max : sum, topK: k)
            }
        }
        return nil
    }
}

/// A loss value as sent: a number, `null` (serde's spelling of NaN or infinity), or not sent.
///
/// Non-finite losses are counted (a diverging run must be visible) but kept out of the averages,
/// sums and counts, so one bad batch does not poison the numbers.
public enum Loss: Sendable, Equatable {
    case absent
    case nonFinite
    case value(Double)

    public var finiteValue: Double? {
        if case .value(let v) = self { return v }
        return nil
    }
}

/// Why a decision or a batch was refused. Nothing of a refused batch is applied.
///
/// The domain names the kind of failure; the daemon maps kinds to HTTP statuses
/// (malformed 400, invalid 422, conflict 409, limits 507).
public struct DecisionError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        /// Not JSON, or not the shape of a decision (wrong type, missing required field).
        case malformed
        /// Well-formed but impossible values (negative count, dropped > total, probability > 1).
        case invalid
        /// The expert count disagrees with what the layer already holds.
        case conflict
        /// Accepting it would exceed the configured layer cap.
        case tooManyLayers
        /// Accepting it would exceed the configured expert cap.
        case tooManyExperts
    }

    public var kind: Kind
    public var message: String
    /// The offending field as a JSON path within one decision, e.g. `tokens_dropped` or
    /// `expert_assignments[3][0].probability`.
    public var field: String?
    /// The decision's position in a batch (array element or NDJSON line, from 0).
    public var index: Int?

    public init(_ kind: Kind, _ message: String, field: String? = nil, index: Int? = nil) {
        self.kind = kind
        self.message = message
        self.field = field
        self.index = index
    }

    public var description: String {
        var s = message
        if let field { s += " (field \(field))" }
        if let index { s += " (decision \(index))" }
        return s
    }
}
