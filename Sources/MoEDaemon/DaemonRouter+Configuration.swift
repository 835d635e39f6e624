import Foundation
import HTTPCore
import Logging
import MoEStats

extension DaemonRouter {
    /// What a reload may change without restarting the listener.
    public struct Settings: Sendable, Equatable {
        public var decoderLimits = DecisionDecoder.Limits()
        public var expertSeries = ExpertSeries.all
        /// Token POST and DELETE require (and reads, with `authReads`); nil for none.
        public var authToken: AuthToken?
        public var authReads = false
        /// Seconds of silence after which a worker is stale; nil for never.
        public var workerTTLSeconds: Double?
        /// Seconds without an update after which a layer leaves /metrics; nil for never.
        public var layerTTLSeconds: Double?
        /// Largest body accepted after gzip content decoding (`http.max_body_bytes`), so a small
        /// compressed body cannot expand past the limit the transport enforces on the wire.
        public var maxBodyBytes = HTTPLimits().maxBodyBytes
        /// Most plans computed at once (`placement.max_concurrent_plans`).
        public var maxConcurrentPlans = 2
        public init() {}
    }
}

extension DaemonRouter {
    /// Builds the router for a configuration (the registry included).
    public convenience init(
        configuration c: DaemonConfiguration, version: String, logger: Logger,
        openConnections: @escaping @Sendable () -> Int = { 0 },
        bufferedBytes: @escaping @Sendable () -> Int = { 0 },
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) {
        self.init(
            registry: LayerRegistry(configuration: c.statsConfiguration), settings: c.routerSettings(token: nil),
            version: version, logger: logger, openConnections: openConnections, bufferedBytes: bufferedBytes,
            clock: clock)
    }
}

extension DaemonConfiguration {
    /// The statistics engine's part of the configuration (0 means "unknown" for the capacity defaults).
    public var statsConfiguration: StatsConfiguration {
        var s = StatsConfiguration()
        s.maxLayers = maxLayers
        s.maxExperts = maxExperts
        s.defaultWindow = defaultWindow
        s.latencyBucketsSeconds = latencyBucketsSeconds
        s.defaultTopK = defaultTopK > 0 ? defaultTopK : nil
        s.defaultCapacityFactor = defaultCapacityFactor > 0 ? defaultCapacityFactor : nil
        s.maxWorkersPerLayer = maxWorkersPerLayer
        s.historySteps = historySteps
        s.bucketSeconds = bucketSeconds
        s.expectedWorkers = expectedWorkers > 0 ? expectedWorkers : nil
        return s
    }

    /// The router's part of the configuration, with the token resolved by `AuthToken.resolve`.
    public func routerSettings(token: AuthToken?) -> DaemonRouter.Settings {
        var r = DaemonRouter.Settings()
        r.authToken = token
        r.authReads = authReads
        r.workerTTLSeconds = workerTTLSeconds > 0 ? workerTTLSeconds : nil
        r.layerTTLSeconds = layerTTLSeconds > 0 ? layerTTLSeconds : nil
        r.decoderLimits.maxExperts = maxExperts
        r.decoderLimits.maxDecisions = maxDecisionsPerRequest
        r.decoderLimits.maxAssignments = maxAssignments
        r.decoderLimits.maxDepth = maxJSONDepth
        r.expertSeries = expertSeries
        r.maxBodyBytes = http.maxBodyBytes
        r.maxConcurrentPlans = maxConcurrentPlans
        return r
    }
}
