import Foundation
import Testing

@testable import MoEStats

/// Every row of the measure table is documented where users look for it: its summary key in
/// docs/api.md (on a line of the field table that names its section, as `section.key` or in a
/// list such as `latency.average_ms`, `min_ms`), its headline name there too, and its gauge in
/// docs/metrics.md. A new row without its documentation fails here.
@Suite struct MeasureDocsTests {
    static let docs = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs")

    static func read(_ name: String) throws -> String {
        try String(contentsOf: docs.appendingPathComponent(name), encoding: .utf8)
    }

    @Test func everySummaryKeyAndHeadlineIsInTheAPIDocs() throws {
        let api = try Self.read("api.md")
        for row in LayerMeasure.all {
            if let (section, key) = row.summary {
                let documented = api.split(separator: "\n").contains { line in
                    guard line.hasPrefix("| `") else { return false }
                    guard let name = section.key else { return line.contains("`\(key)`") }
                    return (line.contains("`\(name).") || line.contains("`\(name)`"))
                        && (line.contains(".\(key)`") || line.contains("`\(key)`"))
                }
                #expect(
                    documented, "docs/api.md's field table does not document \(key) of \(section) (row \(row.name))")
            }
            if row.headline {
                #expect(api.contains("`\(row.name)`"), "docs/api.md does not name the headline `\(row.name)`")
            }
        }
    }

    @Test func everyGaugeIsInTheMetricsDocs() throws {
        let metrics = try Self.read("metrics.md")
        for row in LayerMeasure.all {
            guard let gauge = row.gauge else { continue }
            #expect(metrics.contains(gauge.name), "docs/metrics.md does not document \(gauge.name) (row \(row.name))")
        }
    }
}
