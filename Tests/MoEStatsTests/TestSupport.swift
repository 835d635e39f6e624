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
