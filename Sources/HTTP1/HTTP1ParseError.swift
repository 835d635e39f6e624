/// Why the parser refused a request: the status to answer and a short message for the error body
/// (the handler's `refusal` turns both into the response).
///
/// Each refusal carries its own status, so the session turns any of them into a response in one
/// place. After a refusal the connection is closed: once framing is in doubt, nothing after the
/// bad bytes can be trusted (RFC 9112 section 11.2, smuggling).
public struct HTTP1ParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var message: String

    public init(status: Int, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { "\(status) \(message)" }

    static func badRequest(_ message: String) -> HTTP1ParseError { HTTP1ParseError(status: 400, message) }
}
