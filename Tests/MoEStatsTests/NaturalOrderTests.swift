import MoEStats
import Testing

/// The natural order of layer names: digit runs compare as numbers, the rest byte by byte.
@Suite struct NaturalOrderTests {
    @Test(arguments: [
        ("a2", "a10", true), ("a10", "a2", false), ("a", "a1", true), ("l01", "l1", true), ("l1", "l01", false),
        ("x.9.moe", "x.10.moe", true), ("B", "a", true), ("a", "a", false), ("7", "a", true),
    ])
    func naturalOrder(a: String, b: String, precedes: Bool) {
        #expect(LayerOrder.precedes(a, b) == precedes)
    }

    @Test func sortsAsTheDashboardShowsLayers() {
        let names = ["syn.10", "syn.2", "syn.1", "enc", "syn.02b"]
        #expect(names.sorted(by: LayerOrder.precedes) == ["enc", "syn.1", "syn.2", "syn.02b", "syn.10"])
    }
}
