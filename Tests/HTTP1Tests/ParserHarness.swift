import HTTP1
import HTTPCore
import Testing

/// A parser event reduced to comparable values.
enum Outcome: Equatable, CustomStringConvertible {
    case request(
        method: String, path: String, query: String?, version: HTTPVersion, headers: [String], body: [UInt8],
        keepAlive: Bool)
    case continueExpected
    case failure(Int)

    var description: String {
        switch self {
        case .request(let m, let p, let q, let v, let h, let b, let k):
            "\(m) \(p)\(q.map { "?\($0)" } ?? "") \(v) \(h) body=\(b.count) keepAlive=\(k)"
        case .continueExpected: "100-continue"
        case .failure(let s): "failure \(s)"
        }
    }

    var status: Int? { if case .failure(let s) = self { s } else { nil } }
    var body: [UInt8]? { if case .request(_, _, _, _, _, let b, _) = self { b } else { nil } }
}

func outcome(_ event: HTTP1Parser.Event) -> Outcome {
    switch event {
    case .request(let r, let keepAlive):
        .request(
            method: r.method, path: r.path, query: r.query, version: r.version,
            headers: r.headers.map { "\($0.name): \($0.value)" }, body: r.body, keepAlive: keepAlive)
    case .continueExpected: .continueExpected
    case .failure(let e): .failure(e.status)
    }
}

/// Feeds `bytes` in pieces of `chunk` bytes, collecting every event after each piece.
func parse(_ bytes: [UInt8], chunk: Int, limits: HTTPLimits = HTTPLimits()) -> [Outcome] {
    var parser = HTTP1Parser(limits: limits)
    var out: [Outcome] = []
    var i = 0
    while i < bytes.count {
        let end = min(bytes.count, i + chunk)
        bytes[i..<end].withUnsafeBytes { parser.append($0) }
        i = end
        while let e = parser.next() { out.append(outcome(e)) }
    }
    return out
}

/// Parses whole and byte by byte, expects the same events both ways (100-continue aside: a
/// client that sent the body with the head is not waiting for it), and returns them.
func parseBothWays(
    _ text: String, limits: HTTPLimits = HTTPLimits(),
    sourceLocation: SourceLocation = #_sourceLocation
) -> [Outcome] {
    let bytes = Array(text.utf8)
    let whole = parse(bytes, chunk: bytes.count, limits: limits)
    let bytewise = parse(bytes, chunk: 1, limits: limits).filter { $0 != .continueExpected }
    #expect(whole == bytewise, "whole and byte-by-byte parses differ", sourceLocation: sourceLocation)
    return whole
}

func statusOf(_ text: String, limits: HTTPLimits = HTTPLimits(), sourceLocation: SourceLocation = #_sourceLocation)
    -> Int?
{
    parseBothWays(text, limits: limits, sourceLocation: sourceLocation).last?.status
}
