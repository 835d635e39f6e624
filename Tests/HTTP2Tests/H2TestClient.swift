import CNGHTTP2
import HTTP2
import HTTPCore
import SessionCore

/// An HTTP/2 client built on nghttp2's client session, talking to a server session through
/// byte buffers: an independent implementation checks every frame we produce.
final class H2TestClient {
    struct Response {
        var status: Int?
        var informational: [Int] = []
        var headers: [(String, String)] = []
        var body: [UInt8] = []
        /// The RST_STREAM / close error code, once the stream closed.
        var closeCode: UInt32?
        func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
    }

    private(set) var session: OpaquePointer!
    var responses: [Int32: Response] = [:]
    var uploads: [Int32: (bytes: [UInt8], offset: Int)] = [:]
    /// GOAWAY frames received: (last stream id, error code).
    var goaways: [(lastStreamID: Int32, errorCode: UInt32)] = []
    var settingsReceived = 0
    /// Streams whose body is held back (the data provider defers) until released.
    var held: Set<Int32> = []
    /// Streams whose body pauses (the data provider defers) once this many bytes have been sent.
    var uploadCaps: [Int32: Int] = [:]

    /// `windowBytes` nil keeps the default 64 KiB stream window (RFC 9113 section 6.9.2);
    /// `autoWindowUpdate` false leaves every WINDOW_UPDATE to `grant`.
    init(windowBytes: Int32? = 1 << 20, autoWindowUpdate: Bool = true) {
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, namelen, value, valuelen, _, ud in
            let me = Unmanaged<H2TestClient>.fromOpaque(ud!).takeUnretainedValue()
            let id = frame!.pointee.hd.stream_id
            let n = String(decoding: UnsafeBufferPointer(start: name, count: namelen), as: UTF8.self)
            let v = String(decoding: UnsafeBufferPointer(start: value, count: valuelen), as: UTF8.self)
            var r = me.responses[id] ?? Response()
            if n == ":status", let s = Int(v) {
                if s < 200 { r.informational.append(s) } else { r.status = s }
            } else {
                r.headers.append((n, v))
            }
            me.responses[id] = r
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, id, data, len, ud in
            let me = Unmanaged<H2TestClient>.fromOpaque(ud!).takeUnretainedValue()
            me.responses[id, default: Response()].body.append(contentsOf: UnsafeBufferPointer(start: data, count: len))
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, ud in
            let me = Unmanaged<H2TestClient>.fromOpaque(ud!).takeUnretainedValue()
            let hd = frame!.pointee.hd
            if hd.type == UInt8(NGHTTP2_GOAWAY.rawValue) {
                me.goaways.append((frame!.pointee.goaway.last_stream_id, frame!.pointee.goaway.error_code))
            } else if hd.type == UInt8(NGHTTP2_SETTINGS.rawValue) && hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0 {
                me.settingsReceived += 1
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, id, code, ud in
            let me = Unmanaged<H2TestClient>.fromOpaque(ud!).takeUnretainedValue()
            me.responses[id, default: Response()].closeCode = code
            return 0
        }
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        nghttp2_option_set_no_auto_window_update(option, autoWindowUpdate ? 0 : 1)
        var s: OpaquePointer?
        nghttp2_session_client_new2(&s, callbacks, Unmanaged.passUnretained(self).toOpaque(), option)
        nghttp2_option_del(option)
        nghttp2_session_callbacks_del(callbacks)
        session = s
        // The client preface always ends with SETTINGS, possibly empty (RFC 9113 section 3.4).
        var iv =
            windowBytes.map {
                [
                    nghttp2_settings_entry(
                        settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: UInt32($0))
                ]
            } ?? []
        nghttp2_submit_settings(session, 0, &iv, iv.count)
    }

    deinit { nghttp2_session_del(session) }

    /// Submits a request; the body (if any) is sent through a data provider.
    @discardableResult
    func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil) -> Int32 {
        var fields = [(":method", method), (":scheme", "http"), (":authority", "test.local"), (":path", path)]
        fields += headers
        var bytes: [UInt8] = []
        var spans: [(Int, Int, Int, Int)] = []
        for (n, v) in fields {
            let a = bytes.count
            bytes += Array(n.utf8)
            let b = bytes.count
            bytes += Array(v.utf8)
            spans.append((a, b - a, b, bytes.count - b))
        }
        let id: Int32 = bytes.withUnsafeMutableBufferPointer { buf in
            var nva = spans.map { s in
                nghttp2_nv(
                    name: buf.baseAddress! + s.0, value: buf.baseAddress! + s.2, namelen: s.1, valuelen: s.3, flags: 0)
            }
            guard body != nil else {
                return nghttp2_submit_request(session, nil, &nva, nva.count, nil, nil)
            }
            var provider = nghttp2_data_provider(
                source: nghttp2_data_source(ptr: nil), read_callback: H2TestClient.readUpload)
            return nghttp2_submit_request(session, nil, &nva, nva.count, &provider, nil)
        }
        if let body, id > 0 { uploads[id] = (body, 0) }
        return id
    }

    /// Opens the stream's receive window by `bytes` (WINDOW_UPDATE).
    func grant(_ id: Int32, _ bytes: Int32) {
        nghttp2_submit_window_update(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, bytes)
    }

    /// Sends PING.
    func ping() {
        nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil)
    }

    /// Lets a held-back body go (all of it, or up to `upTo` bytes in total).
    func release(_ id: Int32, upTo cap: Int? = nil) {
        held.remove(id)
        uploadCaps[id] = cap
        nghttp2_session_resume_data(session, id)
    }

    static let readUpload: nghttp2_data_source_read_callback = { _, id, buf, length, flags, _, ud in
        let me = Unmanaged<H2TestClient>.fromOpaque(ud!).takeUnretainedValue()
        if me.held.contains(id) { return Int(NGHTTP2_ERR_DEFERRED.rawValue) }
        guard var u = me.uploads[id] else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
        let cap = min(me.uploadCaps[id] ?? u.bytes.count, u.bytes.count)
        if u.offset >= cap && u.offset < u.bytes.count { return Int(NGHTTP2_ERR_DEFERRED.rawValue) }
        let n = min(length, cap - u.offset)
        u.bytes.withUnsafeBufferPointer { src in buf!.update(from: src.baseAddress! + u.offset, count: n) }
        u.offset += n
        if u.offset == u.bytes.count { flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
        me.uploads[id] = u
        return n
    }

    /// Every byte the client has queued.
    func output() -> [UInt8] {
        var out: [UInt8] = []
        while true {
            var p: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &p)
            if n <= 0 { break }
            out.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        }
        return out
    }

    /// Feeds bytes from the server; returns nghttp2's result (negative on a fatal error).
    @discardableResult
    func input(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBufferPointer { nghttp2_session_mem_recv(session, $0.baseAddress, $0.count) }
    }
}

/// Drives a client and a server session until neither has anything more to say.
struct H2Pipe {
    let client: H2TestClient
    let server: HTTP2ServerSession
    var now: UInt64 = 1_000_000_000
    var lastDisposition: SessionDisposition = .keepOpen
    /// Everything the server wrote, for raw frame checks.
    var serverBytes: [UInt8] = []
    /// The most the server wrote in one call.
    var largestServerWrite = 0

    init(
        client: H2TestClient = H2TestClient(), handler: any HTTPHandler, limits: HTTPLimits = HTTPLimits(),
        budget: BufferBudget? = nil
    ) {
        self.client = client
        self.server = HTTP2ServerSession(handler: handler, limits: limits, now: now, budget: budget)
    }

    /// Sends client bytes to the server (whole, or one byte per call) and the answers back.
    mutating func run(byteByByte: Bool = false, maxRounds: Int = 10_000) {
        for _ in 0..<maxRounds {
            let c2s = client.output()
            var s2c: [UInt8] = []
            if c2s.isEmpty && server.hasBufferedInput {
                // What the transport does once the output has drained: let the session go on.
                lastDisposition = server.receive(UnsafeRawBufferPointer(start: nil, count: 0), now: now, output: &s2c)
            } else if !c2s.isEmpty {
                if byteByByte {
                    for b in c2s {
                        lastDisposition = [b].withUnsafeBytes { server.receive($0, now: now, output: &s2c) }
                    }
                } else {
                    lastDisposition = c2s.withUnsafeBytes { server.receive($0, now: now, output: &s2c) }
                }
            }
            serverBytes += s2c
            largestServerWrite = max(largestServerWrite, s2c.count)
            if !s2c.isEmpty { client.input(s2c) }
            if c2s.isEmpty && s2c.isEmpty { return }
        }
    }

    /// Sends raw bytes to the server; returns what it wrote back.
    mutating func raw(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        lastDisposition = bytes.withUnsafeBytes { server.receive($0, now: now, output: &out) }
        serverBytes += out
        return out
    }
}

/// A frame as it appears on the wire (RFC 9113 section 4.1), parsed independently of nghttp2.
struct RawFrame {
    var type: UInt8
    var flags: UInt8
    var streamID: UInt32
    var payload: [UInt8]

    static func parse(_ bytes: [UInt8]) -> [RawFrame] {
        var frames: [RawFrame] = []
        var i = 0
        while i + 9 <= bytes.count {
            let len = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            guard i + 9 + len <= bytes.count else { break }
            let sid =
                (UInt32(bytes[i + 5]) << 24 | UInt32(bytes[i + 6]) << 16 | UInt32(bytes[i + 7]) << 8
                    | UInt32(bytes[i + 8])) & 0x7fff_ffff
            frames.append(
                RawFrame(
                    type: bytes[i + 3], flags: bytes[i + 4], streamID: sid,
                    payload: Array(bytes[(i + 9)..<(i + 9 + len)])))
            i += 9 + len
        }
        return frames
    }

    /// GOAWAY's (last stream id, error code), nil for other frames.
    var goaway: (lastStreamID: UInt32, errorCode: UInt32)? {
        guard type == 0x7, payload.count >= 8 else { return nil }
        func u32(_ o: Int) -> UInt32 {
            UInt32(payload[o]) << 24 | UInt32(payload[o + 1]) << 16 | UInt32(payload[o + 2]) << 8
                | UInt32(payload[o + 3])
        }
        return (u32(0) & 0x7fff_ffff, u32(4))
    }

    /// RST_STREAM's error code, nil for other frames.
    var errorCode: UInt32? {
        guard type == 0x3, payload.count == 4 else { return nil }
        return UInt32(payload[0]) << 24 | UInt32(payload[1]) << 16 | UInt32(payload[2]) << 8 | UInt32(payload[3])
    }

    static func header(length: Int, type: UInt8, flags: UInt8, streamID: UInt32) -> [UInt8] {
        [
            UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags,
            UInt8(streamID >> 24 & 0x7f), UInt8(streamID >> 16 & 0xff), UInt8(streamID >> 8 & 0xff),
            UInt8(streamID & 0xff),
        ]
    }
}

let clientPreface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
