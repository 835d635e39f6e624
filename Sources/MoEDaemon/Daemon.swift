import Foundation
import HTTPCore
import HTTPServer
import Logging
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
    /// 1 if the listener cannot start). `sources` are read again on SIGHUP; `logLevel` is the
    /// control the process' log handlers obey.
    public static func run(configuration: DaemonConfiguration, sources: ConfigurationSources,
                           logLevel: LineLogHandler.LevelControl, logger: Logger) -> Int32 {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGHUP)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        signal(SIGPIPE, SIG_IGN)

        let connections = Mutex<(@Sendable () -> Int)?>(nil)
        let router = DaemonRouter(configuration: configuration, version: BuildInfo.version, logger: logger,
                                  openConnections: { connections.withLock { $0?() ?? 0 } })
        let server = HTTPServer(configuration: configuration.serverConfiguration(logger: logger), handler: router)
        connections.withLock { $0 = { server.openConnections } }

        let addresses: [String]
        do {
            addresses = try server.start()
        } catch {
            logger.critical("cannot listen: \(error)")
            return 1
        }
        for address in addresses { logger.info("listening on \(address)") }
        router.isReady = true

        var running = configuration
        while true {
            var received: Int32 = 0
            guard sigwait(&signals, &received) == 0 else { continue }
            if received == SIGHUP {
                running = reload(running, sources: sources, server: server, router: router, logLevel: logLevel, logger: logger)
                continue
            }
            logger.info("received \(received == SIGTERM ? "SIGTERM" : "SIGINT"), shutting down")
            break
        }
        router.isReady = false
        server.shutdown()
        logger.info("stopped")
        return 0
    }
}

extension Daemon {
    /// Reads the configuration again and applies what can change without dropping a connection
    /// or a statistic: HTTP limits (for connections accepted from now on), decoder limits,
    /// per-expert series, caps and defaults of the engine, the log level. An invalid new
    /// configuration is refused whole and the running one kept. Returns the configuration in force.
    static func reload(_ old: DaemonConfiguration, sources: ConfigurationSources, server: HTTPServer,
                       router: DaemonRouter, logLevel: LineLogHandler.LevelControl, logger: Logger) -> DaemonConfiguration {
        let new: DaemonConfiguration
        do {
            new = try DaemonConfiguration.load(sources)
        } catch {
            logger.error("SIGHUP: new configuration refused, keeping the running one: \(error.message)")
            return old
        }
        var kept: [String] = []
        if new.listen != old.listen { kept.append("listen") }
        if new.eventLoops != old.eventLoops { kept.append("http.event_loops") }
        if new.latencyBucketsSeconds != old.latencyBucketsSeconds { kept.append("stats.latency_buckets_seconds (for existing layers)") }
        server.update(limits: new.http)
        router.update(settings: new.routerSettings)
        router.registry.update(configuration: new.statsConfiguration)
        logLevel.current = new.logLevel
        if !kept.isEmpty {
            logger.warning("SIGHUP: these settings take effect only after a restart: \(kept.joined(separator: ", "))")
        }
        logger.info("configuration reloaded")
        return new
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
