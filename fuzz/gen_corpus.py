#!/usr/bin/env python3
"""gen_corpus.py — writes the seed corpora under fuzz/corpus/<target>/.

    python3 fuzz/gen_corpus.py          # (re)creates every seed file

Each fuzzer's input layout is described at the top of its .c file; the
seeds follow it (e.g. fuzz_frame takes two chunking bytes, then the stream).
Deterministic: masks and payloads come from a fixed-seed PRNG.
"""
import os
import random
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(6455)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("latin-1")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- frames -------------------------------------------------------------

def frame(opcode, payload=b"", fin=True, rsv1=False, mask=True, rsv=0, length=None, lenform=None):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | rsv | opcode
    n = len(payload) if length is None else length
    m = 0x80 if mask else 0
    form = lenform or (7 if n < 126 else 16 if n <= 0xFFFF else 64)
    if form == 7:
        hdr = bytes([b0, m | n])
    elif form == 16:
        hdr = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask:
        key = bytes(rng.randrange(256) for _ in range(4))
        payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
        hdr += key
    return hdr + payload


def frames():
    # The first two bytes of every fuzz_frame input pick the chunking.
    pre = [b"\x00\x00", b"\x01\x00", b"\x07\x03", b"\xff\xff"]
    cases = {
        "text_masked": frame(1, b"Hello"),
        "text_unmasked": frame(1, b"Hello", mask=False),
        "binary_126": frame(2, bytes(range(200))),
        "binary_64bit_partial": frame(2, b"x" * 100, length=65536, lenform=64),
        "fragmented_with_ping": frame(1, b"Hel", fin=False) + frame(9, b"ping") +
                                frame(0, b"lo", fin=False) + frame(10, b"") + frame(0, b"!"),
        "close_1000": frame(8, struct.pack(">H", 1000) + b"bye"),
        "close_empty": frame(8),
        "ping_125": frame(9, b"p" * 125),
        "ping_126": frame(9, b"p" * 126),
        "compressed": frame(1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv1=True),
        "compressed_cont_rsv1": frame(1, b"ab", rsv1=True, fin=False) + frame(0, b"cd", rsv1=True),
        "rsv2": frame(1, b"x", rsv=0x20),
        "opcode_3": frame(3, b"x"),
        "opcode_b": frame(0xB),
        "cont_first": frame(0, b"x"),
        "text_in_text": frame(1, b"a", fin=False) + frame(1, b"b"),
        "fragmented_ping": frame(9, b"x", fin=False),
        "nonminimal_16": frame(2, b"abc", lenform=16),
        "nonminimal_64": frame(2, b"a" * 300, lenform=64),
        "len64_topbit": frame(2, length=1 << 63, lenform=64),
        "len64_huge": frame(2, b"abcd", length=(1 << 62) + 5, lenform=64),
        "empty_frames": frame(1, b"", fin=False) + frame(0, b"", fin=False) + frame(0, b""),
        "many": b"".join(frame(rng.choice([1, 2, 9, 10]), bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
                         for _ in range(20)),
    }
    for name, data in cases.items():
        write("fuzz_frame", name, rng.choice(pre) + data)


# ---- utf-8 --------------------------------------------------------------

def utf8():
    cases = {
        "ascii": b"Hello, world! 0123456789 abcdefghijklmnop",
        "mixed": "κόσμε ünïcödé ✓ 𝄞 日本語 €".encode(),
        "boundaries": "\u007f\u0080\u07ff\u0800\ud7ff\ue000\uffff".encode("utf-8", "surrogatepass")
                      + "\U00010000\U0010ffff".encode(),
        "overlong_2": b"ab\xc0\xafcd",
        "overlong_3": b"\xe0\x80\xaf",
        "overlong_4": b"\xf0\x80\x80\xaf",
        "surrogate": b"\xed\xa0\x80",
        "above_10ffff": b"\xf4\x90\x80\x80",
        "f5": b"\xf5\x80\x80\x80",
        "truncated": "abc€".encode()[:-1],
        "lone_cont": b"abcdefgh\x80",
        "long_ascii_then_bad": b"a" * 37 + b"\xff" + b"b" * 9,
    }
    for name, data in cases.items():
        write("fuzz_utf8", name, data)


# ---- http ---------------------------------------------------------------

UPGRADE = ("GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
           "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
           "Origin: http://example.com\r\n\r\n")


def http():
    # byte 0: chunking seed; byte 1: limits (see fuzz_http.c)
    cases = {
        "upgrade": UPGRADE,
        "upgrade_then_frame": UPGRADE + "\x81\x85\x01\x02\x03\x04Idoml",
        "get": "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "pipelined": "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        "post_body": "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "chunked": "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        "repeated": "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nX-A:  3 \r\nEmpty:\r\n\r\n",
        "http10": "GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "post_upgrade": UPGRADE.replace("GET", "POST", 1),
        "version_8": UPGRADE.replace("Version: 13", "Version: 8"),
        "bad_key": UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
        "bad_line": "GET\r\n\r\n",
        "connect": "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        "big_header": "GET / HTTP/1.1\r\nX-Big: " + "b" * 3000 + "\r\n\r\n",
    }
    for name, data in cases.items():
        write("fuzz_http", name, bytes([rng.randrange(256), 0xff]) + data.encode("latin-1"))
    # Reproducers of bugs found by fuzz_http (see fuzz_http.c). An upgrade
    # request with a body was "done" before its body when the body came later.
    body = UPGRADE.replace("\r\n\r\n", "\r\nContent-Length: 4\r\n\r\n") + "body\x81\x80abcd"
    write("../regressions/fuzz_http", "upgrade-request-with-body", b"\x00\xff" + body.encode("latin-1"))
    # A repeated header with an empty value was joined as "1, ".
    write("../regressions/fuzz_http", "repeated-header-empty-value",
          b"\x00\xff" + b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A:\r\n\r\n")
    # A header value could start with a NUL byte (read as "" or "1, ").
    write("../regressions/fuzz_http", "header-value-starting-with-nul",
          b"\x00\xff" + b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A:\x00b\r\n\r\n")
    # A key made of padding passed http_ws_check_upgrade.
    write("../regressions/fuzz_http", "key-with-padding-inside",
          b"\x00\xff" + UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "=" * 24).encode("latin-1"))


# ---- permessage-deflate ---------------------------------------------------

def raw_deflate(data, level=6, bits=15, final=False):
    c = zlib.compressobj(level, zlib.DEFLATED, -bits)
    out = c.compress(data) + (c.flush(zlib.Z_FINISH) if final else c.flush(zlib.Z_SYNC_FLUSH))
    if not final and out.endswith(b"\x00\x00\xff\xff"):
        out = out[:-4]
    return out


def inflate():
    # byte 0: limit and chunking; byte 1: round-trip options (see fuzz_inflate.c)
    offers = [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12",
        'permessage-deflate; server_max_window_bits="9"',
        "permessage-deflate; server_max_window_bits=8, permessage-deflate",
        "x-webkit-deflate-frame, permessage-deflate; unknown=1, permessage-deflate; client_max_window_bits=15",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    ]
    for i, o in enumerate(offers):
        write("fuzz_inflate", "offer_%d" % i, b"\x05\x00" + o.encode())
    text = b"Hello, hello, hello! " * 20
    streams = {
        "hello": raw_deflate(b"Hello"),
        "text": raw_deflate(text),
        "text_w9": raw_deflate(text, bits=9),
        "stored": raw_deflate(bytes(rng.randrange(256) for _ in range(300)), level=0),
        "bfinal": raw_deflate(text, final=True),
        "bomb": raw_deflate(b"\x00" * 200000, level=9),
        "random": bytes(rng.randrange(256) for _ in range(64)),
    }
    for name, data in streams.items():
        write("fuzz_inflate", "deflate_" + name, bytes([0x07, 0x31]) + data)
    # Reproducer of a bug found by the round trip (see fuzz_inflate.c):
    # dedicated mode with context takeover (byte 1 = 0x90),
    # "Hello", then an empty message (0x90 % 6 == 0), then "Hello" again.
    write("../regressions/fuzz_inflate", "empty-message-after-context-takeover", b"\x00\x90Hello")


# ---- PROXY header and forwarding headers --------------------------------

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy():
    # byte 0: options (see fuzz_proxy.c): versions in bits 0-1 (0: both), bit 2
    # Forwarded instead of X-Forwarded-For, bits 3-5 the peer (0: 10.0.0.2, trusted)
    import socket
    v4 = socket.inet_aton("192.0.2.1") + socket.inet_aton("198.51.100.2") + struct.pack(">HH", 12345, 443)
    v6 = (socket.inet_pton(socket.AF_INET6, "2001:db8::1") + socket.inet_pton(socket.AF_INET6, "2001:db8::2")
          + struct.pack(">HH", 4660, 80))
    tlv = b"\x04\x00\x04abcd"   # a NOOP TLV
    cases = {
        "v1_tcp4": b"PROXY TCP4 192.0.2.1 198.51.100.2 12345 443\r\nGET / HTTP/1.1\r\n\r\n",
        "v1_tcp6": b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 65535 0\r\n",
        "v1_unknown": b"PROXY UNKNOWN\r\n",
        "v2_inet": V2_SIG + b"\x21\x11" + struct.pack(">H", len(v4)) + v4 + b"\x16\x03\x01",
        "v2_inet6_tlv": V2_SIG + b"\x21\x21" + struct.pack(">H", len(v6) + len(tlv)) + v6 + tlv,
        "v2_local": V2_SIG + b"\x20\x00\x00\x00",
        "v2_unix": V2_SIG + b"\x21\x31" + struct.pack(">H", 216) + b"/tmp/a".ljust(108, b"\0") * 2,
    }
    for name, data in cases.items():
        write("fuzz_proxy", name, b"\x00" + data)
    xff = {
        "xff_chain": b"6.6.6.6, 203.0.113.7, 10.0.0.3, 10.9.9.9",
        "xff_v6_port": b"[2001:db8::7]:4711, fd00::1",
        "xff_mapped": b"198.51.100.1:80,::ffff:10.1.1.1",
    }
    for name, data in xff.items():
        write("fuzz_proxy", name, b"\x00" + data)
    fwd = {
        "fwd_simple": b"for=192.0.2.60;proto=http;by=203.0.113.43",
        "fwd_chain": b'for=192.0.2.43, For="[2001:db8:cafe::17]:4711";host="a,b", for=10.0.0.9',
        "fwd_hidden": b"for=_hidden, for=unknown;proto=https, for=\"\\1.2.3.4:_p\"",
    }
    for name, data in fwd.items():
        write("fuzz_proxy", name, b"\x04" + data)
    write("fuzz_proxy", "xff_untrusted_peer", b"\x08" + b"1.2.3.4")
    # Reproducers of bugs found by fuzz_proxy (see fuzz_proxy.c). A complete
    # v1 line with a bad address was an ERROR with consumed already set.
    write("../regressions/fuzz_proxy", "v1-error-with-consumed-set",
          b"\x00PROXY TCP4 192.0.2.1 198.51021..0 12345 443\r\nGET / HTTP/1.1\r\n\r\n")
    # A v1 line whose CR was at index 106 (one byte too long) was ERROR at
    # 106 bytes and NEED_MORE at 107.
    write("../regressions/fuzz_proxy", "v1-cr-past-the-limit-need-more",
          b"\x00PROXY TCP6 b8::" + b"D" * 40 + b"0 " + b"D" * 40 + b"0:65535 0\r\n\xfd")


if __name__ == "__main__":
    frames()
    utf8()
    http()
    inflate()
    proxy()
