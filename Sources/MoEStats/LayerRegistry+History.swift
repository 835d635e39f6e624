/// The step views: a layer's newest buckets, windows over them, and the newest complete step.
/// Each copies (or sums) under the layer's lock only what it reports; the statistics are computed
/// from the copy afterwards, by the rows of `LayerMeasure`.
///
/// `now` and `workerTTL` decide completeness when `StatsConfiguration.expectedWorkers` is not
/// set: a bucket is complete once as many workers reported it as reported to the layer within
/// the TTL (every remembered worker without one).
extension LayerRegistry {
    /// The newest `last` buckets of `layer` (at least 1), oldest first, with their per-expert
    /// counts (the statistics need them whether or not they are shown); nil for an unknown layer
    /// or one without a decision.
    public func history(_ layer: String, last: Int, now: Double, workerTTL: Double?) -> LayerHistory? {
        let (found, configuration) = engine(layer)
        guard let engine = found else { return nil }
        return engine.state.withLock { s -> LayerHistory? in
            guard s.totalRoutings > 0, let bucketing = s.history.bucketing else { return nil }
            let h = s.history
            let slots = h.newestSlots(Swift.max(1, last))
            return LayerHistory(
                layer: engine.name, experts: s.experts, bucketing: bucketing, bucketSeconds: h.bucketSeconds,
                buckets: slots.map { h.bucket($0) },
                expectedWorkers: s.expectedWorkers(configuration.expectedWorkers, now: now, ttl: workerTTL),
                lateDecisions: h.lateDecisions, unbucketedDecisions: h.unbucketedDecisions, capacity: h.capacity)
        }
    }

    /// The newest `steps` buckets of `layer` summed; nil for an unknown layer or one without a decision.
    public func window(_ layer: String, steps: Int, now: Double, workerTTL: Double?) -> StepWindow? {
        let (found, configuration) = engine(layer)
        guard let engine = found else { return nil }
        return Self.window(engine, steps: steps, expected: configuration.expectedWorkers, now: now, ttl: workerTTL)
    }

    /// Every layer's window of the newest `steps` buckets, sorted by layer name, summed under
    /// every layer's lock at once: a batch is in every layer's window or in none.
    public func windows(steps: Int, now: Double, workerTTL: Double?) -> [StepWindow] {
        withEveryLayerLocked { engine, s, c in
            Self.window(engine.name, &s, steps: steps, expected: c.expectedWorkers, now: now, ttl: workerTTL)
        }
    }

    private static func window(
        _ engine: LayerStatistics, steps: Int, expected: Int?, now: Double, ttl: Double?
    ) -> StepWindow? {
        engine.state.withLock { s in window(engine.name, &s, steps: steps, expected: expected, now: now, ttl: ttl) }
    }

    /// One layer's window, with its lock held.
    private static func window(
        _ name: String, _ s: inout LayerState, steps: Int, expected: Int?, now: Double, ttl: Double?
    ) -> StepWindow? {
        guard s.totalRoutings > 0, let bucketing = s.history.bucketing else { return nil }
        let h = s.history
        let slots = h.newestSlots(Swift.max(1, steps))
        let expectedWorkers = s.expectedWorkers(expected, now: now, ttl: ttl)
        let (totals, complete) = h.sum(slots, expected: expectedWorkers)
        return StepWindow(
            layer: name, experts: s.experts, bucketing: bucketing, steps: slots.count,
            from: slots.first.map { h.label(h.buckets[$0].key) }, to: slots.last.map { h.label(h.buckets[$0].key) },
            completeSteps: complete, expectedWorkers: expectedWorkers, totals: totals)
    }

    /// Per layer, sorted by name: the newest complete bucket, and with `recent` the MaxVio of the
    /// newest `StepHeadline.recentSteps` buckets summed.
    /// Taken under every layer's lock at once, as the other readers of several layers are.
    public func stepHeadlines(now: Double, workerTTL: Double?, recent: Bool) -> [StepHeadline] {
        let copies = withEveryLayerLocked { engine, s, c -> (String, CompleteStep?, [UInt64]?)? in
            guard s.totalRoutings > 0 else { return nil }
            let complete = s.lastCompleteStep(expected: c.expectedWorkers, now: now, ttl: workerTTL)
            let sums =
                recent
                ? s.history.sum(s.history.newestSlots(StepHeadline.recentSteps), expected: .max).totals.expertTokens
                : nil
            return (engine.name, complete, sums)
        }
        return copies.map { name, complete, sums in
            StepHeadline(
                layer: name, lastComplete: complete, recentMaxViolation: sums.flatMap { Measures.maxViolation($0) })
        }
    }
}
