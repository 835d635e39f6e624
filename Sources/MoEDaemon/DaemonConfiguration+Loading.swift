import Configuration
import Foundation
import MoEStats

/// Where settings come from, highest precedence first: flags, then `MOE_METRICSD_*` environment
/// variables, then the JSON config file, then the defaults in `DaemonConfiguration`.
///
/// The three sources are swift-configuration providers (`InMemoryProvider`,
/// `EnvironmentVariablesProvider`, `JSONSnapshot`). We ask each provider in turn rather than
/// going through `ConfigReader` because the reader turns a value of the wrong type into "absent"
/// and falls through to a lower-precedence source; an operator who sets
/// `MOE_METRICSD_HTTP_MAX_BODY_BYTES=lots` must get an error naming that variable, not the default.
public struct ConfigurationSources: Sendable {
    /// JSON config file; nil for none.
    public var filePath: String?
    /// The process environment (only `MOE_METRICSD_*` variables are read).
    public var environment: [String: String]
    /// Values given as flags, by setting key (e.g. `"http.max_body_bytes": .int(1024)`).
    public var flags: [String: ConfigContent]
    /// Flags as typed on the command line, by setting key, each occurrence in order
    /// (`"listen": ["127.0.0.1:1", "[::1]:2"]`). They are read by the rules of the environment
    /// variables (booleans as `true`/`yes`/`1` in any case, lists also comma-separated), so a
    /// value means the same wherever it is given and a bad one gets the same exit status 2 and a
    /// message naming the flag, rather than the argument parser's usage error.
    public var flagArguments: [String: [String]]

    public init(
        filePath: String? = nil, environment: [String: String] = [:], flags: [String: ConfigContent] = [:],
        flagArguments: [String: [String]] = [:]
    ) {
        self.filePath = filePath
        self.environment = environment
        self.flags = flags
        self.flagArguments = flagArguments
    }
}

extension DaemonConfiguration {
    /// Resolves every setting from `sources` and validates the result.
    ///
    /// Errors name the setting and the source that set it: a missing or unreadable file, a file
    /// that is not a JSON object, an unknown key in the file (a typo must not pass silently),
    /// a value of the wrong type, or a value out of range.
    public static func load(_ sources: ConfigurationSources) throws(ConfigurationError) -> DaemonConfiguration {
        var layers: [(name: (DaemonSetting) -> String, lookup: (DaemonSetting) throws -> ConfigValue?)] = []

        var flagValues: [AbsoluteConfigKey: ConfigValue] = [:]
        for (key, content) in sources.flags {
            guard DaemonSettings.setting(key) != nil else { throw ConfigurationError("unknown setting \(key)") }
            flagValues[AbsoluteConfigKey(key.split(separator: ".").map(String.init))] = ConfigValue(
                content, isSecret: false)
        }
        let flags = InMemoryProvider(name: "command line", values: flagValues)
        var typedFlags = [String: String]()
        for (key, values) in sources.flagArguments where !values.isEmpty {
            guard let setting = DaemonSettings.setting(key) else { throw ConfigurationError("unknown setting \(key)") }
            typedFlags[setting.environmentVariable] = values.joined(separator: ",")
        }
        let typed = EnvironmentVariablesProvider(environmentVariables: typedFlags)
        layers.append(
            (
                name: { "flag \($0.flag)" },
                lookup: { s in
                    if let v = try flags.value(forKey: absoluteKey(s), type: s.kind.configType).value { return v }
                    return try typed.value(
                        forKey: AbsoluteConfigKey(["moe_metricsd"] + absoluteKey(s).components),
                        type: s.kind.configType
                    ).value
                }
            ))

        let environment = EnvironmentVariablesProvider(
            environmentVariables: sources.environment.filter { $0.key.hasPrefix("MOE_METRICSD_") })
        layers.append(
            (
                name: { "environment variable \($0.environmentVariable)" },
                lookup: { s in
                    try environment.value(
                        forKey: AbsoluteConfigKey(["moe_metricsd"] + absoluteKey(s).components),
                        type: s.kind.configType
                    ).value
                }
            ))

        if let path = sources.filePath {
            let file = try loadFile(path)
            layers.append(
                (
                    name: { "config file \(path), key \($0.key)" },
                    lookup: { s in try Self.lookupWithFallback(file, s) }
                ))
        }

        var configuration = DaemonConfiguration()
        var origin: [String: String] = [:]
        for setting in DaemonSettings.all {
            for layer in layers {
                let value: ConfigValue?
                do {
                    value = try layer.lookup(setting)
                } catch {
                    throw ConfigurationError("\(setting.key): \(layer.name(setting)) must be \(setting.kind.noun)")
                }
                guard let value else { continue }
                do {
                    try setting.apply(&configuration, value.content)
                } catch {
                    throw ConfigurationError("\(error.message) (set by \(layer.name(setting)))")
                }
                origin[setting.key] = layer.name(setting)
                break
            }
        }
        do {
            try configuration.validate()
        } catch {
            if let key = error.key, let source = origin[key] {
                throw ConfigurationError("\(error.message) (set by \(source))")
            }
            throw error
        }
        return configuration
    }

    /// A list setting given as one string in the file (`"listen": "127.0.0.1:9477"`) is accepted too.
    private static func lookupWithFallback(_ file: JSONSnapshot, _ s: DaemonSetting) throws -> ConfigValue? {
        do {
            return try file.value(forKey: absoluteKey(s), type: s.kind.configType).value
        } catch {
            guard s.kind == .stringList else { throw error }
            return try file.value(forKey: absoluteKey(s), type: .string).value
        }
    }

    private static func absoluteKey(_ s: DaemonSetting) -> AbsoluteConfigKey {
        AbsoluteConfigKey(s.key.split(separator: ".").map(String.init))
    }

    private static func loadFile(_ path: String) throws(ConfigurationError) -> JSONSnapshot {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigurationError("config file \(path): cannot be read (\(error.localizedDescription))")
        }
        // Strict first: Foundation's parser takes trailing commas and lets a duplicate key's last
        // value win, which would hide an edit gone wrong.
        if let problem = StrictJSON.problem(in: [UInt8](data)) {
            throw ConfigurationError("config file \(path): \(problem)")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw ConfigurationError("config file \(path): not valid JSON")
        }
        guard let dictionary = object as? [String: Any] else {
            throw ConfigurationError("config file \(path): the top level must be a JSON object")
        }
        try checkKeys(dictionary, prefix: "", path: path)
        do {
            let bytes = [UInt8](data)
            return try JSONSnapshot(
                data: bytes.span.bytes, providerName: "config file \(path)", parsingOptions: .default)
        } catch {
            throw ConfigurationError("config file \(path): \(error)")
        }
    }

    /// Checks every key of the file against the settings (keys starting with `_` are comments):
    /// an unknown key or section is an error, even an empty one (`"htp": {}` is a typo too); a
    /// section given a plain value, or a setting given an object or null, is an error that says so
    /// rather than falling back to the default.
    private static func checkKeys(_ object: [String: Any], prefix: String, path: String) throws(ConfigurationError) {
        for (k, v) in object.sorted(by: { $0.key < $1.key }) where !k.hasPrefix("_") {
            let full = prefix.isEmpty ? k : prefix + "." + k
            let isSection = DaemonSettings.all.contains { $0.key.hasPrefix(full + ".") }
            if let nested = v as? [String: Any] {
                guard isSection else {
                    if let setting = DaemonSettings.setting(full) {
                        throw ConfigurationError(
                            "config file \(path): \(full) must be \(setting.kind.noun), not an object")
                    }
                    throw ConfigurationError("config file \(path): unknown setting \(full)")
                }
                try checkKeys(nested, prefix: full, path: path)
            } else if let setting = DaemonSettings.setting(full) {
                if v is NSNull {
                    throw ConfigurationError(
                        "config file \(path): \(full) must be \(setting.kind.noun), not null (leave the key out for the default)"
                    )
                }
            } else if isSection {
                throw ConfigurationError("config file \(path): \(full) is a section: it must be an object of settings")
            } else {
                throw ConfigurationError("config file \(path): unknown setting \(full)")
            }
        }
    }
}
