import HTTPCore

/// A streamed body (`HTTPBodySource`) of `total` bytes written in pieces as asked; remembers what
/// it wrote and how often it was asked, for the HTTP/1.1 and HTTP/2 streaming tests.
public final class CountingSource: HTTPBodySource {
    public let total: Int
    public private(set) var produced: [UInt8] = []
    public private(set) var calls = 0

    public init(total: Int) { self.total = total }

    public func next(into output: inout [UInt8], atMost: Int) -> Bool {
        calls += 1
        let n = min(atMost, total - produced.count)
        let piece = [UInt8](repeating: UInt8(truncatingIfNeeded: calls &* 37), count: n)
        produced += piece
        output += piece
        return produced.count < total
    }
}
