import Foundation
import HTTPCore
import JSONOutput
import MoEStats

/// The writes: decisions in (`POST /v1/decisions`, `POST /v1/layers/{layer}/decisions`) and
/// resets (`DELETE /v1/layers`, `DELETE /v1/layers/{layer}`). Each counts as a change once the
/// registry changed, for the state file.
extension DaemonRouter {
    // MARK: Decisions

    func ingest(_ request: HTTPRequest, layer: String?, settings current: Settings) -> HTTPResponse {
        if let layer, !LayerName.isValid(layer) {
            counters.recordRejection(reason: "invalid")
            return .error(422, "layer name must be 1 to 64 characters of [A-Za-z0-9_.:-]", field: "layer")
        }
        guard let format = Self.bodyFormat(request.headers.value(lowercasedName: "content-type")) else {
            counters.recordRejection(reason: "unsupported_media_type")
            logger.debug(
                "refused POST: content type", metadata: ["content-type": "\(request.headers["content-type"] ?? "")"])
            return .error(
                415, "Content-Type must be application/json or application/x-ndjson",
                headers: ["accept-post": Self.acceptPost])
        }
        let (limits, maxBody) = (current.decoderLimits, current.maxBodyBytes)
        var body = request.body
        // Most bodies carry no Content-Encoding: one lookup instead of collecting every value.
        let coding =
            request.headers.value(lowercasedName: "content-encoding") == nil
            ? .identity : Self.bodyCoding(request.headers.values("content-encoding"))
        switch coding {
        case .identity:
            break
        case .unsupported:
            counters.recordRejection(reason: "unsupported_media_type")
            logger.debug(
                "refused POST: content coding",
                metadata: ["content-encoding": "\(request.headers["content-encoding"] ?? "")"])
            // RFC 9110 section 15.5.16: a 415 for a content coding lists the codings accepted.
            return .error(
                415, "Content-Encoding must be gzip or identity", headers: ["accept-encoding": "gzip, identity"])
        case .gzip:
            switch Gzip.inflate(body, limit: maxBody) {
            case .inflated(let plain):
                body = plain
            case .tooLarge:
                counters.recordRejection(reason: "too_large")
                return .error(413, "the body inflates to more than \(maxBody) bytes (http.max_body_bytes)")
            case .corrupt:
                counters.recordRejection(reason: "malformed")
                return .error(400, "Content-Encoding is gzip but the body is not valid gzip data")
            }
        }
        // Zero decisions is never what a client meant: an empty JSON body and an empty (or blank)
        // NDJSON body are the same mistake and get the same answer.
        if body.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
            counters.recordRejection(reason: "malformed")
            return .error(400, Self.emptyBodyMessage)
        }
        do throws(DecisionError) {
            let decisions = try DecisionDecoder(limits: limits).decode(body, format: format)
            // `[]` is the same mistake as an empty body, whatever its syntax.
            guard !decisions.isEmpty else {
                counters.recordRejection(reason: "malformed")
                return .error(400, Self.emptyBodyMessage)
            }
            let accepted = try registry.ingest(decisions, defaultLayer: layer, now: clock())
            noteChange()
            return .json(200, Self.acceptedBody(accepted))
        } catch {
            let (status, reason) = Self.status(of: error.kind)
            counters.recordRejection(reason: reason)
            logger.debug(
                "refused POST",
                metadata: [
                    "path": "\(request.path)", "status": "\(status)",
                    "error": "\(error.description)",
                ])
            return .error(status, error.message, field: error.field, index: error.index)
        }
    }

    /// The status and the `reason` label of a refused decision.
    static func status(of kind: DecisionError.Kind) -> (Int, String) {
        switch kind {
        case .malformed: (400, "malformed")
        case .invalid: (422, "invalid")
        case .conflict: (409, "conflict")
        case .tooManyLayers: (507, "too_many_layers")
        case .tooManyExperts: (507, "too_many_experts")
        }
    }

    static let emptyBodyMessage =
        "empty body: send at least one decision (a JSON object, an array of them, or NDJSON lines)"

    /// `{"accepted":N}` and a newline, as `JSONWriter` writes it, in one buffer.
    static func acceptedBody(_ accepted: Int) -> [UInt8] {
        // One decision per POST is the common case: its answer is shared, not built each time.
        if accepted == 1 { return acceptedOne }
        return makeAcceptedBody(accepted)
    }

    static let acceptedOne = makeAcceptedBody(1)

    static func makeAcceptedBody(_ accepted: Int) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(32)
        body.append(contentsOf: "{\"accepted\":".utf8)
        body.append(contentsOf: String(accepted).utf8)
        body.append(contentsOf: "}\n".utf8)
        return body
    }

    // MARK: The body's media type and coding

    /// Media types a POST may carry (RFC 9110 section 8.3). No Content-Type at all is taken as
    /// JSON, for scripts that send none; anything else named is refused with 415 and
    /// `Accept-Post` listing what we take.
    static func bodyFormat(_ contentType: String?) -> DecisionDecoder.Format? {
        guard let contentType else { return .json }
        // The value nearly every client sends, matched on its bytes (media types are
        // case-insensitive, RFC 9110 section 8.3.1); anything else takes the general parse,
        // which gives the same answer for these values (RouterFastPathTests).
        if let format = commonBodyFormat(contentType) { return format }
        return parsedBodyFormat(contentType)
    }

    /// `application/json` or `application/x-ndjson` exactly, in any ASCII case; nil for anything
    /// else (parameters, whitespace, other types), which `parsedBodyFormat` decides.
    static func commonBodyFormat(_ contentType: String) -> DecisionDecoder.Format? {
        contentType.utf8.withContiguousStorageIfAvailable { bytes -> DecisionDecoder.Format? in
            if asciiCaseInsensitiveEquals(bytes, "application/json") { return .json }
            if asciiCaseInsensitiveEquals(bytes, "application/x-ndjson") { return .ndjson }
            return nil
        } ?? nil
    }

    private static func asciiCaseInsensitiveEquals(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: StaticString)
        -> Bool
    {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let l = lowercase.utf8Start
        for i in 0..<bytes.count {
            let b = bytes[i]
            if ((b >= 0x41 && b <= 0x5A) ? b | 0x20 : b) != l[i] { return false }
        }
        return true
    }

    /// The general parse of a Content-Type value: type, then `charset` parameters.
    static func parsedBodyFormat(_ contentType: String) -> DecisionDecoder.Format? {
        let parts = contentType.split(separator: ";").map { String($0).trimmingWhitespace().asciiLowercased() }
        for p in parts.dropFirst() where p.hasPrefix("charset=") {
            let charset = p.dropFirst("charset=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            if charset != "utf-8" && charset != "utf8" && charset != "us-ascii" { return nil }
        }
        switch parts.first ?? "" {
        case "application/json": return .json
        case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines":
            return .ndjson
        default: return nil
        }
    }

    static let acceptPost = "application/json, application/x-ndjson"

    /// A request body's content coding (RFC 9110 section 8.4): none or `identity`, `gzip` (or
    /// `x-gzip`, section 8.4.1.3) once, or anything else, which we cannot decode.
    enum BodyCoding: Equatable { case identity, gzip, unsupported }

    static func bodyCoding(_ fieldValues: [String]) -> BodyCoding {
        let codings = fieldValues.flatMap { $0.split(separator: ",") }
            .map { String($0).trimmingWhitespace().asciiLowercased() }
            .filter { !$0.isEmpty && $0 != "identity" }
        if codings.isEmpty { return .identity }
        if codings.count == 1, codings[0] == "gzip" || codings[0] == "x-gzip" { return .gzip }
        return .unsupported
    }

    // MARK: Resets

    /// `DELETE /v1/layers`: every layer forgotten.
    func resetAll() -> HTTPResponse {
        registry.resetAll()
        noteChange()
        logger.info("all layers reset")
        return .json(200, Array("{\"reset\":\"all\"}\n".utf8))
    }

    /// `DELETE /v1/layers/{layer}`: one layer forgotten; its next decision starts it afresh.
    func reset(_ name: String) -> HTTPResponse {
        guard registry.reset(name) else { return .error(404, "no such layer: \(name)", field: "layer") }
        noteChange()
        logger.info("layer reset", metadata: ["layer": "\(name)"])
        var w = JSONWriter()
        w.beginObject()
        w.field("reset", name)
        w.endObject()
        return .json(200, w.bytes + [0x0A])
    }
}
