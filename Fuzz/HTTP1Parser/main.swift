// libFuzzer target for the HTTP/1.1 parser and session (modules JSONOutput, HTTPCore, HTTP1).
//
// Each input is one byte of settings followed by the bytes a client sends. The settings byte
// picks the piece size the bytes are fed in and whether limits are tight, so the fuzzer reaches
// the limit paths as well as the grammar. Invariants checked (a failure crashes, which libFuzzer
// reports):
//   - feeding the bytes whole and in pieces yields the same requests and the same refusal;
//   - a refusal is the last event, and its status is one the parser documents;
//   - the session never answers anything but a well-formed status line, and stops after closing.
import HTTP1
import HTTPCore

struct Summary: Equatable {
    var requests: [String] = []
    var failure: Int?
}

func run(_ bytes: UnsafeRawBufferPointer, piece: Int, limits: HTTPLimits) -> Summary {
    var parser = HTTP1Parser(limits: limits)
    var summary = Summary()
    var offset = 0
    while offset < bytes.count && summary.failure == nil {
        let end = min(bytes.count, offset + piece)
        parser.append(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
        offset = end
        while let event = parser.next() {
            switch event {
            case .request(let r, let keepAlive):
                precondition(summary.failure == nil, "event after a refusal")
                precondition(r.body.count <= limits.maxBodyBytes, "body over the limit delivered")
                summary.requests.append(
                    "\(r.method) \(r.path) \(r.query ?? "-") \(r.version) \(r.headers.count) \(r.body) \(keepAlive)")
            case .continueExpected:
                break
            case .failure(let e):
                precondition([400, 413, 414, 417, 431, 501, 505].contains(e.status), "unexpected status \(e.status)")
                summary.failure = e.status
            }
        }
    }
    return summary
}

struct Echo: HTTPHandler {
    func handle(_ request: HTTPRequest) -> HTTPResponse {
        HTTPResponse(status: request.body.isEmpty ? 204 : 200, body: request.body)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let settings = data[0]
    let input = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    var limits = HTTPLimits()
    if settings & 0x80 != 0 {
        limits.maxRequestLineBytes = 16 + Int(settings & 0x0F)
        limits.maxHeaderBytes = 32 + Int(settings & 0x30)
        limits.maxHeaderCount = 1 + Int(settings & 0x07)
        limits.maxBodyBytes = Int(settings & 0x1F)
    }
    let piece = 1 + Int(settings & 0x07) * Int((settings & 0x38) >> 3)
    let whole = run(input, piece: max(1, input.count), limits: limits)
    let pieces = run(input, piece: piece, limits: limits)
    precondition(whole == pieces, "whole and piecewise parses differ")

    let session = HTTP1ServerSession(
        handler: Echo(), limits: limits, now: 0,
        dateCache: HTTPDateCache(wallClock: { 0 }))
    var output: [UInt8] = []
    var closed = false
    var offset = 0
    while offset < input.count {
        let end = min(input.count, offset + piece)
        if session.receive(UnsafeRawBufferPointer(rebasing: input[offset..<end]), now: UInt64(offset), output: &output)
            == .closeAfterWrite
        {
            closed = true
            break
        }
        offset = end
    }
    if !closed { _ = session.deadlineExpired(now: UInt64.max / 2, output: &output) }
    let prefix = Array("HTTP/1.1 ".utf8)
    precondition(output.isEmpty || Array(output.prefix(prefix.count)) == prefix, "malformed output")
    return 0
}
