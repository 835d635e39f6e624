/// Decodes routing decisions from request bodies with a schema-directed byte scanner.
///
/// Why not Foundation's `JSONDecoder`: it builds a tree and a `String` per key, which caps ingest far
/// below the HTTP layer's rate. This decoder reads the `UInt8` buffer once, in place, matches keys
/// by their bytes, and is still a complete, strict RFC 8259 parser (see `JSONScanner` for the
/// rules, section by section).
///
/// The schema, and the choices it leaves open:
/// - torsh's field names as serde_json writes them: `expert_capacities` (alias `tokens_per_expert`;
///   both present is an error), `total_tokens` (both required), `tokens_dropped` (absent is 0),
///   `load_balance_loss`, `router_z_loss`, `auxiliary_loss` (`null`, serde's NaN or infinity, is
///   `Loss.nonFinite`), `expert_assignments` (validated and counted, not kept).
/// - Envelope: `layer`, `worker` (string, or a non-negative integer kept as its digits), `step`,
///   `top_k` (1 to the expert count), `expert_capacity` (at least 1), `capacity_factor` (> 0),
///   `latency_ms` (finite, >= 0). `null` in an envelope field or in `expert_assignments` means
///   "not sent", as serde writes `Option::None`.
/// - Counts are integer literals: `3.0` and `1e3` are refused (`.malformed`) rather than guessed
///   at, since serde and Python's json write integers without fraction or exponent. `-0` is 0.
/// - Numbers beyond the double range (`1e400`) are refused wherever they appear, also in ignored
///   fields (RFC 8259 section 6 lets a parser limit the range).
/// - Unknown fields are ignored, as serde does, but still parsed strictly; a name repeated in any
///   object is refused (RFC 8259 section 4 leaves its meaning open, so we do not pick one).
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

    /// Decodes every decision of a body, or throws the first error: a batch is all or nothing.
    ///
    /// Errors name the field as a JSON path within the decision and, when the body can hold
    /// several decisions (a JSON array or NDJSON), the decision's index from 0. Kinds: `.malformed`
    /// for text that is not JSON or not the shape of a decision (wrong type, missing required
    /// field, duplicate key, nesting too deep), `.invalid` for impossible values (negative or
    /// out-of-range numbers, `tokens_dropped > total_tokens`, one expert's count above
    /// `total_tokens` or the counts adding up to more than `top_k × total_tokens` (see
    /// `RoutingDecision.loadProblem`), an expert id out of range, a
    /// probability outside [0, 1], too many decisions or assignments), `.tooManyExperts` for more
    /// experts than `Limits.maxExperts`.
    public func decode(_ body: [UInt8], format: Format) throws(DecisionError) -> [RoutingDecision] {
        try body.withUnsafeBufferPointer { (buffer) throws(DecisionError) -> [RoutingDecision] in
            var scanner = JSONScanner(bytes: buffer, maxDepth: limits.maxDepth)
            switch format {
            case .json: return try decodeJSON(&scanner)
            case .ndjson: return try decodeNDJSON(&scanner)
            }
        }
    }

    private func decodeJSON(_ s: inout JSONScanner) throws(DecisionError) -> [RoutingDecision] {
        // Scratch for `expert_capacities`, reused by every decision (grown when a decision needs it).
        var counts = [UInt64](repeating: 0, count: min(max(limits.maxExperts, 1), 256))
        var result: [RoutingDecision] = []
        switch s.peek() {
        case UInt8(ascii: "{"):
            result.append(try s.decision(depth: 1, limits: limits, counts: &counts, lastUse: true))
        case UInt8(ascii: "["):
            try s.enter(1)
            s.pos += 1
            if s.peek() == UInt8(ascii: "]") {
                s.pos += 1
                break
            }
            let arrayStart = s.pos
            repeat {
                let index = result.count
                s.decisionIndex = index
                s.path = FieldPath()
                guard index < limits.maxDecisions else {
                    throw s.fail(.invalid, "more than \(limits.maxDecisions) decisions in one request")
                }
                guard s.peek() == UInt8(ascii: "{") else {
                    if s.peek() == nil { throw s.truncated("a decision object") }
                    throw s.fail(.malformed, "a decision must be an object, got \(s.describeNextValue())")
                }
                result.append(try s.decision(depth: 2, limits: limits, counts: &counts))
                if index == 0 {
                    // Room for as many decisions as the body holds if the rest are the size of
                    // the first (the usual batch: one per layer, alike), so the array is not
                    // regrown and copied log2(n) times; never more than the limit allows.
                    let used = Swift.max(s.pos - arrayStart, 1)
                    let estimate = (s.bytes.count - arrayStart) / used + 1
                    result.reserveCapacity(Swift.min(estimate, limits.maxDecisions))
                }
            } while try s.nextMember(close: UInt8(ascii: "]"))
        case nil:
            throw s.fail(.malformed, "empty body; expected a decision object or an array of them")
        default:
            throw s.fail(.malformed, "expected a decision object or an array of them, got \(s.describeNextValue())")
        }
        s.path = FieldPath()
        s.decisionIndex = nil
        if s.peek() != nil {
            throw s.syntax("unexpected \(s.describeByte(s.bytes[s.pos])) after the end of the JSON value")
        }
        return result
    }

    /// NDJSON: one decision object per line (LF or CRLF); lines holding only whitespace are skipped.
    private func decodeNDJSON(_ s: inout JSONScanner) throws(DecisionError) -> [RoutingDecision] {
        // Scratch for `expert_capacities`, reused by every decision (grown when a decision needs it).
        var counts = [UInt64](repeating: 0, count: min(max(limits.maxExperts, 1), 256))
        var result: [RoutingDecision] = []
        let total = s.bytes.count
        var lineStart = 0
        var lineNumber = 0
        while lineStart < total {
            lineNumber += 1
            var lineEnd = lineStart
            while lineEnd < total && s.bytes[lineEnd] != 0x0A { lineEnd += 1 }
            let next = lineEnd + 1
            s.pos = lineStart
            s.end = lineEnd
            lineStart = next
            s.path = FieldPath()
            s.decisionIndex = nil
            s.line = lineNumber
            guard let first = s.peek() else { continue }  // blank line (CR counts as whitespace)
            let index = result.count
            s.decisionIndex = index
            guard index < limits.maxDecisions else {
                throw s.fail(.invalid, "more than \(limits.maxDecisions) decisions in one request")
            }
            guard first == UInt8(ascii: "{") else {
                throw s.fail(.malformed, "each line must hold one decision object, got \(s.describeNextValue())")
            }
            result.append(try s.decision(depth: 1, limits: limits, counts: &counts))
            s.path = FieldPath()
            if s.peek() != nil {
                throw s.syntax("unexpected \(s.describeByte(s.bytes[s.pos])) after the decision on this line")
            }
        }
        return result
    }
}

/// The rule for layer names, shared by the decoder and the request path.
public enum LayerName {
    /// True for 1 to 64 characters of `[A-Za-z0-9_.:-]`: safe as a URL path segment and as a
    /// Prometheus label value without escaping, and bounded so labels cannot grow without limit.
    public static func isValid(_ s: String) -> Bool {
        var s = s
        return s.withUTF8 { isValid($0) }  // a small string is copied to the stack, not allocated
    }

    /// The same rule on the bytes of a name.
    static func isValid(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard (1...64).contains(bytes.count) else { return false }
        for b in bytes where !allowed(b) { return false }
        return true
    }

    /// Whether `b` is one of `[A-Za-z0-9_.:-]`, from a 128-bit table (two words, bit b).
    @inline(__always)
    static func allowed(_ b: UInt8) -> Bool {
        // Bits 45 to 46 (- .), 48 to 58 (0-9 :) in the low word; 65 to 90 (A-Z), 95 (_),
        // 97 to 122 (a-z) in the high word.
        let low: UInt64 = 0x07FF_6000_0000_0000
        let high: UInt64 = 0x07FF_FFFE_87FF_FFFE
        guard b < 128 else { return false }
        return (b < 64 ? low >> UInt64(b) : high >> UInt64(b - 64)) & 1 != 0
    }
}
