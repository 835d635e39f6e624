/// The two exposition formats /metrics speaks.
///
/// Prometheus' text format 0.0.4 is what every scraper understands; OpenMetrics 1.0 is what
/// Prometheus asks for first in its `Accept` header. They differ in details that matter to a
/// parser: OpenMetrics names a counter family without `_total` (the sample keeps it), escapes
/// `"` in HELP, wants canonical floats in `le`, and ends with `# EOF`.
public enum ExpositionFormat: Sendable, Equatable {
    case prometheusText
    case openMetrics

    public var contentType: String {
        switch self {
        case .prometheusText: "text/plain; version=0.0.4; charset=utf-8"
        case .openMetrics: "application/openmetrics-text; version=1.0.0; charset=utf-8"
        }
    }

    /// Picks the format an `Accept` header prefers (RFC 9110 section 12.5.1): OpenMetrics when
    /// `application/openmetrics-text` is acceptable with a quality at least that of the text format.
    public static func negotiate(accept: String?) -> ExpositionFormat {
        guard let accept else { return .prometheusText }
        var openMetricsQ = 0.0
        var textQ = 0.0
        for range in accept.split(separator: ",") {
            let parts = range.split(separator: ";").map { String($0).trimmingWhitespace().lowercased() }
            guard let type = parts.first else { continue }
            var q = 1.0
            for p in parts.dropFirst() where p.hasPrefix("q=") {
                q = Double(p.dropFirst(2)) ?? 0
            }
            switch type {
            case "application/openmetrics-text": openMetricsQ = max(openMetricsQ, q)
            case "text/plain", "text/*", "*/*": textQ = max(textQ, q)
            default: break
            }
        }
        return openMetricsQ > 0 && openMetricsQ >= textQ ? .openMetrics : .prometheusText
    }
}

/// Metric types as the exposition formats name them.
///
/// `info` (a constant 1 whose labels carry facts, like a version) is an OpenMetrics type; the
/// 0.0.4 text format has no such type and writes it as a gauge, as Prometheus' own clients do.
public enum MetricType: String, Sendable {
    case counter, gauge, summary, histogram, info
}

/// Numbers as Prometheus parses them, independent of any locale.
///
/// The text format's values are Go `ParseFloat` syntax, with infinities spelled `+Inf` and
/// `-Inf` and not-a-number `NaN` (exposition format, "Comments, help text, and type information"
/// and "Samples"). Integral values are written without a fraction so counters read naturally.
public enum PrometheusNumber {
    public static func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v == .infinity { return "+Inf" }
        if v == -.infinity { return "-Inf" }
        if v == v.rounded(), abs(v) < 9_007_199_254_740_992 { return String(Int64(v)) }
        return v.description
    }

    /// OpenMetrics' canonical form for `le` and `quantile` label values: always a float.
    static func canonicalFloat(_ v: Double) -> String {
        if v.isNaN || v.isInfinite { return format(v) }
        if v == v.rounded(), abs(v) < 9_007_199_254_740_992 { return String(Int64(v)) + ".0" }
        return v.description
    }
}

/// Writes one exposition, family by family.
///
/// Callers describe each family once (`family(...)`) and then write its samples; the writer
/// refuses to describe a family twice, because a repeated HELP/TYPE makes Prometheus reject the
/// whole scrape. It escapes label values (`\`, `"` and newline, the three the format requires)
/// so a layer name can never break the output.
public struct MetricsWriter: Sendable {
    public let format: ExpositionFormat
    private var out: [UInt8] = []
    private var described: Set<String> = []
    private var current: (name: String, type: MetricType)?

    public init(format: ExpositionFormat, capacity: Int = 16 * 1024) {
        self.format = format
        out.reserveCapacity(capacity)
    }

    /// Starts a family. `name` is the sample name without type suffixes: a counter's ends in
    /// `_total` and an info's in `_info`; OpenMetrics names the family without them (OpenMetrics
    /// 1.0, "Counter" and "Info"), the 0.0.4 format with them.
    /// Returns false (and writes nothing) if the family was already described.
    @discardableResult
    public mutating func family(_ name: String, _ type: MetricType, help: String) -> Bool {
        guard described.insert(name).inserted else { return false }
        current = (name, type)
        var familyName = name
        var typeName = type.rawValue
        switch (format, type) {
        case (.openMetrics, .counter) where name.hasSuffix("_total"):
            familyName = String(name.dropLast("_total".count))
        case (.openMetrics, .info) where name.hasSuffix("_info"):
            familyName = String(name.dropLast("_info".count))
        case (.prometheusText, .info):
            typeName = MetricType.gauge.rawValue
        default:
            break
        }
        append("# HELP ")
        append(familyName)
        append(" ")
        appendEscaped(help, quotes: format == .openMetrics)
        append("\n# TYPE ")
        append(familyName)
        append(" ")
        append(typeName)
        append("\n")
        return true
    }

    /// One unlabelled sample of the current family.
    public mutating func sample(_ value: Double) {
        sample("", labelList: [], value)
    }

    /// One sample of the current family.
    public mutating func sample(labels: KeyValuePairs<String, String>, _ value: Double) {
        sample("", labelList: labels.map { ($0.key, $0.value) }, value)
    }

    /// One sample of the current family: `suffix` is "" or `_sum`, `_count`, `_bucket`.
    public mutating func sample(_ suffix: String, labels: KeyValuePairs<String, String>, _ value: Double) {
        sample(suffix, labelList: labels.map { ($0.key, $0.value) }, value)
    }

    public mutating func sample(_ suffix: String, labelList: [(String, String)], _ value: Double) {
        guard let current else { preconditionFailure("sample written before its family") }
        append(current.name)
        append(suffix)
        if !labelList.isEmpty {
            append("{")
            for (i, (k, v)) in labelList.enumerated() {
                if i > 0 { append(",") }
                append(k)
                append("=\"")
                appendEscaped(v, quotes: true)
                append("\"")
            }
            append("}")
        }
        append(" ")
        append(PrometheusNumber.format(value))
        append("\n")
    }

    /// A histogram's samples from cumulative counts: `buckets[i]` is the count of observations
    /// at most `bounds[i]`; `count` is the `+Inf` bucket.
    public mutating func histogram(labels: [(String, String)], bounds: [Double], cumulativeCounts: [UInt64],
                                   count: UInt64, sum: Double) {
        for (bound, c) in zip(bounds, cumulativeCounts) {
            let le = format == .openMetrics ? PrometheusNumber.canonicalFloat(bound) : PrometheusNumber.format(bound)
            sample("_bucket", labelList: labels + [("le", le)], Double(c))
        }
        sample("_bucket", labelList: labels + [("le", "+Inf")], Double(count))
        sample("_sum", labelList: labels, sum)
        sample("_count", labelList: labels, Double(count))
    }

    /// The finished exposition (OpenMetrics requires the final `# EOF`).
    public mutating func finish() -> [UInt8] {
        if format == .openMetrics { append("# EOF\n") }
        return out
    }

    private mutating func append(_ s: String) { out.append(contentsOf: s.utf8) }

    private mutating func appendEscaped(_ s: String, quotes: Bool) {
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\\"): append("\\\\")
            case UInt8(ascii: "\n"): append("\\n")
            case UInt8(ascii: "\""): if quotes { append("\\\"") } else { out.append(b) }
            default: out.append(b)
            }
        }
    }
}
