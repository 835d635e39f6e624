import Testing

@testable import MoEStats

/// One refused body and the error it must produce.
struct RefusalCase: CustomTestStringConvertible, Sendable {
    var body: String
    var kind: DecisionError.Kind
    var field: String?
    var index: Int? = nil
    var format: DecisionDecoder.Format = .json
    var testDescription: String { "\(body.prefix(70))" }
}

let assignment = #"{"expert_id":0,"probability":0.5,"token_idx":0,"expert_rank":0}"#

@Suite("Decision decoder: validation errors")
struct DecoderValidationTests {
    static let cases: [RefusalCase] = [
        // Missing and wrongly typed fields.
        .init(body: #"{"total_tokens":1}"#, kind: .malformed, field: "expert_capacities"),
        .init(body: #"{"expert_capacities":[1]}"#, kind: .malformed, field: "total_tokens"),
        .init(
            body: #"{"expert_capacities":[1],"tokens_per_expert":[1],"total_tokens":1}"#, kind: .malformed,
            field: "tokens_per_expert"),
        .init(body: #"{"expert_capacities":"1","total_tokens":1}"#, kind: .malformed, field: "expert_capacities"),
        .init(
            body: #"{"expert_capacities":[1,"2"],"total_tokens":1}"#, kind: .malformed, field: "expert_capacities[1]"),
        .init(
            body: #"{"expert_capacities":[1,null],"total_tokens":1}"#, kind: .malformed, field: "expert_capacities[1]"),
        .init(body: #"{"expert_capacities":[1],"total_tokens":null}"#, kind: .malformed, field: "total_tokens"),
        .init(body: #"{"expert_capacities":[1],"total_tokens":true}"#, kind: .malformed, field: "total_tokens"),
        .init(body: minimal(#""tokens_dropped":null"#), kind: .malformed, field: "tokens_dropped"),
        .init(body: minimal(#""load_balance_loss":"0.1""#), kind: .malformed, field: "load_balance_loss"),
        .init(body: minimal(#""layer":["a"]"#), kind: .malformed, field: "layer"),
        .init(body: minimal(#""worker":{}"#), kind: .malformed, field: "worker"),
        .init(body: minimal(#""latency_ms":"1""#), kind: .malformed, field: "latency_ms"),
        // Counts: integers only, non-negative, in range.
        .init(body: #"{"expert_capacities":[1,-2],"total_tokens":1}"#, kind: .invalid, field: "expert_capacities[1]"),
        .init(
            body: #"{"expert_capacities":[1,2.0],"total_tokens":1}"#, kind: .malformed, field: "expert_capacities[1]"),
        .init(body: #"{"expert_capacities":[1e3],"total_tokens":1}"#, kind: .malformed, field: "expert_capacities[0]"),
        .init(
            body: #"{"expert_capacities":[18446744073709551616],"total_tokens":1}"#, kind: .invalid,
            field: "expert_capacities[0]"),
        .init(
            body: #"{"expert_capacities":[18446744073709551615,1],"total_tokens":1}"#, kind: .invalid,
            field: "expert_capacities[1]"),
        .init(body: #"{"expert_capacities":[],"total_tokens":1}"#, kind: .invalid, field: "expert_capacities"),
        .init(body: #"{"expert_capacities":[1],"total_tokens":-1}"#, kind: .invalid, field: "total_tokens"),
        .init(
            body: #"{"expert_capacities":[1],"total_tokens":3,"tokens_dropped":4}"#, kind: .invalid,
            field: "tokens_dropped"),
        // Loads: a token reaches an expert at most once, and at most top_k experts.
        .init(
            body: #"{"layer":"a","expert_capacities":[400000,4],"total_tokens":8,"top_k":2}"#, kind: .invalid,
            field: "expert_capacities[0]"),
        .init(body: #"{"expert_capacities":[5,5],"total_tokens":0}"#, kind: .invalid, field: "expert_capacities[0]"),
        .init(body: #"{"tokens_per_expert":[1,9],"total_tokens":8}"#, kind: .invalid, field: "tokens_per_expert[1]"),
        .init(
            body: #"{"expert_capacities":[8,8,1],"total_tokens":8,"top_k":2}"#, kind: .invalid,
            field: "expert_capacities"),
        .init(
            body: #"{"top_k":1,"tokens_per_expert":[1,1],"total_tokens":1}"#, kind: .invalid, field: "tokens_per_expert"
        ),
        .init(
            body: "[" + minimal() + #",{"expert_capacities":[2,1],"total_tokens":1}]"#, kind: .invalid,
            field: "expert_capacities[0]", index: 1),
        .init(body: minimal(#""step":-1"#), kind: .invalid, field: "step"),
        .init(body: minimal(#""step":9223372036854775808"#), kind: .invalid, field: "step"),
        .init(body: minimal(#""top_k":0"#), kind: .invalid, field: "top_k"),
        .init(body: minimal(#""top_k":3"#), kind: .invalid, field: "top_k"),
        .init(body: minimal(#""expert_capacity":0"#), kind: .invalid, field: "expert_capacity"),
        .init(body: minimal(#""capacity_factor":0"#), kind: .invalid, field: "capacity_factor"),
        .init(body: minimal(#""capacity_factor":-1.5"#), kind: .invalid, field: "capacity_factor"),
        .init(body: minimal(#""latency_ms":-0.1"#), kind: .invalid, field: "latency_ms"),
        .init(body: minimal(#""latency_ms":1e999"#), kind: .invalid, field: "latency_ms"),
        .init(body: minimal(#""load_balance_loss":-1e309"#), kind: .invalid, field: "load_balance_loss"),
        // Names.
        .init(body: minimal(#""layer":"""#), kind: .invalid, field: "layer"),
        .init(body: minimal(#""layer":"a b""#), kind: .invalid, field: "layer"),
        .init(body: minimal(#""layer":"\u00e9""#), kind: .invalid, field: "layer"),
        .init(body: minimal(#""layer":""# + String(repeating: "x", count: 65) + #"""#), kind: .invalid, field: "layer"),
        .init(body: minimal(#""layer":-1"#), kind: .invalid, field: "layer"),
        .init(body: minimal(#""layer":1.5"#), kind: .invalid, field: "layer"),
        .init(body: minimal(#""worker":"""#), kind: .invalid, field: "worker"),
        .init(body: minimal(#""worker":"a\tb""#), kind: .invalid, field: "worker"),
        .init(body: minimal(#""worker":"\u0085""#), kind: .invalid, field: "worker"),
        .init(
            body: minimal(#""worker":""# + String(repeating: "é", count: 129) + #"""#), kind: .invalid, field: "worker"),
        // Assignments.
        .init(body: minimal(#""expert_assignments":{}"#), kind: .malformed, field: "expert_assignments"),
        .init(body: minimal(#""expert_assignments":[[],1]"#), kind: .malformed, field: "expert_assignments[1]"),
        .init(body: minimal(#""expert_assignments":[[1]]"#), kind: .malformed, field: "expert_assignments[0][0]"),
        .init(
            body: minimal(#""expert_assignments":[[{"expert_id":0,"probability":0.5,"token_idx":0}]]"#),
            kind: .malformed, field: "expert_assignments[0][0].expert_rank"),
        .init(
            body: minimal(
                #""expert_assignments":[[],[\#(assignment),{"expert_id":2,"probability":0.5,"token_idx":0,"expert_rank":1}]]"#
            ),
            kind: .invalid, field: "expert_assignments[1][1].expert_id"),
        .init(
            body:
                #"{"expert_assignments":[[\#(assignment)],[{"expert_id":5,"probability":0.5,"token_idx":1,"expert_rank":0}]],"expert_capacities":[1,1],"total_tokens":2}"#,
            kind: .invalid, field: "expert_assignments[1][0].expert_id"),
        .init(
            body: minimal(#""expert_assignments":[[{"expert_id":0,"probability":1.5,"token_idx":0,"expert_rank":0}]]"#),
            kind: .invalid, field: "expert_assignments[0][0].probability"),
        .init(
            body: minimal(
                #""expert_assignments":[[\#(assignment)],[],[{"expert_id":0,"probability":-0.1,"token_idx":0,"expert_rank":0}]]"#
            ),
            kind: .invalid, field: "expert_assignments[2][0].probability"),
        .init(
            body: minimal(
                #""expert_assignments":[[{"expert_id":0,"probability":null,"token_idx":0,"expert_rank":0}]]"#),
            kind: .invalid, field: "expert_assignments[0][0].probability"),
        .init(
            body: minimal(
                #""expert_assignments":[[{"expert_id":0,"probability":0.5,"token_idx":-1,"expert_rank":0}]]"#),
            kind: .invalid, field: "expert_assignments[0][0].token_idx"),
        .init(
            body: minimal(
                #""expert_assignments":[[{"expert_id":0,"expert_id":0,"probability":0.5,"token_idx":0,"expert_rank":0}]]"#
            ),
            kind: .malformed, field: "expert_assignments[0][0].expert_id"),
        .init(
            body: minimal(
                #""expert_assignments":[[{"x":1,"x":2,"expert_id":0,"probability":0.5,"token_idx":0,"expert_rank":0}]]"#
            ),
            kind: .malformed, field: "expert_assignments[0][0].x"),
        // Duplicate keys in the decision, known or not.
        .init(body: minimal(#""total_tokens":3"#), kind: .malformed, field: "total_tokens"),
        .init(body: minimal(#""x":1,"y":2,"x":3"#), kind: .malformed, field: "x"),
        .init(body: minimal(#""x":1,"\u0078":3"#), kind: .malformed, field: #"\u0078"#),
        // Index in a batch: array element and NDJSON decision.
        .init(
            body: "[" + minimal() + "," + minimal()
                + #",{"expert_capacities":[1],"total_tokens":1,"tokens_dropped":2}]"#,
            kind: .invalid, field: "tokens_dropped", index: 2),
        .init(body: "[" + minimal() + ",5]", kind: .malformed, field: nil, index: 1),
        .init(
            body: "\n" + minimal() + "\n\n" + #"{"expert_capacities":[1],"total_tokens":1,"step":-3}"#,
            kind: .invalid, field: "step", index: 1, format: .ndjson),
        .init(body: minimal() + "\n[]", kind: .malformed, field: nil, index: 1, format: .ndjson),
        .init(body: minimal() + " " + minimal(), kind: .malformed, field: nil, index: 0, format: .ndjson),
    ]

    @Test(arguments: cases)
    func refusedWithFieldAndIndex(_ c: RefusalCase) {
        guard let e = decodeError(c.body, format: c.format) else { return }
        #expect(e.kind == c.kind, "\(e)")
        #expect(e.field == c.field, "\(e)")
        #expect(e.index == c.index, "\(e)")
        if let field = c.field {
            #expect(e.message.contains(field), "the message names the field: \(e.message)")
        }
    }

    @Test func messagesAreSpecific() {
        let e = decodeError(#"{"expert_capacities":[1],"total_tokens":3,"tokens_dropped":4}"#)
        #expect(e?.message == "tokens_dropped: 4 exceeds total_tokens 3")
        let ndjson = decodeError(minimal() + "\n\n{", format: .ndjson)
        #expect(ndjson?.message.contains("line 3") == true, "\(String(describing: ndjson))")
        #expect(ndjson?.index == 1)
        let single = decodeError(minimal(#""step":-3"#))
        #expect(single?.index == nil)
        #expect(single?.description == "step: must not be negative, got -3 (field step)")
    }

    @Test func loadsAtTheirBoundariesAreAccepted() throws {
        for body in [
            #"{"expert_capacities":[8,8],"total_tokens":8}"#,
            #"{"expert_capacities":[8,8,0],"total_tokens":8,"top_k":2}"#,
            #"{"expert_capacities":[0,0],"total_tokens":0,"top_k":1}"#,
            #"{"expert_capacities":[18446744073709551615,0],"total_tokens":18446744073709551615,"top_k":2}"#,
        ] {
            #expect(try decodeDecisions(body).count == 1, "\(body)")
        }
        let e = decodeError(#"{"expert_capacities":[8,8,1],"total_tokens":8,"top_k":2}"#)
        #expect(e?.message == "expert_capacities: the counts add up to 17, more than top_k 2 × total_tokens 8")
        let one = decodeError(#"{"expert_capacities":[400000,4],"total_tokens":8}"#)
        #expect(
            one?.message
                == "expert_capacities[0]: 400000 tokens exceed total_tokens 8; a token reaches an expert at most once")
    }

    @Test func limitsAtTheirBoundaries() {
        var limits = DecisionDecoder.Limits()
        limits.maxExperts = 3
        limits.maxDecisions = 2
        limits.maxAssignments = 2
        let three = #"{"expert_capacities":[1,2,3],"total_tokens":3}"#
        #expect((try? decodeDecisions(three, limits: limits))?.count == 1)
        let four = decodeError(#"{"expert_capacities":[1,2,3,4],"total_tokens":3}"#, limits: limits)
        #expect(four?.kind == .tooManyExperts)
        #expect(four?.field == "expert_capacities[3]")

        #expect((try? decodeDecisions("[\(three),\(three)]", limits: limits))?.count == 2)
        let batch = decodeError("[\(three),\(three),\(three)]", limits: limits)
        #expect(batch?.kind == .invalid && batch?.index == 2)
        let lines = decodeError("\(three)\n\(three)\n\(three)\n", format: .ndjson, limits: limits)
        #expect(lines?.kind == .invalid && lines?.index == 2)

        let two = minimal(#""expert_assignments":[[\#(assignment)],[\#(assignment)]]"#)
        #expect((try? decodeDecisions(two, limits: limits))?.first?.assignmentCount == 2)
        let over = decodeError(
            minimal(#""expert_assignments":[[\#(assignment)],[\#(assignment),\#(assignment)]]"#), limits: limits)
        #expect(over?.kind == .invalid)
        #expect(over?.field == "expert_assignments[1][1]")
    }

    @Test func depthLimitCountsEveryLevel() {
        var limits = DecisionDecoder.Limits()
        limits.maxDepth = 4
        // decision (1) > x's array (2) > (3) > (4): allowed; one more level is refused.
        #expect((try? decodeDecisions(minimal(#""x":[[[1]]]"#), limits: limits)) != nil)
        let e = decodeError(minimal(#""x":[[[[1]]]]"#), limits: limits)
        #expect(e?.kind == .malformed)
        #expect(e?.message.contains("nesting") == true)
        // Assignments sit at depth 4 in a single object and 5 inside an array.
        #expect((try? decodeDecisions(minimal(#""expert_assignments":[[\#(assignment)]]"#), limits: limits)) != nil)
        #expect(
            decodeError("[" + minimal(#""expert_assignments":[[\#(assignment)]]"#) + "]", limits: limits)?.kind
                == .malformed)
    }
}

@Suite("Decision decoder: malformed JSON")
struct DecoderMalformedTests {
    static let texts: [String] = [
        "", "   ", "nul", "null", "1", "\"x\"", "{", "[", "{\"expert_capacities\":[1],\"total_tokens\":1",
        minimal() + ",", minimal() + " x", minimal() + minimal(), "[" + minimal() + ",]", "[" + minimal(),
        #"{"expert_capacities":[1,],"total_tokens":1}"#, #"{"expert_capacities":[1],"total_tokens":1,}"#,
        #"{"expert_capacities":[1] "total_tokens":1}"#, #"{"expert_capacities":[1],,"total_tokens":1}"#,
        #"{"expert_capacities" [1],"total_tokens":1}"#, #"{expert_capacities:[1],"total_tokens":1}"#,
        #"{'expert_capacities':[1],"total_tokens":1}"#,
        minimal(#""x":"\x""#), minimal(#""x":"\u12""#), minimal(#""x":"\u12G4""#), minimal(#""x":"\"#),
        minimal(#""x":"\ud800""#), minimal(#""x":"\ud800\u0041""#), minimal(#""x":"\udc00""#),
        minimal(#""x":"\ud800\ud800""#), minimal(#""layer":"\ud800x""#),
        minimal("\"x\":\"a\tb\""), minimal("\"x\":\"a\nb\""), minimal("\"x\":\"\u{0}\""),
        minimal(#""x":01"#), minimal(#""x":-01"#), minimal(#""x":1."#), minimal(#""x":.5"#), minimal(#""x":-"#),
        minimal(#""x":+1"#), minimal(#""x":1e"#), minimal(#""x":1e+"#), minimal(#""x":0x10"#),
        minimal(#""x":NaN"#), minimal(#""x":Infinity"#), minimal(#""x":-Infinity"#),
        minimal(#""load_balance_loss":NaN"#),
        minimal(#""x":1e400"#), minimal(#""x":tru"#), minimal(#""x":True"#), minimal(#""x":nulll"#),
        #"{"expert_capacities":[01],"total_tokens":1}"#, #"{"expert_capacities":[1],"total_tokens":01}"#,
        String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000),
        minimal(#""x":"# + String(repeating: "[", count: 17) + String(repeating: "]", count: 17)),
        "\u{FEFF}" + minimal(), minimal() + "\u{A0}", "\u{0B}" + minimal(),
        minimal(#""x":{"a":1,"b":2,"a":3}"#), minimal(#""x":[{"a":{"b":1,"\u0062":2}}]"#),
    ]

    @Test(arguments: texts)
    func refusedAsMalformed(_ text: String) {
        let e = decodeError(text)
        #expect(e?.kind == .malformed, "\(String(describing: e))")
        #expect(e?.message.isEmpty == false)
    }

    @Test(
        arguments: [
            [0xFF], [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
            [0xF5, 0x80, 0x80, 0x80], [0xE2, 0x82], [0x80], [0xC3], [0xF0, 0x9F, 0x98],
        ] as [[UInt8]])
    func invalidUTF8IsRefused(_ sequence: [UInt8]) {
        for field in ["x", "worker"] {
            let body =
                Array(#"{"expert_capacities":[1],"total_tokens":1,""#.utf8) + Array(field.utf8)
                + Array(#"":""#.utf8) + sequence + Array(#""}"#.utf8)
            let e = decodeError(body)
            #expect(e?.kind == .malformed, "\(String(describing: e))")
            #expect(e?.message.contains("UTF-8") == true, "\(String(describing: e))")
            #expect(e?.message.contains("byte byte") == false, "\(String(describing: e))")
        }
        let ff = decodeError(Array(#"{"x":""#.utf8) + [0xFF] + Array(#""}"#.utf8))
        #expect(ff?.message == "x: invalid JSON at byte 6: invalid UTF-8 byte 0xFF", "\(String(describing: ff))")
    }

    @Test func validUTF8AtTheEdgesIsAccepted() throws {
        for sequence: [UInt8] in [
            [0xC2, 0xA0], [0xDF, 0xBF], [0xE0, 0xA0, 0x80], [0xED, 0x9F, 0xBF],
            [0xEE, 0x80, 0x80], [0xF0, 0x90, 0x80, 0x80], [0xF4, 0x8F, 0xBF, 0xBF],
        ] {
            let body =
                Array(#"{"expert_capacities":[1],"total_tokens":1,"worker":""#.utf8) + sequence + Array(#""}"#.utf8)
            let d = try DecisionDecoder().decode(body, format: .json)
            #expect(d.first?.worker?.utf8.elementsEqual(sequence) == true)
        }
    }

    @Test func truncationAtEveryByteIsRefused() {
        let body = Array(DecoderValidShapeTests.serdeOutput.utf8)
        for n in 0..<body.count {
            let e = decodeError(Array(body[..<n]))
            #expect(e?.kind == .malformed, "prefix of \(n) bytes: \(String(describing: e))")
            guard n > 0 else { continue }  // the empty body has its own message
            // A truncation is about the missing rest, not about the field it cut.
            #expect(e?.field == nil, "prefix of \(n) bytes: \(String(describing: e))")
            #expect(
                e?.message.hasPrefix("the body ended early (invalid JSON at byte \(n))") == true,
                "prefix of \(n) bytes: \(String(describing: e))")
        }
    }

    @Test func truncationNamesNoField() {
        let e = decodeError(#"{"layer":"layer.0","#)
        #expect(e?.kind == .malformed)
        #expect(e?.field == nil, "\(String(describing: e))")
        #expect(e?.message == "the body ended early (invalid JSON at byte 19), expected a string key")
        for cut in [
            #"{"expert_capacities":[1,"#, #"{"total_tokens":1"#, #"{"x":"\u00"#, #"{"x":nu"#, #"{"x":1.5e-"#,
            #"{"x":"\ud83d"#, #"{"worker":"é"#, "[" + minimal() + ",",
        ] {
            let t = decodeError(cut)
            #expect(
                t?.field == nil && t?.message.hasPrefix("the body ended early") == true,
                "\(cut): \(String(describing: t))")
        }
        // NDJSON: a decision must fit on its line, so the line is what ended early.
        let line = decodeError(minimal() + "\n" + #"{"layer":"a","#, format: .ndjson)
        #expect(line?.index == 1 && line?.field == nil, "\(String(describing: line))")
        #expect(
            line?.message.hasPrefix("the line ended early") == true && line?.message.hasSuffix("(line 2)") == true,
            "\(String(describing: line))")
        // A wrong value that is not a truncation still names its field.
        #expect(decodeError(#"{"layer":"layer.0",5}"#)?.field == "layer")
    }

    @Test func errorOffsetsPointAtTheProblem() {
        let e = decodeError(#"{"expert_capacities":[1],"total_tokens":01}"#)
        #expect(e?.message.contains("byte 41") == true, "\(String(describing: e))")
        #expect(e?.message.contains("leading zero") == true)
        #expect(e?.field == "total_tokens")
    }
}
