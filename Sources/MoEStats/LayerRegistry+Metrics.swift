extension LayerRegistry {
    /// What `/metrics` exports of every layer, sorted by layer name.
    ///
    /// Unlike `snapshots()`, nothing the exposition does not use is copied under a layer's lock
    /// (no latency or variance history, no worker names): a scrape holds each lock only for a
    /// few array copies, and the derived values are computed after the lock is released.
    /// `now` and `workerTTL` decide which step is the newest complete one (see `history`).
    public func metricsViews(now: Double = 0, workerTTL: Double? = nil) -> [LayerMetrics] {
        let configuration = configuration
        let window = configuration.defaultWindow
        var views = [LayerMetrics]()
        for engine in sortedEngines() {
            let copy = engine.state.withLock { s -> LayerMetrics.Copy? in
                // A layer created by a batch still being applied has nothing to show yet.
                guard s.totalRoutings > 0 else { return nil }
                return LayerMetrics.copy(
                    layer: engine.name, state: s, defaultWindow: window,
                    expectedWorkers: configuration.expectedWorkers, now: now, ttl: workerTTL)
            }
            if let copy { views.append(LayerMetrics(copy: copy)) }
        }
        return views
    }
}
