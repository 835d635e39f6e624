/// What `/metrics` exports of one layer, and nothing more.
///
/// A scrape of a large model renders tens of thousands of series, and scrapes come every few
/// seconds; the JSON summary (`LayerSnapshot.summary(window:)`) computes far more than the
/// exposition uses: it sorts up to 1000 latency samples for percentiles, fits the load-variance
/// trend, and lists workers and dead experts one by one. This view copies only the layer's raw
/// totals and its workers' times under the lock; its gauges are the rows of `LayerMeasure`
/// computed from those totals (the same functions the summary calls, with the same operands), so
/// a series never differs from the JSON field it mirrors. The totals' fields read as the view's
/// own (`view.totalTokens`).
///
/// A class: the renderer passes each view to a closure per family, and a reference is one
/// retain where the value's dozen arrays would be a dozen.
@dynamicMemberLookup
public final class LayerMetrics: Sendable {
    /// The totals and the per-expert utilization derived from them, at the default window.
    public let input: LayerMeasureInput
    /// The latency histogram in Prometheus form.
    public let latencyHistogram: LatencyHistogram
    /// Unix seconds of each remembered worker's newest decision (order irrelevant: only counted).
    public let workerLastSeen: [Double]
    /// The newest complete step and the decisions too old for the history.
    public let lastCompleteStep: CompleteStep?
    public let lateDecisions: UInt64

    /// The raw numbers copied under a layer's lock.
    struct Copy: Sendable {
        var totals: LayerTotals
        var workerLastSeen: [Double]
        var lastCompleteStep: CompleteStep?
        var lateDecisions: UInt64
    }

    /// Copies only what the view needs from the live state: called under the layer's lock, so it
    /// copies and computes nothing; `init(copy:)` does the arithmetic outside.
    static func copy(
        layer: String, state s: LayerState, defaultWindow: Int, expectedWorkers: Int?, now: Double, ttl: Double?
    ) -> Copy {
        var lastSeen = [Double]()
        lastSeen.reserveCapacity(s.workers.count)
        for r in s.workers.values { lastSeen.append(r.lastSeen) }
        return Copy(
            totals: LayerTotals(layer: layer, state: s, defaultWindow: defaultWindow), workerLastSeen: lastSeen,
            lastCompleteStep: s.lastCompleteStep(expected: expectedWorkers, now: now, ttl: ttl),
            lateDecisions: s.history.lateDecisions)
    }

    init(copy c: Copy) {
        input = LayerMeasureInput(totals: c.totals, window: c.totals.defaultWindow, history: nil)
        latencyHistogram = c.totals.latencyHistogram
        workerLastSeen = c.workerLastSeen
        lastCompleteStep = c.lastCompleteStep
        lateDecisions = c.lateDecisions
    }

    /// The view of a full snapshot: equal, series by series, to what its summary reports.
    public convenience init(_ s: LayerSnapshot) {
        var lastSeen = [Double]()
        lastSeen.reserveCapacity(s.workers.count)
        for w in s.workers { lastSeen.append(w.lastSeen) }
        self.init(
            copy: Copy(
                totals: s.totals, workerLastSeen: lastSeen, lastCompleteStep: s.lastCompleteStep,
                lateDecisions: s.lateDecisions))
    }

    @inlinable
    public subscript<T>(dynamicMember path: KeyPath<LayerTotals, T>) -> T { input.totals[keyPath: path] }

    /// Per expert, the mean share of each decision's tokens it received (the summary's
    /// `expert_utilization`).
    public var expertUtilization: [Double] { input.utilization }

    /// The value of `measure`'s gauge for this layer (nil where the layer has none, or for a row
    /// without a gauge or with one value per expert).
    public func gaugeValue(_ measure: LayerMeasure) -> Double? {
        guard let gauge = measure.gauge else { return nil }
        return measure.unitValue(input).map { $0 * gauge.scale }
    }

    /// How many workers reported within `ttl` seconds of `now` and how many did not: the same
    /// split as `LayerSnapshot.workerCounts(now:ttl:)`.
    public func workerCounts(now: Double, ttl: Double?) -> WorkerCounts {
        var stale = 0
        for lastSeen in workerLastSeen where WorkerActivity.isStale(lastSeen: lastSeen, now: now, ttl: ttl) {
            stale += 1
        }
        return WorkerCounts(active: workerLastSeen.count - stale, stale: stale)
    }

    /// A measure of the newest complete step, by the same row as the run-wide gauge.
    public func lastCompleteStepValue(_ measure: LayerMeasure) -> Double? {
        guard let step = lastCompleteStep else { return nil }
        return measure.unitValue(step.totals.measureInput(layer: input.totals.layer, experts: input.totals.experts))
    }

    /// Whether nobody updated the layer for longer than `ttl` seconds at `now`.
    public func isIdle(now: Double, ttl: Double) -> Bool { input.totals.isIdle(now: now, ttl: ttl) }
}
