extension StringProtocol {
    /// The string with A-Z mapped to a-z and every other character kept: how HTTP compares
    /// field names and tokens (RFC 9110 sections 5.1 and 5.6.2, which are ASCII). Unicode case
    /// mapping must not be used for them: `lowercased()` turns the Kelvin sign (U+212A) into
    /// "k", so `chun\u{212A}ed` would pass for `chunked`.
    public func asciiLowercased() -> String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(utf8.count)
        var changed = false
        for b in utf8 {
            if b >= 0x41 && b <= 0x5A {
                bytes.append(b | 0x20)
                changed = true
            } else {
                bytes.append(b)
            }
        }
        if !changed, let s = self as? String { return s }
        return String(decoding: bytes, as: UTF8.self)
    }
}
