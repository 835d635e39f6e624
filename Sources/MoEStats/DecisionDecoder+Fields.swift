/// The keys of a decision object: torsh's `RoutingDecision` fields as serde_json writes them, plus
/// the envelope fields moe-metricsd reads from the same object.
enum DecisionField: UInt8, CaseIterable {
    case expertCapacities, tokensPerExpert, totalTokens, tokensDropped
    case loadBalanceLoss, routerZLoss, auxiliaryLoss, expertAssignments
    case layer, worker, step, topK, expertCapacity, capacityFactor, latencyMs, expertDemand

    var name: StaticString {
        @inline(__always) get {
            switch self {
            case .expertCapacities: "expert_capacities"
            case .tokensPerExpert: "tokens_per_expert"
            case .totalTokens: "total_tokens"
            case .tokensDropped: "tokens_dropped"
            case .loadBalanceLoss: "load_balance_loss"
            case .routerZLoss: "router_z_loss"
            case .auxiliaryLoss: "auxiliary_loss"
            case .expertAssignments: "expert_assignments"
            case .layer: "layer"
            case .worker: "worker"
            case .step: "step"
            case .topK: "top_k"
            case .expertCapacity: "expert_capacity"
            case .capacityFactor: "capacity_factor"
            case .latencyMs: "latency_ms"
            case .expertDemand: "expert_demand"
            }
        }
    }

    var bit: UInt32 { 1 << UInt32(rawValue) }

    /// Matches a key's bytes without building a `String`. The length and the first byte pick the
    /// one candidate (no two field names share both), which is then compared in whole words
    /// against its literal (spelled out per case so that the compiler folds the literal's words).
    @inline(__always)
    static func match(_ key: UnsafeBufferPointer<UInt8>) -> DecisionField? {
        guard let p = key.baseAddress, key.count >= 4 else { return nil }
        switch (key.count, p[0]) {
        case (4, UInt8(ascii: "s")): return key.equals("step") ? .step : nil
        case (5, UInt8(ascii: "l")): return key.equals("layer") ? .layer : nil
        case (5, UInt8(ascii: "t")): return key.equals("top_k") ? .topK : nil
        case (6, UInt8(ascii: "w")): return key.equals("worker") ? .worker : nil
        case (10, UInt8(ascii: "l")): return key.equals("latency_ms") ? .latencyMs : nil
        case (12, UInt8(ascii: "t")): return key.equals("total_tokens") ? .totalTokens : nil
        case (13, UInt8(ascii: "r")): return key.equals("router_z_loss") ? .routerZLoss : nil
        case (13, UInt8(ascii: "e")): return key.equals("expert_demand") ? .expertDemand : nil
        case (14, UInt8(ascii: "t")): return key.equals("tokens_dropped") ? .tokensDropped : nil
        case (14, UInt8(ascii: "a")): return key.equals("auxiliary_loss") ? .auxiliaryLoss : nil
        case (15, UInt8(ascii: "e")): return key.equals("expert_capacity") ? .expertCapacity : nil
        case (15, UInt8(ascii: "c")): return key.equals("capacity_factor") ? .capacityFactor : nil
        case (17, UInt8(ascii: "e")): return key.equals("expert_capacities") ? .expertCapacities : nil
        case (17, UInt8(ascii: "t")): return key.equals("tokens_per_expert") ? .tokensPerExpert : nil
        case (17, UInt8(ascii: "l")): return key.equals("load_balance_loss") ? .loadBalanceLoss : nil
        case (18, UInt8(ascii: "e")): return key.equals("expert_assignments") ? .expertAssignments : nil
        default: return nil
        }
    }
}

/// The keys of one torsh `ExpertAssignment` (serde-derived: all four are required).
enum AssignmentField: UInt8, CaseIterable {
    case expertID, probability, tokenIndex, expertRank

    var name: StaticString {
        switch self {
        case .expertID: "expert_id"
        case .probability: "probability"
        case .tokenIndex: "token_idx"
        case .expertRank: "expert_rank"
        }
    }

    var bit: UInt8 { 1 << rawValue }

    /// As `DecisionField.match`: length and first byte pick the candidate.
    static func match(_ key: UnsafeBufferPointer<UInt8>) -> AssignmentField? {
        guard let p = key.baseAddress, key.count >= 9 else { return nil }
        switch (key.count, p[0]) {
        case (9, UInt8(ascii: "e")): return key.equals("expert_id") ? .expertID : nil
        case (9, UInt8(ascii: "t")): return key.equals("token_idx") ? .tokenIndex : nil
        case (11, UInt8(ascii: "p")): return key.equals("probability") ? .probability : nil
        case (11, UInt8(ascii: "e")): return key.equals("expert_rank") ? .expertRank : nil
        default: return nil
        }
    }
}

extension UnsafeBufferPointer<UInt8> {
    /// Whether the bytes are exactly `s`. Keys of 4 to 24 bytes are compared as two or three
    /// overlapping words (loads within both buffers, unaligned: JSON keys sit anywhere); other
    /// lengths byte by byte.
    @inline(__always)
    func equals(_ s: StaticString) -> Bool {
        let n = s.utf8CodeUnitCount
        guard count == n else { return false }
        guard n > 0, let base = baseAddress else { return n == 0 }
        let a = UnsafeRawPointer(base)
        let b = UnsafeRawPointer(s.utf8Start)
        if n >= 8 && n <= 24 {
            guard a.loadUnaligned(as: UInt64.self) == b.loadUnaligned(as: UInt64.self),
                a.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)
                    == b.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)
            else { return false }
            return n <= 16
                || a.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                    == b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        }
        if n >= 4 && n < 8 {
            return a.loadUnaligned(as: UInt32.self) == b.loadUnaligned(as: UInt32.self)
                && a.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)
                    == b.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)
        }
        let p = s.utf8Start
        for i in 0..<n where base[i] != p[i] { return false }
        return true
    }
}

/// Where an error sits inside one decision, kept as small values so that the JSON path string
/// (`expert_assignments[2][0].probability`) is only built when an error is thrown.
struct FieldPath {
    enum Name {
        case none
        case known(StaticString)
        /// An unknown key, by its raw bytes in the body.
        case unknown(Range<Int>)
    }

    var top: Name = .none
    /// `[i]` under the top field, or -1.
    var element = -1
    /// `[j]` under the element, or -1.
    var entry = -1
    /// `.name` under the entry.
    var sub: Name = .none

    func render(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        func text(_ n: Name) -> String? {
            switch n {
            case .none: return nil
            case .known(let s): return "\(s)"
            case .unknown(let r):
                return String(
                    decoding: UnsafeBufferPointer(rebasing: bytes[r.clamped(to: 0..<bytes.count)]), as: UTF8.self)
            }
        }
        guard var s = text(top) else { return nil }
        if element >= 0 { s += "[\(element)]" }
        if entry >= 0 { s += "[\(entry)]" }
        if let sub = text(sub) { s += "." + sub }
        return s
    }
}

extension JSONScanner {
    /// Records a key the schema does not know, refusing it if the object already had it
    /// (duplicates are refused for every key, known or not). The set is only built once an
    /// object has an unknown key, so the common case allocates nothing.
    mutating func rememberUnknownKey(
        _ keyToken: StringToken,
        in unknownKeys: inout Set<[UInt8]>?
    ) throws(DecisionError) {
        let key = withValue(keyToken) { Array($0) }
        if unknownKeys == nil { unknownKeys = [] }
        guard unknownKeys!.insert(key).inserted else {
            throw fail(.malformed, "duplicate key \"\(String(decoding: key, as: UTF8.self))\"")
        }
    }

    /// Reads one decision object; the scanner is at `{` (checked by the caller).
    /// `depth` is the object's own nesting depth.
    ///
    /// `lastUse`: the caller reads no other decision with `counts`, so the scratch array itself,
    /// cut to the counts read, becomes the decision's counts (no second allocation and copy).
    mutating func decision(
        depth: Int, limits: DecisionDecoder.Limits,
        counts: inout [UInt64], lastUse: Bool = false
    ) throws(DecisionError) -> RoutingDecision {
        try enter(depth)
        pos += 1
        path = FieldPath()
        var seen: UInt32 = 0
        var unknownKeys: Set<[UInt8]>? = nil
        // Fields in locals, the decision built once at the end: assigning into a `RoutingDecision`
        // field by field copies the whole value (benchmark "DecisionDecoder decode, 64 experts").
        var layer: String? = nil, worker: String? = nil, step: Int64? = nil, topK: Int? = nil
        var expertCapacity: Int? = nil, capacityFactor: Double? = nil, latencyMs: Double? = nil
        var expertCounts: [UInt64] = [], totalTokens: UInt64 = 0, tokensDropped: UInt64 = 0
        var loadBalanceLoss = Loss.absent, routerZLoss = Loss.absent, auxiliaryLoss = Loss.absent
        var assignmentCount = 0
        var expertDemand: [UInt64]? = nil
        var expertCount: Int? = nil
        var totals = CountTotals()
        // An expert id seen before `expert_capacities`: checked once the count is known.
        var largestID: (id: UInt64, token: Int, entry: Int)? = nil

        if peek() == UInt8(ascii: "}") {
            pos += 1
        } else {
            repeat {
                guard peek() == UInt8(ascii: "\"") else { throw unexpected("a string key") }
                let keyToken = try scanDecodedString()
                // A plain key is matched on the body's bytes directly (no closure call per key).
                let field =
                    keyToken.escaped
                    ? withValue(keyToken) { DecisionField.match($0) }
                    : DecisionField.match(UnsafeBufferPointer(rebasing: bytes[keyToken.start..<keyToken.end]))
                path = FieldPath()
                if let field {
                    path.top = .known(field.name)
                    guard seen & field.bit == 0 else {
                        throw fail(.malformed, "duplicate key \"\(field.name)\"")
                    }
                    seen |= field.bit
                } else {
                    path.top = .unknown(keyToken.start..<keyToken.end)
                    try rememberUnknownKey(keyToken, in: &unknownKeys)
                }
                try expect(UInt8(ascii: ":"), "':' after a key")
                guard let field else {
                    try skipValue(depth: depth + 1)
                    continue
                }
                switch field {
                case .expertCapacities, .tokensPerExpert:
                    let other: DecisionField = field == .expertCapacities ? .tokensPerExpert : .expertCapacities
                    if seen & other.bit != 0 {
                        throw fail(.malformed, "both expert_capacities and tokens_per_expert are present; send one")
                    }
                    let t = try countArray(depth: depth + 1, limits: limits, into: &counts)
                    totals = t
                    if lastUse {
                        counts.removeLast(counts.count - t.count)
                        expertCounts = counts
                        counts = []
                    } else {
                        // An exact-size copy: the scratch array stays whole for the next decision.
                        expertCounts = Array(counts[..<t.count])
                    }
                    expertCount = t.count
                    if let largestID, largestID.id >= UInt64(t.count) {
                        path = FieldPath(
                            top: .known(DecisionField.expertAssignments.name),
                            element: largestID.token, entry: largestID.entry,
                            sub: .known(AssignmentField.expertID.name))
                        throw fail(.invalid, "expert id \(largestID.id) is out of range for \(t.count) experts")
                    }
                case .totalTokens:
                    totalTokens = try count()
                case .tokensDropped:
                    tokensDropped = try count()
                case .loadBalanceLoss:
                    loadBalanceLoss = try loss()
                case .routerZLoss:
                    routerZLoss = try loss()
                case .auxiliaryLoss:
                    auxiliaryLoss = try loss()
                case .expertAssignments:
                    assignmentCount = try assignments(
                        depth: depth + 1, limits: limits,
                        expertCount: expertCount, largestID: &largestID)
                case .layer:
                    layer = try name(maxLength: 64, isLayer: true)
                case .worker:
                    worker = try name(maxLength: 128, isLayer: false)
                case .step:
                    if try consumeNull() { break }
                    step = Int64(try count(max: UInt64(Int64.max)))
                case .topK:
                    if try consumeNull() { break }
                    topK = Int(try count(max: UInt64(Int.max), min: 1))
                case .expertCapacity:
                    if try consumeNull() { break }
                    expertCapacity = Int(try count(max: UInt64(Int.max), min: 1))
                case .capacityFactor:
                    if try consumeNull() { break }
                    let v = try finiteNumber()
                    guard v > 0 else { throw fail(.invalid, "must be greater than 0, got \(v)") }
                    capacityFactor = v
                case .latencyMs:
                    if try consumeNull() { break }
                    let v = try finiteNumber()
                    guard v >= 0 else { throw fail(.invalid, "must not be negative, got \(v)") }
                    latencyMs = v
                case .expertDemand:
                    if try consumeNull() { break }
                    var demand = [UInt64]()
                    let t = try countArray(depth: depth + 1, limits: limits, into: &demand)
                    demand.removeLast(demand.count - t.count)
                    expertDemand = demand
                }
            } while try nextMember(close: UInt8(ascii: "}"))
        }

        // Checks that need the whole object.
        path = FieldPath()
        guard seen & (DecisionField.expertCapacities.bit | DecisionField.tokensPerExpert.bit) != 0 else {
            path.top = .known(DecisionField.expertCapacities.name)
            throw fail(.malformed, "missing required field (or its alias tokens_per_expert)")
        }
        guard seen & DecisionField.totalTokens.bit != 0 else {
            path.top = .known(DecisionField.totalTokens.name)
            throw fail(.malformed, "missing required field")
        }
        guard tokensDropped <= totalTokens else {
            path.top = .known(DecisionField.tokensDropped.name)
            throw fail(.invalid, "\(tokensDropped) exceeds total_tokens \(totalTokens)")
        }
        if let k = topK, k > expertCounts.count {
            path.top = .known(DecisionField.topK.name)
            throw fail(.invalid, "\(k) exceeds the number of experts \(expertCounts.count)")
        }
        let countsField =
            seen & DecisionField.tokensPerExpert.bit != 0
            ? DecisionField.tokensPerExpert : DecisionField.expertCapacities
        switch RoutingDecision.loadProblem(
            expertCounts, sum: totals.sum, largest: totals.largest,
            totalTokens: totalTokens, topK: topK)
        {
        case nil:
            break
        case .expertAboveTotal(let expert, let load):
            path.top = .known(countsField.name)
            path.element = expert
            throw fail(
                .invalid, "\(load) tokens exceed total_tokens \(totalTokens); a token reaches an expert at most once")
        case .sumAboveTopK(let sum, let k):
            path.top = .known(countsField.name)
            throw fail(.invalid, "the counts add up to \(sum), more than top_k \(k) × total_tokens \(totalTokens)")
        }
        if let expertDemand, let problem = RoutingDecision.demandProblem(expertDemand, served: expertCounts) {
            path.top = .known(DecisionField.expertDemand.name)
            if expertDemand.count == expertCounts.count,
                let i = expertDemand.indices.first(where: { expertDemand[$0] < expertCounts[$0] })
            {
                path.element = i
            }
            throw fail(.invalid, problem.message)
        }
        var d = RoutingDecision(
            layer: layer, worker: worker, step: step, topK: topK,
            expertCapacity: expertCapacity, capacityFactor: capacityFactor,
            latencyMs: latencyMs, expertCounts: expertCounts, totalTokens: totalTokens,
            tokensDropped: tokensDropped, expertDemand: expertDemand, loadBalanceLoss: loadBalanceLoss,
            routerZLoss: routerZLoss, auxiliaryLoss: auxiliaryLoss,
            assignmentCount: assignmentCount)
        d.loadsChecked = true  // loadProblem was nil just above
        return d
    }

    /// What `countArray` learnt on the way: the number of counts read, their sum and the largest,
    /// so the load checks (`RoutingDecision.loadProblem`) need no second pass over the counts.
    struct CountTotals {
        var count = 0
        /// Exact: a sum that would overflow is refused while reading.
        var sum: UInt64 = 0
        var largest: UInt64 = 0
    }

    /// `expert_capacities`: a non-empty array of non-negative integers, at most `maxExperts`.
    ///
    /// The counts go to `counts[0..<totals.count]`; `counts` is scratch reused by every decision of
    /// a body, kept at its full size (zeros past the counts) so that the common case writes into
    /// it without growing it.
    mutating func countArray(
        depth: Int, limits: DecisionDecoder.Limits,
        into counts: inout [UInt64]
    ) throws(DecisionError) -> CountTotals {
        guard peek() == UInt8(ascii: "[") else {
            throw mismatch("an array of non-negative integers")
        }
        try enter(depth)
        pos += 1
        if peek() == UInt8(ascii: "]") {
            pos += 1
            throw fail(.invalid, "must list at least one expert")
        }
        let maxExperts = Swift.max(limits.maxExperts, 0)
        var t = CountTotals()
        while true {
            // The common shape, `123,` with no whitespace, read by a tight loop; it stops at the
            // first element of any other shape (whitespace, sign, fraction, more than 19 digits,
            // an error) and leaves it, unread, to the general path below.
            if t.count < maxExperts {
                if t.count == counts.count { Self.grow(&counts) }
                if plainCounts(into: &counts, room: Swift.min(counts.count, maxExperts), &t) { break }
                if t.count == counts.count && t.count < maxExperts { continue }  // out of room, not of counts
            }
            path.element = t.count
            guard t.count < maxExperts else {
                throw fail(.tooManyExperts, "more than \(limits.maxExperts) experts (the decoder's limit)")
            }
            let v = try count()
            let (s, overflow) = t.sum.addingReportingOverflow(v)
            guard !overflow else { throw fail(.invalid, "the counts add up to more than \(UInt64.max)") }
            t.sum = s
            t.largest = Swift.max(t.largest, v)
            if t.count == counts.count { Self.grow(&counts) }
            counts[t.count] = v
            t.count += 1
            if try !nextMember(close: UInt8(ascii: "]")) { break }
        }
        path.element = -1
        return t
    }

    /// Doubles the scratch array (zero-filled: its whole length is always initialized).
    private static func grow(_ counts: inout [UInt64]) {
        counts.append(contentsOf: repeatElement(0, count: Swift.max(counts.count, 64)))
    }

    /// Reads elements of the shape `DIGITS,` or `DIGITS]` (1 to 19 digits, so no overflow of the
    /// value; no leading zero) into `counts[t.count..<room]`, starting at `pos`. Returns true
    /// after the closing `]`; otherwise `pos` is at the start of the first element it did not
    /// read (or `room` was reached), which the caller reads on the general path.
    ///
    /// One byte at a time: workers send counts of 3 or 4 digits, too short for a word-at-a-time
    /// scan to pay off (benchmark "DecisionDecoder decode, 64 experts").
    ///
    /// Why pointers: the loop runs once per expert of every decision, and indexing the body and
    /// the scratch array through their collections checked both bounds and the array's uniqueness
    /// per element. Here every byte read is checked against `end` (the body's or NDJSON line's
    /// end, never past `bytes`) and every write against `room`, which is checked once against the
    /// buffer's size.
    @inline(__always)
    private mutating func plainCounts(into counts: inout [UInt64], room: Int, _ t: inout CountTotals) -> Bool {
        guard let base = bytes.baseAddress else { return false }
        precondition(end <= bytes.count)
        let end = self.end
        // The loop's state lives in the closure's locals and comes back as its result, so it can
        // stay in registers: a captured variable is stored back to memory on every element.
        let start0 = pos, count0 = t.count, sum0 = t.sum, largest0 = t.largest
        let r = counts.withUnsafeMutableBufferPointer {
            out -> (p: Int, n: Int, sum: UInt64, largest: UInt64, closed: Bool) in
            precondition(room <= out.count)
            var p = start0
            var n = count0
            var sum = sum0
            var largest = largest0
            while n < room {
                let start = p
                guard p < end else { break }
                let first = base[p] &- UInt8(ascii: "0")
                guard first < 10 else { break }
                var v = UInt64(first)
                p += 1
                if first != 0 {  // after a leading 0 nothing may follow but the separator
                    let limit = Swift.min(end, start &+ 19)  // start < end, so no overflow
                    while p < limit {
                        let d = base[p] &- UInt8(ascii: "0")
                        guard d < 10 else { break }
                        v = v &* 10 &+ UInt64(d)
                        p += 1
                    }
                }
                guard p < end else { p = start; break }
                let next = base[p]
                let (s, overflow) = sum.addingReportingOverflow(v)
                guard !overflow, next == UInt8(ascii: ",") || next == UInt8(ascii: "]") else {
                    p = start
                    break
                }
                sum = s
                largest = Swift.max(largest, v)
                out[n] = v
                n += 1
                p += 1
                if next == UInt8(ascii: "]") { return (p, n, sum, largest, true) }
            }
            return (p, n, sum, largest, false)
        }
        pos = r.p
        t.count = r.n
        t.sum = r.sum
        t.largest = r.largest
        return r.closed
    }

    /// A count: an integer literal (no fraction, no exponent: serde writes `usize` that way, and a
    /// `3.0` or `1e3` is refused rather than guessed at), non-negative, within `min...max`.
    @inline(__always)
    mutating func count(max: UInt64 = .max, min: UInt64 = 0) throws(DecisionError) -> UInt64 {
        if let v = plainCount(max: max, min: min) { return v }
        return try generalCount(max: max, min: min)
    }

    /// The usual shape of a count, 1 to 19 digits without a leading zero, sign, fraction or
    /// exponent and within `min...max`, read directly (inlined into each caller); nil, with `pos`
    /// at the value, for anything else.
    @inline(__always)
    mutating func plainCount(max: UInt64, min: UInt64) -> UInt64? {
        guard let b = peek(), b &- UInt8(ascii: "0") < 10, let base = bytes.baseAddress else { return nil }
        var p = pos
        var v: UInt64 = 0
        let limit = Swift.min(end, pos + 19)
        while p < limit {
            let d = base[p] &- UInt8(ascii: "0")
            if d >= 10 { break }
            v = v &* 10 &+ UInt64(d)
            p += 1
        }
        let n = p - pos
        if p < end, n >= 1, n == 1 || b != UInt8(ascii: "0"), v >= min, v <= max {
            let next = base[p]
            if next &- UInt8(ascii: "0") >= 10, next != UInt8(ascii: "."), next | 0x20 != UInt8(ascii: "e") {
                pos = p
                return v
            }
        }
        return nil
    }

    /// Every other count (and every refusal), through the general number scanner.
    mutating func generalCount(max: UInt64, min: UInt64) throws(DecisionError) -> UInt64 {
        guard let b = peek(), b == UInt8(ascii: "-") || b &- UInt8(ascii: "0") < 10 else {
            throw mismatch("a non-negative integer")
        }
        let t = try scanNumber()
        guard t.isInteger else {
            throw fail(.malformed, "expected an integer without fraction or exponent, got \(text(t.start, t.end))")
        }
        if t.negative && t.mantissa != 0 {
            throw fail(.invalid, "must not be negative, got \(text(t.start, t.end))")
        }
        guard !t.mantissaOverflow, t.mantissa <= max else {
            throw fail(.invalid, "\(text(t.start, t.end)) is larger than the maximum \(max)")
        }
        guard t.mantissa >= min else {
            throw fail(.invalid, "must be at least \(min), got \(t.mantissa)")
        }
        return t.mantissa
    }

    /// Any JSON number as a finite double (a literal beyond the double range is refused).
    mutating func finiteNumber() throws(DecisionError) -> Double {
        guard let b = peek(), b == UInt8(ascii: "-") || b &- UInt8(ascii: "0") < 10 else {
            throw mismatch("a number")
        }
        if let v = plainDouble() { return v }
        let t = try scanNumber()
        let v = doubleValue(t)
        guard v.isFinite else {
            throw fail(.invalid, "\(text(t.start, t.end)) is outside the range of a double")
        }
        return v
    }

    /// The usual shape of a double, `-?(0|[1-9][0-9]*)(.[0-9]+)?` with at most 19 digits and no
    /// exponent, followed by a byte that cannot continue a number, whose digits make an integer
    /// `m <= 2^53` and whose fraction has at most 22 digits: its value is `m / 10^k`, one
    /// correctly rounded division of two exactly representable doubles (Clinger's fast path, as
    /// `doubleValue` computes it), so the result is the correctly rounded value of the literal.
    /// Anything else returns nil with `pos` unchanged, for `scanNumber` and `doubleValue`, which
    /// read (or refuse) every number.
    ///
    /// Why pointers: four of these per decision, and indexing the body checked its bounds per
    /// byte. Every byte read here is below `end`, which is checked once against the buffer.
    @inline(__always)
    mutating func plainDouble() -> Double? {
        guard let base = bytes.baseAddress else { return nil }
        let end = self.end
        precondition(end <= bytes.count)
        var p = pos
        let negative = p < end && base[p] == UInt8(ascii: "-")
        if negative { p += 1 }
        let first = p
        var m: UInt64 = 0
        while p < end {
            let d = base[p] &- UInt8(ascii: "0")
            if d >= 10 { break }
            m = m &* 10 &+ UInt64(d)
            p += 1
        }
        let integerDigits = p - first
        // A leading zero may only stand alone.
        guard integerDigits >= 1, integerDigits == 1 || base[first] != UInt8(ascii: "0"), p < end else { return nil }
        var fractionDigits = 0
        if base[p] == UInt8(ascii: ".") {
            p += 1
            let fractionStart = p
            while p < end {
                let d = base[p] &- UInt8(ascii: "0")
                if d >= 10 { break }
                m = m &* 10 &+ UInt64(d)
                p += 1
            }
            fractionDigits = p - fractionStart
            guard fractionDigits >= 1, p < end else { return nil }
        }
        // 19 digits cannot overflow a UInt64 (10^19 - 1 < 2^64), so `m` is exact.
        guard integerDigits + fractionDigits <= 19, m <= 1 << 53, fractionDigits <= 22 else { return nil }
        let next = base[p]
        guard next &- UInt8(ascii: "0") >= 10, next != UInt8(ascii: "."), next | 0x20 != UInt8(ascii: "e") else {
            return nil
        }
        var v = Double(m)
        if fractionDigits > 0 { v /= JSONScanner.powersOfTen[fractionDigits] }
        pos = p
        return negative ? -v : v
    }

    /// A loss: a number, or `null`, which is how serde_json writes a NaN or infinite float.
    mutating func loss() throws(DecisionError) -> Loss {
        if try consumeNull() { return .nonFinite }
        return .value(try finiteNumber())
    }

    /// `layer` or `worker`: a string, or a non-negative integer kept as its decimal digits;
    /// `null` (serde's `None`) means not sent.
    mutating func name(maxLength: Int, isLayer: Bool) throws(DecisionError) -> String? {
        guard let b = peek() else { throw unexpected("a value") }
        if b == UInt8(ascii: "n") {
            try literal("null")
            return nil
        }
        let rule = isLayer ? "1 to 64 characters of [A-Za-z0-9_.:-]" : "1 to 128 printable characters"
        if b == UInt8(ascii: "-") || b &- UInt8(ascii: "0") < 10 {
            let t = try scanNumber()
            guard t.isInteger, !t.negative else {
                throw fail(.invalid, "a number here must be a non-negative integer, got \(text(t.start, t.end))")
            }
            guard t.end - t.start <= maxLength else { throw fail(.invalid, "must be \(rule)") }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[t.start..<t.end]), as: UTF8.self)
        }
        guard b == UInt8(ascii: "\"") else {
            throw mismatch("a string or an integer")
        }
        let t = try scanDecodedString()
        // Checked on the bytes where that settles it: a valid layer name is ASCII, and a worker
        // name of printable ASCII (the usual `rank-5`, `host:3`) has one character per byte.
        let (valid, printableASCII) = withValue(t) { bytes in
            (
                isLayer && LayerName.isValid(bytes),
                !isLayer && bytes.count >= 1 && bytes.count <= maxLength && bytes.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
            )
        }
        let value = withValue(t) { String(decoding: $0, as: UTF8.self) }
        if isLayer {
            guard valid else {
                throw fail(.invalid, "must be \(rule), got \"\(value.prefix(80))\"")
            }
        } else if !printableASCII {
            var n = 0
            for s in value.unicodeScalars {
                // Printable: no C0 or C1 control character and no DEL (Unicode general category Cc).
                guard s.value >= 0x20 && !(s.value >= 0x7F && s.value <= 0x9F) else {
                    throw fail(
                        .invalid,
                        "must be \(rule); it contains control character U+\(String(s.value, radix: 16, uppercase: true))"
                    )
                }
                n += 1
            }
            guard n >= 1 && n <= maxLength else { throw fail(.invalid, "must be \(rule), got \(n) characters") }
        }
        return value
    }

    /// `expert_assignments`: per token, an array of `{expert_id, probability, token_idx,
    /// expert_rank}`; validated and counted, not kept. `null` means not sent. Returns the number of
    /// per-token lists.
    mutating func assignments(
        depth: Int, limits: DecisionDecoder.Limits, expertCount: Int?,
        largestID: inout (id: UInt64, token: Int, entry: Int)?
    ) throws(DecisionError) -> Int {
        if try consumeNull() { return 0 }
        guard peek() == UInt8(ascii: "[") else {
            throw mismatch("an array (one list per token)")
        }
        try enter(depth)
        pos += 1
        if peek() == UInt8(ascii: "]") { pos += 1; return 0 }
        var tokens = 0
        var total = 0
        repeat {
            path.element = tokens
            path.entry = -1
            path.sub = .none
            guard peek() == UInt8(ascii: "[") else {
                throw mismatch("an array of assignments")
            }
            try enter(depth + 1)
            pos += 1
            if peek() == UInt8(ascii: "]") {
                pos += 1
            } else {
                var j = 0
                repeat {
                    path.entry = j
                    path.sub = .none
                    guard total < limits.maxAssignments else {
                        throw fail(
                            .invalid,
                            "more than \(limits.maxAssignments) assignments in one decision (the decoder's limit)")
                    }
                    total += 1
                    let id = try assignment(depth: depth + 2)
                    if let e = expertCount {
                        if id >= UInt64(e) {
                            path.sub = .known(AssignmentField.expertID.name)
                            throw fail(.invalid, "expert id \(id) is out of range for \(e) experts")
                        }
                    } else if largestID == nil || id > largestID!.id {
                        largestID = (id, tokens, j)
                    }
                    j += 1
                } while try nextMember(close: UInt8(ascii: "]"))
            }
            tokens += 1
        } while try nextMember(close: UInt8(ascii: "]"))
        path.element = -1
        path.entry = -1
        path.sub = .none
        return tokens
    }

    /// One assignment object; returns its expert id.
    mutating func assignment(depth: Int) throws(DecisionError) -> UInt64 {
        guard peek() == UInt8(ascii: "{") else {
            throw mismatch("an assignment object")
        }
        try enter(depth)
        pos += 1
        var seen: UInt8 = 0
        var id: UInt64 = 0
        var unknownKeys: Set<[UInt8]>? = nil
        if peek() == UInt8(ascii: "}") {
            pos += 1
        } else {
            repeat {
                guard peek() == UInt8(ascii: "\"") else { throw unexpected("a string key") }
                let keyToken = try scanDecodedString()
                let field = withValue(keyToken) { AssignmentField.match($0) }
                if let field {
                    path.sub = .known(field.name)
                    guard seen & field.bit == 0 else { throw fail(.malformed, "duplicate key \"\(field.name)\"") }
                    seen |= field.bit
                } else {
                    path.sub = .unknown(keyToken.start..<keyToken.end)
                    try rememberUnknownKey(keyToken, in: &unknownKeys)
                }
                try expect(UInt8(ascii: ":"), "':' after a key")
                switch field {
                case .expertID: id = try count()
                case .tokenIndex: _ = try count()
                case .expertRank: _ = try count()
                case .probability:
                    if try consumeNull() {
                        throw fail(.invalid, "is null (NaN or infinity); a probability must be in [0, 1]")
                    }
                    let p = try finiteNumber()
                    guard p >= 0 && p <= 1 else { throw fail(.invalid, "must be in [0, 1], got \(p)") }
                case nil:
                    try skipValue(depth: depth + 1)
                }
            } while try nextMember(close: UInt8(ascii: "}"))
        }
        if seen != 0b1111 {
            for f in AssignmentField.allCases where seen & f.bit == 0 {
                path.sub = .known(f.name)
                throw fail(.malformed, "missing required field")
            }
        }
        path.sub = .none
        return id
    }
}
