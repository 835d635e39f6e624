import Benchmark
import Foundation
import MoEStats

// Scenario 6 of the benchmark suite: the in-process cost of turning one POSTed decision into
// statistics, for 8, 64 and 256 experts, beside Foundation's JSONDecoder decoding the same bytes
// into a Codable mirror of the schema (the baseline of the target: our decode and record of a
// 64-expert decision at least 10x faster than JSONDecoder's decode alone).
//
// Each sample is one operation (no inner scaling loop), so the percentiles are per decision; the
// benchmark framework warms up, repeats until its time or iteration budget is spent, and reports
// wall-clock percentiles and malloc counts per sample.

/// The decision schema as a Codable struct: what a Swift service would write with Foundation.
struct CodableDecision: Codable {
    var layer: String
    var expert_capacities: [UInt64]
    var total_tokens: UInt64
    var tokens_dropped: UInt64
    var load_balance_loss: Double?
    var router_z_loss: Double?
    var auxiliary_loss: Double?
    var latency_ms: Double?
}

/// A decision body as a worker sends it: `experts` counts from a fixed-seed generator summing to
/// `total_tokens`, so every run decodes the same bytes.
func decisionBody(experts: Int, layer: String = "L0") -> [UInt8] {
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15 &+ UInt64(experts)
    var counts: [UInt64] = []
    for _ in 0..<experts {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        counts.append(200 + (state >> 33) % 400)
    }
    let total = counts.reduce(0, +)
    let list = counts.map(String.init).joined(separator: ",")
    let json = """
        {"layer":"\(layer)","expert_capacities":[\(list)],"total_tokens":\(total),"tokens_dropped":0,\
        "load_balance_loss":0.0123,"router_z_loss":0.00107,"auxiliary_loss":0.0134,"latency_ms":0.42}
        """
    return Array(json.utf8)
}

/// A batch as scenario 3 of the suite posts it: one decision for each of `layers` layers (`L0`,
/// `L1`, ...) with `experts` experts each, in the shape the suite's workers send (worker, step,
/// counts from 400 to 1600, `tokens_dropped` a ninety-seventh of the tokens, three losses and a
/// latency), from a fixed-seed generator.
func batchBody(layers: Int, experts: Int) -> [UInt8] {
    var state: UInt64 = 0x2545_F491_4F6C_DD1D &+ UInt64(layers * 1_000 + experts)
    var items: [String] = []
    for layer in 0..<layers {
        var counts: [UInt64] = []
        for _ in 0..<experts {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            counts.append(400 + (state >> 33) % 1_201)
        }
        let total = counts.reduce(0, +)
        let list = counts.map(String.init).joined(separator: ",")
        items.append(
            """
            {"layer":"L\(layer)","worker":"rank-0","step":\(1_001 + layer),"expert_capacities":[\(list)],\
            "total_tokens":\(total),"tokens_dropped":\(total / 97),"load_balance_loss":0.0123,\
            "router_z_loss":0.00107,"auxiliary_loss":0.0134,"latency_ms":0.42}
            """)
    }
    return Array("[\(items.joined(separator: ","))]".utf8)
}

/// Seconds each benchmark may run, from `BENCH_MICRO_SECONDS` (default 2); scripts/bench shortens
/// it for quick runs.
let secondsPerBenchmark: Int = {
    if let text = ProcessInfo.processInfo.environment["BENCH_MICRO_SECONDS"], let value = Int(text), value > 0 {
        return value
    }
    return 2
}()

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        // No CPU-time metric: the kernel accounts it in scheduler ticks, far coarser than one sample.
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        timeUnits: .nanoseconds,
        warmupIterations: 1_000,
        maxDuration: .seconds(secondsPerBenchmark),
        maxIterations: 5_000_000
    )

    for experts in [8, 64, 256] {
        let bytes = decisionBody(experts: experts)
        let data = Data(bytes)
        let decoder = DecisionDecoder()

        // The correctness of what is measured is checked once, before any timing: a benchmark of a
        // decoder that rejects its input would measure the error path.
        let ours = try! decoder.decode(bytes, format: .json)
        let theirs = try! JSONDecoder().decode(CodableDecision.self, from: data)
        precondition(
            ours.count == 1 && ours[0].expertCounts == theirs.expert_capacities,
            "DecisionDecoder and JSONDecoder disagree on the benchmark body")

        // Made once, like `decoder` and the registry: the closure runs once per sample, so a
        // decoder made inside it would add its creation to every sample of the baseline.
        let json = JSONDecoder()
        Benchmark("JSONDecoder decode, \(experts) experts") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try json.decode(CodableDecision.self, from: data))
            }
        }

        Benchmark("DecisionDecoder decode, \(experts) experts") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try decoder.decode(bytes, format: .json))
            }
        }

        // One registry for the whole benchmark, made outside the closure (which runs once per
        // sample): every sample records into the same layer, as a running daemon does, and only
        // the first decision, in the warm-up, creates the layer.
        let registry = LayerRegistry(configuration: StatsConfiguration())
        Benchmark("decode+record, \(experts) experts") { benchmark in
            for _ in benchmark.scaledIterations {
                let decisions = try decoder.decode(bytes, format: .json)
                blackHole(try registry.ingest(decisions, defaultLayer: nil, now: 1_700_000_000))
            }
        }
    }

    // Scenario 3 in process: decode and ingest one 64-layer x 64-expert batch per sample, into
    // one registry whose 64 layers exist (the first batch, in the warm-up, creates them), so the
    // steady state of a job posting every layer's decision at once is measured without HTTP.
    // Decisions per second = 64 / (p50 in seconds); the throughput metric counts batches.
    do {
        let layers = 64
        let bytes = batchBody(layers: layers, experts: 64)
        let decoder = DecisionDecoder()
        let check = try! decoder.decode(bytes, format: .json)
        precondition(
            check.count == layers && Set(check.compactMap(\.layer)).count == layers,
            "the batch body must hold one decision per layer")
        let registry = LayerRegistry(configuration: StatsConfiguration())
        Benchmark("decode+ingest batch, \(layers) layers x 64 experts") { benchmark in
            for _ in benchmark.scaledIterations {
                let decisions = try decoder.decode(bytes, format: .json)
                blackHole(try registry.ingest(decisions, defaultLayer: nil, now: 1_700_000_000))
            }
        }
    }
}
