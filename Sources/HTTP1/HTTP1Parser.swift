import HTTPCore

#if canImport(Glibc)
import Glibc
#endif

/// An incremental HTTP/1.1 request parser over plain bytes (RFC 9112), with no sockets in it.
///
/// Bytes are appended as they arrive, in pieces of any size (one byte at a time gives the same
/// events as the whole message at once); `next()` hands out what they complete. A request is
/// delivered only with its whole body: the daemon's handlers never stream, and reading the body
/// here means a body no handler looked at can never misframe the next pipelined request.
///
/// Strict where leniency is a smuggling risk (RFC 9112 section 11.2): lines must end in CRLF,
/// `Content-Length` with `Transfer-Encoding` is refused, differing `Content-Length` values are
/// refused, obs-fold is refused, and any framing doubt ends the connection.
public struct HTTP1Parser {
    /// What the bytes appended so far complete.
    public enum Event {
        /// A whole request, with whether the connection may carry another one (RFC 9112 section 9.3).
        case request(HTTPRequest, keepAlive: Bool)
        /// The client sent `Expect: 100-continue` and waits for an interim 100 before the body
        /// (RFC 9110 section 10.1.1); the request so far, without its body, so that the server
        /// can refuse it before the body is sent.
        case continueExpected(head: HTTPRequest)
        /// The request is refused; the parser takes no more input.
        case failure(HTTP1ParseError)
    }

    /// Where the parser is inside the current request; the session picks its timeout from this.
    public enum Phase: Sendable, Equatable {
        /// No byte of a next request has arrived.
        case idle
        /// Reading the request line and header section.
        case head
        /// Reading the body (or chunked trailers).
        case body
        /// A refusal was reported; nothing more is parsed.
        case failed
    }

    private enum State {
        case requestLine
        case headerLines
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailerLines
        case failed
    }

    /// Longest chunk-size line, extensions included. Chunk extensions carry nothing we use; a
    /// bound keeps a client from growing the buffer with one endless line.
    public static let maxChunkLineBytes = 4096

    /// The limits applied to the next request head; changing them mid-request is allowed.
    public var limits: HTTPLimits

    private var buffer: [UInt8] = []
    /// First byte not yet consumed.
    private var start = 0
    /// Where the search for the next LF resumes, so byte-at-a-time input is not rescanned.
    private var scan = 0
    private var state: State = .requestLine

    // The request being assembled.
    private var method = ""
    private var path = ""
    private var query: String?
    private var version: HTTPVersion = .http1_1
    private var fields: [HTTPHeaders.Field] = []
    private var headerBytes = 0
    private var body: [UInt8] = []
    private var trailerCount = 0
    private var hostCount = 0
    /// The Content-Length field values: the first kept apart, so the usual single field needs
    /// no array; every value (the first included) is in `contentLengths` once there are two.
    private var contentLengthCount = 0
    private var firstContentLength = ""
    private var contentLengths: [String] = []
    private var transferEncodings: [String] = []
    private var expect: String?
    private var connectionClose = false
    private var connectionKeepAlive = false
    // The last path, Host and Content-Length values built, reused when the bytes repeat.
    private var recentPath = RecentString()
    private var recentHost = RecentString()
    private var recentContentLength = RecentString()

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
    }

    /// Where the parser stands in the current request.
    public var phase: Phase {
        switch state {
        case .requestLine: start == buffer.count ? .idle : .head
        case .headerLines: .head
        case .fixedBody, .chunkSize, .chunkData, .chunkDataEnd, .trailerLines: .body
        case .failed: .failed
        }
    }

    /// Bytes received but not yet consumed by a delivered event.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Bytes of the body being received (0 once its request is delivered).
    public var bodyByteCount: Int { phase == .body ? body.count : 0 }

    /// The body buffer reserved at once, however long the announced body.
    static let initialBodyCapacity = 64 * 1024

    /// Appends bytes read from the peer. Nothing is parsed until `next()`.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if case .failed = state { return }
        buffer.append(contentsOf: bytes)
    }

    /// Appends bytes read from the peer (convenience for tests and tools).
    public mutating func append<S: Sequence>(contentsOf bytes: S) where S.Element == UInt8 {
        if case .failed = state { return }
        buffer.append(contentsOf: bytes)
    }

    /// The next event the buffered bytes complete, or nil when more bytes are needed.
    public mutating func next() -> Event? {
        compact()
        while true {
            switch state {
            case .failed:
                return nil
            case .requestLine:
                switch nextLine(maxLength: limits.maxRequestLineBytes) {
                case .needMore: return nil
                case .tooLong: return fail(HTTP1ParseError(status: 414, "request line too long"))
                case .malformed: return fail(.badRequest("line not terminated by CRLF"))
                case .line(let range):
                    // RFC 9112 section 2.2: ignore empty lines received before the request line.
                    if range.isEmpty { continue }
                    if let error = parseRequestLine(range) { return fail(error) }
                    state = .headerLines
                }
            case .headerLines:
                let budget = max(0, limits.maxHeaderBytes - headerBytes)
                switch nextLine(maxLength: budget) {
                case .needMore: return nil
                case .tooLong: return fail(HTTP1ParseError(status: 431, "header section too large"))
                case .malformed: return fail(.badRequest("line not terminated by CRLF"))
                case .line(let range):
                    if range.isEmpty {
                        if let event = finishHead() { return event }
                        continue
                    }
                    if let error = parseField(range, keep: true) { return fail(error) }
                }
            case .fixedBody(let remaining):
                let take = min(remaining, buffer.count - start)
                if take == 0 { return nil }
                body.append(contentsOf: buffer[start..<(start + take)])
                start += take
                scan = start
                if take == remaining { return complete() }
                state = .fixedBody(remaining: remaining - take)
                return nil
            case .chunkSize:
                switch nextLine(maxLength: Self.maxChunkLineBytes) {
                case .needMore: return nil
                case .tooLong: return fail(.badRequest("chunk size line too long"))
                case .malformed: return fail(.badRequest("line not terminated by CRLF"))
                case .line(let range):
                    switch parseChunkSize(range) {
                    case .failure(let error): return fail(error)
                    case .success(0): state = .trailerLines
                    case .success(let size): state = .chunkData(remaining: size)
                    }
                }
            case .chunkData(let remaining):
                let take = min(remaining, buffer.count - start)
                if take == 0 { return nil }
                body.append(contentsOf: buffer[start..<(start + take)])
                start += take
                scan = start
                state = take == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - take)
            case .chunkDataEnd:
                // RFC 9112 section 7.1: chunk-data is followed by exactly CRLF.
                if buffer.count - start < 2 {
                    if buffer.count > start && buffer[start] != CR {
                        return fail(.badRequest("chunk data not followed by CRLF"))
                    }
                    return nil
                }
                guard buffer[start] == CR, buffer[start + 1] == LF else {
                    return fail(.badRequest("chunk data not followed by CRLF"))
                }
                start += 2
                scan = start
                state = .chunkSize
            case .trailerLines:
                let budget = max(0, limits.maxHeaderBytes - headerBytes)
                switch nextLine(maxLength: budget) {
                case .needMore: return nil
                case .tooLong: return fail(HTTP1ParseError(status: 431, "trailer section too large"))
                case .malformed: return fail(.badRequest("line not terminated by CRLF"))
                case .line(let range):
                    if range.isEmpty { return complete() }
                    // RFC 9112 section 7.1.2: trailer fields may be discarded; they are checked
                    // for syntax and counted against the header limits, then dropped.
                    if let error = parseField(range, keep: false) { return fail(error) }
                }
            }
        }
    }

    // MARK: - Lines

    private enum LineResult {
        case line(Range<Int>)  // without the CRLF
        case needMore
        case tooLong
        case malformed
    }

    /// Finds the next CRLF-terminated line at `start` and consumes it.
    private mutating func nextLine(maxLength: Int) -> LineResult {
        let end = buffer.count
        let from = scan
        let found: Int? = buffer.withUnsafeBytes { raw -> Int? in
            guard from < end, let base = raw.baseAddress else { return nil }
            guard let hit = memchr(base + from, Int32(LF), end - from) else { return nil }
            return base.distance(to: UnsafeRawPointer(hit))
        }
        guard let lf = found else {
            scan = end
            // The line so far can still end in CR, hence + 1.
            return end - start > maxLength + 1 ? .tooLong : .needMore
        }
        // Length first, with the same bound as above, so the verdict does not depend on how the
        // bytes were split into reads.
        if lf - start > maxLength + 1 { return .tooLong }
        // RFC 9112 section 2.2: we do not accept a bare LF as a line terminator.
        guard lf > start, buffer[lf - 1] == CR else { return .malformed }
        let line = start..<(lf - 1)
        start = lf + 1
        scan = start
        return .line(line)
    }

    /// Drops consumed bytes so the buffer does not grow across a long keep-alive connection.
    private mutating func compact() {
        if start == buffer.count {
            if start > 0 { buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 16) }
            start = 0
            scan = 0
        } else if start >= 1 << 14 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            scan -= start
            start = 0
        }
    }

    private mutating func fail(_ error: HTTP1ParseError) -> Event {
        state = .failed
        buffer = []
        start = 0
        scan = 0
        return .failure(error)
    }

    // MARK: - Request line (RFC 9112 section 3)

    private mutating func parseRequestLine(_ line: Range<Int>) -> HTTP1ParseError? {
        startRequest()
        guard let sp1 = buffer[line].firstIndex(of: SP) else { return .badRequest("malformed request line") }
        let methodBytes = buffer[line.lowerBound..<sp1]
        guard !methodBytes.isEmpty, methodBytes.allSatisfy(isTokenByte) else { return .badRequest("malformed method") }
        guard let sp2 = buffer[(sp1 + 1)..<line.upperBound].firstIndex(of: SP) else {
            return .badRequest("malformed request line")
        }
        let versionBytes = buffer[(sp2 + 1)..<line.upperBound]
        switch parseVersion(versionBytes) {
        case .none: return .badRequest("malformed HTTP version")
        case .some(.none): return HTTP1ParseError(status: 505, "HTTP version not supported")
        case .some(.some(let v)): version = v
        }
        let targetBytes = buffer[(sp1 + 1)..<sp2]
        // RFC 9112 section 3.2: the target has no whitespace or control characters.
        guard !targetBytes.isEmpty, targetBytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return .badRequest("malformed request target")
        }
        method = Self.methodString(methodBytes)
        if targetBytes.first == UInt8(ascii: "/") {
            // origin-form, nearly every request: split at the first "?" on the bytes, so only
            // the path and query Strings are built (the target is ASCII, checked above).
            if let q = targetBytes.firstIndex(of: UInt8(ascii: "?")) {
                path = String(decoding: buffer[targetBytes.startIndex..<q], as: UTF8.self)
                query = String(decoding: buffer[(q + 1)..<targetBytes.endIndex], as: UTF8.self)
            } else {
                path = buffer.withUnsafeBufferPointer {
                    recentPath.string(UnsafeBufferPointer(rebasing: $0[targetBytes.startIndex..<targetBytes.endIndex]))
                }
                query = nil
            }
            return nil
        }
        let target = String(decoding: targetBytes, as: UTF8.self)
        if target == "*" {
            path = "*"
            query = nil
        } else if let schemeEnd = schemeSeparatorEnd(target) {
            // absolute-form (RFC 9112 section 3.2.2): the path and query follow the authority.
            let afterAuthority = target[schemeEnd...]
            if let slash = afterAuthority.firstIndex(where: { $0 == "/" || $0 == "?" }) {
                let rest = afterAuthority[slash...]
                splitTarget(rest.first == "?" ? Substring("/" + rest) : rest)
            } else {
                path = "/"
                query = nil
            }
        } else if method == "CONNECT" {
            path = target
            query = nil
        } else {
            return .badRequest("malformed request target")
        }
        return nil
    }

    /// The method token as a String; the common methods are literals, so no String is built
    /// for them (methods are case-sensitive, RFC 9110 section 9.1: only exact bytes match).
    static func methodString(_ bytes: ArraySlice<UInt8>) -> String {
        func matches(_ literal: StaticString) -> Bool {
            guard literal.utf8CodeUnitCount == bytes.count else { return false }
            let l = literal.utf8Start
            var i = 0
            for b in bytes {
                if b != l[i] { return false }
                i += 1
            }
            return true
        }
        switch bytes.count {
        case 3:
            if matches("GET") { return "GET" }
            if matches("PUT") { return "PUT" }
        case 4:
            if matches("POST") { return "POST" }
            if matches("HEAD") { return "HEAD" }
        case 6:
            if matches("DELETE") { return "DELETE" }
        default: break
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The index just past "://" when `target` starts with a scheme, else nil.
    private func schemeSeparatorEnd(_ target: String) -> String.Index? {
        let u = target.utf8
        var i = u.startIndex
        while i < u.endIndex, u[i] != UInt8(ascii: ":") {
            let b = u[i]
            guard
                (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || isDigit(b) || b == 0x2B || b == 0x2D
                    || b == 0x2E
            else {
                return nil
            }
            i = u.index(after: i)
        }
        guard i > u.startIndex, i < u.endIndex else { return nil }
        let rest = target[i...]
        guard rest.hasPrefix("://") else { return nil }
        return u.index(i, offsetBy: 3)
    }

    private mutating func splitTarget(_ target: Substring) {
        if let q = target.firstIndex(of: "?") {
            path = String(target[..<q])
            query = String(target[target.index(after: q)...])
        } else {
            path = String(target)
            query = nil
        }
    }

    /// nil: not an HTTP-version at all (400); .some(nil): a version we do not speak (505).
    private func parseVersion(_ v: ArraySlice<UInt8>) -> HTTPVersion?? {
        guard v.count == 8 else { return nil }
        // Indexed through the slice's own indices: no copy of the eight bytes per request.
        let o = v.startIndex
        func b(_ i: Int) -> UInt8 { v[o + i] }
        guard b(0) == UInt8(ascii: "H"), b(1) == UInt8(ascii: "T"), b(2) == UInt8(ascii: "T"),
            b(3) == UInt8(ascii: "P"), b(4) == UInt8(ascii: "/"), isDigit(b(5)), b(6) == UInt8(ascii: "."),
            isDigit(b(7))
        else { return nil }
        guard b(5) == UInt8(ascii: "1") else { return .some(nil) }
        // RFC 9110 section 6.2: a 1.x minor version above ours is answered as 1.1.
        return .some(b(7) == UInt8(ascii: "0") ? .http1_0 : .http1_1)
    }

    // MARK: - Fields (RFC 9112 section 5)

    /// The fields framing and persistence depend on, recognised once while parsing.
    private enum FieldKind { case host, contentLength, contentType, transferEncoding, expect, connection, other }

    private enum ScannedField {
        case field(name: Range<Int>, value: Range<Int>, kind: FieldKind)
        case invalid(HTTP1ParseError)
    }

    /// Checks one field line's syntax (RFC 9112 section 5) without touching parser state.
    private static func scanField(_ buf: UnsafeBufferPointer<UInt8>, _ line: Range<Int>) -> ScannedField {
        let first = buf[line.lowerBound]
        // RFC 9112 section 5.2: obs-fold is refused with 400 (as is whitespace after the start line).
        if first == SP || first == HTAB { return .invalid(.badRequest("obsolete line folding")) }
        var colon = line.lowerBound
        // RFC 9112 section 5.1: the name is a token directly followed by the colon.
        while colon < line.upperBound, isTokenByte(buf[colon]) { colon += 1 }
        guard colon < line.upperBound, buf[colon] == UInt8(ascii: ":") else {
            return .invalid(
                .badRequest(colon == line.upperBound ? "header field without colon" : "malformed header field name"))
        }
        if colon == line.lowerBound { return .invalid(.badRequest("malformed header field name")) }
        var lo = colon + 1
        var hi = line.upperBound
        while lo < hi, buf[lo] == SP || buf[lo] == HTAB { lo += 1 }
        while hi > lo, buf[hi - 1] == SP || buf[hi - 1] == HTAB { hi -= 1 }
        // RFC 9110 section 5.5: field values are VCHAR, obs-text, SP and HTAB; CR, LF and NUL are refused.
        var i = lo
        while i < hi {
            let b = buf[i]
            if b < 0x20 && b != HTAB || b == 0x7F {
                return .invalid(.badRequest("invalid character in header field value"))
            }
            i += 1
        }
        let name = line.lowerBound..<colon
        return .field(name: name, value: lo..<hi, kind: kind(buf, name))
    }

    /// The bytes are exactly `literal` (case-sensitive: the value is kept as sent).
    private static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ literal: StaticString) -> Bool {
        guard bytes.count == literal.utf8CodeUnitCount else { return false }
        return memcmp(bytes.baseAddress!, literal.utf8Start, bytes.count) == 0
    }

    private static func kind(_ buf: UnsafeBufferPointer<UInt8>, _ name: Range<Int>) -> FieldKind {
        // `name` lies inside `buf` (scanField found it there), so loads within its count are in bounds.
        let p = UnsafeRawPointer(buf.baseAddress! + name.lowerBound)
        /// Case-insensitive comparison a word at a time: `name` holds only token bytes (RFC 9110
        /// section 5.6.2), and among those OR 0x20 turns exactly A-Z into a-z and leaves the
        /// literals' other bytes (a-z and "-") as they are, so it equals lowercaseASCII here.
        @inline(__always) func matches(_ literal: StaticString) -> Bool {
            let n = literal.utf8CodeUnitCount
            guard n == name.count else { return false }
            let l = UnsafeRawPointer(literal.utf8Start)
            if n >= 8 {
                let fold: UInt64 = 0x2020_2020_2020_2020
                var at = 0
                while at < n - 8 {
                    if p.loadUnaligned(fromByteOffset: at, as: UInt64.self) | fold
                        != l.loadUnaligned(fromByteOffset: at, as: UInt64.self)
                    {
                        return false
                    }
                    at += 8
                }
                return p.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self) | fold
                    == l.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)
            }
            // 4 to 7 bytes (host, expect): two overlapping 32-bit words.
            let fold: UInt32 = 0x2020_2020
            return p.loadUnaligned(as: UInt32.self) | fold == l.loadUnaligned(as: UInt32.self)
                && p.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self) | fold
                    == l.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)
        }
        switch name.count {
        case 4: return matches("host") ? .host : .other
        case 6: return matches("expect") ? .expect : .other
        case 10: return matches("connection") ? .connection : .other
        case 12: return matches("content-type") ? .contentType : .other
        case 14: return matches("content-length") ? .contentLength : .other
        case 17: return matches("transfer-encoding") ? .transferEncoding : .other
        default: return .other
        }
    }

    private mutating func parseField(_ line: Range<Int>, keep: Bool) -> HTTP1ParseError? {
        headerBytes += line.count + 2
        if headerBytes > limits.maxHeaderBytes { return HTTP1ParseError(status: 431, "header section too large") }
        let scanned = buffer.withUnsafeBufferPointer { Self.scanField($0, line) }
        guard case .field(let nameRange, let valueRange, let kind) = scanned else {
            if case .invalid(let error) = scanned { return error }
            return nil
        }
        if fields.count + trailerCount >= limits.maxHeaderCount {
            return HTTP1ParseError(status: 431, "too many header fields")
        }
        guard keep else {
            trailerCount += 1
            return nil
        }
        let (name, value) = buffer.withUnsafeBufferPointer { buf -> (String, String) in
            let bytes = UnsafeBufferPointer(rebasing: buf[valueRange])
            // The Content-Type nearly every POST carries is a literal: no String storage for it.
            let value: String
            switch kind {
            case .contentType where Self.equals(bytes, "application/json"): value = "application/json"
            // A keep-alive client repeats these from request to request.
            case .host: value = recentHost.string(bytes)
            case .contentLength: value = recentContentLength.string(bytes)
            default: value = String(decoding: bytes, as: UTF8.self)
            }
            // Names already recognised (case-insensitively) need no String built from the bytes.
            switch kind {
            case .host: return ("host", value)
            case .contentLength: return ("content-length", value)
            case .contentType: return ("content-type", value)
            case .transferEncoding: return ("transfer-encoding", value)
            case .expect: return ("expect", value)
            case .connection: return ("connection", value)
            case .other: break
            }
            let name = String(unsafeUninitializedCapacity: nameRange.count) { out in
                for i in 0..<nameRange.count { out[i] = lowercaseASCII(buf[nameRange.lowerBound + i]) }
                return nameRange.count
            }
            return (name, value)
        }
        switch kind {
        case .host: hostCount += 1
        case .contentLength:
            contentLengthCount += 1
            if contentLengthCount == 1 {
                firstContentLength = value
            } else {
                if contentLengthCount == 2 { contentLengths.append(firstContentLength) }
                contentLengths.append(value)
            }
        case .transferEncoding: transferEncodings.append(value)
        case .expect: expect = value
        case .connection:
            for token in value.split(separator: ",") {
                let t = token.trimmingSpaces().asciiLowercased()
                if t == "close" { connectionClose = true } else if t == "keep-alive" { connectionKeepAlive = true }
            }
        case .contentType, .other: break
        }
        // One allocation for a typical request's fields rather than one per doubling.
        if fields.capacity == 0 { fields.reserveCapacity(8) }
        fields.append((name, value))
        return nil
    }

    // MARK: - Framing (RFC 9112 section 6)

    /// The header section is complete: decide how the body is framed. Returns an event to deliver
    /// now, or nil to go on parsing.
    private mutating func finishHead() -> Event? {
        // RFC 9112 section 3.2: a 1.1 request has exactly one Host; more than one is refused in any version.
        if hostCount > 1 || (hostCount == 0 && version == .http1_1) {
            return fail(.badRequest(hostCount == 0 ? "missing Host header" : "more than one Host header"))
        }
        var bodyExpected = false
        if !transferEncodings.isEmpty {
            // RFC 9112 section 6.1: Transfer-Encoding with Content-Length is a smuggling
            // attempt and is refused; a 1.0 message with Transfer-Encoding is treated as faulty.
            if contentLengthCount > 0 { return fail(.badRequest("both Content-Length and Transfer-Encoding")) }
            if version == .http1_0 { return fail(.badRequest("Transfer-Encoding in an HTTP/1.0 request")) }
            let codings = transferEncodings.flatMap { $0.split(separator: ",") }
                .map { $0.trimmingSpaces().asciiLowercased() }
            if codings.contains(where: { $0.isEmpty }) { return fail(.badRequest("empty transfer coding")) }
            // RFC 9112 section 6.1: an unknown transfer coding gets 501.
            if let unknown = codings.first(where: { $0 != "chunked" }) {
                return fail(HTTP1ParseError(status: 501, "transfer coding not implemented: \(unknown)"))
            }
            // chunked must be applied exactly once (RFC 9112 section 6.1).
            if codings.count != 1 { return fail(.badRequest("chunked applied more than once")) }
            state = .chunkSize
            bodyExpected = true
        } else if contentLengthCount > 0 {
            var length: Int?
            // One plain value, as every client sends it: its digits are the length (a value
            // holding a comma or anything else takes the general path below, same verdict).
            if contentLengthCount == 1, let n = parseContentLength(Substring(firstContentLength)) {
                length = n
            } else {
                for value in contentLengthCount == 1 ? [firstContentLength] : contentLengths {
                    for part in value.split(separator: ",", omittingEmptySubsequences: false) {
                        // RFC 9110 section 8.6: identical repeated values may be accepted; anything else is invalid.
                        guard let n = parseContentLength(part.trimmingSpaces()) else {
                            return fail(.badRequest("invalid Content-Length"))
                        }
                        if let length, length != n { return fail(.badRequest("differing Content-Length values")) }
                        length = n
                    }
                }
            }
            guard let length else { return fail(.badRequest("invalid Content-Length")) }
            if length > limits.maxBodyBytes {
                return fail(HTTP1ParseError(status: 413, "body larger than \(limits.maxBodyBytes) bytes"))
            }
            if length > 0 {
                state = .fixedBody(remaining: length)
                // Room for what has arrived, not for what the client announced: a length is free
                // to send, memory follows the bytes (they grow the buffer by doubling).
                body.reserveCapacity(min(length, max(Self.initialBodyCapacity, buffer.count - start)))
                bodyExpected = true
            } else {
                state = .fixedBody(remaining: 0)
            }
        } else {
            state = .fixedBody(remaining: 0)
        }
        if let expect {
            // RFC 9110 section 10.1.1: 100-continue is the only expectation defined; others get 417.
            guard expect.trimmingSpaces().asciiLowercased() == "100-continue" else {
                return fail(HTTP1ParseError(status: 417, "unsupported expectation"))
            }
            // A 1.0 client does not understand 100 (RFC 9110 section 10.1.1); a client that
            // already sent body bytes is not waiting for it.
            if bodyExpected && version == .http1_1 && start == buffer.count {
                return .continueExpected(
                    head: HTTPRequest(
                        method: method, path: path, query: query, version: version,
                        headers: HTTPHeaders(lowercasedFields: fields)))
            }
        }
        if case .fixedBody(0) = state { return complete() }
        return nil
    }

    /// Content-Length is 1*DIGIT; nil when it is not, or when it overflows.
    private func parseContentLength(_ s: Substring) -> Int? {
        guard !s.isEmpty else { return nil }
        var n = 0
        for b in s.utf8 {
            guard isDigit(b) else { return nil }
            let (m, o1) = n.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(b - UInt8(ascii: "0")))
            if o1 || o2 { return nil }
            n = a
        }
        return n
    }

    private enum ChunkSizeResult {
        case success(Int)
        case failure(HTTP1ParseError)
    }

    /// chunk-size [ chunk-ext ] (RFC 9112 section 7.1); extensions are checked loosely and ignored.
    private func parseChunkSize(_ line: Range<Int>) -> ChunkSizeResult {
        var i = line.lowerBound
        var size = 0
        var digits = 0
        while i < line.upperBound, let h = hexValue(buffer[i]) {
            size = size &* 16 &+ Int(h)
            digits += 1
            // Checked per digit, so the value cannot overflow before it is refused.
            if size > limits.maxBodyBytes - body.count {
                return .failure(HTTP1ParseError(status: 413, "body larger than \(limits.maxBodyBytes) bytes"))
            }
            i += 1
        }
        if digits == 0 { return .failure(.badRequest("invalid chunk size")) }
        while i < line.upperBound, buffer[i] == SP || buffer[i] == HTAB { i += 1 }
        if i < line.upperBound {
            guard buffer[i] == UInt8(ascii: ";") else { return .failure(.badRequest("invalid chunk size")) }
            guard buffer[i..<line.upperBound].allSatisfy({ $0 == HTAB || ($0 >= 0x20 && $0 != 0x7F) }) else {
                return .failure(.badRequest("invalid chunk extension"))
            }
        }
        return .success(size)
    }

    // MARK: - Completion

    private mutating func complete() -> Event {
        // RFC 9112 section 9.3: 1.1 persists unless "close"; 1.0 persists only with "keep-alive".
        // "close" wins whatever else is listed.
        let keepAlive = !connectionClose && (version == .http1_1 || connectionKeepAlive)
        let request = HTTPRequest(
            method: method, path: path, query: query, version: version,
            headers: HTTPHeaders(lowercasedFields: fields), body: body)
        method = ""
        path = ""
        query = nil
        headerBytes = 0
        trailerCount = 0
        hostCount = 0
        contentLengthCount = 0
        firstContentLength = ""
        if !contentLengths.isEmpty { contentLengths = [] }
        if !transferEncodings.isEmpty { transferEncodings = [] }
        expect = nil
        connectionClose = false
        connectionKeepAlive = false
        // `fields` and a small `body` stay: the request shares their storage (copy-on-write)
        // and `startRequest` empties them for the next one. A large body is let go now, so an
        // idle keep-alive connection does not pin it once the request is answered.
        if body.capacity > Self.initialBodyCapacity { body = [] }
        state = .requestLine
        return .request(request, keepAlive: keepAlive)
    }

    /// Empties the field list and body the previous request was given. Once that request is
    /// released (the handler kept no copy), their storage is uniquely ours again and is reused
    /// instead of allocating two buffers per request; a copy still held elsewhere is left intact
    /// (the parser then starts fresh storage). Storage over 64 KiB is returned, as the input
    /// buffer's is, so an idle keep-alive connection does not pin a large body.
    private mutating func startRequest() {
        if !fields.isEmpty { fields.removeAll(keepingCapacity: fields.capacity <= 64) }
        if body.capacity > 0 { body.removeAll(keepingCapacity: body.capacity <= 1 << 16) }
    }
}

/// The String last built from some bytes, handed out again when the same bytes come back: a
/// comparison of a few bytes costs less than building (validating) a String, and the path,
/// Host and Content-Length of one keep-alive client usually repeat. Only short values are kept.
struct RecentString {
    private var bytes: [UInt8] = []
    private var value = ""
    static let maxBytes = 64

    mutating func string(_ new: UnsafeBufferPointer<UInt8>) -> String {
        if new.count == bytes.count, new.count > 0,
            bytes.withUnsafeBufferPointer({ memcmp($0.baseAddress!, new.baseAddress!, new.count) == 0 })
        {
            return value
        }
        let built = String(decoding: new, as: UTF8.self)
        if new.count <= Self.maxBytes {
            bytes.removeAll(keepingCapacity: true)
            bytes.append(contentsOf: new)
            value = built
        }
        return built
    }
}

// MARK: - Byte classes

let CR = UInt8(ascii: "\r")
let LF = UInt8(ascii: "\n")
let SP = UInt8(ascii: " ")
let HTAB = UInt8(ascii: "\t")

@inline(__always) func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

@inline(__always) func lowercaseASCII(_ b: UInt8) -> UInt8 { (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b }

@inline(__always) func hexValue(_ b: UInt8) -> UInt8? {
    switch b {
    case 0x30...0x39: b - 0x30
    case 0x41...0x46: b - 0x41 + 10
    case 0x61...0x66: b - 0x61 + 10
    default: nil
    }
}

/// tchar (RFC 9110 section 5.6.2).
@inline(__always) func isTokenByte(_ b: UInt8) -> Bool {
    switch b {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
        UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
        UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        true
    default: false
    }
}

extension StringProtocol {
    /// Drops leading and trailing SP and HTAB (OWS, RFC 9110 section 5.6.3).
    func trimmingSpaces() -> Substring {
        let s = Substring(self)
        var lo = s.startIndex
        var hi = s.endIndex
        while lo < hi, s[lo] == " " || s[lo] == "\t" { lo = s.index(after: lo) }
        while hi > lo, s[s.index(before: hi)] == " " || s[s.index(before: hi)] == "\t" { hi = s.index(before: hi) }
        return s[lo..<hi]
    }
}
