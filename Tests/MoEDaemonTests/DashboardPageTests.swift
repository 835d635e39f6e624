import Foundation
import Testing

@testable import MoEDaemon

/// The dashboard is `Sources/MoEDaemon/Resources/dashboard.html`, compiled into the binary; the
/// daemon runs on machines without internet access, so the page must load nothing from elsewhere.
/// (`scripts/lint dashboard` checks that its script parses; the Chromium test renders it.)
@Suite struct DashboardPageTests {
    static let file = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // MoEDaemonTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // package root
        .appendingPathComponent("Sources/MoEDaemon/Resources/dashboard.html")

    @Test func servedBytesAreTheResourceFile() throws {
        let data = try #require(FileManager.default.contents(atPath: Self.file.path), "\(Self.file.path) is missing")
        #expect(Array(DashboardPage.html.utf8) == Array(data))
    }

    @Test func pageLoadsNothingFromElsewhere() throws {
        let page = DashboardPage.html.lowercased()
        // Absolute and scheme-relative URLs in attributes, CSS imports and url(), and the element
        // and script APIs that fetch from a URL given to them.
        let attribute = try Regex(#"(src|href|action)\s*=\s*["']?([a-z][a-z0-9+.-]*:)?//"#)
        #expect(page.firstMatch(of: attribute) == nil)
        for needle in [
            "http://", "https://", "@import", "url(", "<link", "<iframe", "<img", "<object", "<embed",
            "websocket", "eventsource", "importscripts", "import(",
        ] {
            #expect(!page.contains(needle), "the dashboard refers to \(needle)")
        }
    }
}
