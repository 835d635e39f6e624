import CNGHTTP2

/// The libnghttp2 version the process linked at run time (e.g. "1.52.0").
///
/// Reported at startup and in tests because the API we may call depends on it: Debian 12 ships
/// 1.52, which lacks the `*2` functions (`nghttp2_session_mem_send2` ...) of newer releases.
public func linkedNGHTTP2Version() -> String {
    guard let info = nghttp2_version(0), let s = info.pointee.version_str else { return "unknown" }
    return String(cString: s)
}
