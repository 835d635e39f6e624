/// The decision decoder's strict RFC 8259 checks, offered for other JSON the daemon reads.
///
/// Foundation's parser accepts what a hand-edited config file should not get away with: a
/// trailing comma, and a duplicate key whose later value silently wins (RFC 8259 section 4 leaves
/// duplicate names' meaning to the implementation). The config loader runs this first, so a file
/// that the decoder would refuse as a body is refused as a config too, with the same message.
public enum StrictJSON {
    /// Nil when `bytes` hold exactly one valid JSON value (whitespace around it allowed), with no
    /// duplicate key in any object; otherwise what is wrong and at which byte.
    public static func problem(in bytes: [UInt8], maxDepth: Int = 64) -> String? {
        do throws(DecisionError) {
            try bytes.withUnsafeBufferPointer { (b) throws(DecisionError) in
                try JSONScanner.validate(b, maxDepth: maxDepth)
            }
            return nil
        } catch {
            return error.message
        }
    }
}
