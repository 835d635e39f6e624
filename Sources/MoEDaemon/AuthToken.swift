import Foundation
import HTTPCore

/// The bearer token that guards writes (RFC 6750), and its comparison.
///
/// It comes from `MOE_METRICSD_AUTH_TOKEN` or from the file `auth_token_file` names, never from
/// a flag: command lines are visible to every user of the machine. Surrounding whitespace and the
/// trailing newline a file editor leaves are not part of the token.
public struct AuthToken: Sendable, Equatable {
    public static let environmentVariable = "MOE_METRICSD_AUTH_TOKEN"

    let bytes: [UInt8]

    public init?(_ text: String) {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else { return nil }
        bytes = Array(trimmed.utf8)
    }

    /// The token in force for a configuration: the environment variable, else the file, else none.
    public static func resolve(_ c: DaemonConfiguration, environment: [String: String]) throws(ConfigurationError)
        -> AuthToken?
    {
        if let value = environment[environmentVariable] {
            guard let token = AuthToken(value) else {
                throw ConfigurationError("auth token: \(environmentVariable) is set but empty")
            }
            if let problem = token.unmatchable {
                throw ConfigurationError("auth token: \(environmentVariable): the token \(problem)")
            }
            return token
        }
        guard !c.authTokenFile.isEmpty else { return nil }
        let text: String
        do {
            text = try String(contentsOfFile: c.authTokenFile, encoding: .utf8)
        } catch {
            throw ConfigurationError("auth_token_file: \(c.authTokenFile) cannot be read")
        }
        guard let token = AuthToken(text) else {
            throw ConfigurationError("auth_token_file: \(c.authTokenFile) is empty")
        }
        if let problem = token.unmatchable {
            throw ConfigurationError("auth_token_file: \(c.authTokenFile): the token \(problem)")
        }
        return token
    }

    /// Why no request could ever carry this token, or nil: a field value holds no control
    /// character but HTAB (RFC 9110 section 5.5), so a token with a line break or a NUL inside
    /// (a file of two lines, a binary file) would refuse every write without saying why.
    var unmatchable: String? {
        if bytes.contains(0) { return "contains a NUL byte" }
        if bytes.contains(where: { $0 == 0x0A || $0 == 0x0D }) { return "contains a line break" }
        if bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) { return "contains a control character" }
        return nil
    }

    /// Whether an `Authorization` header carries this token as `Bearer <token>`.
    ///
    /// The comparison takes the same time wherever the first difference is (it always walks the
    /// longer of the two), so response timing does not reveal how much of a guess was right.
    public func accepts(authorization: String?) -> Bool {
        guard let authorization else { return false }
        let parts = authorization.trimmingWhitespace().split(
            separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].asciiLowercased() == "bearer" else { return false }
        return Self.constantTimeEqual(Array(String(parts[1]).trimmingWhitespace().utf8), bytes)
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt64(a.count ^ b.count)
        let n = max(a.count, b.count)
        for i in 0..<n {
            let x = i < a.count ? a[i] : 0
            let y = i < b.count ? b[i] : 0
            difference |= UInt64(x ^ y)
        }
        return difference == 0
    }
}
