/// A response body written piece by piece while the connection sends it, so that serving a
/// large answer needs memory for one piece, not for the whole body.
///
/// The protocol layer asks for the next piece only when the previous ones have left: over
/// HTTP/1.1 once the connection's output has drained below its high-water mark, over HTTP/2 when
/// the stream's flow-control window has room. Calls come from the connection's thread, one at a
/// time; a source that is not finished when the connection closes is simply released.
public protocol HTTPBodySource: AnyObject {
    /// Appends the next piece of the body to `output` (after whatever it already holds): about
    /// `atMost` bytes, or a little more when one indivisible unit (one line, say) passes it.
    /// Returns true while more remains, which promises that at least one byte was appended;
    /// false once the last bytes (possibly none) have been appended.
    func next(into output: inout [UInt8], atMost: Int) -> Bool
}
