extension LayerRegistry {
    /// What `/metrics` exports of every layer, sorted by layer name.
    ///
    /// Unlike `snapshots()`, nothing the exposition does not use is copied under a layer's lock
    /// (no latency or variance history, no worker names): a scrape holds the locks only for a
    /// few array copies per layer, and the derived values are computed after they are released.
    /// `now` and `workerTTL` decide which step is the newest complete one (see `history`).
    public func metricsViews(now: Double = 0, workerTTL: Double? = nil) -> [LayerMetrics] {
        // Under every layer's lock at once, as `snapshots()`: a batch is in every layer's series or in none.
        let copies = withEveryLayerLocked { engine, s, configuration -> LayerMetrics.Copy? in
            // A layer created by a batch still being applied has nothing to show yet.
            guard s.totalRoutings > 0 else { return nil }
            return LayerMetrics.copy(
                layer: engine.name, state: s, defaultWindow: configuration.defaultWindow,
                expectedWorkers: configuration.expectedWorkers, now: now, ttl: workerTTL)
        }
        return copies.map { LayerMetrics(copy: $0) }
    }
}
