/// Appends JSON text to a byte buffer.
///
/// Why our own: `JSONEncoder` goes through `Encodable`'s keyed containers and a dictionary
/// representation, which costs allocations per value, reorders nothing we control, and
/// cannot write `null` for a non-finite `Double` (it throws). Our summaries and error bodies
/// are rendered on every request, must never contain `NaN` or `Infinity` (RFC 8259 section 6
/// has no such numbers), and must keep the documented field order.
public struct JSONWriter: Sendable {
    public private(set) var bytes: [UInt8]
    private var needsComma = false

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public var string: String { String(decoding: bytes, as: UTF8.self) }

    // MARK: structure

    public mutating func beginObject() { separator(); bytes.append(UInt8(ascii: "{")); needsComma = false }
    public mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma = true }
    public mutating func beginArray() { separator(); bytes.append(UInt8(ascii: "[")); needsComma = false }
    public mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma = true }

    /// Writes `"name":`; the next value call writes the value.
    public mutating func key(_ name: String) {
        separator()
        appendQuoted(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    // MARK: values

    public mutating func null() { separator(); append("null") }
    public mutating func value(_ v: Bool) { separator(); append(v ? "true" : "false") }
    public mutating func value(_ v: String) { separator(); appendQuoted(v) }
    public mutating func value(_ v: Int) { separator(); append(String(v)) }
    public mutating func value(_ v: UInt64) { separator(); append(String(v)) }
    /// A finite double as its shortest round-trip form; NaN and infinities become `null`.
    public mutating func value(_ v: Double) {
        separator()
        if v.isFinite { append(Self.format(v)) } else { append("null") }
    }
    public mutating func value(_ v: Double?) { if let v { value(v) } else { null() } }
    public mutating func value(_ v: Int?) { if let v { value(v) } else { null() } }
    public mutating func value(_ v: String?) { if let v { value(v) } else { null() } }

    /// Convenience for `key(name)` followed by the value.
    public mutating func field(_ name: String, _ v: Double?) { key(name); value(v) }
    public mutating func field(_ name: String, _ v: Int?) { key(name); value(v) }
    public mutating func field(_ name: String, _ v: UInt64) { key(name); value(v) }
    public mutating func field(_ name: String, _ v: String?) { key(name); value(v) }
    public mutating func field(_ name: String, _ v: Bool) { key(name); value(v) }

    /// Inserts already-valid JSON text as one value.
    /// Moves the bytes written so far to the end of `output`; the writer carries on where it
    /// was (a streamed body writes its JSON a piece at a time this way).
    public mutating func moveBytes(into output: inout [UInt8]) {
        output.append(contentsOf: bytes)
        bytes.removeAll(keepingCapacity: true)
    }

    public mutating func raw(_ json: [UInt8]) { separator(); bytes.append(contentsOf: json); needsComma = true }

    // MARK: helpers

    /// Locale-independent, shortest representation that reads back to the same value.
    /// Integral values print without a fraction (`3` rather than `3.0`).
    public static func format(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return v.description
    }

    private mutating func separator() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        needsComma = true
    }

    private mutating func append(_ s: String) { bytes.append(contentsOf: s.utf8) }

    /// Quotes a string per RFC 8259 section 7: `"` and `\` escaped, control characters as `\uXXXX`.
    private mutating func appendQuoted(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\\")); bytes.append(b)
            case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(b)
            case 0x0A: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [
                    UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(b >> 4)],
                    hex[Int(b & 0xF)],
                ])
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
