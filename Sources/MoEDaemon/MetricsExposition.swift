import HTTPCore

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
            let parts = range.split(separator: ";").map { String($0).trimmingWhitespace().asciiLowercased() }
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
/// Other values use Swift's shortest representation that reads back as the same double, which
/// `ParseFloat` accepts as it stands (`0.25`, `1e-07`, `1e+300`).
public enum PrometheusNumber {
    public static func format(_ v: Double) -> String {
        var bytes = [UInt8]()
        append(v, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Largest magnitude written as an integer: 2^53, past which not every integer is a double.
    static let integralLimit: Double = 9_007_199_254_740_992

    /// Appends `format(v)` to `out` without building a String for it. Most values of an exposition
    /// are integers (counters, token counts, bucket counts), so they are written digit by digit;
    /// fractions get the standard library's shortest round-trip digits (the digits of
    /// `description`) written straight into `out` by `ByteSink`.
    @inline(__always)
    public static func append(_ v: Double, to out: inout [UInt8]) {
        // Integral and below 2^53 in magnitude, tested with one truncating conversion instead of
        // `v == v.rounded()` (a libm call); NaN fails the comparison. -0.0 passes and prints as
        // "0", as `String(Int64(-0.0))` does.
        if abs(v) < integralLimit {
            let i = Int64(v)
            if Double(i) == v {
                if i < 0 { out.append(UInt8(ascii: "-")) }
                appendDecimal(i.magnitude, to: &out)
                return
            }
        }
        if v.isNaN { out.append(contentsOf: "NaN".utf8); return }
        if v == .infinity { out.append(contentsOf: "+Inf".utf8); return }
        if v == -.infinity { out.append(contentsOf: "-Inf".utf8); return }
        var sink = ByteSink()
        swap(&out, &sink.bytes)  // moves the buffer in and back out: no copy
        v.write(to: &sink)
        swap(&out, &sink.bytes)
    }

    /// Appends `format(Double(v))`: the digits of `v` when it is below 2^53 (every such integer
    /// is a double), and what the double nearest to it prints otherwise.
    @inline(__always)
    static func append(_ v: UInt64, to out: inout [UInt8]) {
        if v < 9_007_199_254_740_992 {
            appendDecimal(v, to: &out)
        } else {
            append(Double(v), to: &out)
        }
    }

    /// Appends the decimal digits of `v`, with no sign and no leading zero.
    @inline(__always)
    static func appendDecimal(_ v: UInt64, to out: inout [UInt8]) {
        if v < 10 {
            out.append(UInt8(truncatingIfNeeded: v) &+ UInt8(ascii: "0"))
            return
        }
        // The digits come out last first: they are written backwards into a stack buffer of 20
        // bytes (UInt64.max has 20 digits, so the index stays in it) and copied in one append,
        // instead of storing each into the array through a checked, uniqueness-testing subscript.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var x = v
            var i = 20
            while x > 0 {
                i -= 1
                digits[i] = UInt8(truncatingIfNeeded: x % 10) &+ UInt8(ascii: "0")
                x /= 10
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: digits[i...]))
        }
    }

    /// OpenMetrics' canonical form for `le` and `quantile` label values: always a float.
    static func canonicalFloat(_ v: Double) -> String {
        if v.isNaN || v.isInfinite { return format(v) }
        if v == v.rounded(), abs(v) < integralLimit { return String(Int64(v)) + ".0" }
        return v.description
    }
}

/// A text stream that appends to a byte array.
///
/// `Double.write(to:)` formats into a stack buffer and hands the ASCII bytes to `_writeASCII`,
/// the stream hook the standard library declares for exactly this; implementing it appends them
/// with no intermediate String (a fraction's 18 to 24 characters would otherwise allocate one per
/// value). If a future standard library stopped calling it, `write(_:)` receives the same text.
struct ByteSink: TextOutputStream {
    var bytes: [UInt8] = []

    mutating func write(_ string: String) { bytes.append(contentsOf: string.utf8) }

    mutating func _writeASCII(_ buffer: UnsafeBufferPointer<UInt8>) { bytes.append(contentsOf: buffer) }
}

/// Writes one exposition, family by family.
///
/// Callers describe each family once (`family(...)`) and then write its samples; the writer
/// refuses to describe a family twice, because a repeated HELP/TYPE makes Prometheus reject the
/// whole scrape. It escapes label values (`\`, `"` and newline, the three the format requires)
/// so a layer name can never break the output.
///
/// Two ways to write samples: `sample(...)` takes labels as strings and escapes them each time
/// (for the few daemon-wide series), while `sample(_:prepared:_:value:)` takes a label set escaped
/// once by `PreparedLabels`, which is what makes tens of thousands of per-layer and per-expert
/// series cheap: each sample is then a few byte copies and a number.
public struct MetricsWriter: Sendable {
    public let format: ExpositionFormat
    private var out: [UInt8] = []
    private var described: Set<String> = []
    private var current: (name: String, type: MetricType)?
    /// The current family's sample name as bytes, copied into every sample line.
    private var currentName: [UInt8] = []

    public init(format: ExpositionFormat, capacity: Int = 16 * 1024) {
        self.format = format
        out.reserveCapacity(capacity)
    }

    /// Bytes written so far.
    public var count: Int { out.count }

    /// Starts a family. `name` is the sample name without type suffixes: a counter's ends in
    /// `_total` and an info's in `_info`; OpenMetrics names the family without them (OpenMetrics
    /// 1.0, "Counter" and "Info"), the 0.0.4 format with them.
    /// Returns false (and writes nothing) if the family was already described.
    @discardableResult
    public mutating func family(_ name: String, _ type: MetricType, help: String) -> Bool {
        guard described.insert(name).inserted else { return false }
        current = (name, type)
        currentName = Array(name.utf8)
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
        precondition(current != nil, "sample written before its family")
        out.append(contentsOf: currentName)
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
        PrometheusNumber.append(value, to: &out)
        out.append(UInt8(ascii: "\n"))
    }

    /// One sample of the current family with a label set escaped beforehand, plus optionally one
    /// more label written as raw bytes (`extra` is `,name="value"`, already escaped, such as an
    /// expert index or a bucket bound). Writes exactly what `sample(_:labelList:_:)` writes for the
    /// same labels.
    public mutating func sample(
        _ suffix: StaticString = "", prepared labels: PreparedLabels, extra: [UInt8] = [],
        _ value: Double
    ) {
        precondition(current != nil, "sample written before its family")
        out.append(contentsOf: currentName)
        appendStatic(suffix)
        if labels.bytes.isEmpty && extra.isEmpty {
            out.append(UInt8(ascii: " "))
        } else {
            if labels.bytes.isEmpty {
                out.append(UInt8(ascii: "{"))
                out.append(contentsOf: extra.dropFirst())  // no comma before the first label
            } else {
                out.append(contentsOf: labels.bytes)
                out.append(contentsOf: extra)
            }
            out.append(UInt8(ascii: "}"))
            out.append(UInt8(ascii: " "))
        }
        PrometheusNumber.append(value, to: &out)
        out.append(UInt8(ascii: "\n"))
    }

    /// `sample(prepared: labels, extra: <label i>, values[i])` for every index `i` of `values`, the
    /// per-expert series: the line prefix (sample name and label set) is assembled once, and each
    /// line is then three byte copies and a number. `indexed` must cover every index.
    public mutating func samples(prepared labels: PreparedLabels, indexed: IndexLabels, counts: [UInt64]) {
        precondition(indexed.count >= counts.count, "an index label for every value")
        guard !labels.bytes.isEmpty else {
            for (i, c) in counts.enumerated() { sample(prepared: labels, extra: indexed.extra(i), Double(c)) }
            return
        }
        let prefix = linePrefix(labels)
        // The fragments are read through one buffer pointer for the whole loop (bounds checked by
        // the slice), so no array is retained and released per line.
        indexed.bytes.withUnsafeBufferPointer { fragments in
            var start = 0
            for (i, c) in counts.enumerated() {
                let end = indexed.ends[i]
                out.append(contentsOf: prefix)
                out.append(contentsOf: UnsafeBufferPointer(rebasing: fragments[start..<end]))
                PrometheusNumber.append(c, to: &out)
                out.append(UInt8(ascii: "\n"))
                start = end
            }
        }
    }

    /// The same for fractional values.
    public mutating func samples(prepared labels: PreparedLabels, indexed: IndexLabels, values: [Double]) {
        precondition(indexed.count >= values.count, "an index label for every value")
        guard !labels.bytes.isEmpty else {
            for (i, v) in values.enumerated() { sample(prepared: labels, extra: indexed.extra(i), v) }
            return
        }
        let prefix = linePrefix(labels)
        indexed.bytes.withUnsafeBufferPointer { fragments in
            var start = 0
            for (i, v) in values.enumerated() {
                let end = indexed.ends[i]
                out.append(contentsOf: prefix)
                out.append(contentsOf: UnsafeBufferPointer(rebasing: fragments[start..<end]))
                PrometheusNumber.append(v, to: &out)
                out.append(UInt8(ascii: "\n"))
                start = end
            }
        }
    }

    private func linePrefix(_ labels: PreparedLabels) -> [UInt8] {
        precondition(current != nil, "sample written before its family")
        var prefix = currentName
        prefix.append(contentsOf: labels.bytes)
        return prefix
    }

    /// A histogram's samples from cumulative counts: `buckets[i]` is the count of observations
    /// at most `bounds[i]`; `count` is the `+Inf` bucket.
    public mutating func histogram(
        labels: [(String, String)], bounds: [Double], cumulativeCounts: [UInt64],
        count: UInt64, sum: Double
    ) {
        histogram(
            prepared: PreparedLabels(labels), le: leLabels(bounds), cumulativeCounts: cumulativeCounts,
            count: count, sum: sum)
    }

    /// The `le` labels of `bounds` in this writer's format (`,le="0.5"`), to pass to
    /// `histogram(prepared:le:...)` for every histogram sharing those bounds.
    public func leLabels(_ bounds: [Double]) -> [[UInt8]] {
        bounds.map { bound in
            let le = format == .openMetrics ? PrometheusNumber.canonicalFloat(bound) : PrometheusNumber.format(bound)
            return PreparedLabels.extra("le", le)
        }
    }

    /// `histogram(labels:...)` with the labels and the bounds' `le` labels prepared beforehand.
    public mutating func histogram(
        prepared labels: PreparedLabels, le: [[UInt8]], cumulativeCounts: [UInt64],
        count: UInt64, sum: Double
    ) {
        for (leLabel, c) in zip(le, cumulativeCounts) {
            sample("_bucket", prepared: labels, extra: leLabel, Double(c))
        }
        sample("_bucket", prepared: labels, extra: PreparedLabels.infBucket, Double(count))
        sample("_sum", prepared: labels, sum)
        sample("_count", prepared: labels, Double(count))
    }

    /// The finished exposition (OpenMetrics requires the final `# EOF`).
    public mutating func finish() -> [UInt8] {
        end()
        return out
    }

    /// Writes what ends an exposition (OpenMetrics' `# EOF`).
    public mutating func end() {
        if format == .openMetrics { append("# EOF\n") }
    }

    /// Swaps the writer's buffer with `buffer`: a writer given a caller's buffer appends to it
    /// directly (`MetricsBody` writes each piece into the response's buffer this way).
    public mutating func exchangeBuffer(_ buffer: inout [UInt8]) {
        swap(&out, &buffer)
    }

    private mutating func append(_ s: String) { out.append(contentsOf: s.utf8) }

    private mutating func appendStatic(_ s: StaticString) {
        guard s.utf8CodeUnitCount > 0 else { return }
        s.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    private mutating func appendEscaped(_ s: String, quotes: Bool) {
        PreparedLabels.appendEscaped(s, quotes: quotes, to: &out)
    }
}

/// A label set escaped once, as bytes (`{layer="decoder.3"`, without the closing brace), to be
/// written in front of many samples: a layer's name is escaped once per scrape instead of once
/// per series. Empty for no labels.
public struct PreparedLabels: Sendable, Equatable {
    public let bytes: [UInt8]

    public init(_ labels: [(String, String)]) {
        var b = [UInt8]()
        for (i, (k, v)) in labels.enumerated() {
            b.append(i == 0 ? UInt8(ascii: "{") : UInt8(ascii: ","))
            b.append(contentsOf: k.utf8)
            b.append(contentsOf: "=\"".utf8)
            Self.appendEscaped(v, quotes: true, to: &b)
            b.append(UInt8(ascii: "\""))
        }
        bytes = b
    }

    /// One more label as `,name="value"` with the value escaped, for `MetricsWriter.sample`'s `extra`.
    public static func extra(_ name: String, _ value: String) -> [UInt8] {
        var b: [UInt8] = [UInt8(ascii: ",")]
        b.append(contentsOf: name.utf8)
        b.append(contentsOf: "=\"".utf8)
        appendEscaped(value, quotes: true, to: &b)
        b.append(UInt8(ascii: "\""))
        return b
    }

    static let infBucket = extra("le", "+Inf")

    /// Escapes `\`, newline and (in label values and OpenMetrics HELP) `"`, the characters the
    /// exposition formats require escaped.
    static func appendEscaped(_ s: String, quotes: Bool, to out: inout [UInt8]) {
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
            case UInt8(ascii: "\n"): out.append(contentsOf: "\\n".utf8)
            case UInt8(ascii: "\""): if quotes { out.append(contentsOf: "\\\"".utf8) } else { out.append(b) }
            default: out.append(b)
            }
        }
    }
}

/// The label fragments `,NAME="0"} `, `,NAME="1"} `, ... (each with the closing brace and the
/// space before the value) for indexed series such as experts: formatted once per scrape, in one
/// buffer, instead of once per series.
public struct IndexLabels: Sendable {
    let bytes: [UInt8]
    /// `ends[i]` is where fragment `i` ends in `bytes`; it starts where fragment `i - 1` ends.
    let ends: [Int]

    public init(name: String, count: Int) {
        var b = [UInt8]()
        var e = [Int]()
        e.reserveCapacity(count)
        for i in 0..<count {
            b.append(contentsOf: PreparedLabels.extra(name, String(i)))
            b.append(contentsOf: "} ".utf8)
            e.append(b.count)
        }
        bytes = b
        ends = e
    }

    public var count: Int { ends.count }

    /// Fragment `i` as a `MetricsWriter.sample` extra label (without `} `).
    func extra(_ i: Int) -> [UInt8] {
        Array(bytes[(i == 0 ? 0 : ends[i - 1])..<(ends[i] - 2)])
    }
}
