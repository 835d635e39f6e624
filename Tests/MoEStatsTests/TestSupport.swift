import Testing

@testable import MoEStats

/// Builds a decision with defaults, for tests that care about a few fields.
func decision(
    _ counts: [UInt64], tokens: UInt64? = nil, dropped: UInt64 = 0, layer: String? = "L0",
    lbl: Double? = nil, z: Double? = nil, aux: Double? = nil, latencyMs: Double? = nil,
    capacity: Int? = nil, topK: Int? = nil, factor: Double? = nil
) -> RoutingDecision {
    RoutingDecision(
        layer: layer, topK: topK, expertCapacity: capacity, capacityFactor: factor,
        latencyMs: latencyMs, expertCounts: counts,
        totalTokens: tokens ?? counts.reduce(0, +), tokensDropped: dropped,
        loadBalanceLoss: lbl.map { .value($0) } ?? .absent,
        routerZLoss: z.map { .value($0) } ?? .absent,
        auxiliaryLoss: aux.map { .value($0) } ?? .absent)
}

/// Relative comparison (absolute near zero).
func close(_ a: Double?, _ b: Double?, _ tolerance: Double = 1e-12) -> Bool {
    guard let a, let b else { return a == nil && b == nil }
    return abs(a - b) <= tolerance * max(1, abs(b))
}

/// SplitMix64: the one small seeded generator of these tests, so that a failing case names a
/// seed it can be replayed from.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(state: UInt64) { self.state = state }
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A value below `n` (modulo; the bias does not matter for test inputs).
    mutating func below(_ n: UInt64) -> UInt64 { next() % n }
}
