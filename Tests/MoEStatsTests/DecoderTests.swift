import Testing

@testable import MoEStats

/// Decodes a body given as text with default limits.
func decodeDecisions(
    _ text: String, format: DecisionDecoder.Format = .json,
    limits: DecisionDecoder.Limits = .init()
) throws(DecisionError) -> [RoutingDecision] {
    try DecisionDecoder(limits: limits).decode(Array(text.utf8), format: format)
}

/// The error a body is refused with; fails the test when it is accepted.
func decodeError(
    _ bytes: [UInt8], format: DecisionDecoder.Format = .json,
    limits: DecisionDecoder.Limits = .init(),
    sourceLocation: SourceLocation = #_sourceLocation
) -> DecisionError? {
    do {
        let d = try DecisionDecoder(limits: limits).decode(bytes, format: format)
        Issue.record("accepted: \(d)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

func decodeError(
    _ text: String, format: DecisionDecoder.Format = .json,
    limits: DecisionDecoder.Limits = .init(),
    sourceLocation: SourceLocation = #_sourceLocation
) -> DecisionError? {
    decodeError(Array(text.utf8), format: format, limits: limits, sourceLocation: sourceLocation)
}

/// A minimal valid decision body with `extra` members appended (4 tokens, so that any top-k fits).
func minimal(_ extra: String = "") -> String {
    #"{"expert_capacities":[3,1],"total_tokens":4"# + (extra.isEmpty ? "" : "," + extra) + "}"
}

@Suite("Decision decoder: valid shapes")
struct DecoderValidShapeTests {
    /// What serde_json writes for a torsh `RoutingDecision` (field order of the struct), with
    /// assignments and a NaN loss written as null.
    static let serdeOutput = """
        {"expert_assignments":[[{"expert_id":0,"probability":0.7,"token_idx":0,"expert_rank":0},\
        {"expert_id":2,"probability":0.2,"token_idx":0,"expert_rank":1}],\
        [{"expert_id":1,"probability":0.55,"token_idx":1,"expert_rank":0},\
        {"expert_id":3,"probability":0.25,"token_idx":1,"expert_rank":1}],[]],\
        "expert_capacities":[1,1,1,1],"total_tokens":3,"tokens_dropped":1,\
        "load_balance_loss":0.012345,"router_z_loss":null,"auxiliary_loss":1.5e-3}
        """

    @Test func serdeOutputOfATorshDecision() throws {
        let d = try decodeDecisions(Self.serdeOutput)
        #expect(
            d == [
                RoutingDecision(
                    expertCounts: [1, 1, 1, 1], totalTokens: 3, tokensDropped: 1,
                    loadBalanceLoss: .value(0.012345), routerZLoss: .nonFinite,
                    auxiliaryLoss: .value(0.0015), assignmentCount: 3)
            ])
    }

    @Test func minimalDecisionDefaults() throws {
        let d = try decodeDecisions(minimal())
        #expect(d == [RoutingDecision(expertCounts: [3, 1], totalTokens: 4)])
        #expect(d[0].tokensDropped == 0 && d[0].loadBalanceLoss == .absent && d[0].layer == nil)
    }

    @Test func aliasTokensPerExpert() throws {
        let d = try decodeDecisions(#"{"tokens_per_expert":[5,0,7],"total_tokens":7}"#)
        #expect(d.first?.expertCounts == [5, 0, 7])
    }

    @Test func envelopeWithStrings() throws {
        let d = try decodeDecisions(
            minimal(
                #"""
                "layer":"model.layers.3.mlp:moe-1_a","worker":"host-7 \u00e9\ud83d\ude00","step":42,"top_k":2,\#
                "expert_capacity":3,"capacity_factor":1.25,"latency_ms":0.5
                """#))
        #expect(
            d == [
                RoutingDecision(
                    layer: "model.layers.3.mlp:moe-1_a", worker: "host-7 é😀", step: 42,
                    topK: 2, expertCapacity: 3, capacityFactor: 1.25, latencyMs: 0.5,
                    expertCounts: [3, 1], totalTokens: 4)
            ])
    }

    @Test func envelopeWithIntegersAndNulls() throws {
        let d = try decodeDecisions(
            minimal(#""layer":12,"worker":0,"step":null,"latency_ms":null,"capacity_factor":7"#))
        #expect(d.first?.layer == "12")
        #expect(d.first?.worker == "0")
        #expect(d.first?.step == nil && d.first?.latencyMs == nil)
        #expect(d.first?.capacityFactor == 7)
    }

    @Test func unknownFieldsAreSkipped() throws {
        let d = try decodeDecisions(minimal(#""extra":{"a":[1,2.5e3,{"b":null}],"c":"\u00e9\n"},"z":true,"y":[]"#))
        #expect(d == [RoutingDecision(expertCounts: [3, 1], totalTokens: 4)])
    }

    @Test func keysWithEscapesAreMatchedByValue() throws {
        let d = try decodeDecisions(#"{"expert\u005fcapacities":[1],"total_tokens":1,"l\u0061yer":"x"}"#)
        #expect(d.first?.expertCounts == [1])
        #expect(d.first?.layer == "x")
    }

    @Test func whitespaceEverywhere() throws {
        let d = try decodeDecisions(" \t\r\n[ { \"expert_capacities\" :\n[ 3 , 1 ] ,\t\"total_tokens\" : 3 } ]\r\n ")
        #expect(d == [RoutingDecision(expertCounts: [3, 1], totalTokens: 3)])
    }

    @Test func arrayOfDecisions() throws {
        let d = try decodeDecisions("[" + minimal(#""layer":"a""#) + "," + minimal(#""layer":"b""#) + "]")
        #expect(d.map(\.layer) == ["a", "b"])
        #expect(try decodeDecisions("[]").isEmpty)
    }

    @Test func ndjsonWithBlankLinesAndCRLF() throws {
        let body =
            "\r\n" + minimal(#""layer":"a""#) + "\r\n\n   \n" + minimal(#""layer":"b""#) + "\n"
            + minimal(#""layer":"c""#)
        let d = try decodeDecisions(body, format: .ndjson)
        #expect(d.map(\.layer) == ["a", "b", "c"])
        #expect(try decodeDecisions("", format: .ndjson).isEmpty)
        #expect(try decodeDecisions("\n\r\n", format: .ndjson).isEmpty)
    }

    @Test func numbersAtTheirLimits() throws {
        let d = try decodeDecisions(
            #"{"expert_capacities":[18446744073709551615,0],"total_tokens":18446744073709551615,"tokens_dropped":-0,"step":9223372036854775807,"load_balance_loss":-1.7976931348623157e308,"router_z_loss":5e-324,"auxiliary_loss":0.1E+1}"#
        )
        #expect(d.first?.expertCounts == [UInt64.max, 0])
        #expect(d.first?.step == Int64.max)
        #expect(d.first?.tokensDropped == 0)
        #expect(d.first?.loadBalanceLoss == .value(-Double.greatestFiniteMagnitude))
        #expect(d.first?.routerZLoss == .value(Double.leastNonzeroMagnitude))
        #expect(d.first?.auxiliaryLoss == .value(1))
    }

    @Test func doublesAreCorrectlyRounded() throws {
        for text in [
            "0.1", "0.30000000000000004", "1e22", "1e23", "123456789012345678901234567890",
            "2.2250738585072011e-308", "9007199254740993", "0.000001234567890123456789", "4.35",
        ] {
            let d = try decodeDecisions(minimal(#""load_balance_loss":"# + text))
            #expect(d.first?.loadBalanceLoss == .value(Double(text)!), "\(text)")
        }
    }

    @Test func assignmentsBeforeCountsAreCheckedAgainstTheLaterCount() throws {
        let ok =
            #"{"expert_assignments":[[{"expert_id":1,"probability":1,"token_idx":0,"expert_rank":0}]],"expert_capacities":[0,1],"total_tokens":1}"#
        #expect(try decodeDecisions(ok).first?.assignmentCount == 1)
    }

    @Test func layerNameRule() {
        #expect(LayerName.isValid("a"))
        #expect(LayerName.isValid(String(repeating: "x", count: 64)))
        #expect(LayerName.isValid("Az09_.:-"))
        #expect(!LayerName.isValid(""))
        #expect(!LayerName.isValid(String(repeating: "x", count: 65)))
        #expect(!LayerName.isValid("a b"))
        #expect(!LayerName.isValid("a/b"))
        #expect(!LayerName.isValid("é"))
    }
}
