import MoEPlacement
import TestTools
import Testing

/// Random shapes and random loads (skewed, uniform, sparse, tied, all zero): every plan is valid,
/// and never has a busier GPU than the greedy EPLB baseline on the same input.
@Suite struct PlannerPropertyTests {
    static func randomShape(_ rng: inout SplitMix64) -> (experts: Int, shape: PlanShape) {
        let nodes = [1, 1, 2, 4, 8].randomElement(using: &rng)!
        let gpus = nodes * Int.random(in: 1...4, using: &rng)
        let hierarchical = Bool.random(using: &rng)
        let groups = hierarchical ? nodes * Int.random(in: 1...4, using: &rng) : [3, 5, 7].randomElement(using: &rng)!
        let experts =
            groups % nodes == 0
            ? groups * Int.random(in: 1...8, using: &rng) : Int.random(in: 2...64, using: &rng)
        let perGPU = (experts + gpus - 1) / gpus + Int.random(in: 0...3, using: &rng)
        return (experts, PlanShape(replicas: gpus * perGPU, gpus: gpus, nodes: nodes, groups: groups))
    }

    static func randomLoads(_ experts: Int, _ rng: inout SplitMix64) -> [Double] {
        switch Int.random(in: 0..<5, using: &rng) {
        case 0:  // Zipf-like skew over a shuffled order
            let order = (0..<experts).shuffled(using: &rng)
            var loads = [Double](repeating: 0, count: experts)
            for (rank, e) in order.enumerated() {
                loads[e] = (10000 / Double(rank + 1)).rounded() * Double.random(in: 0.8...1.2, using: &rng)
            }
            return loads
        case 1: return (0..<experts).map { _ in Double(Int.random(in: 0...1000, using: &rng)) }
        case 2: return (0..<experts).map { _ in Int.random(in: 0..<4, using: &rng) == 0 ? 50 : 0 }
        case 3: return (0..<experts).map { _ in [1.0, 5, 5, 9].randomElement(using: &rng)! }
        default: return [Double](repeating: 0, count: experts)
        }
    }

    @Test(arguments: 0..<8)
    func validAndNeverWorseThanGreedy(_ seed: Int) throws {
        var rng = SplitMix64(seed: UInt64(seed) &* 7919 &+ 14)
        var improved = 0
        for trial in 0..<150 {
            let (experts, shape) = Self.randomShape(&rng)
            let loads = Self.randomLoads(experts, &rng)
            let plan = try RebalancePlanner.plan(loads, shape: shape)
            let greedy = try RebalancePlanner.greedy(loads, shape: shape)
            expectValid(plan, loads: loads, shape: shape)
            expectValid(greedy, loads: loads, shape: shape)
            let ours = plan.peak(loads, gpus: shape.gpus), baseline = greedy.peak(loads, gpus: shape.gpus)
            #expect(
                ours <= baseline + 1e-9 * Swift.max(1, baseline),
                "seed \(seed) trial \(trial): \(shape) experts \(experts): ours \(ours), greedy \(baseline)")
            // No plan beats the even split.
            let even = loads.reduce(0, +) / Double(shape.gpus)
            #expect(ours >= even * (1 - 1e-9))
            if ours < baseline * (1 - 1e-9) { improved += 1 }
        }
        #expect(improved > 0, "seed \(seed): no random input improved on the greedy plan")
    }

    @Test func deterministic() throws {
        var rng = SplitMix64(seed: 3)
        let loads = (0..<64).map { _ in Double.random(in: 0...100, using: &rng) }
        let shape = PlanShape(replicas: 80, gpus: 8, nodes: 2, groups: 4)
        #expect(try RebalancePlanner.plan(loads, shape: shape) == RebalancePlanner.plan(loads, shape: shape))
    }

    @Test func logicalToPhysicalInvertsTheMap() throws {
        let loads: [Double] = [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86]
        let plan = try RebalancePlanner.plan(loads, shape: PlanShape(replicas: 16, gpus: 8, nodes: 2, groups: 4))
        let width = plan.logicalCount.max()!
        let inverse = plan.logicalToPhysical(width: width)
        for (e, slots) in inverse.enumerated() {
            #expect(slots.count == width)
            let real = slots.filter { $0 >= 0 }
            #expect(real.count == plan.logicalCount[e])
            for slot in real { #expect(plan.physicalToLogical[slot] == e) }
        }
    }
}
