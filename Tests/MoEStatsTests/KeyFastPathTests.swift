import Testing

@testable import MoEStats

/// The key fast paths beside what they shortcut: the word-at-a-time search for a plain string's
/// closing quote against a byte-by-byte definition and the general string scanner, the field
/// matcher (length, first byte, word compares) against comparing with every field name, and whole
/// decisions whose keys are escaped, non-ASCII, duplicated or unknown.
@Suite struct KeyFastPathTests {
    /// The plain definition of `JSONScanner.plainStringEnd`.
    static func referencePlainEnd(_ bytes: [UInt8], from start: Int, end: Int) -> Int? {
        var p = start
        while p < end {
            let b = bytes[p]
            if b == UInt8(ascii: "\"") { return p }
            guard b >= 0x20, b < 0x80, b != UInt8(ascii: "\\") else { return nil }
            p += 1
        }
        return nil
    }

    @Test func plainStringEndMatchesTheByteDefinition() {
        // Every byte the word tests tell apart, with printable ASCII weighted up so that runs are long.
        let special: [UInt8] = [
            0x00, 0x01, 0x09, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x5B, 0x5C, 0x5D, 0x7E, 0x7F,
            0x80, 0x81, 0xA0, 0xA2, 0xC3, 0xDC, 0xE0, 0xFF,
        ]
        var g = FastPathTests.Generator(seed: 7)
        var plainEnds = 0
        var longRuns = 0
        for _ in 0..<20_000 {
            let n = Int(g.below(40))
            var bytes: [UInt8] = []
            let rarity: UInt64 = g.below(2) == 0 ? 4 : 48  // how rare the special bytes are
            for _ in 0..<n {
                bytes.append(
                    g.below(rarity) == 0
                        ? special[Int(g.below(UInt64(special.count)))]
                        : UInt8(0x20 + g.below(0x5F)))
            }
            if n > 0 && g.below(2) == 0 { bytes[Int(g.below(UInt64(n)))] = UInt8(ascii: "\"") }
            let start = n == 0 ? 0 : Int(g.below(UInt64(n)))
            let end = start + Int(g.below(UInt64(n - start + 1)))
            let expected = Self.referencePlainEnd(bytes, from: start, end: end)
            if let e = expected {
                plainEnds += 1
                if e - start >= 8 { longRuns += 1 }
            }
            bytes.withUnsafeBufferPointer { buffer in
                var s = JSONScanner(bytes: buffer, maxDepth: 8)
                s.end = end
                #expect(s.plainStringEnd(from: start) == expected, "\(bytes) from \(start) to \(end)")
            }
        }
        // The fast answer was exercised, not only the fallback, and past whole words.
        #expect(plainEnds > 2_000 && longRuns > 200, "\(plainEnds) plain, \(longRuns) long")
    }

    /// `scanDecodedString` and `scanString(decode: true)` give the same value, the same end and
    /// the same error (text and kind) on strings of every kind.
    @Test func decodedStringsAgreeWithTheGeneralScanner() {
        let cases: [String] = [
            #""layer""#, #""""#, #""a b~\u007F""#, #""la\u0079er""#, #""\"""#, #""a\\b""#, #""é""#,
            "\"\u{1}\"", "\"\u{7F}\"", #""unterminated"#, #""trail\"#, #""\x""#, #""\ud800""#,
            "\"naïve-key-of-some-length\"", #""0123456789abcdefghijklmnop""#, #""a"#, #"""#,
        ]
        var inputs = cases.map { Array($0.utf8) }
        inputs.append([0x22, 0x61, 0xC0, 0xAF, 0x22])  // overlong '/'
        inputs.append([0x22, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0xFF, 0x22])  // invalid byte after a word
        for bytes in inputs {
            bytes.withUnsafeBufferPointer { buffer in
                var fast = JSONScanner(bytes: buffer, maxDepth: 8)
                var general = JSONScanner(bytes: buffer, maxDepth: 8)
                let a: Result<[UInt8], DecisionError>
                let b: Result<[UInt8], DecisionError>
                do throws(DecisionError) {
                    let t = try fast.scanDecodedString(); a = .success(fast.withValue(t) { Array($0) })
                } catch { a = .failure(error) }
                do throws(DecisionError) {
                    let t = try general.scanString(decode: true); b = .success(general.withValue(t) { Array($0) })
                } catch { b = .failure(error) }
                switch (a, b) {
                case (.success(let x), .success(let y)):
                    #expect(x == y && fast.pos == general.pos, "\(bytes)")
                case (.failure(let x), .failure(let y)):
                    #expect(x.message == y.message && x.kind == y.kind, "\(bytes)")
                default:
                    Issue.record("paths disagree on \(bytes): \(a) vs \(b)")
                }
            }
        }
    }

    static func referenceDecisionField(_ key: [UInt8]) -> DecisionField? {
        DecisionField.allCases.first { f in
            let n = f.name
            return key == Array(UnsafeBufferPointer(start: n.utf8Start, count: n.utf8CodeUnitCount))
        }
    }

    static func referenceAssignmentField(_ key: [UInt8]) -> AssignmentField? {
        AssignmentField.allCases.first { f in
            let n = f.name
            return key == Array(UnsafeBufferPointer(start: n.utf8Start, count: n.utf8CodeUnitCount))
        }
    }

    /// Every field name, each with one byte changed at every position (same length, so the
    /// candidate is chosen by the same length and often the same first byte), with bytes
    /// added and removed, and random keys of every length up to 30.
    @Test func fieldMatchersAgreeWithNameComparison() {
        var keys: [[UInt8]] = [[]]
        let names = DecisionField.allCases.map { "\($0.name)" } + AssignmentField.allCases.map { "\($0.name)" }
        for name in names {
            let k = Array(name.utf8)
            keys.append(k)
            keys.append(k + [0x5F])
            keys.append(Array(k.dropLast()))
            keys.append(Array(k.dropFirst()))
            keys.append(Array(name.uppercased().utf8))
            for i in k.indices {
                for replacement: UInt8 in [0x00, 0x5F, 0x61, 0x7A, 0xC3, k[i] ^ 0x01, k[i] ^ 0x80] {
                    var m = k
                    m[i] = replacement
                    keys.append(m)
                }
            }
        }
        var g = FastPathTests.Generator(seed: 11)
        for _ in 0..<5_000 {
            let n = Int(g.below(31))
            keys.append((0..<n).map { _ in UInt8(ascii: "a") + UInt8(g.below(26)) })
        }
        for key in keys {
            key.withUnsafeBufferPointer { buffer in
                #expect(DecisionField.match(buffer) == Self.referenceDecisionField(key), "\(key)")
                #expect(AssignmentField.match(buffer) == Self.referenceAssignmentField(key), "\(key)")
            }
        }
        // Every name is found (so the reference is not trivially nil).
        for f in DecisionField.allCases {
            #expect(Array("\(f.name)".utf8).withUnsafeBufferPointer { DecisionField.match($0) } == f)
        }
        for f in AssignmentField.allCases {
            #expect(Array("\(f.name)".utf8).withUnsafeBufferPointer { AssignmentField.match($0) } == f)
        }
    }

    /// A key spelled with escapes is the same key (RFC 8259 section 7): each key of a full
    /// decision, escaped at its first, middle or last character, decodes to the same decision.
    @Test func escapedKeysDecodeAlike() throws {
        let members: [(String, String)] = [
            ("layer", #""L0""#), ("worker", #""rank-1""#), ("step", "12"), ("expert_capacities", "[3,1]"),
            ("total_tokens", "4"), ("tokens_dropped", "1"), ("load_balance_loss", "0.25"),
            ("router_z_loss", "0.001"), ("auxiliary_loss", "null"), ("top_k", "1"),
            ("expert_capacity", "3"), ("capacity_factor", "1.25"), ("latency_ms", "0.42"),
            ("expert_assignments", #"[[{"expert_id":0,"probability":0.5,"token_idx":0,"expert_rank":0}]]"#),
        ]
        func body(_ spell: (String) -> String) -> String {
            "{" + members.map { #""\#(spell($0.0))":\#($0.1)"# }.joined(separator: ",") + "}"
        }
        func escape(_ key: String, at i: Int) -> String {
            var out = ""
            for (j, c) in key.enumerated() {
                out += j == i ? "\\u00" + String(c.asciiValue!, radix: 16) : String(c)
            }
            return out
        }
        let plain = try decodeDecisions(body { $0 })
        #expect(plain.count == 1 && plain[0].topK == 1 && plain[0].assignmentCount == 1)
        for position in [0, 2, -1] {
            let escaped = try decodeDecisions(body { escape($0, at: position < 0 ? $0.count - 1 : position) })
            #expect(escaped == plain, "escape at \(position)")
        }
        // Assignment keys escaped too.
        let assignmentEscaped = minimal(
            #""expert_assignments":[[{"expert\u005fid":1,"probabilit\u0079":0.5,"\u0074oken_idx":0,"expert_ran\u006b":0}]]"#
        )
        #expect(try decodeDecisions(assignmentEscaped)[0].assignmentCount == 1)
    }

    /// A key sent twice is refused whether either spelling is escaped; unknown keys of a known
    /// key's length, or with non-ASCII bytes, are ignored; a bad byte in a key is refused.
    @Test func duplicateUnknownAndInvalidKeys() throws {
        for body in [
            minimal(#""layer":"a","la\u0079er":"b""#), minimal(#""l\u0061yer":"a","layer":"b""#),
            minimal(#""total_token\u0073":4"#),
            #"{"expert_capacities":[3,1],"total_tokens":4,"expert_assignments":[[{"expert_id":0,"expert\u005fid":0,"probability":0.5,"token_idx":0,"expert_rank":0}]]}"#,
        ] {
            let e = decodeError(body)
            #expect(e?.kind == .malformed && e?.message.contains("duplicate key") == true, "\(body)")
        }
        let ignored = try decodeDecisions(
            minimal(#""layes":"x","top_j":9,"total_tokenz":1,"lAyer":"y","layér":"z","läyer":1,"wörker":2"#))
        #expect(ignored.count == 1 && ignored[0].layer == nil && ignored[0].topK == nil && ignored[0].totalTokens == 4)
        let unknownTwice = decodeError(minimal(#""läyer":1,"l\u00e4yer":2"#))
        #expect(unknownTwice?.message.contains("duplicate key") == true)
        for bad in [
            [0x7B, 0x22, 0x6C, 0x01, 0x22, 0x3A, 0x31, 0x7D], [0x7B, 0x22, 0x6C, 0xC0, 0xAF, 0x22, 0x3A, 0x31, 0x7D],
            [0x7B, 0x22, 0x6C, 0x61, 0x79, 0x65, 0x72] as [UInt8],
        ] {
            #expect(decodeError(bad)?.kind == .malformed, "\(bad)")
        }
    }
}

/// The plain-double fast path beside the general number path and the standard library's parser.
@Suite struct DoubleFastPathTests {
    /// What `finiteNumber` answers for `text` followed by `tail`, by the fast path alone (nil when it
    /// declines) and by the general path alone, with where each stopped.
    static func both(_ text: String, tail: String = ",") -> (
        fast: (Double, Int)?, general: Result<(Double, Int), DecisionError>
    ) {
        let bytes = Array((text + tail).utf8)
        return bytes.withUnsafeBufferPointer { buffer in
            var fast = JSONScanner(bytes: buffer, maxDepth: 8)
            let f = fast.plainDouble().map { ($0, fast.pos) }
            if f == nil { #expect(fast.pos == 0, "a declined number must leave the position alone") }
            var general = JSONScanner(bytes: buffer, maxDepth: 8)
            let g: Result<(Double, Int), DecisionError>
            do throws(DecisionError) {
                let t = try general.scanNumber()
                g = .success((general.doubleValue(t), general.pos))
            } catch {
                g = .failure(error)
            }
            return (f, g)
        }
    }

    static func check(_ text: String, tail: String = ",", sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        let (fast, general) = both(text, tail: tail)
        guard let fast else { return false }
        guard case .success(let g) = general else {
            Issue.record("fast path accepted \(text) that the general path refuses", sourceLocation: sourceLocation)
            return true
        }
        #expect(fast.0.bitPattern == g.0.bitPattern && fast.1 == g.1, "\(text)", sourceLocation: sourceLocation)
        if let reference = Double(text) {
            #expect(
                fast.0.bitPattern == reference.bitPattern, "\(text): \(fast.0) vs \(reference)",
                sourceLocation: sourceLocation)
        } else {
            Issue.record("the standard library does not read \(text)", sourceLocation: sourceLocation)
        }
        return true
    }

    @Test func edgeValuesAgreeBitForBit() {
        let taken = [
            "0", "-0", "0.0", "-0.0", "1", "0.1", "0.2", "0.3", "0.0123", "0.00107", "0.42", "-1.5",
            "9007199254740992", "900719925474099.2", "0.9007199254740992", "2.5",
            "0.000000000000000001", "-900719925474.0992", "7.0", "1000000000000000",
        ]
        for text in taken {
            #expect(Self.check(text), "\(text) should take the fast path")
            #expect(Self.check(text, tail: "}"), "\(text)")
            #expect(Self.check(text, tail: " "), "\(text)")
        }
        // Declined: exponents, too many digits, m above 2^53, more than 22 fraction digits, bad
        // shapes and a number at the end of the input; the general path reads or refuses them.
        let declined: [(String, String)] = [
            ("1e5", ","), ("1.5E-3", ","), ("9007199254740993", ","), ("12345678901234567890", ","),
            ("0.00000000000000000000001", ","), ("01", ","), ("-", ","), ("1.", ","), ("-.5", ","), ("1.5", ""),
            ("1", ""), ("00", ","), ("1.2.3", ""), ("-a", ","), ("1.2", "."), ("3", "e"),
            ("1.7976931348623157", ","), ("0.0000000000000000000001", ","), ("4.9406564584124654", ","),
            ("123456789012345678", ","), ("0.30000000000000004", ","), ("1.0000000000000002", ","),
            ("0.1000000000000000055", ","), ("0.0000000000000000001", ","),
        ]
        for (text, tail) in declined {
            #expect(Self.both(text, tail: tail).fast == nil, "\(text)\(tail) should be declined")
        }
    }

    @Test func randomValuesAgreeBitForBit() {
        var g = FastPathTests.Generator(seed: 2026)
        var fastCount = 0
        for i in 0..<50_000 {
            let text: String
            switch i % 4 {
            case 0:  // shortest round-trip forms of random doubles in the usual ranges
                let v = Double(bitPattern: g.next() >> 2).truncatingRemainder(dividingBy: 1e6)
                text = "\(abs(v))".contains("e") ? "0.5" : "\(v)"
            case 1:  // random digit strings with a random point
                let n = 1 + Int(g.below(20))
                var digits = (0..<n).map { _ in String(g.below(10)) }.joined()
                while digits.count > 1 && digits.hasPrefix("0") { digits.removeFirst() }
                let point = Int(g.below(UInt64(digits.count)))
                text = point == 0 ? digits : "0." + String(repeating: "0", count: Int(g.below(5))) + digits
            case 2:  // losses as workers print them
                text = String(Double(g.below(1_000_000)) / 1_000_000.0)
            default:  // integers around 2^53
                let v = (UInt64(1) << 53) &+ g.below(64) &- 32
                text = (g.below(2) == 0 ? "-" : "") + String(v)
            }
            if Self.check(text) { fastCount += 1 }
        }
        #expect(fastCount > 25_000, "\(fastCount)")  // most of them exercised the fast path
    }

    /// Whole decisions read with the fast path: the losses and latency equal the standard library's
    /// values of their text.
    @Test func decisionsUseTheSameValues() throws {
        for (loss, latency) in [
            ("0.0123", "0.42"), ("-0.0", "0"), ("1e-3", "1E2"), ("0.1000000000000000055", "12.5"),
            ("123456789012345678901", "0.00000000000000000000001"),
        ] {
            let d = try decodeDecisions(minimal(#""load_balance_loss":\#(loss),"latency_ms":\#(latency)"#))[0]
            #expect(
                d.loadBalanceLoss == .value(Double(loss)!) && d.latencyMs?.bitPattern == Double(latency)!.bitPattern)
            if case .value(let v) = d.loadBalanceLoss { #expect(v.bitPattern == Double(loss)!.bitPattern) }
        }
    }
}

/// The registry skips its load re-check only for decisions the decoder checked and nobody changed.
@Suite struct LoadsCheckedTests {
    static let body = #"{"layer":"L0","expert_capacities":[3,1],"total_tokens":4,"top_k":1}"#

    @Test func decodedDecisionsAreMarkedAndChangesClearTheMark() throws {
        let decoded = try decodeDecisions(Self.body)[0]
        #expect(decoded.loadsChecked)
        let built = RoutingDecision(layer: "L0", topK: 1, expertCounts: [3, 1], totalTokens: 4)
        #expect(!built.loadsChecked)
        #expect(built == decoded)  // the mark is not part of equality
        let changes: [(String, (inout RoutingDecision) -> Void)] = [
            ("element", { $0.expertCounts[0] = 9 }), ("append", { $0.expertCounts.append(5) }),
            ("array", { $0.expertCounts = [4, 4] }), ("total", { $0.totalTokens = 1 }),
            ("total in place", { $0.totalTokens -= 1 }), ("top k", { $0.topK = 2 }), ("top k nil", { $0.topK = nil }),
        ]
        for (name, change) in changes {
            var d = decoded
            change(&d)
            #expect(!d.loadsChecked, "\(name)")
        }
        var other = decoded
        other.worker = "w"
        other.latencyMs = 1
        #expect(other.loadsChecked)  // fields the load check does not read keep the mark
    }

    /// A decoded decision changed into an impossible one is refused exactly as the same decision
    /// built by hand.
    @Test func changedDecisionsAreCheckedAgain() throws {
        for change: (inout RoutingDecision) -> Void in [
            { $0.expertCounts[0] = 9 }, { $0.totalTokens = 3 },
            { $0.expertCounts.append(4) },
        ] {
            var d = try decodeDecisions(Self.body)[0]
            change(&d)
            let handmade = RoutingDecision(
                layer: d.layer, topK: d.topK, expertCounts: d.expertCounts, totalTokens: d.totalTokens)
            func refusal(_ x: RoutingDecision) -> DecisionError? {
                do {
                    _ = try LayerRegistry(configuration: StatsConfiguration()).ingest([x], defaultLayer: nil, now: 0)
                    return nil
                } catch {
                    return error
                }
            }
            let a = refusal(d)
            let b = refusal(handmade)
            #expect(
                a != nil && a?.message == b?.message && a?.field == b?.field,
                "\(String(describing: a)) vs \(String(describing: b))")
        }
    }
}

/// A single-object body hands the count scratch array to its decision; batches and NDJSON copy
/// out of it. Every form gives the same decisions, at sizes around the scratch array's growth.
@Suite struct ScratchHandOverTests {
    @Test(arguments: [1, 2, 63, 64, 65, 255, 256, 257, 1_000])
    func singleBatchAndNDJSONAgree(experts: Int) throws {
        var g = FastPathTests.Generator(seed: UInt64(experts))
        let counts = (0..<experts).map { _ in g.below(500) }
        let total = counts.max()! + 1
        let object =
            #"{"layer":"L1","expert_capacities":[\#(counts.map(String.init).joined(separator: ","))],"total_tokens":\#(total)}"#
        let single = try decodeDecisions(object)
        let batch = try decodeDecisions("[\(object),\(object)]")
        let lines = try decodeDecisions("\(object)\n\(object)\n", format: .ndjson)
        #expect(single.count == 1 && single[0].expertCounts == counts && single[0].totalTokens == total)
        #expect(batch == [single[0], single[0]] && lines == batch)
    }
}
