/// Why a state file could not be restored. Nothing is restored when one is thrown: the registry
/// keeps what it held, so a start can stop with this message instead of running on half a state.
public struct StateError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        /// The bytes do not start with the state file's magic: not a state file at all.
        case notAStateFile
        /// A format version this build cannot read (written by a newer or an unknown build).
        case unsupportedVersion
        /// The file ends before the length its header or one of its fields announces.
        case truncated
        /// The payload's CRC32 differs from the header's: the file was damaged.
        case checksumMismatch
        /// Well-formed, but its values contradict each other or the engine's rules (a bad layer
        /// name, a count larger than the decisions recorded, trailing bytes...).
        case inconsistent
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
