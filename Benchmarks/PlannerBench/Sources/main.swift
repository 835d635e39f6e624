import Foundation
import MoEPlacement

// Times the rebalance planner on one load matrix and compares its plans with the reference's, as
// recorded in the vector file (EPLB's own output for the same input). Prints one JSON object.
//
//   PlannerBench [VECTOR.json] [RUNS]
//
// The default vector is DeepSeek-V3's shape: 58 layers x 256 experts, 288 replicas on 32 GPUs in
// 4 nodes, 8 groups. The planner is single-threaded; run it pinned to one core (taskset -c 0).

let arguments = CommandLine.arguments
let defaultVector = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // Sources
    .deletingLastPathComponent()  // PlannerBench
    .deletingLastPathComponent()  // Benchmarks
    .deletingLastPathComponent()  // the repository
    .appendingPathComponent("Tests/Fixtures/eplb/deepseek_58x256_hierarchical.json").path
let vectorPath = arguments.count > 1 ? arguments[1] : defaultVector
let runs = arguments.count > 2 ? Int(arguments[2]) ?? 21 : 21

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("PlannerBench: \(message)\n".utf8))
    exit(1)
}

guard let data = FileManager.default.contents(atPath: vectorPath),
    let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
    let inputs = root["inputs"] as? [String: Any], let reference = root["reference"] as? [String: Any],
    let weight = (inputs["weight"] as? [[NSNumber]])?.map({ $0.map(\.doubleValue) }),
    let replicas = inputs["num_replicas"] as? Int, let gpus = inputs["num_gpus"] as? Int,
    let nodes = inputs["num_nodes"] as? Int, let groups = inputs["num_groups"] as? Int,
    let referencePeaks = (reference["max_gpu_load"] as? [NSNumber])?.map(\.doubleValue)
else { fail("cannot read the vector \(vectorPath)") }
let shape = PlanShape(replicas: replicas, gpus: gpus, nodes: nodes, groups: groups)

func milliseconds(_ body: () throws -> Void) rethrows -> Double {
    let clock = ContinuousClock()
    let elapsed = try clock.measure(body)
    return Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) * 1e-15
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

do {
    var plans: [LayerPlan] = []
    var planTimes: [Double] = []
    var greedyTimes: [Double] = []
    for run in 0...runs {  // run 0 warms up and is not counted
        let t = try milliseconds { plans = try RebalancePlanner.plan(matrix: weight, shape: shape) }
        let g = try milliseconds { for row in weight { _ = try RebalancePlanner.greedy(row, shape: shape) } }
        if run > 0 { planTimes.append(t); greedyTimes.append(g) }
    }
    var better = 0, worse = 0
    var oursBalancedness: [Double] = [], referenceBalancedness: [Double] = []
    for (layer, row) in weight.enumerated() {
        let peak = plans[layer].peak(row, gpus: gpus)
        let mean = row.reduce(0, +) / Double(gpus)
        if peak < referencePeaks[layer] * (1 - 1e-6) { better += 1 }
        if peak > referencePeaks[layer] * (1 + 1e-6) { worse += 1 }
        oursBalancedness.append(peak > 0 ? mean / peak : 1)
        referenceBalancedness.append(referencePeaks[layer] > 0 ? mean / referencePeaks[layer] : 1)
    }
    let result: [String: Any] = [
        "vector": (vectorPath as NSString).lastPathComponent,
        "layers": weight.count, "experts": weight.first?.count ?? 0,
        "replicas": replicas, "gpus": gpus, "nodes": nodes, "groups": groups, "runs": runs,
        "plan_ms_median": median(planTimes), "plan_ms_min": planTimes.min() ?? 0,
        "plan_ms_max": planTimes.max() ?? 0, "greedy_ms_median": median(greedyTimes),
        "reference_seconds": reference["seconds"] as? Double ?? 0,
        "layers_better": better, "layers_worse": worse,
        "balancedness_mean": oursBalancedness.reduce(0, +) / Double(weight.count),
        "balancedness_min": oursBalancedness.min() ?? 0,
        "reference_balancedness_mean": referenceBalancedness.reduce(0, +) / Double(weight.count),
        "reference_balancedness_min": referenceBalancedness.min() ?? 0,
    ]
    let out = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
    print(String(decoding: out, as: UTF8.self))
} catch {
    fail("\(error)")
}
