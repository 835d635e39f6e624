import Foundation
import HTTPCore
import HTTPServer
import Logging
import Synchronization

/// The version reported by `--version` and `moe_metricsd_build_info`.
public enum BuildInfo {
    public static let version = "0.1.0"
}

/// Runs the daemon: binds, serves, and stops gracefully on SIGTERM or SIGINT.
///
/// Signals are taken synchronously with `sigwait(3)` on the main thread after blocking them in
/// every thread (the mask is set before the server starts its threads, which inherit it), so no
/// work ever happens in an asynchronous signal handler.
public enum Daemon {
    /// Serves until SIGTERM or SIGINT; returns the process exit status (0 after a clean stop,
    /// 1 if the listener cannot start).
    public static func run(configuration: DaemonConfiguration, logger: Logger) -> Int32 {
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

        while true {
            var received: Int32 = 0
            guard sigwait(&signals, &received) == 0 else { continue }
            if received == SIGHUP {
                logger.notice("SIGHUP received: configuration reload is not supported yet; keeping the running configuration")
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
