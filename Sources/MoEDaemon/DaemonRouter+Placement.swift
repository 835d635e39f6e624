import Foundation
import HTTPCore
import JSONOutput
import MoEPlacement
import MoEStats

/// Expert placement: the placement (`/v1/placement`), the load matrix export (`/v1/export/load`)
/// and the rebalance planner (`POST /v1/plan`), all on the run-wide token counts of each layer.
extension DaemonRouter {
    // MARK: /v1/placement

    /// `PUT /v1/placement`: checked whole, against every known layer too; a 422 names the rule
    /// and the layer, and changes nothing.
    func putPlacement(_ request: HTTPRequest) -> HTTPResponse {
        let spec: PlacementSpec
        do throws(PlacementError) {
            spec = try checkedPlacement(request.body)
        } catch {
            return Self.refusal(error)
        }
        placementStore.withLock { $0 = spec }
        noteChange()
        var w = JSONWriter(capacity: 256)
        spec.writeJSON(&w)
        return .json(200, w.bytes + [0x0A])
    }

    /// A placement body decoded and checked against every known layer, as `PUT` and the
    /// `placement.file` setting take it.
    func checkedPlacement(_ body: [UInt8]) throws(PlacementError) -> PlacementSpec {
        try checkedPlacement(try PlacementSpec.decode(body))
    }

    /// `spec` when it fits every known layer; else the error naming the layer and the rule.
    func checkedPlacement(_ spec: PlacementSpec) throws(PlacementError) -> PlacementSpec {
        for s in registry.snapshots() {
            do throws(PlacementError) {
                try spec.placement(for: s.layer).check(experts: s.experts)
            } catch {
                throw error.about(layer: s.layer)
            }
        }
        return spec
    }

    /// The placement in force (nil: none), as the state file keeps it.
    var placement: PlacementSpec? {
        get { placementStore.withLock { $0 } }
        set { placementStore.withLock { $0 = newValue } }
    }

    /// The placement as the state file saves it: the JSON `GET /v1/placement` answers, which
    /// `PlacementSpec.decode` reads back; nil without a placement.
    var savedPlacement: [UInt8]? {
        guard let spec = placement else { return nil }
        var w = JSONWriter(capacity: 256)
        spec.writeJSON(&w)
        return w.bytes
    }

    /// `GET /v1/placement`: the placement, or 404 when none is set.
    func getPlacement() -> HTTPResponse {
        guard let spec = placementStore.withLock({ $0 }) else {
            return .error(404, "no placement is set (PUT /v1/placement sets one)")
        }
        var w = JSONWriter(capacity: 256)
        spec.writeJSON(&w)
        return .json(200, w.bytes + [0x0A])
    }

    /// `DELETE /v1/placement`.
    func deletePlacement() -> HTTPResponse {
        placementStore.withLock { $0 = nil }
        noteChange()
        return .json(200, Array("{\"placement\":null}\n".utf8))
    }

    static func refusal(_ error: PlacementError) -> HTTPResponse {
        let status = error.message.hasPrefix("malformed JSON") || error.message.hasPrefix("the body must") ? 400 : 422
        return .error(status, error.description, field: error.field.isEmpty ? nil : error.field)
    }

    /// The `placement` field of a layer's summary, window or step, for the tokens per expert of
    /// that span; nil without a placement.
    func placementField(_ spec: PlacementSpec?, layer: String, tokens: [UInt64]) -> ((inout JSONWriter) -> Void)? {
        guard let spec else { return nil }
        return { w in spec.writeField(&w, layer: layer, tokens: tokens) }
    }

    // MARK: The load matrix

    /// The chosen layers' token counts in natural order, all with the same expert count, over the
    /// run or, with `steps`, summed over each layer's newest `steps` buckets: `?layers=a,b` (or
    /// the body's `layers`) chooses, unknown names are a 404, and layers of different expert
    /// counts are a 409 that names them.
    func loadMatrix(layers chosen: [String]?, steps: Int? = nil) -> (matrix: LoadMatrix?, refusal: HTTPResponse?) {
        var snapshots: [LoadRow]
        if let steps {
            snapshots = registry.windows(steps: steps, now: clock(), workerTTL: nil).map {
                LoadRow(layer: $0.layer, experts: $0.experts, expertTokens: $0.totals.expertTokens)
            }
        } else {
            snapshots = registry.snapshots().map {
                LoadRow(layer: $0.layer, experts: $0.experts, expertTokens: $0.expertTokens)
            }
        }
        if let chosen {
            let known = Set(snapshots.map(\.layer))
            if let missing = chosen.first(where: { !known.contains($0) }) {
                return (nil, .error(404, "no such layer: \(missing)", field: "layers"))
            }
            let wanted = Set(chosen)
            snapshots.removeAll { !wanted.contains($0.layer) }
        }
        snapshots.sort { LayerOrder.precedes($0.layer, $1.layer) }
        guard let first = snapshots.first else {
            return (nil, .error(409, "no layer has any decision yet: there is no load matrix", field: "layers"))
        }
        if snapshots.contains(where: { $0.experts != first.experts }) {
            let byCount = Dictionary(grouping: snapshots, by: \.experts).sorted { $0.key < $1.key }
            let groups = byCount.map { count, layers in
                "\(count) experts: " + layers.prefix(5).map(\.layer).joined(separator: ", ")
                    + (layers.count > 5 ? " and \(layers.count - 5) more" : "")
            }
            return (
                nil,
                .error(
                    409,
                    "layers with different expert counts cannot share one matrix (\(groups.joined(separator: "; "))); "
                        + "choose layers with ?layers=", field: "layers")
            )
        }
        return (LoadMatrix(layers: snapshots.map(\.layer), tokens: snapshots.map(\.expertTokens)), nil)
    }

    /// One layer's tokens per expert, over the run or a window.
    struct LoadRow {
        let layer: String
        let experts: Int
        let expertTokens: [UInt64]
    }

    /// Tokens per expert of layers sharing one expert count, in natural order.
    struct LoadMatrix: Sendable {
        let layers: [String]
        let tokens: [[UInt64]]
    }

    /// `?layers=a,b,c` (percent-decoded names, comma-separated).
    static func layersParameter(_ request: HTTPRequest) -> [String]? {
        guard let raw = request.queryParameter("layers"), !raw.isEmpty else { return nil }
        return raw.split(separator: ",").map(String.init)
    }

    /// `GET /v1/export/load`: `format=json` (default), `csv` or `sglang`.
    func exportLoad(_ request: HTTPRequest) -> HTTPResponse {
        let format = request.queryParameter("format") ?? "json"
        guard ["json", "csv", "sglang"].contains(format) else {
            return .error(400, "format must be json, csv or sglang", field: "format")
        }
        let (steps, stepsError) = steps(request)
        if let stepsError { return stepsError }
        let (found, refusal) = loadMatrix(layers: Self.layersParameter(request), steps: steps)
        guard let matrix = found else { return refusal ?? .error(500, "no load matrix") }
        switch format {
        case "csv":
            var out = "layer,layer_id,expert_id,tokens\n"
            for (id, (layer, row)) in zip(matrix.layers, matrix.tokens).enumerated() {
                let name = Self.csvField(layer)
                for (e, t) in row.enumerated() { out += "\(name),\(id),\(e),\(t)\n" }
            }
            return HTTPResponse(
                status: 200, headers: ["content-type": "text/csv; charset=utf-8"], body: Array(out.utf8))
        default:
            var w = JSONWriter(capacity: 256 + matrix.tokens.count * (matrix.tokens.first?.count ?? 0) * 8)
            w.beginObject()
            if format == "json" {
                w.key("layers")
                w.beginArray()
                for l in matrix.layers { w.value(l) }
                w.endArray()
                w.field("experts", matrix.tokens.first?.count ?? 0)
                w.key("window")
                w.beginObject()
                w.field("steps", steps)
                w.endObject()
                w.key("load")
            } else {
                // SGLang's `--init-expert-location` reads a JSON object whose `logical_count` is the
                // [layers][experts] load matrix and hands it to EPLB.
                w.key("logical_count")
            }
            w.beginArray()
            for row in matrix.tokens {
                w.beginArray()
                for t in row { w.value(t) }
                w.endArray()
            }
            w.endArray()
            w.endObject()
            return Self.negotiateEncoding(.json(200, w.bytes + [0x0A]), request)
        }
    }

    /// A CSV field (RFC 4180 section 2): quoted when it holds a comma, quote or line break.
    static func csvField(_ s: String) -> String {
        guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    // MARK: POST /v1/plan

    /// `POST /v1/plan`: EPLB's outputs for the load matrix of the chosen layers, improved, with
    /// `predicted` figures for the current placement and the plan, and the plan as a placement
    /// body ready for `PUT /v1/placement`. The body and the matrix are checked here; the planner
    /// runs on `planQueue` and the answer is deferred to it, at most `maxConcurrentPlans` at once
    /// (then 503 with `Retry-After`, RFC 9110 section 15.6.4).
    func plan(_ request: HTTPRequest, settings current: Settings) -> HTTPResponse {
        let shape: PlanShape
        let chosen: [String]?
        let steps: Int?
        do throws(PlacementError) {
            let root = try JSONBody.object(request.body)
            try JSONBody.onlyKeys(root, ["num_replicas", "num_gpus", "num_nodes", "num_groups", "layers", "steps"])
            guard let replicas = JSONBody.integer(root["num_replicas"]) else {
                throw PlacementError("num_replicas is required: an integer", field: "num_replicas")
            }
            guard let gpus = JSONBody.integer(root["num_gpus"]) else {
                throw PlacementError("num_gpus is required: an integer", field: "num_gpus")
            }
            shape = PlanShape(
                replicas: replicas, gpus: gpus, nodes: try JSONBody.optionalInteger(root, "num_nodes") ?? 1,
                groups: try JSONBody.optionalInteger(root, "num_groups") ?? 1)
            // `steps`: the newest N buckets of each layer; absent or null, the whole run.
            let history = registry.configuration.clampedHistorySteps
            steps = JSONBody.isPresent(root["steps"]) ? try JSONBody.optionalInteger(root, "steps") : nil
            if let n = steps, !(1...history).contains(n) {
                throw PlacementError("steps must be from 1 to \(history) (stats.history_steps)", field: "steps")
            }
            if let raw = root["layers"] {
                guard let names = raw as? [String], !names.isEmpty else {
                    throw PlacementError("layers must be a non-empty array of layer names", field: "layers")
                }
                chosen = names
            } else {
                chosen = nil
            }
        } catch {
            return Self.refusal(error)
        }
        let (found, refusal) = loadMatrix(layers: chosen, steps: steps)
        guard let matrix = found else { return refusal ?? .error(500, "no load matrix") }
        let limit = current.maxConcurrentPlans
        guard plansRunning.add(1, ordering: .acquiringAndReleasing).newValue <= limit else {
            plansRunning.subtract(1, ordering: .acquiringAndReleasing)
            return .error(
                503, "\(limit) plans are being computed (placement.max_concurrent_plans); retry later",
                headers: ["retry-after": "1"])
        }
        let placement = self.placement
        let deferred = DeferredResponse()
        planQueue.async { [self] in
            let response = Self.negotiateEncoding(
                planAnswer(matrix: matrix, shape: shape, current: placement), request)
            counters.recordRequest(routeIndex: Self.planRow, code: response.status)
            plansRunning.subtract(1, ordering: .acquiringAndReleasing)
            deferred.complete(response)
        }
        return .deferred(deferred)
    }

    /// The request counter's row of `POST /v1/plan`.
    static let planRow = routes.match("/v1/plan").row

    /// The planner's answer for a load matrix (run on `planQueue`).
    private func planAnswer(matrix: LoadMatrix, shape: PlanShape, current: PlacementSpec?) -> HTTPResponse {
        let loads = matrix.tokens.map { $0.map { Double($0) } }
        let plans: [LayerPlan]
        do throws(PlacementError) {
            plans = try RebalancePlanner.plan(matrix: loads, shape: shape)
        } catch {
            return Self.refusal(error)
        }
        let width = plans.map { $0.logicalCount.max() ?? 1 }.max() ?? 1
        var w = JSONWriter(capacity: 1024 + plans.count * shape.replicas * 12)
        w.beginObject()
        w.key("layers")
        w.beginArray()
        for l in matrix.layers { w.value(l) }
        w.endArray()
        w.key("physical_to_logical")
        w.beginArray()
        for p in plans { JSONBody.write(p.physicalToLogical, &w) }
        w.endArray()
        w.key("logical_to_physical")
        w.beginArray()
        for p in plans {
            w.beginArray()
            for slots in p.logicalToPhysical(width: width) { JSONBody.write(slots, &w) }
            w.endArray()
        }
        w.endArray()
        w.key("logical_count")
        w.beginArray()
        for p in plans { JSONBody.write(p.logicalCount, &w) }
        w.endArray()
        w.key("predicted")
        w.beginArray()
        for (i, p) in plans.enumerated() {
            w.beginObject()
            w.field("layer", matrix.layers[i])
            w.key("current")
            if let current, case .success(let f) = current.figures(layer: matrix.layers[i], tokens: matrix.tokens[i]) {
                f.writeJSON(&w)
            } else {
                w.null()
            }
            w.key("plan")
            PlacementFigures(rankLoads: p.gpuLoads(loads[i], gpus: shape.gpus), nodes: shape.nodes).writeJSON(&w)
            w.endObject()
        }
        w.endArray()
        // The plan as a placement: `jq .placement` of this answer is a body for PUT /v1/placement.
        w.key("placement")
        w.beginObject()
        w.field("ranks", shape.gpus)
        w.field("nodes", shape.nodes)
        w.key("layers")
        w.beginObject()
        for (i, p) in plans.enumerated() {
            w.key(matrix.layers[i])
            JSONBody.write(p.physicalToLogical, &w)
        }
        w.endObject()
        w.endObject()
        w.endObject()
        return .json(200, w.bytes + [0x0A])
    }
}
