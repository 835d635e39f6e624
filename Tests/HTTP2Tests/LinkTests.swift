import HTTP2
import Testing

@Test func linksSystemNGHTTP2() {
    let parts = linkedNGHTTP2Version().split(separator: ".").compactMap { Int($0) }
    #expect(parts.count == 3)
    #expect((parts.first ?? 0) >= 1)
}
