/// The state file's binary layout, version 3 (versions 1 and 2 are still read). Written by `LayerRegistry.exportState()`, read by
/// `LayerRegistry.restore(from:)`.
///
/// Why binary and not JSON: every double must come back bit for bit (a summary computed after a
/// restart must equal the one before, to the last digit), which raw IEEE 754 bit patterns give
/// for free, and the module has no JSON reader for nested documents of its own. Why a checksum:
/// a file torn by a crash or flipped on disk must stop the start, not restore plausible garbage.
///
/// All integers are little-endian; a double is its 64-bit IEEE 754 bit pattern as a UInt64.
///
/// Header (24 bytes):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic, ASCII `MOESTATE` |
/// | 8 | 4 | format version (UInt32), 3 (or 2, or 1) |
/// | 12 | 8 | payload length in bytes (UInt64) |
/// | 20 | 4 | CRC-32 (IEEE 802.3 polynomial, as zlib and PNG) of the payload (UInt32) |
///
/// The payload follows and the file ends with it (trailing bytes are an error). Payload:
/// layer count (UInt32), then per layer its record length (UInt64) and the record:
///
/// - name: UInt16 length + UTF-8 bytes; experts E (UInt32)
/// - total routings, total tokens, tokens dropped (UInt64 each)
/// - expert tokens (E x UInt64), utilization sums (E x double), last counts (E x UInt64),
///   last active routing numbers (E x UInt64)
/// - load-balance, router z and auxiliary losses: sum (double) + count (UInt64) each
/// - non-finite losses (UInt64)
/// - load variances, then latency samples in ms: count (UInt32) + doubles, oldest first
/// - latency count (UInt64), sum ms, min ms, max ms (doubles)
/// - latency buckets: count B (UInt32), B upper bounds in seconds (doubles), B per-bucket
///   (not cumulative) counts (UInt64)
/// - capacity: decisions (UInt64), EMA utilization, peak utilization (doubles), total capacity,
///   total used (UInt64)
/// - capacity-exceeded count (UInt64), last updated (double, Unix seconds)
/// - workers: count W (UInt32), untracked decisions (UInt64), then W times name (UInt16 length +
///   UTF-8), last seen (double), decisions (UInt64), and from version 2 its bit in the step
///   buckets' worker sets (UInt32)
///
/// From version 2, then:
///
/// - demand: decisions that sent one (UInt64), overflow present (UInt8 0/1), E overflows (UInt64)
/// - history: bucketing (UInt8: 0 none yet, 1 step, 2 time), bucket seconds, capacity (UInt32
///   each), newest key present (UInt8) + newest key (Int64 as UInt64), late and unbucketed
///   decisions (UInt64), worker words per bucket (UInt32)
/// - kept buckets: count K (UInt32), oldest first, each: key (Int64 as UInt64), decisions, tokens,
///   tokens dropped (UInt64), the three losses' sum (double) + count (UInt64), non-finite losses
///   (UInt64), worst decision MaxVio (double, negative for none), workers (UInt32), demand
///   decisions (UInt64), the worker-set words (UInt64 each), E token sums (UInt64), overflow
///   present (UInt8) + E overflows (UInt64)
///
/// From version 3, after the last layer record: the expert placement, its length in bytes
/// (UInt64, 0 for none) and the bytes, the JSON `GET /v1/placement` answers (the daemon reads
/// and checks it; this module only carries it).
enum StateFormat {
    static let magic: [UInt8] = Array("MOESTATE".utf8)
    static let version: UInt32 = 3
    /// Versions this build reads.
    static let readable: ClosedRange<UInt32> = 1...3
    static let headerSize = 24
}

/// CRC-32 with the reflected IEEE 802.3 polynomial 0xEDB88320, initial value and final XOR
/// 0xFFFFFFFF: the checksum of zlib, gzip and PNG, so `crc32` tools can check a state file.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return c ^ 0xFFFF_FFFF
    }
}

/// Appends little-endian fields to a byte buffer.
struct StateWriter {
    var bytes: [UInt8] = []

    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v & 0xFF)); bytes.append(UInt8(v >> 8)) }
    mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    mutating func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
    mutating func f64(_ v: Double) { u64(v.bitPattern) }

    /// A string as UInt16 length + UTF-8 (names are at most a few hundred bytes).
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        precondition(utf8.count <= Int(UInt16.max))
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    mutating func u64s(_ values: [UInt64]) { for v in values { u64(v) } }
    mutating func f64s(_ values: [Double]) { for v in values { f64(v) } }

    /// A counted list of doubles: UInt32 count + the values.
    mutating func countedF64s(_ values: [Double]) {
        u32(UInt32(values.count))
        f64s(values)
    }

    /// Overwrites 8 bytes at `offset` with `v` (a length written after its record).
    mutating func patchU64(_ v: UInt64, at offset: Int) {
        for i in 0..<8 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }
}

/// Reads little-endian fields, throwing `.truncated` past the end instead of trapping. Every
/// count is checked against the bytes left before anything is allocated, so a damaged length
/// cannot make the reader allocate gigabytes.
struct StateReader {
    let bytes: [UInt8]
    var position: Int
    /// Where the current record ends; reads may not pass it.
    var limit: Int
    /// What is being read, for messages ("layer \"l0\"").
    var context = "header"

    init(_ bytes: [UInt8], from position: Int = 0) {
        self.bytes = bytes
        self.position = position
        limit = bytes.count
    }

    var remaining: Int { limit - position }

    private mutating func take(_ n: Int, _ what: String) throws(StateError) -> Int {
        guard n >= 0, n <= remaining else {
            throw StateError(
                .truncated, "state file truncated: \(context): \(what) needs \(n) bytes, \(remaining) left")
        }
        let start = position
        position += n
        return start
    }

    mutating func raw(_ n: Int, _ what: String) throws(StateError) -> ArraySlice<UInt8> {
        let start = try take(n, what)
        return bytes[start..<(start + n)]
    }

    mutating func u16(_ what: String) throws(StateError) -> UInt16 {
        let s = try take(2, what)
        return UInt16(bytes[s]) | UInt16(bytes[s + 1]) << 8
    }

    mutating func u32(_ what: String) throws(StateError) -> UInt32 {
        let s = try take(4, what)
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[s + i]) << (8 * UInt32(i)) }
        return v
    }

    mutating func u64(_ what: String) throws(StateError) -> UInt64 {
        let s = try take(8, what)
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[s + i]) << (8 * UInt64(i)) }
        return v
    }

    mutating func f64(_ what: String) throws(StateError) -> Double {
        Double(bitPattern: try u64(what))
    }

    /// A UInt16-length string that must be valid UTF-8.
    mutating func string(_ what: String) throws(StateError) -> String {
        let n = Int(try u16("\(what) length"))
        let slice = try raw(n, what)
        guard let s = String(validating: slice, as: UTF8.self) else {
            throw StateError(.inconsistent, "state file inconsistent: \(context): \(what) is not valid UTF-8")
        }
        return s
    }

    /// Checks that `count` elements of `size` bytes fit in what is left, before allocating them.
    func check(count: Int, size: Int, _ what: String) throws(StateError) {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow, bytes <= remaining else {
            throw StateError(
                .truncated,
                "state file truncated: \(context): \(count) \(what) need \(count) x \(size) bytes, \(remaining) left")
        }
    }

    mutating func u64s(_ count: Int, _ what: String) throws(StateError) -> [UInt64] {
        try check(count: count, size: 8, what)
        var out = [UInt64]()
        out.reserveCapacity(count)
        for _ in 0..<count { out.append(try u64(what)) }
        return out
    }

    mutating func f64s(_ count: Int, _ what: String) throws(StateError) -> [Double] {
        try check(count: count, size: 8, what)
        var out = [Double]()
        out.reserveCapacity(count)
        for _ in 0..<count { out.append(try f64(what)) }
        return out
    }

    mutating func countedF64s(_ what: String) throws(StateError) -> [Double] {
        let n = Int(try u32("\(what) count"))
        return try f64s(n, what)
    }
}
