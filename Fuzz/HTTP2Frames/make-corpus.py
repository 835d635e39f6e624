#!/usr/bin/env python3
"""Writes the seed corpus of Fuzz/HTTP2Frames: valid client frame sequences, one per file, as sent
after the connection preface and SETTINGS (which the target adds itself). Run from anywhere;
rewrites Fuzz/HTTP2Frames/corpus/. Header blocks use HPACK (RFC 7541) static-table references and
literals without Huffman coding, so each seed reads plainly in a hex dump."""
import os
import struct

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20


def frame(type_, flags, stream, payload=b""):
    """A frame: 24-bit length, type, flags, 31-bit stream id, payload (RFC 9113 section 4.1)."""
    return struct.pack(">I", len(payload))[1:] + bytes([type_, flags]) + struct.pack(">I", stream) + payload


def literal(index, value):
    """A literal field without indexing whose name is static-table entry `index` (RFC 7541 6.2.2)."""
    assert index < 15 and len(value) < 127
    return bytes([index, len(value)]) + value


def literal_new(name, value):
    """A literal field without indexing with a literal name (RFC 7541 section 6.2.2)."""
    return bytes([0, len(name)]) + name + bytes([len(value)]) + value


# Static table (RFC 7541 appendix A): 2 :method GET, 3 :method POST, 4 :path, 6 :scheme http,
# 1 :authority; indexed fields are 0x80 | index.
GET, POST, SCHEME = b"\x82", b"\x83", b"\x86"
AUTHORITY = literal(1, b"localhost")


def request(method, path, *extra):
    return method + SCHEME + literal(4, path) + AUTHORITY + b"".join(extra)


def headers(stream, block, end_stream=True):
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, block)


json = literal_new(b"content-type", b"application/json")
seeds = {
    "get-healthz": headers(1, request(GET, b"/healthz")),
    "get-query": headers(1, request(GET, b"/v1/layers?layer=l0&x=%20")),
    "head": headers(1, b"\x00\x07:method\x04HEAD" + SCHEME + literal(4, b"/healthz") + AUTHORITY),
    "post-data": headers(1, request(POST, b"/v1/decisions", json, literal_new(b"content-length", b"20")), False)
    + frame(DATA, 0, 1, b'{"expert_counts":')
    + frame(DATA, END_STREAM, 1, b"[1]"),
    "post-padded": headers(1, request(POST, b"/v1/decisions", json), False)
    + frame(DATA, END_STREAM | PADDED, 1, b"\x03{}\x00\x00\x00"),
    "expect-continue": headers(1, request(POST, b"/v1/decisions", literal_new(b"expect", b"100-continue")), False)
    + frame(DATA, END_STREAM, 1, b"{}"),
    "trailers": headers(1, request(POST, b"/v1/decisions"), False)
    + frame(DATA, 0, 1, b"{}")
    + headers(1, literal_new(b"x-checksum", b"0")),
    "ping": frame(PING, 0, 0, b"12345678") + headers(1, request(GET, b"/healthz")),
    "window-update": frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20))
    + headers(1, request(GET, b"/metrics"))
    + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 65535)),
    "rst-stream": headers(1, request(POST, b"/v1/decisions"), False)
    + frame(RST_STREAM, 0, 1, struct.pack(">I", 8))
    + headers(3, request(GET, b"/healthz")),
    # A client's GOAWAY names the last server-initiated stream: 0, since the server pushes nothing.
    "goaway": headers(1, request(GET, b"/healthz")) + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)),
    "continuation": frame(HEADERS, END_STREAM, 1, GET + SCHEME)
    + frame(CONTINUATION, 0, 1, literal(4, b"/healthz"))
    + frame(CONTINUATION, END_HEADERS, 1, AUTHORITY),
    "priority": frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 15))
    + frame(HEADERS, END_HEADERS | END_STREAM | PRIO, 3, struct.pack(">IB", 1, 200) + request(GET, b"/healthz")),
    "settings-streams": frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 16) + struct.pack(">HI", 5, 1 << 15))
    + frame(SETTINGS, ACK, 0)
    + b"".join(headers(2 * i + 1, request(GET, b"/healthz")) for i in range(4)),
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(out, exist_ok=True)
for name in os.listdir(out):
    os.remove(os.path.join(out, name))
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
