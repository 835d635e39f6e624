/// A strict RFC 8259 tokenizer over a byte buffer, used by `DecisionDecoder`.
///
/// It never builds a tree: the decision parser asks for the next token of the type it expects and
/// the scanner validates it in place. Strings are only copied when their value is needed (layer
/// and worker names, keys with escapes); numbers are parsed from their digits without a `String`.
///
/// Strictness, by RFC 8259 section:
/// - section 2: only the four whitespace bytes (space, tab, LF, CR) between tokens.
/// - section 6: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, so no leading zeros,
///   no `+`, no bare `.`, no `NaN` or `Infinity`.
/// - section 7: every escape, `\u` with surrogate pairs only as pairs; unescaped U+0000 to U+001F
///   refused.
/// - section 8.1: the text must be UTF-8; overlong forms, encoded surrogates and code points above
///   U+10FFFF are refused (Unicode 15, table 3-7). A byte order mark is refused too (section 8.1
///   allows ignoring it; refusing keeps one spelling of a body).
/// - section 9: nesting depth is limited (`DecisionDecoder.Limits.maxDepth`).
struct JSONScanner {
    /// The whole body, so that error offsets are body offsets.
    let bytes: UnsafeBufferPointer<UInt8>
    /// Next byte to read.
    var pos: Int
    /// One past the last byte this scan may read (the end of an NDJSON line).
    var end: Int
    let maxDepth: Int
    /// Where in the current decision the scan is, for error messages.
    var path = FieldPath()
    /// The decision's position in a batch; nil for a body holding a single object.
    var decisionIndex: Int?
    /// NDJSON line number (from 1), for messages.
    var line: Int?
    /// Decoded bytes of the last string read with escapes.
    var scratch: [UInt8] = []

    init(bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) {
        self.bytes = bytes
        self.pos = 0
        self.end = bytes.count
        // Recursion on skipped values is bounded by this; keep it far from the stack's size.
        self.maxDepth = min(max(maxDepth, 1), 1_000)
    }

    // MARK: errors

    /// An error about the current field, with the path and decision index attached.
    func fail(_ kind: DecisionError.Kind, _ message: String) -> DecisionError {
        let field = path.render(bytes)
        var text = ""
        if let field { text = "\(field): " }
        text += message
        if let line { text += " (line \(line))" }
        return DecisionError(kind, text, field: field, index: decisionIndex)
    }

    /// A syntax error at the current position.
    func syntax(_ message: String) -> DecisionError {
        fail(.malformed, "invalid JSON at byte \(pos): \(message)")
    }

    func unexpected(_ expecting: String) -> DecisionError {
        guard pos < end else { return truncated(expecting) }
        return syntax("unexpected \(describeByte(bytes[pos])), expected \(expecting)")
    }

    /// The body (in NDJSON, the line) ended inside a value. No field is named: the field being
    /// read is not what is wrong, the missing rest of the text is.
    func truncated(_ expecting: String) -> DecisionError {
        var text =
            "\(line == nil ? "the body" : "the line") ended early (invalid JSON at byte \(pos)), expected \(expecting)"
        if let line { text += " (line \(line))" }
        return DecisionError(.malformed, text, field: nil, index: decisionIndex)
    }

    /// "expected X, got Y" for a value of the wrong type, or `truncated` when nothing follows.
    mutating func mismatch(_ expecting: String) -> DecisionError {
        guard peek() != nil else { return truncated(expecting) }
        return fail(.malformed, "expected \(expecting), got \(describeNextValue())")
    }

    func describeByte(_ b: UInt8) -> String {
        if b >= 0x21 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
        return "byte \(hex(b))"
    }

    /// `0x0A`, `0xFF`: a byte in hexadecimal, for messages that already say "byte".
    func hex(_ b: UInt8) -> String {
        let digits = String(b, radix: 16, uppercase: true)
        return "0x\(digits.count == 1 ? "0" + digits : digits)"
    }

    // MARK: structure

    @inline(__always)
    mutating func skipWhitespace() {
        while pos < end {
            let b = bytes[pos]
            guard b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 else { return }
            pos += 1
        }
    }

    /// The next non-whitespace byte, not consumed; nil at the end.
    @inline(__always)
    mutating func peek() -> UInt8? {
        skipWhitespace()
        return pos < end ? bytes[pos] : nil
    }

    @inline(__always)
    mutating func expect(_ b: UInt8, _ description: String) throws(DecisionError) {
        skipWhitespace()
        guard pos < end, bytes[pos] == b else { throw unexpected(description) }
        pos += 1
    }

    /// After a member or element: consumes `,` and returns true, or consumes `close` and returns
    /// false. A `,` directly before `close` (a trailing comma) is refused by the caller, which then
    /// expects a value.
    @inline(__always)
    mutating func nextMember(close: UInt8) throws(DecisionError) -> Bool {
        skipWhitespace()
        if pos < end {
            let b = bytes[pos]
            if b == UInt8(ascii: ",") { pos += 1; return true }
            if b == close { pos += 1; return false }
        }
        throw unexpected(close == UInt8(ascii: "}") ? "',' or '}'" : "',' or ']'")
    }

    /// The kind of the next value, for "expected X, got Y" messages; does not consume.
    mutating func describeNextValue() -> String {
        guard let b = peek() else { return "end of input" }
        switch b {
        case UInt8(ascii: "{"): return "an object"
        case UInt8(ascii: "["): return "an array"
        case UInt8(ascii: "\""): return "a string"
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return "a boolean"
        case UInt8(ascii: "n"): return "null"
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return "a number"
        default: return describeByte(b)
        }
    }

    /// Consumes `null` if it is next.
    @inline(__always)
    mutating func consumeNull() throws(DecisionError) -> Bool {
        guard peek() == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    mutating func literal(_ word: StaticString) throws(DecisionError) {
        let n = word.utf8CodeUnitCount
        let p = word.utf8Start
        for i in 0..<n {
            guard pos < end else { throw truncated("'\(word)'") }
            guard bytes[pos] == p[i] else {
                throw syntax("invalid literal, expected '\(word)'")
            }
            pos += 1
        }
    }

    /// Validates and skips any value (for unknown fields), nested up to the depth limit.
    /// `depth` is the depth the value itself will have.
    mutating func skipValue(depth: Int) throws(DecisionError) {
        guard let b = peek() else { throw unexpected("a value") }
        switch b {
        case UInt8(ascii: "{"):
            try enter(depth)
            pos += 1
            if peek() == UInt8(ascii: "}") { pos += 1; return }
            // Duplicate names are refused here too (RFC 8259 section 4 says they SHOULD be unique
            // and leaves their meaning open); the set is only built for a second key.
            var first: [UInt8]? = nil
            var keys: Set<[UInt8]> = []
            repeat {
                guard peek() == UInt8(ascii: "\"") else { throw unexpected("a string key") }
                let keyStart = pos
                let t = try scanString(decode: true)
                let key = withValue(t) { Array($0) }
                if let f = first {
                    if keys.isEmpty { keys.insert(f) }
                    guard keys.insert(key).inserted else {
                        pos = keyStart
                        throw syntax("duplicate key \"\(String(decoding: key, as: UTF8.self))\"")
                    }
                } else {
                    first = key
                }
                try expect(UInt8(ascii: ":"), "':'")
                try skipValue(depth: depth + 1)
            } while try nextMember(close: UInt8(ascii: "}"))
        case UInt8(ascii: "["):
            try enter(depth)
            pos += 1
            if peek() == UInt8(ascii: "]") { pos += 1; return }
            repeat {
                try skipValue(depth: depth + 1)
            } while try nextMember(close: UInt8(ascii: "]"))
        case UInt8(ascii: "\""):
            _ = try scanString(decode: false)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let t = try scanNumber()
            // RFC 8259 section 6 lets a parser limit the range; ours is the double's, everywhere.
            if t.mantissaOverflow || t.exponent > 280, !doubleValue(t).isFinite {
                throw syntax("number \(text(t.start, t.end)) is outside the range of a double")
            }
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default:
            throw unexpected("a value")
        }
    }

    /// Checks the depth of an array or object about to be opened (RFC 8259 section 9 lets a
    /// parser limit nesting; unbounded nesting would let a small body exhaust the stack).
    @inline(__always)
    func enter(_ depth: Int) throws(DecisionError) {
        guard depth <= maxDepth else {
            throw syntax("nesting deeper than \(maxDepth) levels")
        }
    }

    // MARK: strings

    /// A string token: the raw bytes between the quotes, and whether `scratch` holds its decoded
    /// value instead (only when it had escapes and decoding was asked for).
    struct StringToken {
        var start: Int
        var end: Int
        var escaped: Bool
    }

    /// Reads a string starting at `"` whose value is needed (an object key, a name), with the
    /// result of `scanString(decode: true)`.
    ///
    /// Keys and names are nearly always printable ASCII without escapes; for those the closing
    /// quote is found by a tight pointer loop and the raw bytes are the value. Anything else (a
    /// backslash, a byte below 0x20, a non-ASCII byte, or the end of the input before a quote)
    /// sends the whole string, from its opening quote, through `scanString`, which validates and
    /// reports it (RFC 8259 sections 7 and 8.1).
    @inline(__always)
    mutating func scanDecodedString() throws(DecisionError) -> StringToken {
        if let close = plainStringEnd(from: pos + 1) {
            let token = StringToken(start: pos + 1, end: close, escaped: false)
            pos = close + 1
            return token
        }
        return try scanString(decode: true)
    }

    /// The index of the closing quote of a string whose contents start at `start`, when every byte
    /// before it is printable ASCII other than a backslash; nil otherwise (the caller then takes
    /// the general path).
    ///
    /// Eight bytes at a time while eight remain before `end`: a word is flagged when a byte is a
    /// quote or a backslash (equal to 0x22 or 0x5C: the zero-byte test on `word ^ pattern`), below
    /// 0x20 (the same test with a subtraction) or 0x80 and above (its top bit). Each test may
    /// flag a clean byte only above a truly flagged one (a borrow runs upward), so the lowest
    /// flag is the first byte that ends the plain run. The rest byte by byte.
    ///
    /// Why pointers: the loop runs over every key of every decision, and indexing the buffer
    /// checked its bounds per byte. Here every load lies below `end`, which is checked once
    /// against the buffer's size.
    @inline(__always)
    func plainStringEnd(from start: Int) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        let end = self.end
        precondition(end <= bytes.count)
        var p = start
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        while p + 8 <= end {
            let w = UInt64(littleEndian: UnsafeRawPointer(base + p).loadUnaligned(as: UInt64.self))
            let q = w ^ (ones &* 0x22)
            let s = w ^ (ones &* 0x5C)
            let flags = ((q &- ones) & ~q | (s &- ones) & ~s | (w &- ones &* 0x20) & ~w | w) & highs
            if flags != 0 {
                let i = p + flags.trailingZeroBitCount >> 3
                return base[i] == UInt8(ascii: "\"") ? i : nil
            }
            p += 8
        }
        while p < end {
            let b = base[p]
            if b == UInt8(ascii: "\"") { return p }
            // 0x20 ... 0x7F and not a backslash; one compare for the range.
            guard b &- 0x20 < 0x60, b != UInt8(ascii: "\\") else { return nil }
            p += 1
        }
        return nil
    }

    /// Reads a string starting at `"`. With `decode`, an escaped string's value is left in
    /// `scratch`; the raw bytes of an unescaped string are its value.
    mutating func scanString(decode: Bool) throws(DecisionError) -> StringToken {
        pos += 1  // opening quote, checked by the caller
        let start = pos
        var escaped = false
        while true {
            // Fast path: printable ASCII that needs no attention.
            while pos < end {
                let b = bytes[pos]
                guard b >= 0x20, b < 0x80, b != UInt8(ascii: "\""), b != UInt8(ascii: "\\") else { break }
                if escaped && decode { scratch.append(b) }
                pos += 1
            }
            guard pos < end else { throw truncated("the rest of a string and its closing quote") }
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                let token = StringToken(start: start, end: pos, escaped: escaped && decode)
                pos += 1
                return token
            } else if b == UInt8(ascii: "\\") {
                if !escaped {
                    escaped = true
                    if decode {
                        scratch.removeAll(keepingCapacity: true)
                        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<pos]))
                    }
                }
                try scanEscape(decode: decode)
            } else if b < 0x20 {
                throw syntax("unescaped control character \(hex(b)) in string")
            } else {
                let from = pos
                try scanUTF8Sequence()
                if escaped && decode {
                    scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[from..<pos]))
                }
            }
        }
    }

    /// One escape after `\` (RFC 8259 section 7).
    mutating func scanEscape(decode: Bool) throws(DecisionError) {
        pos += 1
        guard pos < end else { throw truncated("the rest of an escape") }
        let c = bytes[pos]
        let simple: UInt8
        switch c {
        case UInt8(ascii: "\""): simple = 0x22
        case UInt8(ascii: "\\"): simple = 0x5C
        case UInt8(ascii: "/"): simple = 0x2F
        case UInt8(ascii: "b"): simple = 0x08
        case UInt8(ascii: "f"): simple = 0x0C
        case UInt8(ascii: "n"): simple = 0x0A
        case UInt8(ascii: "r"): simple = 0x0D
        case UInt8(ascii: "t"): simple = 0x09
        case UInt8(ascii: "u"):
            pos += 1
            var scalar = try hex4()
            if scalar >= 0xD800 && scalar <= 0xDBFF {
                // A high surrogate must be followed by an escaped low surrogate.
                if pos >= end || (pos + 1 == end && bytes[pos] == UInt8(ascii: "\\")) {
                    throw truncated("a \\u escape of a low surrogate")
                }
                guard pos + 1 < end, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                    throw syntax(
                        "high surrogate \\u\(String(scalar, radix: 16, uppercase: true)) not followed by a low surrogate"
                    )
                }
                pos += 2
                let low = try hex4()
                guard low >= 0xDC00 && low <= 0xDFFF else {
                    throw syntax(
                        "high surrogate \\u\(String(scalar, radix: 16, uppercase: true)) not followed by a low surrogate"
                    )
                }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
                throw syntax("lone low surrogate \\u\(String(scalar, radix: 16, uppercase: true))")
            }
            if decode { appendUTF8(scalar) }
            return
        default:
            throw syntax("invalid escape \\\(describeByte(c))")
        }
        pos += 1
        if decode { scratch.append(simple) }
    }

    mutating func hex4() throws(DecisionError) -> UInt32 {
        guard pos + 4 <= end else { throw truncated("4 hex digits of a \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[pos]
            let d: UInt8
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = b - UInt8(ascii: "A") + 10
            default: throw syntax("invalid hex digit in \\u escape")
            }
            v = v << 4 | UInt32(d)
            pos += 1
        }
        return v
    }

    mutating func appendUTF8(_ s: UInt32) {
        if s < 0x80 {
            scratch.append(UInt8(s))
        } else if s < 0x800 {
            scratch.append(UInt8(0xC0 | (s >> 6)))
            scratch.append(UInt8(0x80 | (s & 0x3F)))
        } else if s < 0x10000 {
            scratch.append(UInt8(0xE0 | (s >> 12)))
            scratch.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            scratch.append(UInt8(0x80 | (s & 0x3F)))
        } else {
            scratch.append(UInt8(0xF0 | (s >> 18)))
            scratch.append(UInt8(0x80 | ((s >> 12) & 0x3F)))
            scratch.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            scratch.append(UInt8(0x80 | (s & 0x3F)))
        }
    }

    /// One multi-byte UTF-8 sequence starting at `pos`, by Unicode table 3-7 (well-formed UTF-8
    /// byte sequences): no overlong forms, no surrogates, nothing above U+10FFFF.
    mutating func scanUTF8Sequence() throws(DecisionError) {
        let b0 = bytes[pos]
        let length: Int
        var lo: UInt8 = 0x80
        var hi: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; lo = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; hi = 0x9F
        case 0xF0: length = 4; lo = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; hi = 0x8F
        default: throw syntax("invalid UTF-8 byte \(hex(b0))")
        }
        guard pos + length <= end else { throw truncated("the rest of a UTF-8 sequence") }
        let b1 = bytes[pos + 1]
        guard b1 >= lo && b1 <= hi else { throw syntax("invalid UTF-8 sequence") }
        for i in 2..<length where bytes[pos + i] & 0xC0 != 0x80 {
            throw syntax("invalid UTF-8 sequence")
        }
        pos += length
    }

    /// The bytes of a string's value (raw or decoded), for a closure that must not keep them.
    func withValue<R>(_ t: StringToken, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if t.escaped {
            return scratch.withUnsafeBufferPointer { body($0) }
        }
        return body(UnsafeBufferPointer(rebasing: bytes[t.start..<t.end]))
    }

    // MARK: numbers

    /// A number token (RFC 8259 section 6) and what could be read from its digits on the way.
    struct NumberToken {
        var start: Int
        var end: Int
        var negative = false
        /// No fraction and no exponent: written as an integer.
        var isInteger = true
        /// All significant digits (integer and fraction part) as an integer, when it fits.
        var mantissa: UInt64 = 0
        var mantissaOverflow = false
        /// Decimal exponent to apply to `mantissa` (explicit exponent minus fraction digits).
        var exponent = 0
    }

    mutating func scanNumber() throws(DecisionError) -> NumberToken {
        var t = NumberToken(start: pos, end: pos)
        if bytes[pos] == UInt8(ascii: "-") {
            t.negative = true
            pos += 1
        }
        guard pos < end else { throw truncated("a digit after '-'") }
        guard bytes[pos] &- UInt8(ascii: "0") < 10 else {
            throw syntax("a number needs a digit after '-'")
        }
        if bytes[pos] == UInt8(ascii: "0") {
            pos += 1
            if pos < end, bytes[pos] &- UInt8(ascii: "0") < 10 {
                throw syntax("leading zero in a number")
            }
        } else {
            digits(&t, fraction: false)
        }
        if pos < end, bytes[pos] == UInt8(ascii: ".") {
            t.isInteger = false
            pos += 1
            guard pos < end else { throw truncated("a digit after '.'") }
            guard bytes[pos] &- UInt8(ascii: "0") < 10 else {
                throw syntax("a number needs a digit after '.'")
            }
            digits(&t, fraction: true)
        }
        if pos < end, bytes[pos] | 0x20 == UInt8(ascii: "e") {
            t.isInteger = false
            pos += 1
            var negativeExponent = false
            if pos < end, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") {
                negativeExponent = bytes[pos] == UInt8(ascii: "-")
                pos += 1
            }
            guard pos < end else { throw truncated("a digit in a number's exponent") }
            guard bytes[pos] &- UInt8(ascii: "0") < 10 else {
                throw syntax("a number needs a digit in its exponent")
            }
            var e = 0
            while pos < end {
                let d = bytes[pos] &- UInt8(ascii: "0")
                guard d < 10 else { break }
                if e < 1_000_000 { e = e * 10 + Int(d) }  // saturates: the value is out of range anyway
                pos += 1
            }
            t.exponent += negativeExponent ? -e : e
        }
        t.end = pos
        return t
    }

    @inline(__always)
    mutating func digits(_ t: inout NumberToken, fraction: Bool) {
        while pos < end {
            let d = bytes[pos] &- UInt8(ascii: "0")
            guard d < 10 else { return }
            if !t.mantissaOverflow {
                let (m, o1) = t.mantissa.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.addingReportingOverflow(UInt64(d))
                if o1 || o2 {
                    t.mantissaOverflow = true
                    // Digits beyond what fits still scale an integer part; fraction digits are dropped.
                    if !fraction { t.exponent += 1 }
                } else {
                    t.mantissa = s
                    if fraction { t.exponent -= 1 }
                }
            } else if !fraction {
                t.exponent += 1
            }
            pos += 1
        }
    }

    /// The number's value as a double, correctly rounded. Small exact cases are computed from the
    /// digits (Clinger's fast path); the rest goes through the standard library's parser.
    func doubleValue(_ t: NumberToken) -> Double {
        if !t.mantissaOverflow && t.mantissa <= 1 << 53 && t.exponent >= -22 && t.exponent <= 22 {
            var v = Double(t.mantissa)
            if t.exponent < 0 {
                v /= JSONScanner.powersOfTen[-t.exponent]
            } else if t.exponent > 0 {
                v *= JSONScanner.powersOfTen[t.exponent]
            }
            return t.negative ? -v : v
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[t.start..<t.end]), as: UTF8.self)
        return Double(text) ?? .nan
    }

    static let powersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ]

    /// The raw text of a token, for messages.
    func text(_ start: Int, _ end: Int) -> String {
        let n = min(end - start, 40)
        let s = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<(start + n)]), as: UTF8.self)
        return n < end - start ? s + "..." : s
    }

    /// Checks that `bytes` hold exactly one JSON value (any type, RFC 8259 section 2) with nothing
    /// but whitespace around it. The decision schema is not applied; used to compare the
    /// tokenizer with other JSON parsers.
    static func validate(_ bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) throws(DecisionError) {
        var s = JSONScanner(bytes: bytes, maxDepth: maxDepth)
        try s.skipValue(depth: 1)
        if s.peek() != nil {
            throw s.syntax("unexpected \(s.describeByte(s.bytes[s.pos])) after the end of the JSON value")
        }
    }
}
