import CZlib
import Dispatch
import HTTPCore
import Synchronization

#if canImport(Glibc)
import Glibc  // sysconf
#elseif canImport(Musl)
import Musl
#endif

/// zlib's `inflate`, named apart from `Gzip.inflate`.
private func zlibInflate(_ strm: z_streamp, _ flush: Int32) -> Int32 { CZlib.inflate(strm, flush) }

/// gzip content coding (RFC 9110 section 8.4.1.3) through the system's zlib.
///
/// /metrics of a large model is megabytes of highly repetitive text; gzip cuts it by an order
/// of magnitude, which is why Prometheus asks for it in every scrape.
public enum Gzip {
    /// The compression level of responses: zlib's fastest, 1, not its default, 6.
    ///
    /// Responses are compressed on every request (a scrape every few seconds), so compression time
    /// is latency the client waits for, while higher levels save only about a tenth more of the
    /// bytes on a /metrics exposition (scripts/bench, /metrics scenario at 64 layers x 256 experts).
    public static let responseLevel: Int32 = 1

    /// Inputs at least this long are compressed as two halves at once (`compressInHalves`).
    static let halvesThreshold = 256 * 1024

    /// Compresses `input` into a complete gzip member; nil only if zlib fails (out of memory).
    public static func compress(_ input: [UInt8], level: Int32 = responseLevel) -> [UInt8]? {
        if input.count >= halvesThreshold, processors > 1 { return compressInHalves(input, level: level) }
        return compressWhole(input, level: level)
    }

    /// Online processors, read once: halves help only with a second core to run on.
    static let processors: Int = {
        #if canImport(Glibc) || canImport(Musl)
        return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #else
        return 1
        #endif
    }()

    /// One zlib stream over all of `input`.
    static func compressWhole(_ input: [UInt8], level: Int32) -> [UInt8]? {
        // windowBits 15 + 16 asks zlib for a gzip header and trailer instead of zlib's own.
        input.withUnsafeBufferPointer { deflateAll($0, windowBits: 15 + 16, level: level, finish: true) }
    }

    /// The same member built from two deflate streams compressed at the same time, as pigz does:
    /// the first half ends with a sync flush (an empty stored block, so it stops on a byte
    /// boundary without a final block) and the second half, compressed without the first as its
    /// history, carries the final block. Their concatenation is one valid deflate stream (RFC
    /// 1951 section 3.2.3: blocks follow one another; a back-reference simply never reaches into
    /// the other half), wrapped here in the gzip header and trailer (RFC 1952 section 2.3) with
    /// the two halves' CRC-32s combined: on two cores a large exposition compresses in about half
    /// the wall time, for a few hundred bytes more.
    static func compressInHalves(_ input: [UInt8], level: Int32) -> [UInt8]? {
        let mid = input.count / 2
        let results = Mutex<[(bytes: [UInt8]?, crc: UInt)]>([(nil, 0), (nil, 0)])
        let ranges = [0..<mid, mid..<input.count]
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            let (bytes, crc) = input[ranges[i]].withUnsafeBufferPointer { half in
                // windowBits -15: raw deflate, no header or trailer of its own.
                (
                    deflateAll(half, windowBits: -15, level: level, finish: i == 1),
                    UInt(crc32(0, half.baseAddress, uInt(half.count)))
                )
            }
            results.withLock { $0[i] = (bytes, crc) }
        }
        let parts = results.withLock { $0 }
        guard let first = parts[0].bytes, let second = parts[1].bytes else { return nil }
        let crc = UInt32(
            truncatingIfNeeded: crc32_combine(
                uLong(parts[0].crc), uLong(parts[1].crc),
                input.count - mid))
        var out = [UInt8]()
        out.reserveCapacity(10 + first.count + second.count + 8)
        // ID1 ID2, CM = 8 (deflate), no flags, no modification time, XFL = 4 (fastest), OS = 3 (Unix).
        out.append(contentsOf: [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, level == 1 ? 4 : 0, 3])
        out.append(contentsOf: first)
        out.append(contentsOf: second)
        let size = UInt32(truncatingIfNeeded: input.count)  // ISIZE: the length modulo 2^32
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: crc >> UInt32(shift))) }
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: size >> UInt32(shift))) }
        return out
    }

    /// Deflates all of `input` as one stream: to its end (`finish`, Z_FINISH) or to a byte
    /// boundary with no final block (Z_SYNC_FLUSH). nil if zlib fails.
    private static func deflateAll(
        _ input: UnsafeBufferPointer<UInt8>, windowBits: Int32, level: Int32,
        finish: Bool
    ) -> [UInt8]? {
        var stream = z_stream()
        guard
            deflateInit2_(
                &stream, level, Z_DEFLATED, windowBits, 8, Z_DEFAULT_STRATEGY,
                ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else { return nil }
        defer { deflateEnd(&stream) }
        // Responses are text that shrinks 6 to 10 times, so the output starts at a quarter of the
        // input and doubles only when that is not enough. Not `deflateBound`, which exceeds the
        // input: beside the exposition being compressed, that would set the process's peak memory.
        var output = [UInt8](repeating: 0, count: Swift.max(4096, input.count / 4))
        var produced = 0
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
        stream.avail_in = uInt(input.count)
        while true {
            if produced == output.count { output.append(contentsOf: repeatElement(0, count: output.count)) }
            // zlib keeps `next_out`, which growing the array invalidates: it is set again
            // before every call, from the current buffer.
            let rc: Int32 = output.withUnsafeMutableBufferPointer { outBuf in
                stream.next_out = outBuf.baseAddress.map { $0 + produced }
                stream.avail_out = uInt(outBuf.count - produced)
                let rc = deflate(&stream, finish ? Z_FINISH : Z_SYNC_FLUSH)
                produced = outBuf.count - Int(stream.avail_out)
                return rc
            }
            let full = produced == output.count
            if finish, rc == Z_STREAM_END { break }
            // A flush is complete once deflate returns with output space left over (zlib.h).
            if !finish, rc == Z_OK || rc == Z_BUF_ERROR, !full, stream.avail_in == 0 { break }
            // Z_OK (or Z_BUF_ERROR) with the buffer full: grow it and go on.
            guard rc == Z_OK || rc == Z_BUF_ERROR, full else { return nil }
        }
        output.removeSubrange(produced...)
        return output
    }

    /// What inflating a request body gave.
    public enum InflateResult: Equatable, Sendable {
        case inflated([UInt8])
        /// The output passed the limit (inflating stops there: a small bomb cannot fill memory).
        case tooLarge
        /// Not one complete gzip member: bad header, bad data, checksum mismatch, cut short,
        /// or bytes after its end.
        case corrupt
    }

    /// Inflates one gzip member, giving up as soon as the output passes `limit` bytes.
    public static func inflate(_ input: [UInt8], limit: Int) -> InflateResult {
        var stream = z_stream()
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            return .corrupt
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        return input.withUnsafeBufferPointer { inBuf -> InflateResult in
            stream.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress)
            stream.avail_in = uInt(inBuf.count)
            while true {
                let (rc, produced): (Int32, Int) = chunk.withUnsafeMutableBufferPointer { c in
                    stream.next_out = c.baseAddress
                    stream.avail_out = uInt(c.count)
                    let rc = zlibInflate(&stream, Z_NO_FLUSH)
                    return (rc, c.count - Int(stream.avail_out))
                }
                if output.count + produced > limit { return .tooLarge }
                output.append(contentsOf: chunk[0..<produced])
                if rc == Z_STREAM_END { return stream.avail_in == 0 ? .inflated(output) : .corrupt }
                if rc != Z_OK || (produced == 0 && stream.avail_in == 0) { return .corrupt }
            }
        }
    }

    /// Decompresses one gzip member; nil if the input is not valid gzip or exceeds `limit`.
    public static func decompress(_ input: [UInt8], limit: Int = 256 * 1024 * 1024) -> [UInt8]? {
        if case .inflated(let bytes) = inflate(input, limit: limit) { return bytes }
        return nil
    }

    /// True when an `Accept-Encoding` header allows gzip (RFC 9110 section 12.5.3): `gzip` or
    /// `x-gzip` with a non-zero quality, or `*` with a non-zero quality when gzip is not named.
    public static func accepted(by acceptEncoding: String?) -> Bool {
        guard let acceptEncoding else { return false }
        var gzipQ: Double?
        var starQ: Double?
        for item in acceptEncoding.split(separator: ",") {
            let parts = item.split(separator: ";").map { String($0).trimmingWhitespace().asciiLowercased() }
            guard let coding = parts.first else { continue }
            var q = 1.0
            for p in parts.dropFirst() where p.hasPrefix("q=") { q = Double(p.dropFirst(2)) ?? 0 }
            if coding == "gzip" || coding == "x-gzip" { gzipQ = q } else if coding == "*" { starQ = q }
        }
        if let gzipQ { return gzipQ > 0 }
        return (starQ ?? 0) > 0
    }
}

/// A streamed body gzipped as it is written (`HTTPBodySource`): each piece of the plain body is
/// deflated into the response's buffer, so neither the plain nor the compressed body exists
/// whole. zlib holds its window and pending output (a few hundred KiB at level 1) meanwhile.
final class GzipSource: HTTPBodySource {
    private let inner: any HTTPBodySource
    private var stream = z_stream()
    private var plain: [UInt8] = []
    private var innerDone = false
    private var finished = false

    /// nil when zlib cannot start (out of memory); the caller then sends the body plain.
    init?(_ inner: any HTTPBodySource) {
        self.inner = inner
        // windowBits 15 + 16: a gzip header and trailer (RFC 1952), as `Gzip.compress` writes.
        guard
            deflateInit2_(
                &stream, Gzip.responseLevel, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY,
                ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else { return nil }
    }

    deinit { deflateEnd(&stream) }

    func next(into output: inout [UInt8], atMost: Int) -> Bool {
        guard !finished else { return false }
        let start = output.count
        // deflate may keep a whole piece in its window and write nothing: feed it until it
        // writes, so a piece is never empty unless the body is over.
        while output.count == start {
            if !innerDone {
                plain.removeAll(keepingCapacity: true)
                innerDone = !inner.next(into: &plain, atMost: atMost)
            }
            let flush = innerDone ? Z_FINISH : Z_NO_FLUSH
            var rc = Z_OK
            plain.withUnsafeBufferPointer { input in
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
                stream.avail_in = uInt(input.count)
                repeat {
                    let room = Swift.max(4096, input.count / 4)
                    let before = output.count
                    output.append(contentsOf: repeatElement(0, count: room))
                    output.withUnsafeMutableBufferPointer { buf in
                        stream.next_out = buf.baseAddress! + before
                        stream.avail_out = uInt(room)
                        rc = deflate(&stream, flush)
                    }
                    output.removeLast(Int(stream.avail_out))
                    // Room left over means deflate has written all it can for now (zlib.h).
                } while (rc == Z_OK || rc == Z_BUF_ERROR) && (stream.avail_in > 0 || stream.avail_out == 0)
            }
            if innerDone {
                finished = true
                return false
            }
        }
        return true
    }
}
