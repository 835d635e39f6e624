import HTTPCore

#if canImport(Glibc)
import Glibc
#endif

/// Writes HTTP/1.1 responses as bytes (RFC 9112 section 4 and 6).
///
/// The handler sets only semantic headers; framing (`content-length`, `connection`) and `date`
/// are decided here, so a handler can never frame a response wrongly. Fields the handler set
/// that only this layer may set are dropped, as are values holding CR or LF (response splitting).
public enum HTTP1ResponseEncoder {
    /// Appends `response` to `output`.
    /// - Parameters:
    ///   - headOnly: the request was HEAD: same headers, no body (RFC 9110 section 9.3.2).
    ///   - keepAlive: false adds `Connection: close`; true on a 1.0 request adds `Connection: keep-alive`.
    ///   - date: the IMF-fixdate for the `Date` header (RFC 9110 section 6.6.1); empty omits it.
    public static func encode(
        _ response: HTTPResponse, requestVersion: HTTPVersion = .http1_1,
        headOnly: Bool = false, keepAlive: Bool, date: [UInt8],
        into output: inout [UInt8]
    ) {
        // RFC 9110 section 6.2: a server answers with the highest 1.x version it conforms to.
        output.append(contentsOf: statusLine(response.status))
        if !date.isEmpty {
            output.append(contentsOf: "date: ".utf8)
            output.append(contentsOf: date)
            output.append(contentsOf: crlf)
        }
        for f in response.headers {
            switch f.name {
            case "content-length", "transfer-encoding", "connection", "date", "keep-alive", "upgrade": continue
            default: break
            }
            if f.value.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }) { continue }
            output.append(contentsOf: f.name.utf8)
            output.append(contentsOf: ": ".utf8)
            output.append(contentsOf: f.value.utf8)
            output.append(contentsOf: crlf)
        }
        // RFC 9110 sections 8.6 and 15.3.5 / 15.4.5: no Content-Length and no body on 1xx, 204 and 304.
        let bodyless = response.status < 200 || response.status == 204 || response.status == 304
        if !bodyless && response.source != nil {
            // A streamed body's length is unknown: chunked for HTTP/1.1 (RFC 9112 section 7.1);
            // a 1.0 client cannot read chunks, so its body ends when the connection closes
            // (RFC 9112 section 6.3), and the caller must not keep it alive.
            if requestVersion != .http1_0 { output.append(contentsOf: "transfer-encoding: chunked\r\n".utf8) }
        } else if !bodyless {
            output.append(contentsOf: "content-length: ".utf8)
            appendDecimal(response.body.count, to: &output)
            output.append(contentsOf: crlf)
        }
        if !keepAlive {
            output.append(contentsOf: "connection: close\r\n".utf8)
        } else if requestVersion == .http1_0 {
            output.append(contentsOf: "connection: keep-alive\r\n".utf8)
        }
        output.append(contentsOf: crlf)
        if !bodyless && !headOnly {
            output.append(contentsOf: response.body)
        }
    }

    /// Appends the next piece of a streamed body as one chunk (RFC 9112 section 7.1), and the
    /// last chunk once the source is done; returns whether more remains. The source writes
    /// straight into `output` after an 8-digit size, filled in once the piece is written
    /// (leading zeros are allowed: `chunk-size = 1*HEXDIG`), so the piece is never copied.
    public static func appendChunk(from source: any HTTPBodySource, atMost: Int, into output: inout [UInt8]) -> Bool {
        let sizeAt = output.count
        output.append(contentsOf: chunkSizePlaceholder)
        let start = output.count
        let more = source.next(into: &output, atMost: atMost)
        let size = output.count - start
        if size == 0 {
            // An empty chunk would end the body.
            output.removeSubrange(sizeAt..<start)
        } else {
            let hex: [UInt8] = Array("0123456789abcdef".utf8)
            for i in 0..<8 { output[sizeAt + i] = hex[(size >> (4 * (7 - i))) & 0xf] }
            output.append(contentsOf: crlf)
        }
        if !more { output.append(contentsOf: lastChunk) }
        return more
    }

    private static let chunkSizePlaceholder: [UInt8] = Array("00000000\r\n".utf8)
    /// The last chunk and the end of an empty trailer section.
    private static let lastChunk: [UInt8] = Array("0\r\n\r\n".utf8)

    /// The interim response sent to `Expect: 100-continue` (RFC 9110 section 15.2.1).
    public static let continueResponse: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    private static let crlf: [UInt8] = [0x0D, 0x0A]

    // The status lines answered most, built once; a switch instead of a dictionary keeps hashing
    // off the per-response path.
    private static let line200 = makeStatusLine(200)
    private static let line204 = makeStatusLine(204)
    private static let line400 = makeStatusLine(400)
    private static let line404 = makeStatusLine(404)

    static func statusLine(_ status: Int) -> [UInt8] {
        switch status {
        case 200: line200
        case 204: line204
        case 400: line400
        case 404: line404
        default: makeStatusLine(status)
        }
    }

    static func makeStatusLine(_ status: Int) -> [UInt8] {
        Array("HTTP/1.1 \(status) \(HTTPResponse.reasonPhrase(status))\r\n".utf8)
    }

    static func appendDecimal(_ value: Int, to output: inout [UInt8]) {
        if value == 0 {
            output.append(UInt8(ascii: "0"))
            return
        }
        var digits:
            (
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8
            ) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = value
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buf in
            while n > 0 {
                buf[count] = UInt8(ascii: "0") + UInt8(n % 10)
                n /= 10
                count += 1
            }
            for i in stride(from: count - 1, through: 0, by: -1) { output.append(buf[i]) }
        }
    }
}
