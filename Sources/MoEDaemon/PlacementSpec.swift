import Foundation
import JSONOutput
import MoEPlacement
import MoEStats

/// The placement set by `PUT /v1/placement`: a rank and node count, and a `physical_to_logical`
/// map for every layer (the default one, or the layer's own), or the contiguous default.
struct PlacementSpec: Sendable, Equatable {
    let ranks: Int
    let nodes: Int
    /// The placement of every layer without one of its own.
    let standard: ExpertPlacement
    /// Layers with a map of their own, by name.
    let layers: [String: ExpertPlacement]

    /// Most layers a placement may name one by one.
    static let maxLayers = 4096

    func placement(for layer: String) -> ExpertPlacement { layers[layer] ?? standard }

    /// The placement's figures for a layer's per-expert tokens, or why the placement does not fit
    /// the layer (a layer that appeared after the placement was set may not).
    func figures(layer: String, tokens: [UInt64]) -> Result<PlacementFigures, PlacementError> {
        let placement = placement(for: layer)
        do { try placement.check(experts: tokens.count) } catch { return .failure(error.about(layer: layer)) }
        return .success(placement.figures(tokens.map { Double($0) }))
    }

    /// `"placement":` and the figures for a layer's tokens per expert (over the run, a window or
    /// a step: one function for all three), or `{"error": ...}` when the placement does not fit
    /// the layer.
    func writeField(_ w: inout JSONWriter, layer: String, tokens: [UInt64]) {
        w.key("placement")
        switch figures(layer: layer, tokens: tokens) {
        case .success(let f): f.writeJSON(&w)
        case .failure(let e):
            w.beginObject()
            w.field("error", e.message)
            w.endObject()
        }
    }

    /// Reads a body `{"ranks", "nodes", "physical_to_logical", "layers": {name: map}}`; the
    /// error is the field at fault and what is wrong with it.
    static func decode(_ body: [UInt8]) throws(PlacementError) -> PlacementSpec {
        let root = try JSONBody.object(body)
        try JSONBody.onlyKeys(root, ["ranks", "nodes", "physical_to_logical", "layers"])
        guard let ranks = JSONBody.integer(root["ranks"]) else {
            throw PlacementError("ranks is required: a positive integer", field: "ranks")
        }
        let nodes = try JSONBody.optionalInteger(root, "nodes") ?? 1
        // `null` is the contiguous default, as `GET /v1/placement` and the state file write it.
        let raw = root["physical_to_logical"]
        let map = JSONBody.isPresent(raw) ? try JSONBody.integers(raw as Any, field: "physical_to_logical") : nil
        let standard = try ExpertPlacement(ranks: ranks, nodes: nodes, physicalToLogical: map)
        var layers: [String: ExpertPlacement] = [:]
        if let raw = root["layers"] {
            guard let byName = raw as? [String: Any], byName.count <= maxLayers else {
                throw PlacementError(
                    "layers must be an object of at most \(maxLayers) layer names, each with its physical_to_logical",
                    field: "layers")
            }
            for (name, value) in byName {
                do throws(PlacementError) {
                    let layerMap = try JSONBody.integers(value, field: "physical_to_logical")
                    layers[name] = try ExpertPlacement(ranks: ranks, nodes: nodes, physicalToLogical: layerMap)
                } catch {
                    throw error.about(layer: name)
                }
            }
        }
        return PlacementSpec(ranks: ranks, nodes: nodes, standard: standard, layers: layers)
    }

    /// The placement as `GET /v1/placement` answers it, the same shape `PUT` takes.
    func writeJSON(_ w: inout JSONWriter) {
        w.beginObject()
        w.field("ranks", ranks)
        w.field("nodes", nodes)
        w.key("physical_to_logical")
        if let map = standard.physicalToLogical { JSONBody.write(map, &w) } else { w.null() }
        w.key("layers")
        w.beginObject()
        for name in layers.keys.sorted(by: LayerOrder.precedes) {
            w.key(name)
            JSONBody.write(layers[name]?.physicalToLogical ?? [], &w)
        }
        w.endObject()
        w.endObject()
    }
}

extension PlacementFigures {
    /// `rank_loads`, `balancedness`, `overload`, `worst_rank`, `node_loads`, `node_balancedness`.
    func writeJSON(_ w: inout JSONWriter) {
        w.beginObject()
        w.key("rank_loads")
        w.beginArray()
        for v in rankLoads { w.value(v) }
        w.endArray()
        w.field("balancedness", balancedness)
        w.field("overload", overload)
        w.field("worst_rank", worstRank)
        w.key("node_loads")
        w.beginArray()
        for v in nodeLoads { w.value(v) }
        w.endArray()
        w.field("node_balancedness", nodeBalancedness)
        w.endObject()
    }
}

/// Reading the small JSON bodies of the placement and planning routes (not the ingest path):
/// checked strictly first (RFC 8259, no duplicate keys), then parsed by Foundation.
enum JSONBody {
    /// Largest integer a field may hold.
    static let maxInteger = 1 << 40

    static func object(_ body: [UInt8]) throws(PlacementError) -> [String: Any] {
        if let problem = StrictJSON.problem(in: body) { throw PlacementError("malformed JSON: \(problem)", field: "") }
        guard let root = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            throw PlacementError("the body must be a JSON object", field: "")
        }
        return root
    }

    /// Given and not `null`.
    static func isPresent(_ value: Any?) -> Bool { value != nil && !(value is NSNull) }

    static func onlyKeys(_ root: [String: Any], _ known: Set<String>) throws(PlacementError) {
        if let unknown = root.keys.sorted().first(where: { !known.contains($0) }) {
            throw PlacementError(
                "unknown field \(unknown) (known: \(known.sorted().joined(separator: ", ")))", field: unknown)
        }
    }

    /// An integral JSON number within +-2^40, nil otherwise (booleans included).
    static func integer(_ value: Any?) -> Int? {
        // Foundation gives JSON booleans as a subclass of NSNumber; `is Bool` would also match 0 and 1.
        guard let n = value as? NSNumber, type(of: n) == NSNumber.self else { return nil }
        let d = n.doubleValue
        guard d.rounded() == d, abs(d) <= Double(maxInteger) else { return nil }
        return Int(d)
    }

    static func optionalInteger(_ root: [String: Any], _ key: String) throws(PlacementError) -> Int? {
        guard let raw = root[key] else { return nil }
        guard let v = integer(raw) else { throw PlacementError("\(key) must be an integer", field: key) }
        return v
    }

    static func integers(_ value: Any, field: String) throws(PlacementError) -> [Int] {
        guard let array = value as? [Any] else {
            throw PlacementError("\(field) must be an array of integers", field: field)
        }
        var out: [Int] = []
        out.reserveCapacity(array.count)
        for (i, v) in array.enumerated() {
            guard let n = integer(v) else {
                throw PlacementError("\(field)[\(i)] must be an integer", field: field)
            }
            out.append(n)
        }
        return out
    }

    static func write(_ values: [Int], _ w: inout JSONWriter) {
        w.beginArray()
        for v in values { w.value(v) }
        w.endArray()
    }

    /// `object` (a JSON object's bytes) with the fields `extra` writes added at its end.
    static func appending(_ object: [UInt8], _ extra: (inout JSONWriter) -> Void) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        extra(&w)
        w.endObject()
        guard w.bytes.count > 2, object.last == UInt8(ascii: "}") else { return object }
        var out = object
        out.removeLast()
        if out.last != UInt8(ascii: "{") { out.append(UInt8(ascii: ",")) }
        out += w.bytes.dropFirst()
        return out
    }
}
