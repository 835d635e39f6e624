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
        if !bodyless {
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
