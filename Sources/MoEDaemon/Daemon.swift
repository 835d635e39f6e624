import Foundation
import HTTPCore
import HTTPServer
import Logging
import MoEPlacement
import MoEStats
import SessionCore
import Synchronization

/// The version reported by `--version` and `moe_metricsd_build_info`.
public enum BuildInfo {
    public static let version = "0.1.0"
}

/// Runs the daemon: binds, serves, reloads on SIGHUP and stops gracefully on SIGTERM or SIGINT.
///
/// Signals are taken synchronously with `sigwait(3)` on the main thread after blocking them in
/// every thread (the mask is set before the server starts its threads, which inherit it), so no
/// work ever happens in an asynchronous signal handler.
public enum Daemon {
    /// Serves until SIGTERM or SIGINT; returns the process exit status (0 after a clean stop,
    /// 1 if the listener cannot start or the final save of the state file failed, 2 if the
    /// state file's directory cannot hold it or the file cannot be restored). `sources` are read again on SIGHUP; `logLevel` is the
    /// control the process' log handlers obey.
    ///
    /// With a state file, its directory is checked for a temporary file and the layers are
    /// restored from it before the listener starts (a file that cannot be restored stops the
    /// start with status 2, unless `discardCorruptState` sets it aside), saved every `snapshot_interval` seconds, and saved once more after the last request.
    public static func run(
        configuration: DaemonConfiguration, sources: ConfigurationSources, discardCorruptState: Bool = false,
        logLevel: LineLogHandler.LevelControl, logger: Logger
    ) -> Int32 {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGHUP)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        signal(SIGPIPE, SIG_IGN)

        var configuration = configuration
        configuration.http.maxConnections = fitConnections(configuration, logger: logger)
        // The router is built before the server it serves: it reads the server's load through this.
        let served = Mutex<HTTPServer?>(nil)
        let router = DaemonRouter(
            configuration: configuration, version: BuildInfo.version, logger: logger,
            openConnections: { served.withLock { $0?.openConnections ?? 0 } },
            bufferedBytes: { served.withLock { $0?.bufferedBytes ?? 0 } })
        let server = HTTPServer(configuration: configuration.serverConfiguration(logger: logger), handler: router)
        served.withLock { $0 = server }

        do {
            let token = try AuthToken.resolve(configuration, environment: sources.environment)
            router.update(settings: configuration.routerSettings(token: token))
            if token != nil { logger.info("writes require a bearer token") }
        } catch {
            logger.critical("invalid configuration: \(error.message)")
            return 2
        }

        var persistence: Persistence?
        if !configuration.stateFile.isEmpty {
            let file = StateFile(path: configuration.stateFile)
            // Refuse to start when saves cannot succeed, rather than losing everything at the first one.
            do throws(StateFile.IOError) {
                try file.checkWritable()
            } catch {
                logger.critical("\(error.description)")
                return 2
            }
            for leftover in file.removeLeftoverTemporaries() {
                logger.warning("removed \(leftover), left by a save that was interrupted")
            }
            guard restore(from: file, into: router, discardCorrupt: discardCorruptState, logger: logger) else {
                return 2
            }
            // A file that is still there was restored whole: it already holds the current state.
            let p = Persistence(
                file: file, router: router, logger: logger,
                upToDate: FileManager.default.fileExists(atPath: file.path))
            persistence = p
        }
        guard loadPlacementFile(configuration.placementFile, into: router, logger: logger) else { return 2 }
        persistence?.start(interval: configuration.snapshotIntervalSeconds)

        let addresses: [String]
        do {
            addresses = try server.start()
        } catch {
            logger.critical("cannot listen: \(error)")
            return 1
        }
        // Shown whatever the log level: with port 0 this line is the only way to learn the port.
        for address in addresses { LineLogHandler.emit(.notice, "listening on \(address)") }
        router.isReady = true

        var running = configuration
        while true {
            var received: Int32 = 0
            guard sigwait(&signals, &received) == 0 else { continue }
            if received == SIGHUP {
                running = reload(
                    running, sources: sources, server: server, router: router, logLevel: logLevel, logger: logger)
                continue
            }
            logger.info("received \(received == SIGTERM ? "SIGTERM" : "SIGINT"), shutting down")
            break
        }
        router.isReady = false
        server.shutdown()
        var status: Int32 = 0
        if let persistence {
            persistence.stop()
            if persistence.save() == .failed {
                // A clean status would tell systemd and scripts that nothing was lost.
                logger.error("the final state was not saved: decisions since the last save are lost")
                status = 1
            }
        }
        logger.info("stopped")
        return status
    }
}

extension Daemon {
    /// `http.max_connections`, or fewer when the open-file limit cannot hold that many (after
    /// raising its soft value to the hard one), with a warning that says what to raise.
    static func fitConnections(_ c: DaemonConfiguration, logger: Logger) -> Int {
        let requested = c.http.maxConnections
        guard let soft = FileDescriptorLimit.raiseSoftLimit() else { return requested }
        let loops = c.eventLoops > 0 ? c.eventLoops : HTTPServerConfiguration().eventLoops
        let cap = FileDescriptorLimit.fittingCap(
            requested: requested, softLimit: soft, eventLoops: loops, listeners: c.listen.count)
        if cap < requested {
            logger.warning(
                "http.max_connections \(requested) does not fit the open-file limit of \(soft) (ulimit -n, LimitNOFILE=); serving at most \(cap) connections, 503 past them"
            )
        }
        return cap
    }

    /// Reads the configuration again and applies what can change without dropping a connection
    /// or a statistic: HTTP limits (for connections accepted from now on), decoder limits,
    /// per-expert series, caps and defaults of the engine, the log level. An invalid new
    /// configuration is refused whole and the running one kept. Returns the configuration in force.
    static func reload(
        _ old: DaemonConfiguration, sources: ConfigurationSources, server: HTTPServer,
        router: DaemonRouter, logLevel: LineLogHandler.LevelControl, logger: Logger
    ) -> DaemonConfiguration {
        var new: DaemonConfiguration
        do {
            new = try DaemonConfiguration.load(sources)
            new.http.maxConnections = fitConnections(new, logger: logger)
        } catch {
            logger.error("SIGHUP: new configuration refused, keeping the running one: \(error.message)")
            return old
        }
        var kept: [String] = []
        if new.listen != old.listen { kept.append("listen") }
        if new.eventLoops != old.eventLoops { kept.append("http.event_loops") }
        if new.latencyBucketsSeconds != old.latencyBucketsSeconds {
            kept.append("stats.latency_buckets_seconds (for existing layers)")
        }
        let token: AuthToken?
        do {
            token = try AuthToken.resolve(new, environment: sources.environment)
        } catch {
            logger.error("SIGHUP: new configuration refused, keeping the running one: \(error.message)")
            return old
        }
        if new.stateFile != old.stateFile { kept.append("state_file") }
        if new.snapshotIntervalSeconds != old.snapshotIntervalSeconds { kept.append("snapshot_interval") }
        if new.placementFile != old.placementFile { kept.append("placement.file") }
        server.update(limits: new.http)
        router.update(settings: new.routerSettings(token: token))
        router.registry.update(configuration: new.statsConfiguration)
        logLevel.current = new.logLevel
        if !kept.isEmpty {
            logger.warning("SIGHUP: these settings take effect only after a restart: \(kept.joined(separator: ", "))")
        }
        logger.info("configuration reloaded")
        return new
    }
}

extension Daemon {
    /// Restores the layers from `file`; false when the start must stop.
    static func restore(from file: StateFile, into router: DaemonRouter, discardCorrupt: Bool, logger: Logger) -> Bool {
        let bytes: [UInt8]?
        do {
            bytes = try file.read()
        } catch {
            logger.critical("\(error.description)")
            return false
        }
        guard let bytes else {
            logger.info("no state file at \(file.path) yet: starting empty")
            return true
        }
        do throws(StateError) {
            let saved = try LayerRegistry.readState(bytes)
            // Checked before anything is applied, as the layers are: a file whose placement cannot
            // be read is refused whole.
            var placement: PlacementSpec? = nil
            if let json = saved.placement {
                do throws(PlacementError) {
                    placement = try PlacementSpec.decode(json)
                } catch {
                    throw StateError(.inconsistent, "state file inconsistent: its placement: \(error.description)")
                }
            }
            router.registry.restore(saved)
            router.placement = placement
            logger.info(
                "restored \(router.registry.layerCount) layers\(placement == nil ? "" : " and the placement") from \(file.path)"
            )
            return true
        } catch {
            guard discardCorrupt else {
                logger.critical(
                    "state file \(file.path) cannot be restored (\(error.kind.rawValue)): \(error.message). It was left untouched; start with --discard-corrupt-state to move it aside and start empty."
                )
                return false
            }
            do {
                let aside = try file.setAside()
                logger.warning(
                    "state file \(file.path) cannot be restored (\(error.message)); moved to \(aside), starting empty")
                return true
            } catch {
                logger.critical("\(error.description)")
                return false
            }
        }
    }
}

extension Daemon {
    /// Sets the placement of `placement.file` (empty: none) unless the state file restored one;
    /// false when the start must stop: the file cannot be read, or its placement is invalid or
    /// does not fit a restored layer (the message names the rule and the layer, as a 422 would).
    static func loadPlacementFile(_ path: String, into router: DaemonRouter, logger: Logger) -> Bool {
        guard !path.isEmpty else { return true }
        // A placement restored from the state file was set (or kept) at run time, after this
        // file was written: it wins, so a restart does not undo a rebalance applied with PUT.
        if router.placement != nil {
            logger.info("placement.file \(path) not applied: the state file held a placement")
            return true
        }
        do throws(ConfigurationError) {
            guard let spec = try readPlacementFile(path) else { return true }
            // What the file alone cannot tell: whether the placement fits the restored layers.
            do throws(PlacementError) {
                router.placement = try router.checkedPlacement(spec)
            } catch {
                throw ConfigurationError("placement.file \(path) is not a valid placement: \(error.description)")
            }
        } catch {
            logger.critical("\(error.message)")
            return false
        }
        logger.info("placement set from \(path)")
        return true
    }

    /// The placement `placement.file` names, read and decoded but not yet checked against any
    /// layer; nil for an empty path. The error names the file and the rule that failed.
    static func readPlacementFile(_ path: String) throws(ConfigurationError) -> PlacementSpec? {
        guard !path.isEmpty else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("placement.file \(path) cannot be read")
        }
        do throws(PlacementError) {
            return try PlacementSpec.decode([UInt8](data))
        } catch {
            throw ConfigurationError("placement.file \(path) is not a valid placement: \(error.description)")
        }
    }

    /// `--check-config`'s check of `placement.file`: readable and a valid placement on its own
    /// (whether it fits the layers is known only at start, after the state file is restored).
    public static func checkPlacementFile(_ configuration: DaemonConfiguration) throws(ConfigurationError) {
        _ = try readPlacementFile(configuration.placementFile)
    }
}

/// Periodic saves of the state file on a queue of their own (never on an event loop).
///
/// The Dispatch timer is created only by `start` and resumed at once: libdispatch traps when a
/// source is released while suspended (a source is created suspended), so a `Persistence`
/// dropped before `start` must own no timer at all. `deinit` cancels a running timer.
///
/// `@unchecked Sendable` because of the timer, which is not marked `Sendable`: `start` and `stop`
/// are called from one thread (the one that runs the daemon), and every save runs on `queue`,
/// which is what guards `savedGeneration`; the other fields are immutable and `Sendable`. Debug
/// builds check both claims.
final class Persistence: @unchecked Sendable {
    let file: StateFile
    let router: DaemonRouter
    let logger: Logger
    private let queue = DispatchQueue(label: "moe-metricsd.state")
    private var timer: DispatchSourceTimer?
    #if DEBUG
    /// The thread of the first `start` or `stop`; the other must come from it too.
    private var owner = ThreadOwner()
    #endif

    /// What a call to `save` did.
    enum SaveOutcome: Equatable {
        case written
        /// Nothing was ingested or reset since the last successful write.
        case unchanged
        case failed
    }

    /// The router generation the file on disk holds; nil when it holds none yet.
    private var savedGeneration: UInt64?

    /// `upToDate`: the file already holds the router's current state (it was just restored).
    init(file: StateFile, router: DaemonRouter, logger: Logger, upToDate: Bool = false) {
        self.file = file
        self.router = router
        self.logger = logger
        savedGeneration = upToDate ? router.generation : nil
    }

    deinit { timer?.cancel() }

    func start(interval: Double) {
        #if DEBUG
        owner.check("Persistence.start")
        #endif
        guard timer == nil else { return }
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(100))
        t.setEventHandler { [weak self] in _ = self?.saveOnQueue() }
        t.resume()
        timer = t
    }

    /// Stops the periodic saves and waits for one in progress.
    func stop() {
        #if DEBUG
        owner.check("Persistence.stop")
        #endif
        timer?.cancel()
        timer = nil
        queue.sync {}
    }

    /// Exports every layer and writes the file, unless nothing changed since the last write;
    /// `.failed` (and an error logged) if writing failed.
    @discardableResult
    func save() -> SaveOutcome {
        #if DEBUG
        dispatchPrecondition(condition: .notOnQueue(queue))  // sync onto the queue it runs on deadlocks
        #endif
        return queue.sync { saveOnQueue() }
    }

    private func saveOnQueue() -> SaveOutcome {
        #if DEBUG
        dispatchPrecondition(condition: .onQueue(queue))  // `queue` is what guards `savedGeneration`
        #endif
        // Read before exporting: a change made during the export moves the generation on, so
        // the next save writes again.
        let generation = router.generation
        if generation == savedGeneration { return .unchanged }
        let bytes = router.registry.exportState(placement: router.savedPlacement)
        do {
            try file.write(bytes)
            savedGeneration = generation
            logger.debug("state saved", metadata: ["file": "\(file.path)", "bytes": "\(bytes.count)"])
            return .written
        } catch {
            logger.error("state not saved: \(error.description)")
            return .failed
        }
    }
}

extension DaemonConfiguration {
    func serverConfiguration(logger: Logger) -> HTTPServerConfiguration {
        var s = HTTPServerConfiguration()
        s.listen = listen
        s.limits = http
        if eventLoops > 0 { s.eventLoops = eventLoops }
        s.shutdownDeadlineSeconds = shutdownDeadlineSeconds
        s.log = { line in logger.debug("\(line)") }
        return s
    }
}
