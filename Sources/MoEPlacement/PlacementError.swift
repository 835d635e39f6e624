/// Why a placement or a plan request is inconsistent. `message` names the rule that failed and the
/// numbers involved, so an HTTP 422 can carry it as is; `field` is the request key at fault.
public struct PlacementError: Error, Equatable, Sendable, CustomStringConvertible {
    public let message: String
    public let field: String
    /// The layer the error is about, when there is one.
    public let layer: String?

    public init(_ message: String, field: String, layer: String? = nil) {
        self.message = message
        self.field = field
        self.layer = layer
    }

    /// The same error, about `layer`.
    public func about(layer: String) -> PlacementError {
        PlacementError(message, field: field, layer: layer)
    }

    public var description: String {
        layer.map { "layer \($0): \(message)" } ?? message
    }
}
