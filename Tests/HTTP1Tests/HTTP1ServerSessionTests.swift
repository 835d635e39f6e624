import Dispatch
import HTTP1
import HTTPCore
import SessionCore
import Testing

/// A fixed wall clock: 1994-11-06 08:49:37 UTC, the example date of RFC 9110 section 5.6.7.
func fixedDates() -> HTTPDateCache { HTTPDateCache(wallClock: { 784_111_777 }) }
let second: UInt64 = 1_000_000_000

/// Echoes method, path and body length; records what it saw.
final class RecordingHandler: HTTPHandler, @unchecked Sendable {
    var seen: [HTTPRequest] = []
    func handle(_ request: HTTPRequest) -> HTTPResponse {
        seen.append(request)
        if request.path == "/empty" { return HTTPResponse(status: 204) }
        return HTTPResponse(
            status: 200, headers: ["content-type": "text/plain", "connection": "keep-alive", "x-bad": "a\r\nb"],
            body: Array("\(request.method) \(request.path) \(request.body.count)".utf8))
    }
}

struct SessionRun {
    let session: HTTP1ServerSession
    let handler = RecordingHandler()
    var output: [UInt8] = []

    init(limits: HTTPLimits = HTTPLimits(), now: UInt64 = 0, budget: BufferBudget? = nil) {
        session = HTTP1ServerSession(
            handler: handler, limits: limits, now: now, dateCache: fixedDates(), budget: budget)
    }

    mutating func send(_ text: String, now: UInt64 = 0) -> SessionDisposition {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { session.receive($0, now: now, output: &output) }
    }

    mutating func take() -> String {
        defer { output = [] }
        return String(decoding: output, as: UTF8.self)
    }
}

@Suite struct HTTP1ServerSessionTests {
    @Test func dateIsIMFFixdate() {
        #expect(HTTPDateCache.imfFixdate(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDateCache.imfFixdate(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
    }

    @Test func dateCacheFormatsOncePerSecond() {
        nonisolated(unsafe) var t = 100
        let cache = HTTPDateCache(wallClock: { t })
        let a = cache.current
        #expect(String(decoding: a, as: UTF8.self) == "Thu, 01 Jan 1970 00:01:40 GMT")
        t = 101
        #expect(String(decoding: cache.current, as: UTF8.self) == "Thu, 01 Jan 1970 00:01:41 GMT")
    }

    @Test func keepAliveResponsesAreFramedAndDated() {
        var run = SessionRun()
        #expect(run.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n") == .keepOpen)
        #expect(
            run.take() == "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-type: text/plain\r\n"
                + "content-length: 8\r\n\r\nGET /a 0")
        #expect(run.send("POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc") == .keepOpen)
        #expect(run.take().hasSuffix("content-length: 9\r\n\r\nPOST /b 3"))
    }

    @Test func handlerFramingAndUnsafeHeadersAreDropped() {
        var run = SessionRun()
        _ = run.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        let text = run.take()
        #expect(!text.contains("keep-alive"))
        #expect(!text.contains("x-bad"))
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() {
        var run = SessionRun()
        let d = run.send(
            "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        #expect(d == .keepOpen)
        let text = run.take()
        let bodies = ["GET /1 0", "POST /2 2", "GET /3 0"]
        var position = text.startIndex
        for body in bodies {
            guard let r = text[position...].firstRange(of: body) else {
                Issue.record("missing \(body) in order: \(text)"); return
            }
            position = r.upperBound
        }
        #expect(run.handler.seen.map(\.path) == ["/1", "/2", "/3"])
    }

    @Test func unreadBodyDoesNotMisframeTheNextRequest() {
        var run = SessionRun()
        // The handler never looks at the body; the body bytes must not be read as a request.
        _ = run.send(
            "POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n\r\n")
        _ = run.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(run.handler.seen.map(\.path) == ["/ignored", "/next"])
    }

    @Test func headGetsHeadersWithoutBody() {
        var run = SessionRun()
        _ = run.send("HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n")
        let text = run.take()
        #expect(text.hasSuffix("content-length: 9\r\n\r\n"))
        #expect(!text.contains("HEAD /a 0"))
    }

    @Test func noContentHasNoContentLength() {
        var run = SessionRun()
        _ = run.send("GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
        let text = run.take()
        #expect(text.hasPrefix("HTTP/1.1 204 No Content\r\n"))
        #expect(!text.lowercased().contains("content-length"))
    }

    @Test func http10GetsKeepAliveOnlyWhenAsked() {
        var run = SessionRun()
        #expect(run.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == .keepOpen)
        #expect(run.take().contains("connection: keep-alive\r\n"))
        #expect(run.send("GET / HTTP/1.0\r\n\r\n") == .closeAfterWrite)
        #expect(run.take().contains("connection: close\r\n"))
    }

    @Test func connectionCloseIsHonoured() {
        var run = SessionRun()
        #expect(
            run.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
                == .closeAfterWrite)
        #expect(run.handler.seen.count == 1)
        #expect(run.take().contains("connection: close\r\n"))
    }

    /// A handler with no error format of its own gets the default refusal: the message as text.
    @Test func refusalIsTheHandlersWithConnectionClose() {
        var run = SessionRun()
        #expect(
            run.send("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n") == .closeAfterWrite)
        let text = run.take()
        #expect(text.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(text.contains("content-type: text/plain; charset=utf-8\r\n"))
        #expect(text.contains("connection: close\r\n"))
        #expect(text.hasSuffix("\r\n\r\ndiffering Content-Length values\n"))
        #expect(run.handler.seen.isEmpty)
        // Nothing more is read once refused.
        #expect(run.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n") == .closeAfterWrite)
        #expect(run.output.isEmpty)
    }

    @Test func continueThenResponse() {
        var run = SessionRun()
        #expect(
            run.send("PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n") == .keepOpen)
        #expect(run.take() == "HTTP/1.1 100 Continue\r\n\r\n")
        _ = run.send("12345")
        #expect(run.take().hasPrefix("HTTP/1.1 200 OK\r\n"))
    }

    @Test func tooLargeIsAnsweredInsteadOfContinue() {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 100
        var run = SessionRun(limits: limits)
        #expect(
            run.send("PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 101\r\n\r\n")
                == .closeAfterWrite)
        let text = run.take()
        #expect(text.hasPrefix("HTTP/1.1 413 Content Too Large\r\n"))
        #expect(!text.contains("100 Continue"))
    }

    @Test func headerTimeoutRunsFromTheFirstByteAndAnswers408() {
        var limits = HTTPLimits()
        limits.headerTimeoutSeconds = 2
        limits.idleTimeoutSeconds = 50
        var run = SessionRun(limits: limits, now: 0)
        #expect(run.session.deadline == 50 * second)
        _ = run.send("GET / HTTP/1.1\r\n", now: 10 * second)
        #expect(run.session.deadline == 12 * second)
        // Trickling more header bytes does not move the header deadline (slow loris).
        _ = run.send("Ho", now: 11 * second)
        #expect(run.session.deadline == 12 * second)
        #expect(!run.session.isIdle)
        #expect(run.session.deadlineExpired(now: 12 * second, output: &run.output) == .closeAfterWrite)
        let text = run.take()
        #expect(text.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
        #expect(text.contains("connection: close"))
    }

    @Test func bodyTimeoutRestartsWithEachRead() {
        var limits = HTTPLimits()
        limits.bodyTimeoutSeconds = 3
        var run = SessionRun(limits: limits)
        _ = run.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", now: 1 * second)
        #expect(run.session.deadline == 4 * second)
        _ = run.send("cd", now: 3 * second)
        #expect(run.session.deadline == 6 * second)
        #expect(run.session.deadlineExpired(now: 6 * second, output: &run.output) == .closeAfterWrite)
        #expect(run.take().hasPrefix("HTTP/1.1 408 "))
    }

    @Test func idleTimeoutClosesSilentlyAndRestartsAfterEachResponse() {
        var limits = HTTPLimits()
        limits.idleTimeoutSeconds = 5
        var run = SessionRun(limits: limits)
        _ = run.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n", now: 7 * second)
        _ = run.take()
        #expect(run.session.isIdle)
        #expect(run.session.deadline == 12 * second)
        #expect(run.session.deadlineExpired(now: 12 * second, output: &run.output) == .closeAfterWrite)
        #expect(run.output.isEmpty)
    }

    /// Every timeout setting maps to a deadline without trapping: NaN, 0 and negative values
    /// expire at once, values past the maximum (1e9 s) count as the maximum, and the sum with
    /// the anchor saturates instead of wrapping.
    @Test(
        arguments: [
            (1.5, 7 * second + 1_500_000_000),
            (0, 7 * second), (-1, 7 * second), (-Double.infinity, 7 * second), (Double.nan, 7 * second),
            (maxTimeoutSeconds, 7 * second + 1_000_000_000 * second),
            (maxTimeoutSeconds.nextUp, 7 * second + 1_000_000_000 * second),
            (1e300, 7 * second + 1_000_000_000 * second), (Double.infinity, 7 * second + 1_000_000_000 * second),
        ] as [(Double, UInt64)])
    func timeoutsOfAnySizeGiveADeadline(seconds: Double, expected: UInt64) {
        var limits = HTTPLimits()
        limits.idleTimeoutSeconds = seconds
        limits.headerTimeoutSeconds = seconds
        limits.bodyTimeoutSeconds = seconds
        limits.bodyDeadlineSeconds = seconds
        var idle = SessionRun(limits: limits, now: 7 * second)
        #expect(idle.session.deadline == expected, "idle")
        _ = idle.send("GET / HTTP/1.1\r\n", now: 7 * second)
        #expect(idle.session.deadline == expected, "header")
        var body = SessionRun(limits: limits)
        _ = body.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab", now: 7 * second)
        #expect(body.session.deadline == expected, "body")
        // Near the top of the clock the deadline saturates.
        let late = SessionRun(limits: limits, now: .max - 1)
        #expect(late.session.deadline == (seconds > 0 ? UInt64.max : UInt64.max - 1))
    }

    @Test func shutdownClosesIdleAtOnce() {
        var run = SessionRun()
        #expect(run.session.beginShutdown(now: 0, output: &run.output) == .closeAfterWrite)
        #expect(run.output.isEmpty)
    }

    @Test func shutdownFinishesTheRequestInFlight() {
        var run = SessionRun()
        _ = run.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        #expect(run.session.beginShutdown(now: 0, output: &run.output) == .keepOpen)
        #expect(run.send("cd") == .closeAfterWrite)
        let text = run.take()
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.contains("connection: close\r\n"))
    }

    @Test func pipelinedRequestsWaitWhileOutputIsBackedUp() {
        let big = [UInt8](repeating: 0x7A, count: 1536 * 1024)
        let session = HTTP1ServerSession(
            handler: ClosureHandler { _ in HTTPResponse(status: 200, body: big) },
            limits: HTTPLimits(), now: 0, dateCache: fixedDates())
        var output: [UInt8] = []
        let three = Array(String(repeating: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", count: 3).utf8)
        #expect(three.withUnsafeBytes { session.receive($0, now: 0, output: &output) } == .keepOpen)
        // One answer passes the 1 MiB high-water mark; the other requests wait.
        #expect(output.count > HTTP1ServerSession.outputHighWaterBytes)
        #expect(output.count < 2 * HTTP1ServerSession.outputHighWaterBytes)
        #expect(session.hasBufferedInput)
        // Asked again before the output drained: nothing more is answered.
        let waiting = output.count
        #expect(session.receive(UnsafeRawBufferPointer(start: nil, count: 0), now: 0, output: &output) == .keepOpen)
        #expect(output.count == waiting)
        #expect(session.hasBufferedInput)
        for remaining in [true, false] {
            output = []
            #expect(
                session.receive(UnsafeRawBufferPointer(start: nil, count: 0), now: 0, output: &output) == .keepOpen)
            #expect(output.count > HTTP1ServerSession.outputHighWaterBytes)
            #expect(session.hasBufferedInput == remaining)
        }
        #expect(session.isIdle)
    }

    static func answers(_ output: [UInt8]) -> Int {
        let marker = Array("HTTP/1.1 200 OK".utf8)
        guard output.count >= marker.count else { return 0 }
        return (0...(output.count - marker.count)).filter { output[$0..<($0 + marker.count)].elementsEqual(marker) }
            .count
    }

    /// A call answers at most `requestsPerTurn` pipelined requests (fewer if they take over
    /// `turnNanoseconds`); the rest wait for the next calls.
    @Test func aTurnEndsAfterItsRequests() {
        var run = SessionRun()
        let n = 2 * HTTP1ServerSession.requestsPerTurn + 3
        #expect(run.send(String(repeating: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", count: n)) == .keepOpen)
        var counts: [Int] = []
        counts.append(Self.answers(run.output))
        #expect(run.session.hasBufferedInput)
        while run.session.hasBufferedInput {
            run.output = []
            _ = run.session.receive(UnsafeRawBufferPointer(start: nil, count: 0), now: 0, output: &run.output)
            counts.append(Self.answers(run.output))
        }
        let k = HTTP1ServerSession.requestsPerTurn
        #expect(counts.allSatisfy { (1...k).contains($0) }, "\(counts)")
        #expect(counts.reduce(0, +) == n)
        #expect(counts.count >= 3)
    }

    /// HEAD bodies are not sent, but rendering them counts toward the turn as for GET.
    @Test func headBodiesCountTowardTheTurn() {
        let body = [UInt8](repeating: 0x7A, count: 100 * 1024)
        let session = HTTP1ServerSession(
            handler: ClosureHandler { _ in HTTPResponse(status: 200, body: body) },
            limits: HTTPLimits(), now: 0, dateCache: fixedDates())
        var output: [UInt8] = []
        let five = Array(String(repeating: "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", count: 5).utf8)
        _ = five.withUnsafeBytes { session.receive($0, now: 0, output: &output) }
        // 3 x 100 KiB reach the 256 KiB of a turn; no body was written.
        #expect(Self.answers(output) == 3)
        #expect(output.count < 4096)
        #expect(session.hasBufferedInput)
    }

    /// A body trickled in just faster than the body timeout still ends at the body deadline.
    @Test func aTrickledBodyEndsAtTheBodyDeadline() {
        var limits = HTTPLimits()
        limits.bodyTimeoutSeconds = 10
        limits.bodyDeadlineSeconds = 30
        var run = SessionRun(limits: limits)
        _ = run.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", now: 0)
        #expect(run.session.deadline == 10 * second)
        for t: UInt64 in [8, 16, 24] {
            _ = run.send("a", now: t * second)
        }
        #expect(run.session.deadline == 30 * second)
        #expect(run.session.deadlineExpired(now: 30 * second, output: &run.output) == .closeAfterWrite)
        #expect(run.take().hasPrefix("HTTP/1.1 408 "))
    }

    /// `Expect: 100-continue` on a request the handler refuses from its head alone: the refusal
    /// instead of the 100, and the connection closes (the body was never sent).
    @Test func expectContinueGetsTheHandlersRefusalFirst() {
        struct Refusing: HTTPHandler {
            func handle(_ request: HTTPRequest) -> HTTPResponse { HTTPResponse(status: 200) }
            func precheck(_ head: HTTPRequest) -> HTTPResponse? {
                head.headers["authorization"] == nil ? HTTPResponse(status: 401) : nil
            }
        }
        let session = HTTP1ServerSession(handler: Refusing(), limits: HTTPLimits(), now: 0, dateCache: fixedDates())
        var output: [UInt8] = []
        let head = Array("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n".utf8)
        #expect(head.withUnsafeBytes { session.receive($0, now: 0, output: &output) } == .closeAfterWrite)
        let text = String(decoding: output, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 401 "))
        #expect(!text.contains("100 Continue"))

        let allowed = HTTP1ServerSession(handler: Refusing(), limits: HTTPLimits(), now: 0, dateCache: fixedDates())
        output = []
        let withToken = Array(
            "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n".utf8)
        #expect(withToken.withUnsafeBytes { allowed.receive($0, now: 0, output: &output) } == .keepOpen)
        #expect(String(decoding: output, as: UTF8.self).hasPrefix("HTTP/1.1 100 Continue\r\n"))
    }

    /// Bodies being received take from the server's budget as their bytes arrive, never from
    /// the announced length; one that would pass it gets 503 and the connection closes; an
    /// answered request, or a closed connection, gives its bytes back.
    @Test func partlyReceivedBodiesShareTheServersBudget() {
        let budget = BufferBudget(limit: 1000)
        var a = SessionRun(budget: budget)
        var b = SessionRun(budget: budget)
        #expect(a.send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 800\r\n\r\n") == .keepOpen)
        #expect(budget.heldBytes == 0, "an announced length takes nothing")
        #expect(a.send(String(repeating: "a", count: 700)) == .keepOpen)
        #expect(budget.heldBytes == 700)
        #expect(
            b.send("POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 800\r\n\r\n" + String(repeating: "b", count: 200))
                == .keepOpen)
        #expect(budget.heldBytes == 900)
        #expect(b.send(String(repeating: "b", count: 200)) == .closeAfterWrite)
        let refused = b.take()
        #expect(refused.hasPrefix("HTTP/1.1 503 "))
        #expect(refused.contains("retry-after: 1\r\n"))
        #expect(refused.contains("connection: close\r\n"))
        #expect(b.handler.seen.isEmpty)
        #expect(a.send(String(repeating: "a", count: 100)) == .keepOpen)
        #expect(a.take().hasPrefix("HTTP/1.1 200 "))
        #expect(a.handler.seen.map(\.body.count) == [800])
        #expect(budget.heldBytes == 0, "the answered body and the refused one are given back")
    }

    @Test func peerCloseEndsTheSession() {
        var run = SessionRun()
        _ = run.send("GET / HTTP/1.1\r\nHo")
        #expect(run.session.peerClosed(now: 0, output: &run.output) == .closeAfterWrite)
        #expect(run.session.deadline == nil)
    }
}

/// The session is confined to the thread of its first call; debug builds trap on a call from any
/// other, which is what lets its state go without locks or dynamic exclusivity checks.
@Suite struct HTTP1SessionConfinementTests {
    #if DEBUG
    @Test func aCallFromAnotherThreadTraps() async {
        await #expect(processExitsWith: .failure) {
            let session = HTTP1ServerSession(
                handler: RecordingHandler(), limits: HTTPLimits(), now: 0,
                dateCache: fixedDates())
            var output: [UInt8] = []
            _ = session.beginShutdown(now: 0, output: &output)
            nonisolated(unsafe) let shared = session
            let done = DispatchSemaphore(value: 0)
            DispatchQueue(label: "another thread").async {
                var more: [UInt8] = []
                _ = shared.peerClosed(now: 1, output: &more)
                done.signal()
            }
            done.wait()
        }
    }

    @Test func callsFromTheFirstThreadDoNotTrap() async {
        await #expect(processExitsWith: .success) {
            let session = HTTP1ServerSession(
                handler: RecordingHandler(), limits: HTTPLimits(), now: 0,
                dateCache: fixedDates())
            var output: [UInt8] = []
            let bytes = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            _ = bytes.withUnsafeBytes { session.receive($0, now: 1, output: &output) }
            _ = session.deadline
            _ = session.isIdle
            _ = session.deadlineExpired(now: .max, output: &output)
        }
    }
    #endif
}

/// Answers `/slow` later, through a `DeferredResponse` the test completes; others at once.
final class DeferringHandler: HTTPHandler, @unchecked Sendable {
    let pending = DeferredResponse()
    func handle(_ request: HTTPRequest) -> HTTPResponse {
        if request.path == "/slow" { return .deferred(pending) }
        return HTTPResponse(status: 200, body: Array(request.path.utf8))
    }
}

@Suite struct HTTP1DeferredResponseTests {
    @Test func pipelinedRequestsWaitBehindADeferredAnswer() {
        let handler = DeferringHandler()
        let session = HTTP1ServerSession(handler: handler, limits: HTTPLimits(), now: 0, dateCache: fixedDates())
        var output: [UInt8] = []
        let requests = Array("GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        #expect(requests.withUnsafeBytes { session.receive($0, now: 0, output: &output) } == .keepOpen)
        // Nothing is sent while the answer is pending, and the request is in flight.
        #expect(output.isEmpty)
        #expect(!session.isIdle)
        #expect(session.deadline == DeferredResponse.pollNanoseconds)
        // Not complete yet at the poll: the session looks again later.
        #expect(session.deadlineExpired(now: 5_000_000, output: &output) == .keepOpen)
        #expect(output.isEmpty)
        #expect(session.deadline == 5_000_000 + DeferredResponse.pollNanoseconds)
        // A graceful stop waits for it.
        #expect(session.beginShutdown(now: 5_000_000, output: &output) == .keepOpen)
        handler.pending.complete(HTTPResponse(status: 201, body: Array("done".utf8)))
        #expect(session.deadlineExpired(now: 6_000_000, output: &output) == .closeAfterWrite)
        let text = String(decoding: output, as: UTF8.self)
        // The deferred answer, in its place, and the connection closes for the stop; the
        // pipelined request after it is not answered (it was never started).
        #expect(text.hasPrefix("HTTP/1.1 201 Created\r\n"), "\(text)")
        #expect(text.hasSuffix("done"), "\(text)")
        #expect(text.contains("connection: close\r\n"), "\(text)")
        #expect(!text.contains("/next"), "\(text)")
    }

    @Test func inputPilingUpBehindADeferredAnswerStopsTheReading() {
        let handler = DeferringHandler()
        let session = HTTP1ServerSession(handler: handler, limits: HTTPLimits(), now: 0, dateCache: fixedDates())
        var output: [UInt8] = []
        let first = Array("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        _ = first.withUnsafeBytes { session.receive($0, now: 0, output: &output) }
        #expect(!session.hasBufferedInput)
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 64 * 1024)
        var sent = 0
        while !session.hasBufferedInput && sent < 4 * HTTP1ServerSession.outputHighWaterBytes {
            _ = chunk.withUnsafeBytes { session.receive($0, now: 0, output: &output) }
            sent += chunk.count
        }
        #expect(session.hasBufferedInput)
        #expect(sent == HTTP1ServerSession.outputHighWaterBytes)
        #expect(output.isEmpty)
        // Once the answer is sent, the held input is parsed (here: a malformed request line, 400).
        handler.pending.complete(HTTPResponse(status: 200, body: Array("slow".utf8)))
        #expect(session.deadlineExpired(now: DeferredResponse.pollNanoseconds, output: &output) == .closeAfterWrite)
        let text = String(decoding: output, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(text.prefix(200))")
        #expect(text.contains("HTTP/1.1 4"), "\(text.prefix(400))")
    }

    @Test func theAnswersAfterADeferredOneFollowIt() {
        let handler = DeferringHandler()
        let session = HTTP1ServerSession(handler: handler, limits: HTTPLimits(), now: 0, dateCache: fixedDates())
        var output: [UInt8] = []
        let requests = Array("GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        _ = requests.withUnsafeBytes { session.receive($0, now: 0, output: &output) }
        handler.pending.complete(HTTPResponse(status: 200, body: Array("slow".utf8)))
        #expect(session.deadlineExpired(now: DeferredResponse.pollNanoseconds, output: &output) == .keepOpen)
        let text = String(decoding: output, as: UTF8.self)
        let bodies = text.split(separator: "HTTP/1.1 ").map { $0.split(separator: "\r\n\r\n").last.map(String.init) }
        #expect(bodies == ["slow", "/next"], "\(text)")
        #expect(session.isIdle)
    }
}
