/// Where the experts of one layer live, in the convention of DeepSeek EPLB and SGLang: physical
/// slot `p` holds logical expert `physicalToLogical[p]`, slot `p` sits on rank `p / (slots /
/// ranks)` and rank `r` on node `r / (ranks / nodes)`. Without a map the placement is contiguous:
/// one slot per expert, expert `e` on rank `e / (experts / ranks)`. A logical expert with `k`
/// replicas gives each of them `load / k` (EPLB's model of a replicated expert).
public struct ExpertPlacement: Sendable, Equatable {
    public let ranks: Int
    public let nodes: Int
    /// nil: the contiguous default.
    public let physicalToLogical: [Int]?

    /// Most ranks a placement may name (a bound for the rank series of `/metrics`).
    public static let maxRanks = 4096
    /// Most physical slots of one layer.
    public static let maxSlots = 65536

    /// Checks what does not depend on the layer: counts that must divide, indices that cannot be
    /// negative. `check(experts:)` checks the rest against a layer.
    public init(ranks: Int, nodes: Int = 1, physicalToLogical: [Int]? = nil) throws(PlacementError) {
        guard ranks >= 1, ranks <= Self.maxRanks else {
            throw PlacementError("ranks must be between 1 and \(Self.maxRanks), got \(ranks)", field: "ranks")
        }
        guard nodes >= 1, nodes <= ranks else {
            throw PlacementError("nodes must be between 1 and ranks (\(ranks)), got \(nodes)", field: "nodes")
        }
        guard ranks % nodes == 0 else {
            throw PlacementError(
                "ranks (\(ranks)) must be a multiple of nodes (\(nodes)): every node holds the same number of ranks",
                field: "nodes")
        }
        if let map = physicalToLogical {
            guard !map.isEmpty, map.count <= Self.maxSlots else {
                throw PlacementError(
                    "physical_to_logical must have between 1 and \(Self.maxSlots) slots, got \(map.count)",
                    field: "physical_to_logical")
            }
            guard map.count % ranks == 0 else {
                throw PlacementError(
                    "physical_to_logical has \(map.count) slots, not a multiple of ranks (\(ranks)): "
                        + "every rank holds the same number of slots", field: "physical_to_logical")
            }
            if let slot = map.firstIndex(where: { $0 < 0 }) {
                throw PlacementError(
                    "physical_to_logical[\(slot)] is \(map[slot]), not an expert index", field: "physical_to_logical")
            }
        }
        self.ranks = ranks
        self.nodes = nodes
        self.physicalToLogical = physicalToLogical
    }

    /// The slot count: the map's length, or `experts` for the contiguous default.
    public func slots(experts: Int) -> Int { physicalToLogical?.count ?? experts }

    /// Checks the placement against a layer of `experts` experts: the contiguous default needs
    /// `experts` to be a multiple of `ranks`; a map must name only experts below `experts` and
    /// give every expert at least one slot.
    public func check(experts: Int) throws(PlacementError) {
        guard let map = physicalToLogical else {
            guard experts % ranks == 0 else {
                throw PlacementError(
                    "the layer has \(experts) experts, not a multiple of ranks (\(ranks)), "
                        + "so the contiguous placement does not divide; give physical_to_logical", field: "ranks")
            }
            return
        }
        var seen = [Bool](repeating: false, count: experts)
        for (slot, e) in map.enumerated() {
            guard e < experts else {
                throw PlacementError(
                    "physical_to_logical[\(slot)] is \(e), out of range for a layer of \(experts) experts",
                    field: "physical_to_logical")
            }
            seen[e] = true
        }
        if let missing = seen.firstIndex(of: false) {
            throw PlacementError(
                "expert \(missing) has no slot in physical_to_logical (every expert needs at least one)",
                field: "physical_to_logical")
        }
    }

    /// The load of each rank for the given per-expert loads; the placement must have passed
    /// `check(experts: loads.count)`.
    public func rankLoads(_ loads: [Double]) -> [Double] {
        var out = [Double](repeating: 0, count: ranks)
        guard let map = physicalToLogical else {
            let perRank = loads.count / ranks
            guard perRank > 0 else { return out }
            for (e, load) in loads.enumerated() { out[e / perRank] += load }
            return out
        }
        var replicas = [Int](repeating: 0, count: loads.count)
        for e in map { replicas[e] += 1 }
        let perRank = map.count / ranks
        for (slot, e) in map.enumerated() { out[slot / perRank] += loads[e] / Double(replicas[e]) }
        return out
    }

    /// Rank and node figures for the given per-expert loads (see `PlacementFigures`).
    public func figures(_ loads: [Double]) -> PlacementFigures {
        PlacementFigures(rankLoads: rankLoads(loads), nodes: nodes)
    }
}

/// What a placement makes of a layer's loads: each rank's and node's load, how balanced they are,
/// and the straggler. Ratios are nil when no rank has any load (there is nothing to balance).
public struct PlacementFigures: Sendable, Equatable {
    public let rankLoads: [Double]
    public let nodeLoads: [Double]
    /// Mean over max of the rank loads (vLLM's and SGLang's balancedness), 0 to 1.
    public let balancedness: Double?
    /// Max over mean of the rank loads (Megatron's overload factor), 1 or more.
    public let overload: Double?
    /// The busiest rank (the lowest index among equals); nil without load.
    public let worstRank: Int?
    /// Mean over max of the node loads.
    public let nodeBalancedness: Double?

    public init(rankLoads: [Double], nodes: Int) {
        self.rankLoads = rankLoads
        let perNode = Swift.max(1, rankLoads.count / Swift.max(1, nodes))
        var nodeLoads = [Double](repeating: 0, count: Swift.max(1, nodes))
        for (r, load) in rankLoads.enumerated() { nodeLoads[Swift.min(r / perNode, nodeLoads.count - 1)] += load }
        self.nodeLoads = nodeLoads
        let (mean, peak, at) = Self.meanAndPeak(rankLoads)
        balancedness = peak > 0 ? mean / peak : nil
        overload = mean > 0 ? peak / mean : nil
        worstRank = peak > 0 ? at : nil
        let node = Self.meanAndPeak(nodeLoads)
        nodeBalancedness = node.peak > 0 ? node.mean / node.peak : nil
    }

    private static func meanAndPeak(_ values: [Double]) -> (mean: Double, peak: Double, at: Int) {
        var sum: Double = 0, peak: Double = 0, at = 0
        for (i, v) in values.enumerated() {
            sum += v
            if v > peak { peak = v; at = i }
        }
        return (values.isEmpty ? 0 : sum / Double(values.count), peak, at)
    }
}
