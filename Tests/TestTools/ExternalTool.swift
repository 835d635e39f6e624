import Foundation
import Testing

/// The command-line tools some tests drive, looked up on the PATH.
///
/// A bare `swift test` skips a test whose tool is missing and says which one (`.needs`). With
/// `MOE_REQUIRE_TOOLS=1`, which `scripts/test` and so CI set, the test runs anyway and the missing
/// tool fails it: a full run never passes by skipping.
public enum ExternalTool {
    /// The Debian package of each tool; `scripts/install-deps test` installs them all.
    public static let packages = [
        "curl": "curl", "gzip": "gzip", "h2load": "nghttp2-client", "nghttp": "nghttp2-client",
        "prlimit": "util-linux", "prometheus": "prometheus", "promtool": "prometheus", "python3": "python3",
        "systemd-analyze": "systemd",
    ]

    public static var required: Bool { ProcessInfo.processInfo.environment["MOE_REQUIRE_TOOLS"] == "1" }

    /// The executable `name` on the PATH, or nil.
    public static func path(_ name: String) -> String? {
        (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
            .map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// What to install to run a test that needs `name`.
    public static func missing(_ name: String) -> String {
        "\(name) is not installed (Debian package \(packages[name] ?? name); scripts/install-deps test installs it)"
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs the test where each of `tools` is installed, and always with `MOE_REQUIRE_TOOLS=1`.
    public static func needs(_ tools: String...) -> Self {
        let missing = tools.filter { ExternalTool.path($0) == nil }
        let reason = missing.map(ExternalTool.missing).joined(separator: "; ")
        return .enabled(
            if: missing.isEmpty || ExternalTool.required,
            Comment(rawValue: reason + "; with MOE_REQUIRE_TOOLS=1 the test runs and fails"))
    }
}
