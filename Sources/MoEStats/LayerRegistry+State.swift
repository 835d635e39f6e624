/// Persistence of the engine: every layer's state as bytes (`StateFormat`, version 3; versions 1
/// and 2, which have no placement and version 1 no step history, are still read), and back.
///
/// The daemon writes these bytes to its state file (atomically) and hands them back on start;
/// the module itself does no I/O. What is saved is everything a summary or `/metrics` is computed
/// from, so a restored layer answers exactly as before: counters, sums, per-expert tokens and
/// utilization sums, loss sums and counts, non-finite counts, the latency histogram, minimum and
/// maximum, both ring buffers, capacity totals and EMA, MaxVio and dead-expert inputs, the worker
/// table. Configuration is not saved: it comes from the configuration of the restarted daemon,
/// except each layer's latency bucket bounds, which stay those its histogram was built with.
/// The expert placement is saved beside the layers as bytes this module does not read (the
/// daemon's JSON of `GET /v1/placement`), since the placement model lives above this module.
extension LayerRegistry {
    /// The state of every layer as a state file of `version` (the current one unless a test asks
    /// for an older one: version 1 drops the step history, versions 1 and 2 the placement),
    /// layers in name order, workers in name order (the same state always gives the same bytes),
    /// with `placement` (nil or empty: none) saved beside them.
    ///
    /// The states are copied under every layer's lock at once, as `snapshots()` copies them, so
    /// a batch is saved for all its layers or for none; the encoding happens after the locks are
    /// released. A layer created by a batch not yet applied (no decision yet) is left out.
    public func exportState(version: UInt32? = nil, placement: [UInt8]? = nil) -> [UInt8] {
        let images = withEveryLayerLocked { engine, s, _ -> LayerImage? in
            s.totalRoutings > 0 ? LayerImage(name: engine.name, copying: s) : nil
        }
        return Self.encodeState(images, version: version ?? StateFormat.version, placement: placement ?? [])
    }

    /// Replaces every layer with those of a state file made by `exportState()`; returns the
    /// placement saved with them (nil when none was).
    ///
    /// The whole file is read and checked before anything changes: on any error (wrong magic, a
    /// version this build does not read, a short file, a bad checksum, trailing bytes, values that contradict
    /// each other) this throws and the registry keeps exactly what it held. Caps (`maxLayers`,
    /// `maxExperts`, `maxWorkersPerLayer`) are not applied to restored layers, as lowering them at
    /// a reload removes nothing either.
    @discardableResult
    public func restore(from bytes: [UInt8]) throws(StateError) -> [UInt8]? {
        let saved = try Self.readState(bytes)
        restore(saved)
        return saved.placement
    }

    /// Replaces every layer with those of a state file read and checked by `readState`.
    public func restore(_ saved: SavedState) {
        let c = configuration
        replaceLayers(
            with: saved.images.map {
                LayerStatistics(
                    name: $0.name,
                    restoring: $0.makeState(historySteps: c.clampedHistorySteps, bucketSeconds: c.clampedBucketSeconds))
            })
    }

    /// Reads and checks a whole state file without changing anything, so that a caller can
    /// check what it keeps beside the layers (the placement) before `restore(_:)` applies it.
    public static func readState(_ bytes: [UInt8]) throws(StateError) -> SavedState {
        let (images, placement) = try decodeStateFile(bytes)
        return SavedState(images: images, placement: placement)
    }

    /// A registry holding the layers of a state file (see `restore(from:)`).
    public convenience init(configuration: StatsConfiguration, restoringFrom bytes: [UInt8]) throws(StateError) {
        self.init(configuration: configuration)
        try restore(from: bytes)
    }

    // MARK: - encoding

    static func encodeState(
        _ images: [LayerImage], version: UInt32 = StateFormat.version, placement: [UInt8] = []
    ) -> [UInt8] {
        var payload = StateWriter()
        payload.u32(UInt32(images.count))
        for image in images {
            let lengthAt = payload.bytes.count
            payload.u64(0)
            image.encode(into: &payload, version: version)
            payload.patchU64(UInt64(payload.bytes.count - lengthAt - 8), at: lengthAt)
        }
        if version >= 3 {
            payload.u64(UInt64(placement.count))
            payload.bytes.append(contentsOf: placement)
        }
        var file = StateWriter()
        file.bytes.reserveCapacity(StateFormat.headerSize + payload.bytes.count)
        file.bytes.append(contentsOf: StateFormat.magic)
        file.u32(version)
        file.u64(UInt64(payload.bytes.count))
        file.u32(CRC32.checksum(payload.bytes[...]))
        file.bytes.append(contentsOf: payload.bytes)
        return file.bytes
    }

    static func decodeState(_ bytes: [UInt8]) throws(StateError) -> [LayerImage] {
        try decodeStateFile(bytes).images
    }

    static func decodeStateFile(_ bytes: [UInt8]) throws(StateError) -> (images: [LayerImage], placement: [UInt8]?) {
        let magic = StateFormat.magic
        guard bytes.count >= magic.count else {
            if bytes.elementsEqual(magic.prefix(bytes.count)) {
                throw StateError(.truncated, "state file truncated: \(bytes.count) bytes, shorter than its header")
            }
            throw StateError(.notAStateFile, "not a moe-metricsd state file (no MOESTATE header)")
        }
        guard bytes[..<magic.count].elementsEqual(magic) else {
            throw StateError(.notAStateFile, "not a moe-metricsd state file (no MOESTATE header)")
        }
        var r = StateReader(bytes, from: magic.count)
        let version = try r.u32("format version")
        guard StateFormat.readable.contains(version) else {
            throw StateError(
                .unsupportedVersion,
                "state file format version \(version) is not supported (this build reads versions \(StateFormat.readable.lowerBound) to \(StateFormat.readable.upperBound))"
            )
        }
        let length = try r.u64("payload length")
        let crc = try r.u32("checksum")
        let available = UInt64(r.remaining)
        guard length <= available else {
            throw StateError(
                .truncated, "state file truncated: the header announces \(length) payload bytes, \(available) follow")
        }
        guard length == available else {
            throw StateError(.inconsistent, "state file inconsistent: \(available - length) bytes after the payload")
        }
        let actual = CRC32.checksum(bytes[r.position...])
        guard actual == crc else {
            throw StateError(
                .checksumMismatch,
                "state file damaged: payload checksum \(hex(actual)) differs from the header's \(hex(crc))")
        }

        r.context = "payload"
        let count = Int(try r.u32("layer count"))
        try r.check(count: count, size: 8 + LayerImage.minimumRecordSize, "layers")
        var images = [LayerImage]()
        images.reserveCapacity(count)
        var names = Set<String>()
        for i in 0..<count {
            r.context = "layer \(i)"
            let recordLength = try r.u64("record length")
            guard recordLength <= UInt64(r.remaining) else {
                throw StateError(
                    .truncated,
                    "state file truncated: \(r.context): record of \(recordLength) bytes, \(r.remaining) left")
            }
            let end = r.position + Int(recordLength)
            let outer = r.limit
            r.limit = end
            let image = try LayerImage.decode(from: &r, version: version)
            guard r.position == end else {
                throw StateError(
                    .inconsistent,
                    "state file inconsistent: \(r.context): \(end - r.position) unread bytes in its record")
            }
            r.limit = outer
            guard names.insert(image.name).inserted else {
                throw StateError(.inconsistent, "state file inconsistent: layer \(image.name) appears twice")
            }
            images.append(image)
        }
        var placement: [UInt8]? = nil
        if version >= 3 {
            r.context = "placement"
            let length = try r.u64("placement length")
            guard length <= UInt64(r.remaining) else {
                throw StateError(
                    .truncated, "state file truncated: placement of \(length) bytes, \(r.remaining) left")
            }
            if length > 0 { placement = Array(try r.raw(Int(length), "placement")) }
        }
        guard r.remaining == 0 else {
            throw StateError(.inconsistent, "state file inconsistent: \(r.remaining) bytes after the last layer")
        }
        return (images, placement)
    }

    private static func hex(_ v: UInt32) -> String {
        let digits = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}

/// A state file read whole and checked, not yet applied: its layers, and the placement saved
/// beside them (nil when none was).
public struct SavedState: Sendable {
    let images: [LayerImage]
    /// The placement's bytes as the daemon saved them (its JSON); this module does not read them.
    public let placement: [UInt8]?

    /// Each saved layer's name and expert count, in the file's order.
    public var layers: [(name: String, experts: Int)] { images.map { ($0.name, $0.experts) } }
}

/// One layer's complete state as plain values: copied out of a `LayerState` under its lock (every
/// array a fresh copy, so the layer's next write allocates nothing), encoded, decoded, checked,
/// and turned back into a `LayerState`.
struct LayerImage: Sendable, Equatable {
    var name: String
    var experts: Int
    var totalRoutings: UInt64
    var totalTokens: UInt64
    var tokensDropped: UInt64
    var expertTokens: [UInt64]
    var utilizationSums: [Double]
    var lastCounts: [UInt64]
    var lastActive: [UInt64]
    var loadBalanceLoss: LossTotals
    var routerZLoss: LossTotals
    var auxiliaryLoss: LossTotals
    var nonfiniteLosses: UInt64
    var loadVariances: [Double]
    var recentLatenciesMs: [Double]
    var latencyCount: UInt64
    var latencySumMs: Double
    var latencyMinMs: Double
    var latencyMaxMs: Double
    var latencyBoundsSeconds: [Double]
    var latencyBucketCounts: [UInt64]
    var capacity: CapacityTotals
    var capacityExceededCount: UInt64
    var lastUpdated: Double
    /// In name order once encoded or decoded; in table order straight after the copy.
    var workers: [WorkerActivity]
    var untrackedWorkerDecisions: UInt64
    /// Each worker's bit in the bucket worker sets, in the order of `workers`.
    var workerBits: [Int] = []
    var demandDecisions: UInt64 = 0
    var expertOverflow: [UInt64]? = nil
    /// Nil for a version-1 file.
    var history: HistoryImage? = nil

    /// Smallest encoded record: a one-byte name, one expert, no sample, bucket or worker.
    static let minimumRecordSize = 2 + 1 + 4 + 3 * 8 + 4 * 8 + 3 * 16 + 8 + 4 + 4 + 4 * 8 + 4 + 5 * 8 + 2 * 8 + 4 + 8
}

// In an extension, so that the declaration above keeps its memberwise initializer (`decode` uses it).
extension LayerImage {
    init(name: String, copying s: LayerState) {
        self.name = name
        experts = s.experts
        totalRoutings = s.totalRoutings
        totalTokens = s.totalTokens
        tokensDropped = s.tokensDropped
        expertTokens = s.expertTokens.map { $0 }
        utilizationSums = s.utilizationSums.map { $0 }
        lastCounts = s.lastCounts.map { $0 }
        lastActive = s.lastActive.map { $0 }
        loadBalanceLoss = s.loadBalanceLoss
        routerZLoss = s.routerZLoss
        auxiliaryLoss = s.auxiliaryLoss
        nonfiniteLosses = s.nonfiniteLosses
        loadVariances = s.loadVariances.chronological()
        recentLatenciesMs = s.recentLatenciesMs.chronological()
        latencyCount = s.latencyCount
        latencySumMs = s.latencySumMs
        latencyMinMs = s.latencyMinMs
        latencyMaxMs = s.latencyMaxMs
        latencyBoundsSeconds = s.latencyBoundsSeconds.map { $0 }
        latencyBucketCounts = s.latencyBucketCounts.map { $0 }
        capacity = s.capacity
        capacityExceededCount = s.capacityExceededCount
        lastUpdated = s.lastUpdated
        var list = [WorkerActivity]()
        list.reserveCapacity(s.workers.count)
        var bits = [Int]()
        bits.reserveCapacity(s.workers.count)
        for (worker, record) in s.workers {
            list.append(WorkerActivity(worker: worker, lastSeen: record.lastSeen, decisions: record.decisions))
            bits.append(record.bit)
        }
        workers = list
        workerBits = bits
        untrackedWorkerDecisions = s.untrackedWorkerDecisions
        demandDecisions = s.demandDecisions
        expertOverflow = s.demandDecisions > 0 ? s.expertOverflow.map { $0 } : nil
        history = s.history.image()
    }

    /// The engine state this image describes (call only on a checked image).
    func makeState(historySteps: Int, bucketSeconds: Int) -> LayerState {
        var s = LayerState(
            experts: experts, latencyBoundsSeconds: latencyBoundsSeconds, historySteps: historySteps,
            bucketSeconds: bucketSeconds)
        s.totalRoutings = totalRoutings
        s.totalTokens = totalTokens
        s.tokensDropped = tokensDropped
        s.expertTokens = expertTokens
        s.utilizationSums = utilizationSums
        s.lastCounts = lastCounts
        s.lastActive = lastActive
        s.loadBalanceLoss = loadBalanceLoss
        s.routerZLoss = routerZLoss
        s.auxiliaryLoss = auxiliaryLoss
        s.nonfiniteLosses = nonfiniteLosses
        s.loadVariances = RingBuffer(capacity: historyCapacity, restoring: loadVariances)
        s.recentLatenciesMs = RingBuffer(capacity: historyCapacity, restoring: recentLatenciesMs)
        s.latencyCount = latencyCount
        s.latencySumMs = latencySumMs
        s.latencyMinMs = latencyMinMs
        s.latencyMaxMs = latencyMaxMs
        s.latencyBucketCounts = latencyBucketCounts
        s.capacity = capacity
        s.capacityExceededCount = capacityExceededCount
        s.lastUpdated = lastUpdated
        var table = [String: WorkerRecord](minimumCapacity: workers.count)
        for (i, w) in workers.enumerated() {
            // A version-1 file has no bits (and no buckets to keep them consistent with).
            let bit = i < workerBits.count ? workerBits[i] : i + 1
            table[w.worker] = WorkerRecord(lastSeen: w.lastSeen, decisions: w.decisions, bit: bit)
        }
        s.restoreWorkers(table)
        s.untrackedWorkerDecisions = untrackedWorkerDecisions
        s.demandDecisions = demandDecisions
        if let expertOverflow { s.expertOverflow = expertOverflow }
        if let history {
            s.history = StepHistory(restoring: history, capacity: historySteps, experts: experts)
        }
        return s
    }

    // MARK: - encoding (field order is the format: see `StateFormat`)

    func encode(into w: inout StateWriter, version: UInt32) {
        w.string(name)
        w.u32(UInt32(experts))
        w.u64(totalRoutings)
        w.u64(totalTokens)
        w.u64(tokensDropped)
        w.u64s(expertTokens)
        w.f64s(utilizationSums)
        w.u64s(lastCounts)
        w.u64s(lastActive)
        for loss in [loadBalanceLoss, routerZLoss, auxiliaryLoss] {
            w.f64(loss.sum)
            w.u64(loss.count)
        }
        w.u64(nonfiniteLosses)
        w.countedF64s(loadVariances)
        w.countedF64s(recentLatenciesMs)
        w.u64(latencyCount)
        w.f64(latencySumMs)
        w.f64(latencyMinMs)
        w.f64(latencyMaxMs)
        w.u32(UInt32(latencyBoundsSeconds.count))
        w.f64s(latencyBoundsSeconds)
        w.u64s(latencyBucketCounts)
        w.u64(capacity.decisions)
        w.f64(capacity.averageUtilization)
        w.f64(capacity.peakUtilization)
        w.u64(capacity.totalCapacity)
        w.u64(capacity.totalUsed)
        w.u64(capacityExceededCount)
        w.f64(lastUpdated)
        let order = workers.indices.sorted { workers[$0].worker < workers[$1].worker }
        w.u32(UInt32(order.count))
        w.u64(untrackedWorkerDecisions)
        for i in order {
            w.string(workers[i].worker)
            w.f64(workers[i].lastSeen)
            w.u64(workers[i].decisions)
            if version >= 2 { w.u32(UInt32(i < workerBits.count ? workerBits[i] : 0)) }
        }
        guard version >= 2 else { return }
        w.u64(demandDecisions)
        Self.encodeOptional(expertOverflow, into: &w)
        let h =
            history
            ?? HistoryImage(
                bucketing: nil, bucketSeconds: 10, capacity: 1, newest: nil, lateDecisions: 0, unbucketedDecisions: 0,
                workerWords: 1, buckets: [])
        w.bytes.append(h.bucketing?.rawValue ?? 0)
        w.u32(UInt32(h.bucketSeconds))
        w.u32(UInt32(h.capacity))
        w.bytes.append(h.newest == nil ? 0 : 1)
        w.u64(UInt64(bitPattern: h.newest ?? 0))
        w.u64(h.lateDecisions)
        w.u64(h.unbucketedDecisions)
        w.u32(UInt32(h.workerWords))
        w.u32(UInt32(h.buckets.count))
        for b in h.buckets {
            let t = b.totals
            w.u64(UInt64(bitPattern: t.key))
            w.u64(t.decisions)
            w.u64(t.tokens)
            w.u64(t.tokensDropped)
            for loss in [t.loadBalanceLoss, t.routerZLoss, t.auxiliaryLoss] {
                w.f64(loss.sum)
                w.u64(loss.count)
            }
            w.u64(t.nonfiniteLosses)
            w.f64(t.worstMaxViolation)
            w.u32(t.workers)
            w.u64(t.demandDecisions)
            w.u64s(b.workerBits)
            w.u64s(b.expertTokens)
            Self.encodeOptional(b.expertOverflow, into: &w)
        }
    }

    private static func encodeOptional(_ values: [UInt64]?, into w: inout StateWriter) {
        w.bytes.append(values == nil ? 0 : 1)
        if let values { w.u64s(values) }
    }

    private static func decodeOptional(_ count: Int, _ what: String, from r: inout StateReader) throws(StateError)
        -> [UInt64]?
    {
        switch try r.raw(1, "\(what) present")[r.position - 1] {
        case 0: return nil
        case 1: return try r.u64s(count, what)
        default: throw StateError(.inconsistent, "state file inconsistent: \(r.context): \(what) flag is not 0 or 1")
        }
    }

    /// The version-2 part of a record: worker bits come with the workers; demand and history here.
    private static func decodeHistory(experts: Int, from r: inout StateReader) throws(StateError) -> (
        demandDecisions: UInt64, expertOverflow: [UInt64]?, history: HistoryImage
    ) {
        func fail(_ why: String) -> StateError {
            StateError(.inconsistent, "state file inconsistent: \(r.context): \(why)")
        }
        let demandDecisions = try r.u64("demand decisions")
        let overflow = try decodeOptional(experts, "expert overflow", from: &r)
        let mode = try r.raw(1, "bucketing")[r.position - 1]
        let bucketing: Bucketing?
        switch mode {
        case 0: bucketing = nil
        case 1: bucketing = .step
        case 2: bucketing = .time
        default: throw fail("unknown bucketing \(mode)")
        }
        let bucketSeconds = Int(try r.u32("bucket seconds"))
        let capacity = Int(try r.u32("history capacity"))
        let hasNewest = try r.raw(1, "newest present")[r.position - 1]
        let newestBits = try r.u64("newest key")
        let late = try r.u64("late decisions")
        let unbucketed = try r.u64("unbucketed decisions")
        let words = Int(try r.u32("worker words"))
        guard (1...StatsConfiguration.maxBucketSeconds).contains(bucketSeconds) else {
            throw fail("bucket seconds out of range")
        }
        guard (1...StatsConfiguration.maxHistorySteps).contains(capacity) else {
            throw fail("history size out of range")
        }
        guard hasNewest <= 1 else { throw fail("newest flag is not 0 or 1") }
        let count = Int(try r.u32("bucket count"))
        guard count <= capacity else { throw fail("more buckets than the history keeps") }
        try r.check(count: words, size: 8, "worker words")
        try r.check(count: count, size: 8 * (13 + words + experts) + 4 + 1, "buckets")
        var buckets = [HistoryImage.Bucket]()
        buckets.reserveCapacity(count)
        for _ in 0..<count {
            var t = BucketTotals()
            t.key = Int64(bitPattern: try r.u64("bucket key"))
            t.decisions = try r.u64("bucket decisions")
            t.tokens = try r.u64("bucket tokens")
            t.tokensDropped = try r.u64("bucket tokens dropped")
            var losses = [LossTotals]()
            for what in ["load-balance", "router z", "auxiliary"] {
                let sum = try r.f64("bucket \(what) loss sum")
                losses.append(LossTotals(sum: sum, count: try r.u64("bucket \(what) loss count")))
            }
            (t.loadBalanceLoss, t.routerZLoss, t.auxiliaryLoss) = (losses[0], losses[1], losses[2])
            t.nonfiniteLosses = try r.u64("bucket non-finite losses")
            t.worstMaxViolation = try r.f64("bucket worst MaxVio")
            t.workers = try r.u32("bucket workers")
            t.demandDecisions = try r.u64("bucket demand decisions")
            let bits = try r.u64s(words, "bucket worker set")
            let tokens = try r.u64s(experts, "bucket expert tokens")
            let over = try decodeOptional(experts, "bucket overflow", from: &r)
            buckets.append(.init(totals: t, workerBits: bits, expertTokens: tokens, expertOverflow: over))
        }
        let history = HistoryImage(
            bucketing: bucketing, bucketSeconds: bucketSeconds, capacity: capacity,
            newest: hasNewest == 1 ? Int64(bitPattern: newestBits) : nil, lateDecisions: late,
            unbucketedDecisions: unbucketed, workerWords: words, buckets: buckets)
        return (demandDecisions, overflow, history)
    }

    /// Reads one record (the reader's limit is the record's end) and checks it.
    static func decode(from r: inout StateReader, version: UInt32) throws(StateError) -> LayerImage {
        let name = try r.string("layer name")
        r.context = "layer \(name)"
        let experts = Int(try r.u32("expert count"))
        let totalRoutings = try r.u64("total routings")
        let totalTokens = try r.u64("total tokens")
        let tokensDropped = try r.u64("tokens dropped")
        try r.check(count: experts, size: 4 * 8, "experts")
        let expertTokens = try r.u64s(experts, "expert tokens")
        let utilizationSums = try r.f64s(experts, "utilization sums")
        let lastCounts = try r.u64s(experts, "last counts")
        let lastActive = try r.u64s(experts, "last active")
        var losses = [LossTotals]()
        for what in ["load-balance loss", "router z-loss", "auxiliary loss"] {
            let sum = try r.f64("\(what) sum")
            let count = try r.u64("\(what) count")
            losses.append(LossTotals(sum: sum, count: count))
        }
        let nonfinite = try r.u64("non-finite losses")
        let variances = try r.countedF64s("load variances")
        let latencies = try r.countedF64s("latency samples")
        let latencyCount = try r.u64("latency count")
        let latencySum = try r.f64("latency sum")
        let latencyMin = try r.f64("latency minimum")
        let latencyMax = try r.f64("latency maximum")
        let buckets = Int(try r.u32("bucket count"))
        try r.check(count: buckets, size: 2 * 8, "buckets")
        let bounds = try r.f64s(buckets, "bucket bounds")
        let bucketCounts = try r.u64s(buckets, "bucket counts")
        var capacity = CapacityTotals()
        capacity.decisions = try r.u64("capacity decisions")
        capacity.averageUtilization = try r.f64("capacity average utilization")
        capacity.peakUtilization = try r.f64("capacity peak utilization")
        capacity.totalCapacity = try r.u64("total capacity")
        capacity.totalUsed = try r.u64("total used")
        let exceeded = try r.u64("capacity exceeded count")
        let lastUpdated = try r.f64("last updated")
        let workerCount = Int(try r.u32("worker count"))
        let untracked = try r.u64("untracked worker decisions")
        try r.check(count: workerCount, size: 2 + 1 + 16, "workers")
        var workers = [WorkerActivity]()
        workers.reserveCapacity(workerCount)
        var workerBits = [Int]()
        for _ in 0..<workerCount {
            let worker = try r.string("worker name")
            let lastSeen = try r.f64("worker last seen")
            let decisions = try r.u64("worker decisions")
            workers.append(WorkerActivity(worker: worker, lastSeen: lastSeen, decisions: decisions))
            if version >= 2 { workerBits.append(Int(try r.u32("worker bit"))) }
        }
        let extra = version >= 2 ? try decodeHistory(experts: experts, from: &r) : nil

        let image = LayerImage(
            name: name, experts: experts, totalRoutings: totalRoutings, totalTokens: totalTokens,
            tokensDropped: tokensDropped, expertTokens: expertTokens, utilizationSums: utilizationSums,
            lastCounts: lastCounts, lastActive: lastActive, loadBalanceLoss: losses[0],
            routerZLoss: losses[1], auxiliaryLoss: losses[2], nonfiniteLosses: nonfinite,
            loadVariances: variances, recentLatenciesMs: latencies, latencyCount: latencyCount,
            latencySumMs: latencySum, latencyMinMs: latencyMin, latencyMaxMs: latencyMax,
            latencyBoundsSeconds: bounds, latencyBucketCounts: bucketCounts, capacity: capacity,
            capacityExceededCount: exceeded, lastUpdated: lastUpdated, workers: workers,
            untrackedWorkerDecisions: untracked, workerBits: workerBits,
            demandDecisions: extra?.demandDecisions ?? 0, expertOverflow: extra?.expertOverflow,
            history: extra?.history)
        try image.check(context: r.context)
        return image
    }

    // MARK: - checks

    /// The invariants `LayerState.record` maintains; a state breaking one was not written by it.
    func check(context: String) throws(StateError) {
        func fail(_ why: String) -> StateError {
            StateError(.inconsistent, "state file inconsistent: \(context): \(why)")
        }
        func finiteNonNegative(_ v: Double) -> Bool { v.isFinite && v >= 0 }
        let n = totalRoutings

        guard LayerRegistry.isValidLayerName(name) else { throw fail("invalid layer name") }
        guard experts >= 1 else { throw fail("a layer needs at least one expert") }
        guard n >= 1 else { throw fail("a saved layer has at least one decision") }
        guard tokensDropped <= totalTokens else {
            throw fail("tokens dropped (\(tokensDropped)) exceed total tokens (\(totalTokens))")
        }
        guard lastActive.allSatisfy({ $0 <= n }) else {
            throw fail("an expert was last active after the last decision")
        }
        guard utilizationSums.allSatisfy(finiteNonNegative) else {
            throw fail("a utilization sum is negative or not finite")
        }
        for (what, loss) in [
            ("load-balance", loadBalanceLoss), ("router z", routerZLoss), ("auxiliary", auxiliaryLoss),
        ] {
            guard loss.count <= n else { throw fail("more \(what) losses (\(loss.count)) than decisions (\(n))") }
            guard loss.count > 0 || loss.sum == 0 else { throw fail("a \(what) loss sum without any loss") }
        }
        let (maxNonfinite, overflow) = n.multipliedReportingOverflow(by: 3)
        guard overflow || nonfiniteLosses <= maxNonfinite else {
            throw fail("more non-finite losses than three per decision")
        }

        guard loadVariances.count == Int(Swift.min(UInt64(historyCapacity), n)) else {
            throw fail("\(loadVariances.count) load variances for \(n) decisions")
        }
        guard loadVariances.allSatisfy(finiteNonNegative) else {
            throw fail("a load variance is negative or not finite")
        }

        guard latencyCount <= n else { throw fail("more latency samples (\(latencyCount)) than decisions (\(n))") }
        guard recentLatenciesMs.count == Int(Swift.min(UInt64(historyCapacity), latencyCount)) else {
            throw fail("\(recentLatenciesMs.count) recent latencies for \(latencyCount) samples")
        }
        guard recentLatenciesMs.allSatisfy(finiteNonNegative) else {
            throw fail("a latency sample is negative or not finite")
        }
        if latencyCount == 0 {
            guard latencySumMs == 0, latencyMinMs == .infinity, latencyMaxMs == 0 else {
                throw fail("latency sum, minimum or maximum without any sample")
            }
        } else {
            guard latencySumMs >= 0, finiteNonNegative(latencyMinMs), finiteNonNegative(latencyMaxMs),
                latencyMinMs <= latencyMaxMs
            else {
                throw fail("latency minimum, maximum or sum out of order")
            }
        }
        guard latencyBoundsSeconds.allSatisfy({ $0.isFinite }),
            zip(latencyBoundsSeconds, latencyBoundsSeconds.dropFirst()).allSatisfy({ $0 < $1 })
        else {
            throw fail("latency bucket bounds are not finite and strictly increasing")
        }
        var inBuckets: UInt64 = 0
        for c in latencyBucketCounts { inBuckets = inBuckets.addingSaturated(c) }
        guard inBuckets <= latencyCount else { throw fail("latency buckets hold more samples than were counted") }

        guard capacity.decisions <= n else { throw fail("more capacity decisions than decisions") }
        if capacity.decisions == 0 {
            guard capacity.averageUtilization == 0, capacity.peakUtilization == 0,
                capacity.totalCapacity == 0, capacity.totalUsed == 0
            else {
                throw fail("capacity totals without any decision of known capacity")
            }
        } else {
            guard finiteNonNegative(capacity.averageUtilization), finiteNonNegative(capacity.peakUtilization) else {
                throw fail("capacity utilization is negative or not finite")
            }
        }
        guard capacityExceededCount <= n else { throw fail("more capacity-exceeded decisions than decisions") }
        guard lastUpdated.isFinite else { throw fail("last-updated time is not finite") }

        var seen = Set<String>()
        var workerDecisions = untrackedWorkerDecisions
        for w in workers {
            guard (1...LayerRegistry.maxWorkerNameBytes).contains(w.worker.utf8.count) else {
                throw fail("a worker name is empty or longer than \(LayerRegistry.maxWorkerNameBytes) bytes")
            }
            guard seen.insert(w.worker).inserted else { throw fail("worker \(w.worker) appears twice") }
            guard w.lastSeen.isFinite, w.decisions >= 1 else {
                throw fail("worker \(w.worker) has no decision or no finite time")
            }
            workerDecisions = workerDecisions.addingSaturated(w.decisions)
        }
        guard workerDecisions <= n || n == .max else {
            throw fail("workers sent more decisions than the layer recorded")
        }
        try checkSteps(fail)
    }

    /// The invariants of the demand totals and the step ring.
    private func checkSteps(_ fail: (String) -> StateError) throws(StateError) {
        let n = totalRoutings
        guard demandDecisions <= n else { throw fail("more demand decisions than decisions") }
        guard (expertOverflow != nil) == (demandDecisions > 0) else {
            throw fail("overflow without demand, or demand without it")
        }
        guard expertOverflow.map({ $0.count == experts }) ?? true else {
            throw fail("overflow of another expert count")
        }
        guard let h = history else { return }
        guard workerBits.count == workers.count, Set(workerBits).count == workerBits.count,
            workerBits.allSatisfy({ $0 >= 1 && $0 < 64 * h.workerWords })
        else { throw fail("worker bits are not distinct or outside the worker sets") }
        guard h.workerWords <= workers.count / 64 + 1 else { throw fail("worker sets wider than the workers need") }
        var previous: Int64? = nil
        var decisions: UInt64 = 0
        for b in h.buckets {
            let t = b.totals
            guard let newest = h.newest, t.key <= newest,
                newest.subtractingReportingOverflow(t.key).partialValue < Int64(h.capacity),
                newest.subtractingReportingOverflow(t.key).overflow == false
            else { throw fail("a bucket outside the history") }
            guard previous.map({ $0 < t.key }) ?? true else { throw fail("buckets out of order") }
            previous = t.key
            guard t.decisions >= 1, t.tokensDropped <= t.tokens, t.demandDecisions <= t.decisions,
                t.loadBalanceLoss.count <= t.decisions, t.routerZLoss.count <= t.decisions,
                t.auxiliaryLoss.count <= t.decisions
            else { throw fail("a bucket's counts contradict each other") }
            guard t.worstMaxViolation.isFinite, b.expertTokens.count == experts, b.workerBits.count == h.workerWords,
                (b.expertOverflow != nil) == (t.demandDecisions > 0)
            else { throw fail("a bucket's arrays do not match the layer") }
            var set: UInt32 = 0
            for word in b.workerBits { set += UInt32(word.nonzeroBitCount) }
            guard set == t.workers else { throw fail("a bucket's worker count differs from its worker set") }
            decisions = decisions.addingSaturated(t.decisions)
        }
        guard decisions <= n else { throw fail("buckets hold more decisions than the layer recorded") }
    }
}
