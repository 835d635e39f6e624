import CNGHTTP2
import HTTPCore

#if canImport(Glibc)
import Glibc
#endif

/// nghttp2's callbacks. Each reaches the session through the user-data pointer, which holds
/// `Unmanaged.passUnretained(self)`: the session owns the nghttp2 session and deletes it in
/// `deinit`, so it outlives every callback and no retain is needed. Callbacks run on the thread
/// that called into nghttp2, copy the bytes they are given, may submit frames, and never call
/// `mem_recv`/`mem_send` (nghttp2 forbids re-entry).
extension HTTP2ServerSession {
    static func from(_ userData: UnsafeMutableRawPointer?) -> HTTP2ServerSession {
        Unmanaged<HTTP2ServerSession>.fromOpaque(userData!).takeUnretainedValue()
    }

    static func installCallbacks(_ callbacks: OpaquePointer?) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
            guard let frame else { return 0 }
            let hd = frame.pointee.hd
            if hd.type == UInt8(NGHTTP2_HEADERS.rawValue) && frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST {
                let me = HTTP2ServerSession.from(userData)
                let stream = HTTP2Stream(id: hd.stream_id, now: me.now)
                me.streams[hd.stream_id] = stream
                me.lastStream = stream
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) {
            _, frame, name, namelen, value, valuelen, _, userData in
            guard let frame, let name, let value else { return 0 }
            let me = HTTP2ServerSession.from(userData)
            guard let stream = me.stream(frame.pointee.hd.stream_id) else { return 0 }
            let goOn = me.onHeader(
                stream, name: UnsafeBufferPointer(start: name, count: namelen),
                value: UnsafeBufferPointer(start: value, count: valuelen),
                isRequest: frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST)
            // nghttp2 then decodes the rest of the block for the HPACK state only (RFC 9113
            // section 4.3), with no field check and no callback, and resets the stream.
            return goOn ? 0 : Int32(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, len, userData in
            guard let data else { return 0 }
            let me = HTTP2ServerSession.from(userData)
            guard let stream = me.stream(streamID) else { return 0 }
            me.onData(stream, UnsafeBufferPointer(start: data, count: len))
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
            guard let frame else { return 0 }
            let hd = frame.pointee.hd
            guard hd.type == UInt8(NGHTTP2_HEADERS.rawValue) || hd.type == UInt8(NGHTTP2_DATA.rawValue) else {
                return 0
            }
            let me = HTTP2ServerSession.from(userData)
            guard let stream = me.stream(hd.stream_id) else { return 0 }
            if stream.phase == .headers && hd.type == UInt8(NGHTTP2_HEADERS.rawValue) {
                // The header block is complete: the body timer starts now.
                stream.phase = .body
                stream.anchor = me.now
            }
            if hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0 {
                me.enqueue(stream)
            } else if stream.rejection != nil && hd.type == UInt8(NGHTTP2_HEADERS.rawValue) {
                // Rejected at the header section: answer now rather than wait for a body we
                // would discard (RFC 9113 section 8.1 allows a response before the request ends).
                stream.resetAfterResponse = true
                me.enqueue(stream)
            } else if stream.expectsContinue && hd.type == UInt8(NGHTTP2_HEADERS.rawValue) {
                // A client waiting for 100 (Continue) learns a refusal its body cannot change
                // (credentials, origin) before sending the body; otherwise it is asked for it
                // rather than stall until its own timer fires (RFC 9110 section 10.1.1).
                if let refusal = me.precheck(stream) {
                    stream.precheckRefusal = refusal
                    stream.resetAfterResponse = true
                    me.enqueue(stream)
                } else {
                    me.submitContinue(stream.id)
                }
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks) { session, frame, userData in
            guard let session, let frame else { return 0 }
            let hd = frame.pointee.hd
            guard hd.stream_id != 0 else { return 0 }
            let me = HTTP2ServerSession.from(userData)
            guard let stream = me.stream(hd.stream_id) else { return 0 }
            // Progress on the response restarts the stream's timer.
            if stream.phase == .responding { stream.anchor = me.now }
            guard hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0, stream.resetAfterResponse else { return 0 }
            stream.resetAfterResponse = false
            if nghttp2_session_get_stream_remote_close(session, hd.stream_id) == 0 {
                // The response is complete and the client is still sending a body we refused:
                // ask it to stop without an error (RFC 9113 section 8.1).
                nghttp2_submit_rst_stream(
                    session, UInt8(NGHTTP2_FLAG_NONE.rawValue), hd.stream_id,
                    NGHTTP2_NO_ERROR.rawValue)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, _, userData in
            let me = HTTP2ServerSession.from(userData)
            if let stream = me.streams[streamID] { me.release(stream) }
            me.streams[streamID] = nil
            if me.lastStream?.id == streamID { me.lastStream = nil }
            // The idle timer runs from the moment the last stream closed.
            if me.streams.isEmpty { me.idleSince = me.now }
            return 0
        }
    }

    /// The data provider of every response: copies from the stream's buffer (nghttp2's
    /// `mem_send` cannot use NO_COPY, which needs a send callback).
    static let readResponseBody: nghttp2_data_source_read_callback = {
        _, streamID, buf, length, dataFlags, _, userData in
        let me = HTTP2ServerSession.from(userData)
        guard let stream = me.stream(streamID), let buf, let dataFlags else {
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        if stream.responseOffset == stream.responseBody.count, let source = stream.source {
            // The piece has left: the next one, written over it. Runs inside mem_send, which
            // only asks when the stream's window has room (RFC 9113 section 6.9).
            stream.responseBody.removeAll(keepingCapacity: true)
            stream.responseOffset = 0
            if !source.next(into: &stream.responseBody, atMost: me.limits.responseChunkBytes) { stream.source = nil }
        }
        let count = min(length, stream.responseBody.count - stream.responseOffset)
        if count > 0 {
            stream.responseBody.withUnsafeBufferPointer { src in
                buf.update(from: src.baseAddress! + stream.responseOffset, count: count)
            }
            stream.responseOffset += count
        }
        if stream.responseOffset == stream.responseBody.count && stream.source == nil {
            dataFlags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            stream.responseBody = []
            stream.responseOffset = 0
            me.release(stream)
        }
        return count
    }

    /// The stream with `id`, or nil. nghttp2 calls several callbacks in a row for one stream (one
    /// per header field, then the frame's end), so the last stream found is tried first and one
    /// comparison usually replaces a hash lookup. `lastStream` is cleared when its stream closes.
    @inline(__always)
    func stream(_ id: Int32) -> HTTP2Stream? {
        if let last = lastStream, last.id == id { return last }
        let found = streams[id]
        if found != nil { lastStream = found }
        return found
    }

    func enqueue(_ stream: HTTP2Stream) {
        guard !stream.queued else { return }
        stream.queued = true
        ready.append(stream.id)
    }

    /// Takes one field of a header block; false when the rest of the block is not worth
    /// looking at (see below), which resets the stream.
    func onHeader(
        _ stream: HTTP2Stream, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>,
        isRequest: Bool
    ) -> Bool {
        stream.headerListSize += name.count + value.count + 32
        guard stream.rejection == nil else {
            // A refused request still gets its 431 (or other refusal) if its block ends soon. But
            // HPACK lets a few bytes name a large table entry again and again (RFC 7541 section
            // 6.1), and nghttp2 validates every field it hands us: past twice the limit we stop
            // and reset the stream, so no header block costs more than that, whatever it expands to.
            return stream.headerListSize / 2 <= limits.maxHeaderBytes
        }
        if stream.headerListSize > limits.maxHeaderBytes {
            stream.reject(431, "header list larger than \(limits.maxHeaderBytes) bytes")
            return true
        }
        // Trailers count against the limits but are not part of the request value.
        guard isRequest else { return true }
        // Names are compared as bytes: no String is made for a name we do not keep. nghttp2
        // has already refused upper-case names (RFC 9113 section 8.2.1), so names are lower-case.
        if name.first == UInt8(ascii: ":") {
            if Self.equals(name, ":method") {
                stream.method = Self.method(value)
            } else if Self.equals(name, ":path") {
                // The same bound as an HTTP/1.1 request line, whose target this is: a long path
                // gets the same 414 over either protocol (the header list limit is far larger).
                if value.count > limits.maxRequestLineBytes {
                    stream.reject(414, "request target longer than \(limits.maxRequestLineBytes) bytes")
                    return true
                }
                stream.setTarget(value)
            } else if Self.equals(name, ":authority") {
                stream.authority = String(decoding: value, as: UTF8.self)
            }
            return true
        }
        if stream.headers.count >= limits.maxHeaderCount {
            stream.reject(431, "more than \(limits.maxHeaderCount) header fields")
            return true
        }
        if Self.equals(name, "content-length") {
            // nghttp2 checks it is digits only and matches the DATA received (RFC 9113 8.1.1).
            // A length past the limit is refused at once; a smaller one reserves nothing, since
            // a client can announce what it never sends: memory follows the DATA that arrives.
            if let declared = Self.decimal(value), declared > limits.maxBodyBytes {
                stream.reject(413, "body larger than \(limits.maxBodyBytes) bytes")
                return true
            }
        } else if Self.equals(name, "host") {
            stream.hasHost = true
        } else if Self.equals(name, "expect") {
            // The expectation is a case-insensitive token (RFC 9110 section 10.1.1).
            if String(decoding: value, as: UTF8.self).asciiLowercased() == "100-continue" {
                stream.expectsContinue = true
            }
        }
        if stream.headers.isEmpty { stream.headers.reserveCapacity(8) }
        stream.headers.append((String(decoding: name, as: UTF8.self), Self.fieldValue(value)))
        return true
    }

    /// A field value as a String. The content types our clients send on every POST are longer
    /// than a small (inline) String, so they are returned as literals: no allocation to build
    /// them, no release when the request is done.
    static func fieldValue(_ value: UnsafeBufferPointer<UInt8>) -> String {
        if value.count > 15 {
            if equals(value, "application/json") { return "application/json" }
            if equals(value, "application/x-ndjson") { return "application/x-ndjson" }
        }
        return String(decoding: value, as: UTF8.self)
    }

    /// True when `bytes` spell `literal` exactly (an ASCII literal).
    @inline(__always)
    static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ literal: StaticString) -> Bool {
        bytes.count == literal.utf8CodeUnitCount
            && memcmp(bytes.baseAddress!, literal.utf8Start, bytes.count) == 0
    }

    /// The method as a String; the common ones are literals, so no bytes are decoded for them.
    static func method(_ value: UnsafeBufferPointer<UInt8>) -> String {
        if equals(value, "POST") { return "POST" }
        if equals(value, "GET") { return "GET" }
        if equals(value, "HEAD") { return "HEAD" }
        if equals(value, "DELETE") { return "DELETE" }
        return String(decoding: value, as: UTF8.self)
    }

    /// A decimal of digits only, as `Int(String)` would read it; nil when it is not one or
    /// does not fit (`Int(_:)` fails then too).
    static func decimal(_ value: UnsafeBufferPointer<UInt8>) -> Int? {
        guard !value.isEmpty else { return nil }
        var n = 0
        for b in value {
            guard b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") else { return nil }
            let (times10, o1) = n.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int(b - UInt8(ascii: "0")))
            if o1 || o2 { return nil }
            n = sum
        }
        return n
    }

    func onData(_ stream: HTTP2Stream, _ data: UnsafeBufferPointer<UInt8>) {
        if stream.phase == .body { stream.anchor = now }
        guard stream.rejection == nil, stream.precheckRefusal == nil else { return }
        if stream.body.count + data.count > limits.maxBodyBytes {
            stream.reject(413, "body larger than \(limits.maxBodyBytes) bytes")
            stream.resetAfterResponse = true
            enqueue(stream)
            return
        }
        if let refusal = hold(data.count, for: stream) {
            stream.reject(503, refusal)
            stream.resetAfterResponse = true
            enqueue(stream)
            return
        }
        stream.body.append(contentsOf: data)
    }

    /// Takes `count` bytes for `stream` from the connection's bound and the server's budget;
    /// nil when both allow it, else why not (the stream's 503 message).
    func hold(_ count: Int, for stream: HTTP2Stream) -> String? {
        if heldBytes + count > limits.maxConnectionBufferBytes {
            return "connection holds more than \(limits.maxConnectionBufferBytes) bytes of requests and responses"
        }
        if !budget.reserve(count) { return "server holds more than \(budget.limit) bytes of requests and responses" }
        heldBytes += count
        stream.heldBytes += count
        return nil
    }

    /// Gives back everything `stream` holds.
    func release(_ stream: HTTP2Stream) {
        guard stream.heldBytes > 0 else { return }
        budget.release(stream.heldBytes)
        heldBytes -= stream.heldBytes
        stream.heldBytes = 0
    }
}
