import HTTPCore
import HTTPServer

// The bare-server benchmark scenario: our HTTP server with no daemon routes, answering 204 to
// every request, so the suite can compare the transport and HTTP/1.1 layers alone against nginx's
// `return 204`. The difference between this and the daemon's ingest figure is what the routes,
// decoding and recording cost per request.
//
//   BareServer [HOST:PORT] [EVENT_LOOPS]     default 127.0.0.1:0, one loop per core
//
// Prints "listening on HOST:PORT" on standard error once it accepts connections (port 0: the
// port the system chose) and stops cleanly on SIGTERM or SIGINT, like the daemon.
#if canImport(Glibc)
import Glibc
#endif

/// Answers 204 No Content to anything: the cheapest correct answer, as nginx's peer config does.
struct NoContentHandler: HTTPHandler {
    func handle(_ request: HTTPRequest) -> HTTPResponse { HTTPResponse(status: 204) }
}

/// One line on standard error, written whole (the C `stderr` global is not concurrency-safe).
func say(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

let arguments = CommandLine.arguments.dropFirst()
var configuration = HTTPServerConfiguration()
configuration.listen = [arguments.first ?? "127.0.0.1:0"]
if arguments.count > 1, let loops = Int(arguments[arguments.startIndex + 1]), loops > 0 {
    configuration.eventLoops = loops
}
// The benchmark posts bodies of about 1.5 KB; the default limits are the daemon's.
configuration.shutdownDeadlineSeconds = 2

// Blocked before the server starts its threads (they inherit the mask), then taken with sigwait
// on this thread: no work in an asynchronous signal handler.
var signals = sigset_t()
sigemptyset(&signals)
sigaddset(&signals, SIGTERM)
sigaddset(&signals, SIGINT)
pthread_sigmask(SIG_BLOCK, &signals, nil)
signal(SIGPIPE, SIG_IGN)

let server = HTTPServer(configuration: configuration, handler: NoContentHandler())
do {
    let addresses = try server.start()
    for address in addresses {
        say("listening on \(address)")
    }
} catch {
    say("BareServer: \(error)")
    exit(1)
}
var received: Int32 = 0
while sigwait(&signals, &received) != 0 {}
server.shutdown()
exit(0)
