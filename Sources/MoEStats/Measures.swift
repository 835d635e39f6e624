#if canImport(Glibc)
import Glibc  // log(); the C math library only, no I/O
#elseif canImport(Musl)
import Musl
#endif

/// The formulas of the layer measures, each written once. Pure functions of plain numbers: the
/// table of layer measures (`LayerMeasure`), the JSON summary, the fleet totals and `/metrics`
/// all call these, so a JSON field and the series that mirrors it use the same arithmetic.
///
/// A value that does not exist (no token, no sample, no capacity) is nil, never 0, NaN or
/// infinity. Measures reported both as a percentage (JSON) and as a 0-1 ratio (Prometheus) take
/// a `scale`: multiplying by 1 is exact, so the ratio is the percentage's own quotient.
public enum Measures {
    /// Scale of a 0-1 ratio (Prometheus' `_ratio` convention).
    public static let ratio: Double = 1
    /// Scale of a percentage.
    public static let percent: Double = 100

    /// `sum / count`, nil when `count` is 0.
    public static func mean(sum: Double, count: some BinaryInteger) -> Double? {
        count > 0 ? sum / Double(count) : nil
    }

    /// Share of tokens not dropped; nil before the first token. `dropped` is clamped to `tokens`
    /// (each layer keeps dropped <= tokens, and saturating sums preserve it).
    public static func routingEfficiency(tokens: UInt64, dropped: UInt64, scale: Double = ratio) -> Double? {
        tokens > 0 ? Double(tokens - Swift.min(dropped, tokens)) / Double(tokens) * scale : nil
    }

    /// Tokens received over the capacity offered; nil when no capacity was offered.
    public static func capacityUtilization(used: UInt64, offered: UInt64, scale: Double = ratio) -> Double? {
        offered > 0 ? Double(used) / Double(offered) * scale : nil
    }

    /// Events per second from events per decision and the mean decision latency in milliseconds;
    /// nil without a positive latency.
    public static func perSecond(perDecision: Double, averageLatencyMs: Double?) -> Double? {
        guard let averageLatencyMs, averageLatencyMs > 0, averageLatencyMs.isFinite else { return nil }
        return perDecision * 1000 / averageLatencyMs
    }

    /// Population coefficient of variation of `values`, whose sum (accumulated in order) is
    /// `sum`; nil when the mean is 0 or there are no values.
    public static func coefficientOfVariation(_ values: [Double], sum: Double) -> Double? {
        guard let mean = mean(sum: sum, count: values.count), mean > 0 else { return nil }
        var squares: Double = 0
        for v in values { squares += (v - mean) * (v - mean) }
        return (squares / Double(values.count)).squareRoot() / mean
    }

    /// Sum and maximum of counts, both as doubles, summed in order.
    private static func sumAndMax(_ counts: [UInt64]) -> (sum: Double, max: Double) {
        var sum: Double = 0, maxC: Double = 0
        for c in counts { sum += Double(c); maxC = Swift.max(maxC, Double(c)) }
        return (sum, maxC)
    }

    /// MaxVio (DeepSeek): (max load - mean load) / mean load; nil when no expert has a token.
    public static func maxViolation(_ counts: [UInt64]) -> Double? {
        let (sum, maxC) = sumAndMax(counts)
        return maxViolation(sum: sum, largest: maxC, experts: counts.count)
    }

    /// MaxVio from the loads' sum and largest load over `experts` experts (one decision's, taken
    /// while recording it).
    public static func maxViolation(sum: Double, largest: Double, experts: Int) -> Double? {
        guard let mean = mean(sum: sum, count: experts), mean > 0 else { return nil }
        return (largest - mean) / mean
    }

    /// Share of the demanded tokens that were not served: overflow / (served + overflow); nil
    /// without demand.
    public static func overflowRatio(served: UInt64, overflow: UInt64) -> Double? {
        let demand = Double(served) + Double(overflow)
        return demand > 0 ? Double(overflow) / demand : nil
    }

    /// Balancedness (vLLM, SGLang): mean load / max load, 1 when perfectly even; nil when no
    /// expert has a token.
    public static func balancedness(_ counts: [UInt64]) -> Double? {
        let (sum, maxC) = sumAndMax(counts)
        guard let mean = mean(sum: sum, count: counts.count), maxC > 0 else { return nil }
        return mean / maxC
    }

    /// Shannon entropy of the load distribution p_i = count_i / sum, divided by log(E) so that 1
    /// means uniform; nil with no token or fewer than two experts (log 1 = 0).
    public static func normalizedEntropy(_ counts: [UInt64]) -> Double? {
        guard counts.count > 1 else { return nil }
        var sum: Double = 0
        for c in counts { sum += Double(c) }
        guard sum > 0 else { return nil }
        var h: Double = 0
        for c in counts where c > 0 {
            let p = Double(c) / sum
            h -= p * log(p)
        }
        return h / log(Double(counts.count))
    }

    /// An expert is dead when it never received a token, or none in the newest `window`
    /// decisions (`lastActive` is the routing number of its newest token, 0 for never; a window
    /// below 1 counts as 1).
    public static func isDead(lastActive: UInt64, routings: UInt64, window: Int) -> Bool {
        lastActive == 0 || routings - lastActive >= UInt64(Swift.max(1, window))
    }

    /// Least-squares slope of the newest `window` values against their index 0..m-1; 0 with
    /// fewer than two. Centred sums in doubles give the slope without the cancellation of
    /// `n*sum_xy - sum_x*sum_y`.
    public static func trend(_ values: [Double], window: Int) -> Double {
        let m = Swift.min(window, values.count)
        guard m >= 2 else { return 0 }
        let recent = values[(values.count - m)...]
        let meanX = Double(m - 1) / 2
        var meanY: Double = 0
        for y in recent { meanY += y }
        meanY /= Double(m)
        var sxy: Double = 0, sxx: Double = 0
        for (i, y) in recent.enumerated() {
            let dx = Double(i) - meanX
            sxy += dx * (y - meanY)
            sxx += dx * dx
        }
        return sxx > 0 ? sxy / sxx : 0
    }

    /// The `p`-th percentile (0-100) of ascending `sorted` values, nearest rank below
    /// (index floor(p/100 x (n-1))); nil when empty.
    public static func percentile(_ p: Double, ofSorted sorted: [Double]) -> Double? {
        guard !sorted.isEmpty else { return nil }
        let index = Int((p / 100) * Double(sorted.count - 1))
        return sorted[Swift.min(index, sorted.count - 1)]
    }
}
