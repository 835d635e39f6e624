import Testing
// Placeholder until this test target's real tests land.
@Test func placeholder() { #expect(1 + 1 == 2) }
