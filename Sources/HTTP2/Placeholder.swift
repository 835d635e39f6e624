import CNGHTTP2
import HTTPCore

/// The libnghttp2 version the process linked at run time (e.g. "1.52.0").
public func linkedNGHTTP2Version() -> String {
    guard let info = nghttp2_version(0), let s = info.pointee.version_str else { return "unknown" }
    return String(cString: s)
}
