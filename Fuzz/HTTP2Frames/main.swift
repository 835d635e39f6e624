// libFuzzer target for the HTTP/2 session bridge (modules JSONOutput, HTTPCore, HTTP2 over the
// system libnghttp2); run with `scripts/fuzz HTTP2Frames SECONDS`.
//
// Each input is the frames a client sends after its connection preface: the target prepends the
// preface and an empty SETTINGS frame (RFC 9113 section 3.4), so every input reaches the frame
// layer. Each input drives two sessions, one with the default limits fed the bytes whole and one
// with tight limits (so the 408/413/414/431 paths are reached) fed in pieces, then runs each
// session's timers, a graceful shutdown and the peer's close. Invariants checked (a failure
// crashes, which libFuzzer reports):
//   - the server's output is a sequence of whole frames of known types (RFC 9113 section 4.1,
//     section 6), starting with its own SETTINGS frame;
//   - once a session says close, nothing more is fed to it, as the transport would do;
//   - the session is freed when the input is done (no retain cycle keeps it alive); with
//     LeakSanitizer on, any nghttp2 state it failed to free is reported as a leak.
import HTTP2
import HTTPCore

/// Answers something small: 200 with the request body echoed (or "ok" when empty), 204 for
/// DELETE, so responses with and without DATA frames are both produced.
struct Echo: HTTPHandler {
    func handle(_ request: HTTPRequest) -> HTTPResponse {
        if request.method == "DELETE" { return HTTPResponse(status: 204) }
        return HTTPResponse(status: 200, body: request.body.isEmpty ? Array("ok\n".utf8) : request.body)
    }
}

/// Client connection preface (RFC 9113 section 3.4) and an empty SETTINGS frame.
let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]

/// Checks that `output` is whole frames: a 9-octet header whose 24-bit length covers the payload
/// exactly, of a type RFC 9113 section 6 defines (DATA 0x0 to CONTINUATION 0x9).
func checkFrames(_ output: [UInt8]) {
    var offset = 0
    var first = true
    while offset < output.count {
        precondition(output.count - offset >= 9, "truncated frame header")
        let length = Int(output[offset]) << 16 | Int(output[offset + 1]) << 8 | Int(output[offset + 2])
        let type = output[offset + 3]
        precondition(type <= 9, "unknown frame type \(type)")
        if first {
            precondition(type == 4 && output[offset + 4] & 1 == 0, "server preface is not SETTINGS")
            first = false
        }
        offset += 9 + length
        precondition(offset <= output.count, "truncated frame payload")
    }
}

/// Feeds `input` after the preface in pieces of `piece` bytes, then the timers, a shutdown and
/// the peer's close; returns a weak reference to check the session is freed.
func drive(_ input: UnsafeRawBufferPointer, piece: Int, limits: HTTPLimits) -> () -> AnyObject? {
    let session = HTTP2ServerSession(
        handler: Echo(), limits: limits, now: 0,
        dateCache: HTTPDateCache(wallClock: { 0 }))
    weak let freed = session
    var output: [UInt8] = []
    var now: UInt64 = 1
    var open = preface.withUnsafeBytes {
        session.receive($0, now: now, output: &output) == .keepOpen
    }
    var offset = 0
    while open && offset < input.count {
        let end = min(input.count, offset + piece)
        now += 1
        open =
            session.receive(
                UnsafeRawBufferPointer(rebasing: input[offset..<end]), now: now,
                output: &output) == .keepOpen
        offset = end
    }
    // Each late stream is answered or reset, so the deadline moves on; a few rounds reach the
    // idle timeout. Bounded: a deadline that did not move would otherwise loop for ever.
    var rounds = 0
    while open, let deadline = session.deadline, rounds < 8 {
        now = max(now, deadline)
        open = session.deadlineExpired(now: now, output: &output) == .keepOpen
        rounds += 1
    }
    if open { open = session.beginShutdown(now: now, output: &output) == .keepOpen }
    if open { _ = session.peerClosed(now: now, output: &output) }
    checkFrames(output)
    return { freed }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    var tight = HTTPLimits()
    tight.maxRequestLineBytes = 32
    tight.maxHeaderBytes = 256
    tight.maxHeaderCount = 6
    tight.maxBodyBytes = 16
    tight.maxConcurrentStreams = 3
    let piece = 1 + size % 23
    for freed in [drive(input, piece: max(1, size), limits: HTTPLimits()), drive(input, piece: piece, limits: tight)] {
        precondition(freed() == nil, "session still alive after its connection ended")
    }
    return 0
}
