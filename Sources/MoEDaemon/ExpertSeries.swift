/// Which per-expert series `/metrics` carries (`metrics.expert_series`): they are what grows a
/// scrape as layers x experts, so a large model can keep only the experts that matter.
public enum ExpertSeries: Sendable, Equatable, CustomStringConvertible {
    /// Every expert of every layer.
    case all
    /// No per-expert series; the per-layer and per-rank series stay.
    case none
    /// Per layer, the `n` experts with the most tokens and the `n` with the fewest, each labelled
    /// `load="most"` or `load="least"` (an expert is in one set only).
    case extremes(Int)

    /// The largest N of `top:N`.
    public static let maxExtremes = 1024

    /// `all`, `none` or `top:N` (any case); nil for anything else.
    public init?(parsing text: String) {
        let t = text.asciiLowercased()
        if t == "all" {
            self = .all
        } else if t == "none" {
            self = .none
        } else if t.hasPrefix("top:"), let n = Int(t.dropFirst(4)), n >= 1, n <= Self.maxExtremes {
            self = .extremes(n)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .all: "all"
        case .none: "none"
        case .extremes(let n): "top:\(n)"
        }
    }

    /// The experts of one layer to write for `.extremes(n)`, as (expert, label fragment
    /// `,expert="E",load="most|least"`): the `n` with the most tokens, then the `n` with the
    /// fewest among the rest; ties go to the lower index, so the choice is stable between scrapes.
    static func extremes(_ n: Int, tokens: [UInt64]) -> [(expert: Int, labels: [UInt8])] {
        let order = tokens.indices.sorted { tokens[$0] != tokens[$1] ? tokens[$0] > tokens[$1] : $0 < $1 }
        let most = order.prefix(n)
        let least = order.dropFirst(most.count).suffix(n).reversed()
        return most.map { ($0, PreparedLabels.extra("expert", String($0)) + PreparedLabels.extra("load", "most")) }
            + least.map { ($0, PreparedLabels.extra("expert", String($0)) + PreparedLabels.extra("load", "least")) }
    }
}
