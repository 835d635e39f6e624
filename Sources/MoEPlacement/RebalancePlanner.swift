/// One layer's plan: which logical expert each physical slot holds (slot `p` on GPU
/// `p / (slots / gpus)`), and how many replicas each expert has.
public struct LayerPlan: Sendable, Equatable {
    public var physicalToLogical: [Int]
    public var logicalCount: [Int]

    public init(physicalToLogical: [Int], logicalCount: [Int]) {
        self.physicalToLogical = physicalToLogical
        self.logicalCount = logicalCount
    }

    /// The load of each GPU when each replica carries its expert's load over its replica count.
    public func gpuLoads(_ loads: [Double], gpus: Int) -> [Double] {
        var out = [Double](repeating: 0, count: gpus)
        let perGPU = physicalToLogical.count / gpus
        for (slot, e) in physicalToLogical.enumerated() {
            out[slot / perGPU] += loads[e] / Double(logicalCount[e])
        }
        return out
    }

    /// The busiest GPU's load.
    public func peak(_ loads: [Double], gpus: Int) -> Double {
        gpuLoads(loads, gpus: gpus).max() ?? 0
    }

    /// For each expert its slots in ascending order, padded with -1 to `width` entries (EPLB's
    /// `logical_to_physical`); `width` must be at least the largest replica count.
    public func logicalToPhysical(width: Int) -> [[Int]] {
        var out = [[Int]](repeating: [], count: logicalCount.count)
        for (slot, e) in physicalToLogical.enumerated() { out[e].append(slot) }
        for e in out.indices { out[e] += [Int](repeating: -1, count: width - out[e].count) }
        return out
    }
}

/// Turns a layer's per-expert loads into replicated experts packed onto GPUs, under the rules of
/// DeepSeek's EPLB (see `PlanShape`): groups packed onto nodes, each node's busiest experts
/// replicated within it, the node's replicas packed onto its GPUs with equal slot counts.
///
/// `greedy` follows EPLB's own greedy steps; `plan` starts from that result and improves it by
/// exchanges that keep every rule: replicas swapped between GPUs of a node, then whole groups
/// swapped between nodes, each accepted only when it lowers the busiest GPU's load. So a plan is
/// never worse than the greedy one.
public enum RebalancePlanner {
    /// EPLB's plan, step for step (its greedy packing, its replication), without improvement.
    public static func greedy(_ loads: [Double], shape: PlanShape) throws(PlacementError) -> LayerPlan {
        try shape.check(experts: loads.count)
        return LayerPlanner(loads: loads, shape: shape).run(improve: false)
    }

    /// The improved plan of one layer.
    public static func plan(_ loads: [Double], shape: PlanShape) throws(PlacementError) -> LayerPlan {
        try shape.check(experts: loads.count)
        return LayerPlanner(loads: loads, shape: shape).run(improve: true)
    }

    /// The improved plans of every row of a `[layers][experts]` load matrix.
    public static func plan(matrix: [[Double]], shape: PlanShape) throws(PlacementError) -> [LayerPlan] {
        var out: [LayerPlan] = []
        out.reserveCapacity(matrix.count)
        for row in matrix { out.append(try plan(row, shape: shape)) }
        return out
    }
}

/// The work of one layer. Decisions that mirror EPLB (its sorts, its `argmax`, its pack sums) are
/// taken in `Float`, as the reference computes in float32, so ties and near-ties fall the same
/// way; everything that measures a plan is `Double`.
private struct LayerPlanner {
    let loads: [Double]
    let experts: Int
    let slots: Int
    let gpus: Int
    let nodes: Int
    let groups: Int
    let groupSize: Int
    let groupsPerNode: Int
    let slotsPerNode: Int
    let gpusPerNode: Int
    let slotsPerGPU: Int

    init(loads: [Double], shape: PlanShape) {
        self.loads = loads
        experts = loads.count
        slots = shape.replicas
        gpus = shape.gpus
        (nodes, groups) = shape.effective
        groupSize = experts / groups
        groupsPerNode = groups / nodes
        slotsPerNode = slots / nodes
        gpusPerNode = gpus / nodes
        slotsPerGPU = slots / gpus
    }

    /// A node's part of the plan: its slots (GPU-major, `slotsPerGPU` per GPU) as logical experts,
    /// its replica counts and its busiest GPU's load.
    struct NodePlan {
        var slots: [Int]
        var counts: [(expert: Int, count: Int)]
        var peak: Double
    }

    func run(improve: Bool) -> LayerPlan {
        var groupLoads = [Float](repeating: 0, count: groups)
        for g in 0..<groups {
            for e in g * groupSize..<(g + 1) * groupSize { groupLoads[g] += Float(loads[e]) }
        }
        let (pack, rank) = balancedPacking(groupLoads, packs: nodes)
        // The groups of each node in the order EPLB lays them out (by rank in the pack).
        var nodeGroups = [[Int]](repeating: [Int](repeating: 0, count: groupsPerNode), count: nodes)
        for g in 0..<groups { nodeGroups[pack[g]][rank[g]] = g }
        var plans = nodeGroups.map { buildNode(groups: $0, improve: improve) }
        if improve && nodes > 1 && groupsPerNode > 1 {
            exchangeGroups(&nodeGroups, &plans)
        }
        var physicalToLogical: [Int] = []
        physicalToLogical.reserveCapacity(slots)
        var logicalCount = [Int](repeating: 0, count: experts)
        for plan in plans {
            physicalToLogical += plan.slots
            for (e, c) in plan.counts { logicalCount[e] = c }
        }
        return LayerPlan(physicalToLogical: physicalToLogical, logicalCount: logicalCount)
    }

    /// Replicates a node's experts into its slots and packs them onto its GPUs (EPLB's steps 2
    /// and 3); with `improve`, then exchanges replicas between its GPUs.
    func buildNode(groups nodeGroups: [Int], improve: Bool) -> NodePlan {
        var members: [Int] = []
        members.reserveCapacity(nodeGroups.count * groupSize)
        for g in nodeGroups { members += g * groupSize..<(g + 1) * groupSize }
        let m = members.count
        let weight = members.map { Float(loads[$0]) }

        // Step 2: each extra slot goes to the expert with the largest load per replica (the
        // first among equals, as torch's `max` answers).
        var count = [Int](repeating: 1, count: m)
        var replicaOf = Array(0..<m)
        replicaOf.reserveCapacity(slotsPerNode)
        for _ in m..<slotsPerNode {
            var best = 0
            var bestValue = weight[0] / Float(count[0])
            for i in 1..<m {
                let v = weight[i] / Float(count[i])
                if v > bestValue { best = i; bestValue = v }
            }
            replicaOf.append(best)
            count[best] += 1
        }

        // Step 3: replicas packed onto the node's GPUs, `slotsPerGPU` each.
        let replicaWeight = replicaOf.map { weight[$0] / Float(count[$0]) }
        let (pack, rank) = balancedPacking(replicaWeight, packs: gpusPerNode)
        var placed = [Int](repeating: 0, count: slotsPerNode)
        for k in 0..<slotsPerNode { placed[pack[k] * slotsPerGPU + rank[k]] = k }

        let exact = replicaOf.map { loads[members[$0]] / Double(count[$0]) }
        var gpuLoad = [Double](repeating: 0, count: gpusPerNode)
        for pos in 0..<slotsPerNode { gpuLoad[pos / slotsPerGPU] += exact[placed[pos]] }
        if improve && gpusPerNode > 1 {
            exchangeReplicas(&placed, &gpuLoad, weights: exact)
        }
        return NodePlan(
            slots: placed.map { members[replicaOf[$0]] },
            counts: (0..<m).map { (members[$0], count[$0]) },
            peak: gpuLoad.max() ?? 0)
    }

    /// Pairwise exchange between the busiest GPU and any other: the swap of one replica each that
    /// lowers the larger of the two GPUs' loads the most, repeated until no swap lowers the busiest
    /// GPU's load. Each accepted swap lowers the sorted load vector, so this ends.
    func exchangeReplicas(_ placed: inout [Int], _ gpuLoad: inout [Double], weights: [Double]) {
        let s = slotsPerGPU
        let tolerance = Self.tolerance(gpuLoad.reduce(0, +))
        for _ in 0..<(4 * slotsPerNode + 16) {
            var a = 0
            for g in 1..<gpusPerNode where gpuLoad[g] > gpuLoad[a] { a = g }
            let peak = gpuLoad[a]
            var bestPeak = peak - tolerance
            var best: (pa: Int, pb: Int, d: Double, b: Int)? = nil
            for b in 0..<gpusPerNode where b != a {
                // A swap moving d from a to b helps only when 0 < d < peak - load[b].
                let room = peak - gpuLoad[b]
                if room <= tolerance { continue }
                for i in a * s..<(a + 1) * s {
                    let wi = weights[placed[i]]
                    for j in b * s..<(b + 1) * s {
                        let d = wi - weights[placed[j]]
                        if d <= 0 || d >= room { continue }
                        let newPeak = Swift.max(peak - d, gpuLoad[b] + d)
                        if newPeak < bestPeak { bestPeak = newPeak; best = (i, j, d, b) }
                    }
                }
            }
            guard let swap = best else { return }
            placed.swapAt(swap.pa, swap.pb)
            gpuLoad[a] -= swap.d
            gpuLoad[swap.b] += swap.d
        }
    }

    /// Whole groups exchanged between the node holding the busiest GPU and another node, each
    /// node rebuilt (replication, packing, exchanges) and the exchange kept only when the larger
    /// of the two nodes' busiest GPUs is below the current busiest GPU.
    func exchangeGroups(_ nodeGroups: inout [[Int]], _ plans: inout [NodePlan]) {
        var groupLoad = [Double](repeating: 0, count: groups)
        for g in 0..<groups {
            for e in g * groupSize..<(g + 1) * groupSize { groupLoad[g] += loads[e] }
        }
        var nodeLoad = nodeGroups.map { $0.reduce(0) { $0 + groupLoad[$1] } }
        let tolerance = Self.tolerance(nodeLoad.reduce(0, +))
        for _ in 0..<(2 * groups) {
            var a = 0
            for n in 1..<nodes where plans[n].peak > plans[a].peak { a = n }
            let peak = plans[a].peak
            // Candidates by the lower bound they give the busier of the two nodes (its load
            // spread evenly over its GPUs), best first; only bounds below the peak can help.
            var candidates: [(bound: Double, b: Int, ia: Int, ib: Int)] = []
            for b in 0..<nodes where b != a {
                for ia in 0..<groupsPerNode {
                    for ib in 0..<groupsPerNode {
                        let d = groupLoad[nodeGroups[a][ia]] - groupLoad[nodeGroups[b][ib]]
                        if d <= tolerance { continue }
                        let bound = Swift.max(nodeLoad[a] - d, nodeLoad[b] + d) / Double(gpusPerNode)
                        if bound < peak - tolerance { candidates.append((bound, b, ia, ib)) }
                    }
                }
            }
            candidates.sort { $0.bound < $1.bound }
            var accepted = false
            for c in candidates.prefix(8) {
                var ga = nodeGroups[a], gb = nodeGroups[c.b]
                swap(&ga[c.ia], &gb[c.ib])
                let pa = buildNode(groups: ga, improve: true)
                if pa.peak >= peak - tolerance { continue }
                let pb = buildNode(groups: gb, improve: true)
                if pb.peak >= peak - tolerance { continue }
                let d = groupLoad[nodeGroups[a][c.ia]] - groupLoad[nodeGroups[c.b][c.ib]]
                nodeGroups[a] = ga
                nodeGroups[c.b] = gb
                plans[a] = pa
                plans[c.b] = pb
                nodeLoad[a] -= d
                nodeLoad[c.b] += d
                accepted = true
                break
            }
            if !accepted { return }
        }
    }

    /// EPLB's `balanced_packing`: items in descending weight order (stable), each to the lightest
    /// pack that is not full (the first among equals); with one item per pack, item `i` goes to
    /// pack `i`. Returns each item's pack and its rank within the pack.
    func balancedPacking(_ weight: [Float], packs: Int) -> (pack: [Int], rank: [Int]) {
        let n = weight.count
        let perPack = n / packs
        if perPack == 1 { return (Array(0..<n), [Int](repeating: 0, count: n)) }
        let order = (0..<n).sorted { weight[$0] > weight[$1] || (weight[$0] == weight[$1] && $0 < $1) }
        var packWeight = [Float](repeating: 0, count: packs)
        var packItems = [Int](repeating: 0, count: packs)
        var pack = [Int](repeating: 0, count: n)
        var rank = [Int](repeating: 0, count: n)
        for item in order {
            var best = -1
            for p in 0..<packs where packItems[p] < perPack {
                if best < 0 || packWeight[p] < packWeight[best] { best = p }
            }
            pack[item] = best
            rank[item] = packItems[best]
            packWeight[best] += weight[item]
            packItems[best] += 1
        }
        return (pack, rank)
    }

    /// Improvements smaller than this are rounding, not progress.
    static func tolerance(_ total: Double) -> Double { Swift.max(total, 1) * 1e-12 }
}
