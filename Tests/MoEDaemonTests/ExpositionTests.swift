import Foundation
import TestTools
import Testing

@testable import MoEDaemon

@Suite struct ExpositionTests {
    @Test func labelValuesAreEscaped() {
        var w = MetricsWriter(format: .prometheusText)
        w.family("x_total", .counter, help: "h")
        w.sample(labels: ["layer": "a\\b\"c\nd"], 1)
        let text = String(decoding: w.finish(), as: UTF8.self)
        #expect(text.contains(#"x_total{layer="a\\b\"c\nd"} 1"#))
        #expect(!text.contains("c\nd"))
    }

    @Test func helpIsEscapedPerFormat() {
        var text = MetricsWriter(format: .prometheusText)
        text.family("g", .gauge, help: "back\\slash \"quoted\"\nnext")
        let t = String(decoding: text.finish(), as: UTF8.self)
        // 0.0.4 escapes backslash and newline in HELP, not quotes.
        #expect(t.hasPrefix("# HELP g back\\\\slash \"quoted\"\\nnext\n# TYPE g gauge\n"))
        var om = MetricsWriter(format: .openMetrics)
        om.family("g", .gauge, help: "\"q\"")
        let o = String(decoding: om.finish(), as: UTF8.self)
        #expect(o.hasPrefix("# HELP g \\\"q\\\"\n"))
    }

    @Test func familyIsDescribedOnce() {
        var w = MetricsWriter(format: .prometheusText)
        let first = w.family("a_total", .counter, help: "first")
        #expect(first)
        w.sample(1)
        let second = w.family("a_total", .counter, help: "second")
        #expect(!second)
        let text = String(decoding: w.finish(), as: UTF8.self)
        #expect(text.components(separatedBy: "# HELP a_total").count == 2)
        #expect(text.components(separatedBy: "# TYPE a_total").count == 2)
        #expect(!text.contains("second"))
    }

    @Test func openMetricsCountersAndEOF() {
        var w = MetricsWriter(format: .openMetrics)
        w.family("moe_routing_tokens_total", .counter, help: "Tokens.")
        w.sample(labels: ["layer": "l"], 5)
        w.family("lat_seconds", .histogram, help: "L.")
        w.histogram(labels: [("layer", "l")], bounds: [0.5, 1], cumulativeCounts: [1, 2], count: 3, sum: 2.25)
        let text = String(decoding: w.finish(), as: UTF8.self)
        #expect(text.contains("# TYPE moe_routing_tokens counter\n"))
        #expect(text.contains("# HELP moe_routing_tokens Tokens.\n"))
        #expect(text.contains("moe_routing_tokens_total{layer=\"l\"} 5\n"))
        #expect(text.contains("lat_seconds_bucket{layer=\"l\",le=\"1.0\"} 2\n"))
        #expect(text.contains("lat_seconds_bucket{layer=\"l\",le=\"+Inf\"} 3\n"))
        #expect(text.hasSuffix("lat_seconds_count{layer=\"l\"} 3\n# EOF\n"))
    }

    @Test func textFormatKeepsTotalInTypeLine() {
        var w = MetricsWriter(format: .prometheusText)
        w.family("moe_routing_tokens_total", .counter, help: "Tokens.")
        w.family("lat_seconds", .histogram, help: "L.")
        w.histogram(labels: [], bounds: [1], cumulativeCounts: [0], count: 0, sum: 0)
        let text = String(decoding: w.finish(), as: UTF8.self)
        #expect(text.contains("# TYPE moe_routing_tokens_total counter\n"))
        #expect(text.contains("lat_seconds_bucket{le=\"1\"} 0\n"))
        #expect(!text.contains("# EOF"))
    }

    @Test(arguments: [
        (Double.infinity, "+Inf"), (-Double.infinity, "-Inf"), (Double.nan, "NaN"), (3, "3"), (-2, "-2"),
        (0.5, "0.5"), (1e-7, "1e-07"), (1e300, "1e+300"),
    ])
    func numbersArePrometheusSpelled(value: Double, expected: String) {
        #expect(PrometheusNumber.format(value) == expected)
    }

    /// The formatting `PrometheusNumber` replaced, built from Strings: integral values below 2^53
    /// through `Int64`, everything else through `description`.
    static func referenceFormat(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v == .infinity { return "+Inf" }
        if v == -.infinity { return "-Inf" }
        if v == v.rounded(), abs(v) < 9_007_199_254_740_992 { return String(Int64(v)) }
        return v.description
    }

    @Test func numbersWrittenAsBytesMatchTheStringForm() {
        var values: [Double] = [
            0, -0.0, 1, -1, 9, 10, 11, 99, 100, 101, 0.1, 1e-5, 1e-4, 123.456, 1e15, 1e16, 1e17,
            9_007_199_254_740_991, 9_007_199_254_740_992, -9_007_199_254_740_991,
            9_007_199_254_740_992.nextUp, 1.5e300, -2.5e-300, .leastNonzeroMagnitude,
            .greatestFiniteMagnitude, .nan, .infinity, -.infinity, 0.5, 4.5,
        ]
        var p: Double = 1
        for _ in 0..<20 {
            values += [p - 1, p, p + 1, -p]
            p *= 10
        }
        var rng = SplitMix64(seed: 42)
        for _ in 0..<20_000 {
            values.append(Double(bitPattern: rng.next()))  // any double, NaN payloads included
            values.append(Double(rng.next() >> UInt64(rng.next() % 64)))  // integers of every length
            values.append(Double(rng.next() % 2_000) / Double(1 + rng.next() % 300_000))  // utilization-like
        }
        var mismatches = 0
        for v in values {
            var bytes: [UInt8] = [0x41]  // appending must keep what was there
            PrometheusNumber.append(v, to: &bytes)
            let expected = "A" + Self.referenceFormat(v)
            if bytes != Array(expected.utf8) {
                mismatches += 1
                if mismatches < 5 {
                    Issue.record("\(v.bitPattern): got \(String(decoding: bytes, as: UTF8.self)), expected \(expected)")
                }
            }
            #expect(PrometheusNumber.format(v) == Self.referenceFormat(v))
        }
        #expect(mismatches == 0)
    }

    @Test func preparedLabelsWriteWhatStringLabelsWrite() {
        for format in [ExpositionFormat.prometheusText, .openMetrics] {
            var slow = MetricsWriter(format: format)
            var fast = MetricsWriter(format: format)
            slow.family("x_total", .counter, help: "h")
            fast.family("x_total", .counter, help: "h")
            for layer in ["a", "a\\b\"c\nd", "layer.3:moe-x_y", ""] {
                let prepared = PreparedLabels([("layer", layer)])
                slow.sample("", labelList: [("layer", layer)], 1.5)
                fast.sample(prepared: prepared, 1.5)
                slow.sample("_sum", labelList: [("layer", layer), ("expert", "7")], 12)
                fast.sample("_sum", prepared: prepared, extra: PreparedLabels.extra("expert", "7"), 12)
                slow.sample("", labelList: [("layer", layer), ("q", "\"")], -3)
                fast.sample(prepared: prepared, extra: PreparedLabels.extra("q", "\""), -3)
            }
            slow.sample("", labelList: [], 2)
            fast.sample(prepared: PreparedLabels([]), 2)
            slow.sample("", labelList: [("only", "x")], 2)
            fast.sample(prepared: PreparedLabels([]), extra: PreparedLabels.extra("only", "x"), 2)
            slow.sample("", labelList: [("a", "1"), ("b", "2")], 0.25)
            fast.sample(prepared: PreparedLabels([("a", "1"), ("b", "2")]), 0.25)
            let s = slow.finish(), f = fast.finish()
            #expect(s == f)
            #expect(String(decoding: f, as: UTF8.self).contains(#"x_total{layer="a\\b\"c\nd",q="\""} -3"#))
        }
    }

    @Test func indexedSamplesMatchOneByOne() {
        let counts: [UInt64] = [
            0, 7, 10, 1234, 9_007_199_254_740_991, 9_007_199_254_740_992, 9_007_199_254_740_993, .max,
        ]
        let values: [Double] = [0, 0.5, 0.003893213394913234, 1e-7, -0.0, .nan, 3, 1e300]
        for format in [ExpositionFormat.prometheusText, .openMetrics] {
            for labelSet in [[("layer", "l\"0")], []] as [[(String, String)]] {
                var slow = MetricsWriter(format: format)
                var fast = MetricsWriter(format: format)
                let index = IndexLabels(name: "expert", count: 10)
                let prepared = PreparedLabels(labelSet)
                slow.family("t_total", .counter, help: "t")
                fast.family("t_total", .counter, help: "t")
                for (i, c) in counts.enumerated() {
                    slow.sample("", labelList: labelSet + [("expert", String(i))], Double(c))
                }
                fast.samples(prepared: prepared, indexed: index, counts: counts)
                slow.family("u_ratio", .gauge, help: "u")
                fast.family("u_ratio", .gauge, help: "u")
                for (i, v) in values.enumerated() {
                    slow.sample("", labelList: labelSet + [("expert", String(i))], v)
                }
                fast.samples(prepared: prepared, indexed: index, values: values)
                let s = slow.finish(), f = fast.finish()
                #expect(s == f)
                let text = String(decoding: f, as: UTF8.self)
                #expect(text.contains("expert=\"7\"} 18446744073709551615\n") == false)  // 2^64-1 is no double
                #expect(text.contains("expert=\"7\"} 1.8446744073709552e+19\n"))
                #expect(text.contains("expert=\"4\"} 9007199254740991\n"))
            }
        }
    }

    @Test func preparedHistogramMatchesTheStringOne() {
        for format in [ExpositionFormat.prometheusText, .openMetrics] {
            var slow = MetricsWriter(format: format)
            var fast = MetricsWriter(format: format)
            slow.family("lat_seconds", .histogram, help: "L.")
            fast.family("lat_seconds", .histogram, help: "L.")
            let bounds = [0.0005, 0.25, 1, 2.5, 10]
            var le: [[UInt8]] = []
            for (i, layer) in ["a", "b\"x"].enumerated() {
                slow.histogram(
                    labels: [("layer", layer)], bounds: bounds, cumulativeCounts: [1, 2, 3, 3, 4 + UInt64(i)],
                    count: 9, sum: 3.75)
                if le.isEmpty { le = fast.leLabels(bounds) }
                fast.histogram(
                    prepared: PreparedLabels([("layer", layer)]), le: le,
                    cumulativeCounts: [1, 2, 3, 3, 4 + UInt64(i)], count: 9, sum: 3.75)
            }
            let s = slow.finish(), f = fast.finish()
            #expect(s == f)
            let text = String(decoding: s, as: UTF8.self)
            #expect(text.contains(format == .openMetrics ? #"le="1.0"} 3"# : #"le="1"} 3"#))
            #expect(text.contains(#"lat_seconds_bucket{layer="b\"x",le="+Inf"} 9"#))
        }
    }

    @Test func numbersIgnoreTheLocale() {
        // A comma-decimal locale must not leak into the exposition.
        let saved = String(cString: setlocale(LC_ALL, nil))
        defer { setlocale(LC_ALL, saved) }
        _ = setlocale(LC_ALL, "de_DE.UTF-8")
        #expect(PrometheusNumber.format(0.25) == "0.25")
    }

    @Test(
        arguments: [
            (nil, ExpositionFormat.prometheusText),
            ("text/plain", .prometheusText),
            ("application/openmetrics-text; version=1.0.0", .openMetrics),
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                .openMetrics
            ),
            ("text/plain;q=1, application/openmetrics-text;q=0.5", .prometheusText),
            ("application/openmetrics-text;q=0", .prometheusText),
            ("*/*", .prometheusText),
        ] as [(String?, ExpositionFormat)])
    func acceptNegotiation(accept: String?, expected: ExpositionFormat) {
        #expect(ExpositionFormat.negotiate(accept: accept) == expected)
    }

    @Test func contentTypes() {
        #expect(ExpositionFormat.prometheusText.contentType == "text/plain; version=0.0.4; charset=utf-8")
        #expect(ExpositionFormat.openMetrics.contentType.hasPrefix("application/openmetrics-text; version=1.0.0"))
    }
}

@Suite struct GzipTests {
    @Test func roundTripThroughZlibInflate() throws {
        var input = [UInt8]()
        for i in 0..<50_000 { input.append(UInt8(truncatingIfNeeded: i * 7 % 251)) }
        input += Array(String(repeating: "moe_routing_tokens_total{layer=\"x\"} 1\n", count: 2000).utf8)
        let compressed = try #require(Gzip.compress(input))
        #expect(compressed.count < input.count)
        #expect(compressed.prefix(2) == [0x1F, 0x8B])  // gzip magic (RFC 1952 section 2.3.1)
        #expect(Gzip.decompress(compressed) == input)
    }

    @Test func incompressibleInputGrowsTheOutput() throws {
        // Random bytes do not shrink: the output outgrows its first buffer (a quarter of the
        // input) several times, and must still be one complete member.
        var rng = SplitMix64(seed: 7)
        for size in [1, 4095, 4096, 70_000, 300_001] {
            let input = (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let compressed = try #require(Gzip.compress(input))
            #expect(compressed.count > input.count / 4)
            #expect(Gzip.decompress(compressed) == input)
        }
    }

    @Test func levelsGiveTheSameBytesBack() throws {
        let text = Array(
            String(repeating: "moe_expert_tokens_total{layer=\"L1\",expert=\"7\"} 1234\n", count: 5000).utf8)
        let fast = try #require(Gzip.compress(text))
        let default6 = try #require(Gzip.compress(text, level: 6))
        #expect(Gzip.decompress(fast) == text)
        #expect(Gzip.decompress(default6) == text)
        #expect(fast.count < text.count / 10)
    }

    @Test func halvesMakeOneMemberWithTheSameBytes() throws {
        var rng = SplitMix64(seed: 11)
        let line = Array("moe_expert_utilization_ratio{layer=\"L3\",expert=\"17\"} 0.003893213394913234\n".utf8)
        for size in [2, 3, 1001, 256 * 1024, 600_001] {
            var text = [UInt8]()
            while text.count < size { text += line }
            text.removeLast(text.count - size)
            let noise = (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            for input in [text, noise] {
                let halves = try #require(Gzip.compressInHalves(input, level: Gzip.responseLevel))
                let whole = try #require(Gzip.compressWhole(input, level: Gzip.responseLevel))
                // `decompress` refuses anything but one complete member (checksum and length
                // included), so equal bytes back mean the combined CRC and ISIZE are right.
                #expect(Gzip.decompress(halves) == input)
                #expect(Gzip.decompress(whole) == input)
                #expect(halves.prefix(3) == [0x1F, 0x8B, 8])
            }
        }
        // Past the threshold `compress` takes the halves (with two processors), below it the whole.
        let big = Array(repeating: UInt8(ascii: "x"), count: Gzip.halvesThreshold)
        #expect(Gzip.decompress(try #require(Gzip.compress(big))) == big)
    }

    @Test func emptyInput() throws {
        let compressed = try #require(Gzip.compress([]))
        #expect(Gzip.decompress(compressed) == [])
    }

    @Test func corruptInputIsRefused() throws {
        var compressed = try #require(Gzip.compress(Array("hello hello hello".utf8)))
        compressed[compressed.count / 2] ^= 0xFF
        compressed.removeLast(4)
        #expect(Gzip.decompress(compressed) == nil)
    }

    @Test(
        arguments: [
            (nil, false), ("gzip", true), ("deflate, gzip;q=0.5", true), ("gzip;q=0", false), ("identity", false),
            ("*", true), ("*;q=0", false), ("gzip;q=0, *", false), ("br, x-gzip", true), ("GZIP", true),
        ] as [(String?, Bool)])
    func acceptEncoding(header: String?, expected: Bool) {
        #expect(Gzip.accepted(by: header) == expected)
    }
}
