import Synchronization

/// All layers' statistics engines, keyed by layer name: the entry point of the daemon.
///
/// Concurrency: safe for many concurrent writers and readers. The registry's own lock guards only
/// the layer map (and the configuration); each layer has its own lock, held only to apply decisions
/// or to copy a snapshot. A batch is validated in full before anything is applied, and its layers
/// are then locked together in ascending order of their engines' object identities (a fixed total
/// order, so two batches cannot deadlock, and cheaper to sort by than names) and released only
/// when every decision is applied: no reader ever sees half a batch.
/// A layer's expert count never changes while it exists, which lets validation check it without
/// the layer's lock.
public final class LayerRegistry: Sendable {
    private struct State: Sendable {
        var layers: [String: LayerStatistics] = [:]
        var configuration: StatsConfiguration
        var latencyBuckets: [Double]
    }

    private struct Group: Sendable {
        var engine: LayerStatistics
        var indices: [Int]
    }

    private let state: Mutex<State>

    public init(configuration: StatsConfiguration) {
        state = Mutex(
            State(
                configuration: configuration,
                latencyBuckets: configuration.normalizedLatencyBuckets))
    }

    /// The configuration in force.
    public var configuration: StatsConfiguration { state.withLock { $0.configuration } }

    /// Replaces the configuration (a reload). Caps apply to layers created from now on (lowering
    /// `maxLayers` removes nothing); latency buckets apply to new layers only, since existing
    /// histograms cannot be re-bucketed (each snapshot carries its own bounds); the default window
    /// and the capacity defaults apply at once.
    public func update(configuration: StatsConfiguration) {
        state.withLock {
            $0.configuration = configuration
            $0.latencyBuckets = configuration.normalizedLatencyBuckets
        }
    }

    /// Number of layers held.
    public var layerCount: Int { state.withLock { $0.layers.count } }

    /// Validates every decision against the layers held and the caps, then applies all of them;
    /// all or nothing. Returns the number of decisions applied.
    ///
    /// - `defaultLayer`: the layer named by the request path, used when a decision has no `layer`;
    ///   a decision naming a different layer is `.invalid` (field `layer`), one with no layer at
    ///   all is `.malformed` (field `layer`).
    /// - `now`: Unix seconds, recorded as the layers' last-update time.
    ///
    /// Every error carries the decision's index in `decisions` (from 0).
    public func ingest(_ decisions: [RoutingDecision], defaultLayer: String?, now: Double) throws(DecisionError) -> Int
    {
        guard !decisions.isEmpty else { return 0 }

        // 1. What needs no layer state. The names are not kept yet: the usual batch (one decision,
        // or several for one layer) takes `ingestIntoOneLayer`, which allocates nothing for an
        // existing layer, so that recording is allocation-free in the steady state (AllocationPathTests).
        let first = try Self.layerName(of: decisions[0], defaultLayer: defaultLayer, index: 0)
        var oneLayer = true
        for i in decisions.indices {
            let d = decisions[i]
            if i > 0 {
                let name = try Self.layerName(of: d, defaultLayer: defaultLayer, index: i)
                if name != first { oneLayer = false }
            }
            try Self.checkValues(d, index: i)
        }
        if oneLayer {
            if let n = ingestIntoOneLayer(first, decisions, now: now) { return n }
        } else if let n = ingestIntoExistingLayers(decisions, defaultLayer: defaultLayer, now: now) {
            return n
        }

        // 1b. The general path: several layers, an expert-count conflict, or a cap reached.
        var names = [String]()
        names.reserveCapacity(decisions.count)
        for (i, d) in decisions.enumerated() {
            names.append(try Self.layerName(of: d, defaultLayer: defaultLayer, index: i))
        }

        // 2. Against the layer map and the caps, creating new layers only if everything passes.
        let (groups, configuration) = try state.withLock { s throws(DecisionError) -> ([Group], StatsConfiguration) in
            var plan: [String: (engine: LayerStatistics?, experts: Int, indices: [Int])] = [:]
            var newLayers = 0
            for (i, d) in decisions.enumerated() {
                let name = names[i]
                let experts = d.expertCounts.count
                if var entry = plan[name] {
                    guard entry.experts == experts else {
                        throw Self.conflict(name, has: entry.experts, got: experts, index: i)
                    }
                    entry.indices.append(i)
                    plan[name] = entry
                } else if let engine = s.layers[name] {
                    guard engine.experts == experts else {
                        throw Self.conflict(name, has: engine.experts, got: experts, index: i)
                    }
                    plan[name] = (engine, experts, [i])
                } else {
                    guard experts <= s.configuration.maxExperts else {
                        throw DecisionError(
                            .tooManyExperts,
                            "\(experts) experts exceed the limit of \(s.configuration.maxExperts) per layer",
                            field: "expert_capacities", index: i)
                    }
                    newLayers += 1
                    guard s.layers.count + newLayers <= s.configuration.maxLayers else {
                        throw DecisionError(
                            .tooManyLayers,
                            "layer \(name) would exceed the limit of \(s.configuration.maxLayers) layers",
                            field: "layer", index: i)
                    }
                    plan[name] = (nil, experts, [i])
                }
            }
            var groups = [Group]()
            groups.reserveCapacity(plan.count)
            for (name, entry) in plan {
                let engine: LayerStatistics
                if let existing = entry.engine {
                    engine = existing
                } else {
                    engine = Self.makeEngine(name, experts: entry.experts, s)
                    s.layers[name] = engine
                }
                groups.append(Group(engine: engine, indices: entry.indices))
            }
            groups.sort { ObjectIdentifier($0.engine) < ObjectIdentifier($1.engine) }
            return (groups, s.configuration)
        }

        // 3. Capacities need no lock; 4. apply under all the batch's layer locks.
        let capacities = decisions.map { Self.capacity(of: $0, configuration: configuration) }
        Self.apply(
            groups[...], decisions, capacities, now: now,
            maxWorkers: Swift.max(0, configuration.maxWorkersPerLayer))
        return decisions.count
    }

    /// Applies validated decisions that all name `layer` and all have one expert count, if the
    /// layer exists with that count or can be created within the caps; nil (nothing applied)
    /// otherwise, leaving the batch to the general path, which reports any error exactly as it
    /// would have. One layer means one layer lock, so the batch is still all or nothing and the
    /// lock order (registry, then layer) is unchanged.
    /// Nothing here allocates for an existing layer: no plan, no groups, no capacity array.
    private func ingestIntoOneLayer(_ layer: String, _ decisions: [RoutingDecision], now: Double) -> Int? {
        let experts = decisions[0].expertCounts.count
        for d in decisions where d.expertCounts.count != experts { return nil }
        let found = state.withLock { s -> (engine: LayerStatistics, configuration: StatsConfiguration)? in
            if let engine = s.layers[layer] {
                guard engine.experts == experts else { return nil }
                return (engine, s.configuration)
            }
            // A new layer within the caps is created here as the general path would create it;
            // a batch over a cap goes there to be refused with the same error.
            guard experts <= s.configuration.maxExperts, s.layers.count + 1 <= s.configuration.maxLayers else {
                return nil
            }
            let engine = Self.makeEngine(layer, experts: experts, s)
            s.layers[layer] = engine
            return (engine, s.configuration)
        }
        guard let engine = found?.engine, let configuration = found?.configuration else { return nil }
        let maxWorkers = Swift.max(0, configuration.maxWorkersPerLayer)
        engine.state.withLock { s in
            for d in decisions {
                s.record(
                    d, capacity: Self.capacity(of: d, configuration: configuration),
                    now: now, maxWorkers: maxWorkers)
            }
        }
        return decisions.count
    }

    /// Applies validated decisions naming several layers when every one of those layers exists
    /// with the decision's expert count: the steady state of a job posting one decision per layer.
    /// Nil (nothing applied) otherwise, leaving the batch to the general path, which creates
    /// layers and reports errors exactly as it always has.
    ///
    /// Cheaper than the general path: one map lookup per decision into a flat array (no plan
    /// dictionary, no per-layer index arrays, no capacity array), the decisions ordered by
    /// (engine identity, position) with an integer sort, and each capacity resolved while applying.
    /// The locking is the general path's: registry lock for the lookups only, then every layer's
    /// lock in the same identity order, all released after the last decision.
    private func ingestIntoExistingLayers(
        _ decisions: [RoutingDecision], defaultLayer: String?,
        now: Double
    ) -> Int? {
        let found = state.withLock { s -> (engines: [LayerStatistics], configuration: StatsConfiguration)? in
            var engines = [LayerStatistics]()
            engines.reserveCapacity(decisions.count)
            var previous: (name: String, engine: LayerStatistics)? = nil
            for d in decisions {
                // Validated by the caller: a decision without a layer has the path's.
                guard let name = d.layer ?? defaultLayer else { return nil }
                let engine: LayerStatistics
                if let previous, previous.name == name {
                    engine = previous.engine
                } else {
                    guard let e = s.layers[name] else { return nil }
                    engine = e
                    previous = (name, e)
                }
                guard engine.experts == d.expertCounts.count else { return nil }
                engines.append(engine)
            }
            return (engines, s.configuration)
        }
        guard let found else { return nil }
        let engines = found.engines
        // Decisions of one layer stay in body order: ties are broken by position.
        var order = [Int](decisions.indices)
        order.sort { a, b in
            let ia = ObjectIdentifier(engines[a]), ib = ObjectIdentifier(engines[b])
            return ia < ib || (ia == ib && a < b)
        }
        Self.applyInOrder(
            order[...], engines, decisions, found.configuration, now: now,
            maxWorkers: Swift.max(0, found.configuration.maxWorkersPerLayer))
        return decisions.count
    }

    /// Takes the lock of each engine as its run of `order` begins (ascending identity, so in the
    /// global order), applies the run's decisions, and releases every lock only after the last
    /// decision, as `apply` does. A loop, not one nested closure per layer: a batch may name
    /// thousands of layers. Allocates nothing.
    private static func applyInOrder(
        _ order: ArraySlice<Int>, _ engines: [LayerStatistics],
        _ decisions: [RoutingDecision], _ configuration: StatsConfiguration,
        now: Double, maxWorkers: Int
    ) {
        var current: LayerStatistics? = nil
        for k in order {
            let engine = engines[k]
            if engine !== current {
                engine.state.lock()
                current = engine
            }
            let d = decisions[k]
            engine.state.withLockHeld { s in
                s.record(d, capacity: capacity(of: d, configuration: configuration), now: now, maxWorkers: maxWorkers)
            }
        }
        current = nil
        for k in order {
            let engine = engines[k]
            if engine !== current {
                engine.state.unlock()
                current = engine
            }
        }
    }

    /// A new layer's engine, its ring sized by the configuration in force.
    private static func makeEngine(_ name: String, experts: Int, _ s: State) -> LayerStatistics {
        LayerStatistics(
            name: name, experts: experts, latencyBoundsSeconds: s.latencyBuckets,
            historySteps: s.configuration.clampedHistorySteps, bucketSeconds: s.configuration.clampedBucketSeconds)
    }

    /// A copy of one layer's statistics; nil if the layer is unknown.
    /// `now` and `workerTTL` decide its newest complete step (see `history`).
    public func snapshot(_ layer: String, now: Double = 0, workerTTL: Double? = nil) -> LayerSnapshot? {
        let found = state.withLock { s in (s.layers[layer], s.configuration) }
        guard let engine = found.0 else { return nil }
        return engine.snapshot(
            defaultWindow: found.1.defaultWindow, expectedWorkers: found.1.expectedWorkers, now: now, ttl: workerTTL)
    }

    /// Copies of every layer's statistics, sorted by layer name, all taken under every layer's
    /// lock at once (`withEveryLayerLocked`): a batch is in every copy or in none. A layer with
    /// no decision yet is left out. Worker lists are sorted after the locks are released.
    /// `now` and `workerTTL` decide each layer's newest complete step (see `history`).
    public func snapshots(now: Double = 0, workerTTL: Double? = nil) -> [LayerSnapshot] {
        var copies = withEveryLayerLocked { engine, s, c -> LayerSnapshot? in
            guard s.totalRoutings > 0 else { return nil }
            return LayerSnapshot(
                layer: engine.name, state: s, defaultWindow: c.defaultWindow, expectedWorkers: c.expectedWorkers,
                now: now, ttl: workerTTL)
        }
        for i in copies.indices { copies[i].sortWorkers() }
        return copies
    }

    /// One layer's engine and the configuration in force; nil engine if the layer is unknown.
    func engine(_ layer: String) -> (LayerStatistics?, StatsConfiguration) {
        state.withLock { s in (s.layers[layer], s.configuration) }
    }

    /// Replaces every layer at once (a restore): readers see either the old layers or the new.
    func replaceLayers(with engines: [LayerStatistics]) {
        var layers = [String: LayerStatistics](minimumCapacity: engines.count)
        for e in engines { layers[e.name] = e }
        state.withLock { $0.layers = layers }
    }

    /// Removes a layer and its statistics (torsh's `reset`); false if it is unknown.
    /// Decisions for it afterwards create it afresh, with any expert count.
    @discardableResult
    public func reset(_ layer: String) -> Bool {
        state.withLock { $0.layers.removeValue(forKey: layer) != nil }
    }

    /// Removes every layer.
    public func resetAll() {
        state.withLock { $0.layers.removeAll() }
    }

    /// Whether `name` is a valid layer name: 1 to 64 characters of `[A-Za-z0-9_.:-]`. Layer names
    /// become Prometheus label values, so they are bounded in length and alphabet.
    public static func isValidLayerName(_ name: String) -> Bool {
        LayerName.isValid(name)
    }

    // MARK: - validation and application

    private static func layerName(of d: RoutingDecision, defaultLayer: String?, index: Int) throws(DecisionError)
        -> String
    {
        let name: String
        switch (d.layer, defaultLayer) {
        case (nil, nil):
            throw DecisionError(
                .malformed, "no layer: name it in the decision or in the path", field: "layer", index: index)
        case (let own?, let path?) where own != path:
            throw DecisionError(
                .invalid, "decision names layer \(own) but the path names \(path)", field: "layer", index: index)
        case (let own?, _):
            name = own
        case (nil, let path?):
            name = path
        }
        guard isValidLayerName(name) else {
            throw DecisionError(
                .invalid, "layer name must be 1 to 64 characters of A-Z a-z 0-9 _ . : -", field: "layer", index: index)
        }
        return name
    }

    /// Checks the decoder also makes, repeated so that the engine's arithmetic is safe whatever
    /// builds the decision (dropped tokens above the total would underflow the served count), and so that
    /// no caller can record loads no routing of `total_tokens` tokens could produce.
    private static func checkValues(_ d: RoutingDecision, index: Int) throws(DecisionError) {
        guard !d.expertCounts.isEmpty else {
            throw DecisionError(.invalid, "at least one expert is required", field: "expert_capacities", index: index)
        }
        guard d.tokensDropped <= d.totalTokens else {
            throw DecisionError(
                .invalid, "tokens_dropped (\(d.tokensDropped)) exceeds total_tokens (\(d.totalTokens))",
                field: "tokens_dropped", index: index)
        }
        if let ms = d.latencyMs, !(ms.isFinite && ms >= 0) {
            throw DecisionError(.invalid, "latency must be finite and non-negative", field: "latency_ms", index: index)
        }
        if let c = d.expertCapacity, c < 0 {
            throw DecisionError(
                .invalid, "expert_capacity must be non-negative", field: "expert_capacity", index: index)
        }
        if let k = d.topK, k < 1 {
            throw DecisionError(.invalid, "top_k must be at least 1", field: "top_k", index: index)
        }
        if let w = d.worker, !(1...maxWorkerNameBytes).contains(w.utf8.count) {
            throw DecisionError(
                .invalid, "worker must be 1 to \(maxWorkerNameBytes) bytes of UTF-8", field: "worker", index: index)
        }
        if let f = d.capacityFactor, !(f.isFinite && f > 0) {
            throw DecisionError(
                .invalid, "capacity_factor must be finite and positive", field: "capacity_factor", index: index)
        }
        if let step = d.step, step < 0 {
            throw DecisionError(.invalid, "step must be non-negative", field: "step", index: index)
        }
        if let demand = d.expertDemand {
            if let problem = RoutingDecision.demandProblem(demand, served: d.expertCounts) {
                throw DecisionError(.invalid, problem.message, field: problem.field, index: index)
            }
        }
        // Decoded decisions were checked by the decoder; the flag is cleared by any change since.
        if d.loadsChecked { return }
        switch RoutingDecision.loadProblem(d.expertCounts, totalTokens: d.totalTokens, topK: d.topK) {
        case nil:
            break
        case .expertAboveTotal(let expert, let load):
            throw DecisionError(
                .invalid,
                "expert \(expert) received \(load) tokens, more than total_tokens (\(d.totalTokens)); a token reaches an expert at most once",
                field: "expert_capacities[\(expert)]", index: index)
        case .sumAboveTopK(_, let k):
            throw DecisionError(
                .invalid, "the counts add up to more than top_k (\(k)) × total_tokens (\(d.totalTokens))",
                field: "expert_capacities", index: index)
        }
    }

    /// Longest worker name kept, in UTF-8 bytes: the decoder's 128 characters of up to 4 bytes.
    /// Worker names are stored per layer and written to the state file, so they are bounded.
    static let maxWorkerNameBytes = 512

    private static func conflict(_ name: String, has: Int, got: Int, index: Int) -> DecisionError {
        DecisionError(
            .conflict, "layer \(name) has \(has) experts but the decision has \(got); reset the layer to change it",
            field: "expert_capacities", index: index)
    }

    /// The per-expert capacity of a decision: its `expert_capacity`, else torsh's
    /// `ceil(floor(T*k/E) * capacity_factor)` from its (or the configured) top-k and capacity
    /// factor, else nil: unknown capacity gives null capacity statistics, never an invented
    /// default capacity (docs/api.md, the `expert_capacity` field).
    static func capacity(of d: RoutingDecision, configuration: StatsConfiguration) -> UInt64? {
        if let c = d.expertCapacity { return c >= 0 ? UInt64(c) : nil }
        guard let k = d.topK ?? configuration.defaultTopK, k > 0,
            let factor = d.capacityFactor ?? configuration.defaultCapacityFactor, factor.isFinite, factor > 0,
            !d.expertCounts.isEmpty
        else { return nil }
        let (tk, overflow) = d.totalTokens.multipliedReportingOverflow(by: UInt64(k))
        guard !overflow else { return nil }
        let base = Double(tk / UInt64(d.expertCounts.count))
        var c = base * factor
        // The factor is a decimal someone wrote: 100 x 1.1 is 110.00000000000001 in binary and
        // must still give 110, so a product within rounding error of an integer is that integer.
        let nearest = c.rounded()
        c = abs(c - nearest) <= 1e-9 * Swift.max(1, nearest) ? nearest : c.rounded(.up)
        guard c < 1.8e19 else { return nil }
        return UInt64(c)
    }

    /// Locks the groups' layers in order (they are sorted by identity), applies each group's
    /// decisions, and releases them all only after the last one; a loop, not one nested closure
    /// per layer.
    private static func apply(
        _ groups: ArraySlice<Group>, _ decisions: [RoutingDecision],
        _ capacities: [UInt64?], now: Double, maxWorkers: Int
    ) {
        for group in groups {
            group.engine.state.lock()
            group.engine.state.withLockHeld { s in
                for i in group.indices {
                    s.record(decisions[i], capacity: capacities[i], now: now, maxWorkers: maxWorkers)
                }
            }
        }
        for group in groups { group.engine.state.unlock() }
    }

    /// Runs `copy` on every layer, in name order, with the lock of every layer held at once, so
    /// that a batch over several layers is seen whole or not at all (writers hold all of a
    /// batch's locks from its first decision to its last). The layer locks are taken in the
    /// writers' order (ascending identity) while the registry's lock is held, so no layer can be
    /// created between listing the layers and locking them: a batch that creates one layer and
    /// updates another cannot be seen on one side only. Writers never take the registry's lock
    /// while holding a layer's, so this cannot deadlock. `copy` must only copy: every writer
    /// waits until it is done with all layers.
    func withEveryLayerLocked<T>(
        _ copy: (LayerStatistics, inout LayerState, StatsConfiguration) -> T?
    ) -> [T] {
        let (byName, configuration) = state.withLock { s -> ([LayerStatistics], StatsConfiguration) in
            let byName = s.layers.values.sorted { $0.name < $1.name }
            let byIdentity = byName.sorted { ObjectIdentifier($0) < ObjectIdentifier($1) }
            for engine in byIdentity { engine.state.lock() }
            return (byName, s.configuration)
        }
        var copies = [T]()
        copies.reserveCapacity(byName.count)
        for engine in byName {
            if let c = engine.state.withLockHeld({ s in copy(engine, &s, configuration) }) { copies.append(c) }
        }
        for engine in byName { engine.state.unlock() }
        return copies
    }
}
