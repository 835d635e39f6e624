/// Settings of the statistics engine: the caps that bound its memory, the default window, the
/// latency histogram's buckets and the defaults used to compute a capacity.
///
/// Every limit is a named setting with a safe default (a daemon fed by many workers must not grow
/// without bound): `maxLayers` layers of at most `maxExperts` experts each.
public struct StatsConfiguration: Sendable, Equatable {
    /// Most layers held at once; a batch that would create more is refused with `.tooManyLayers`.
    public var maxLayers: Int = 1024
    /// Most experts a new layer may have; a decision with more is refused with `.tooManyExperts`.
    public var maxExperts: Int = 4096
    /// Window (in decisions) of the load-variance trend and of dead experts when the caller gives none.
    public var defaultWindow: Int = 100
    /// Upper bounds, in seconds, of the routing-latency histogram buckets (Prometheus histograms
    /// use base units; an implicit `+Inf` bucket follows). Normalised by the registry: non-finite
    /// values and duplicates are dropped and the rest sorted ascending.
    public var latencyBucketsSeconds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
    /// Experts per token, used with `defaultCapacityFactor` to compute a capacity when a decision
    /// carries neither `expert_capacity` nor its own `top_k`.
    public var defaultTopK: Int? = nil
    /// Capacity factor used when a decision carries neither `expert_capacity` nor its own `capacity_factor`.
    public var defaultCapacityFactor: Double? = nil

    /// Most distinct workers remembered per layer (their last-seen time and decision count).
    /// Worker names come from clients, so the table is bounded: once it is full, decisions from
    /// workers not yet in it are counted (`LayerSnapshot.untrackedWorkerDecisions`) instead of
    /// growing the table. 0 tracks no worker at all. Lowering it removes no entry already held.
    public var maxWorkersPerLayer: Int = 4096

    /// Buckets (steps, or intervals of `bucketSeconds`) kept per layer, newest first; a layer
    /// preallocates its ring of `historySteps x experts` counts when it is created, so this and
    /// the caps above bound its memory. Applies to layers created (or restored) from then on.
    public var historySteps: Int = 512
    /// Length in seconds of the arrival-time buckets of a layer whose decisions carry no `step`.
    /// Applies to layers created from then on.
    public var bucketSeconds: Int = 10
    /// Distinct workers that make a step complete (the job's world size); nil counts the workers
    /// active on the layer within the worker TTL instead.
    public var expectedWorkers: Int? = nil

    /// Largest `historySteps` accepted: 64 layers x 256 experts x 100000 steps is already 13 GiB.
    public static let maxHistorySteps = 100_000
    /// Largest `bucketSeconds` accepted (one day).
    public static let maxBucketSeconds = 86_400
    /// Largest `expectedWorkers` accepted.
    public static let maxExpectedWorkers = 1_000_000

    public init() {}

    /// `historySteps` within 1 and its maximum (the daemon's configuration refuses others).
    public var clampedHistorySteps: Int { Swift.min(Swift.max(1, historySteps), Self.maxHistorySteps) }
    /// `bucketSeconds` within 1 and its maximum.
    public var clampedBucketSeconds: Int { Swift.min(Swift.max(1, bucketSeconds), Self.maxBucketSeconds) }

    /// The bucket bounds as the registry uses them: finite, distinct, ascending.
    var normalizedLatencyBuckets: [Double] {
        // Sorted first, so duplicates are neighbours: one array, no set.
        var bounds = [Double]()
        bounds.reserveCapacity(latencyBucketsSeconds.count)
        for v in latencyBucketsSeconds where v.isFinite { bounds.append(v) }
        bounds.sort()
        var kept = 0
        for i in bounds.indices where kept == 0 || bounds[i] != bounds[kept - 1] {
            bounds[kept] = bounds[i]
            kept += 1
        }
        bounds.removeLast(bounds.count - kept)
        return bounds
    }
}
