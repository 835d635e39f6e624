// libFuzzer target for the decision decoder (modules JSONOutput, MoEStats); run with
// `scripts/fuzz DecisionDecoder SECONDS`.
//
// Each input is one byte of settings followed by a request body. The settings byte picks tight
// limits (so the limit paths are reached) and the format. Invariants checked (a failure crashes,
// which libFuzzer reports):
//   - decoding never crashes, and every refusal has a message, a known kind, and an index only
//     where a batch is possible;
//   - every accepted decision satisfies what the decoder promises (counts within the limits,
//     dropped <= total, valid names, finite values, top_k within the expert count);
//   - a body without a newline gets the same verdict and decisions as JSON and as NDJSON;
//   - an accepted decision written back as JSON decodes to the same value.
import MoEStats

func check(_ d: RoutingDecision, _ limits: DecisionDecoder.Limits) {
    precondition(!d.expertCounts.isEmpty && d.expertCounts.count <= limits.maxExperts, "expert count")
    precondition(d.tokensDropped <= d.totalTokens, "dropped > total")
    if let layer = d.layer { precondition(LayerName.isValid(layer), "layer name") }
    if let worker = d.worker {
        precondition((1...128).contains(worker.unicodeScalars.count), "worker length")
        precondition(
            worker.unicodeScalars.allSatisfy { $0.value >= 0x20 && !(0x7F...0x9F).contains($0.value) },
            "worker printable")
    }
    if let k = d.topK { precondition(k >= 1 && k <= d.expertCounts.count, "top_k") }
    if let c = d.expertCapacity { precondition(c >= 1, "expert_capacity") }
    if let s = d.step { precondition(s >= 0, "step") }
    if let f = d.capacityFactor { precondition(f.isFinite && f > 0, "capacity_factor") }
    if let l = d.latencyMs { precondition(l.isFinite && l >= 0, "latency_ms") }
    for loss in [d.loadBalanceLoss, d.routerZLoss, d.auxiliaryLoss] {
        if case .value(let v) = loss { precondition(v.isFinite, "loss finite") }
    }
    precondition(d.assignmentCount >= 0, "assignment count")
}

func quoted(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}

/// The decision as JSON; assignments are not kept, so they are written as that many empty lists.
func encode(_ d: RoutingDecision) -> [UInt8] {
    var members = [
        "\"expert_capacities\":[" + d.expertCounts.map(String.init).joined(separator: ",") + "]",
        "\"total_tokens\":\(d.totalTokens)", "\"tokens_dropped\":\(d.tokensDropped)",
    ]
    for (key, loss) in [
        ("load_balance_loss", d.loadBalanceLoss), ("router_z_loss", d.routerZLoss), ("auxiliary_loss", d.auxiliaryLoss),
    ] {
        switch loss {
        case .absent: break
        case .nonFinite: members.append("\"\(key)\":null")
        case .value(let v): members.append("\"\(key)\":\(v)")
        }
    }
    if let v = d.layer { members.append("\"layer\":" + quoted(v)) }
    if let v = d.worker { members.append("\"worker\":" + quoted(v)) }
    if let v = d.step { members.append("\"step\":\(v)") }
    if let v = d.topK { members.append("\"top_k\":\(v)") }
    if let v = d.expertCapacity { members.append("\"expert_capacity\":\(v)") }
    if let v = d.capacityFactor { members.append("\"capacity_factor\":\(v)") }
    if let v = d.latencyMs { members.append("\"latency_ms\":\(v)") }
    if d.assignmentCount > 0 {
        members.append(
            "\"expert_assignments\":[" + Array(repeating: "[]", count: d.assignmentCount).joined(separator: ",") + "]")
    }
    return Array(("{" + members.joined(separator: ",") + "}").utf8)
}

func decode(_ decoder: DecisionDecoder, _ body: [UInt8], _ format: DecisionDecoder.Format) -> Result<
    [RoutingDecision], DecisionError
> {
    do throws(DecisionError) {
        return .success(try decoder.decode(body, format: format))
    } catch {
        precondition(!error.message.isEmpty, "empty message")
        precondition([.malformed, .invalid, .tooManyExperts].contains(error.kind), "unexpected kind")
        if let i = error.index { precondition(i >= 0 && i <= decoder.limits.maxDecisions, "index range") }
        return .failure(error)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let settings = data[0]
    let body = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    var limits = DecisionDecoder.Limits()
    if settings & 0x80 != 0 {
        limits.maxExperts = 1 + Int(settings & 0x07)
        limits.maxDecisions = 1 + Int((settings >> 3) & 0x03)
        limits.maxAssignments = Int((settings >> 2) & 0x07)
        limits.maxDepth = 1 + Int(settings & 0x0F)
    }
    let decoder = DecisionDecoder(limits: limits)
    let format: DecisionDecoder.Format = settings & 0x40 != 0 ? .ndjson : .json
    let result = decode(decoder, body, format)

    if case .success(let decisions) = result {
        precondition(decisions.count <= limits.maxDecisions, "too many decisions")
        for d in decisions {
            check(d, limits)
            // Written back, it decodes to itself (assignments aside: only their count is kept).
            if d.assignmentCount <= limits.maxAssignments, limits.maxDepth >= 3 {
                let again = decode(decoder, encode(d), .json)
                guard case .success(let back) = again, back == [d] else {
                    preconditionFailure("round trip differs: \(d) -> \(again)")
                }
            }
        }
    }
    // Without a newline, a body starting with `{` is one decision in both formats.
    let first = body.first { ![0x20, 0x09, 0x0D].contains($0) }
    if first == UInt8(ascii: "{"), !body.contains(0x0A) {
        let other = decode(decoder, body, format == .json ? .ndjson : .json)
        switch (result, other) {
        case (.success(let a), .success(let b)):
            precondition(a == b, "formats disagree on the value")
        case (.failure(let a), .failure(let b)):
            precondition(a.kind == b.kind && a.field == b.field, "formats disagree on the error: \(a) vs \(b)")
        default:
            preconditionFailure("formats disagree on the verdict: \(result) vs \(other)")
        }
    }
    return 0
}
