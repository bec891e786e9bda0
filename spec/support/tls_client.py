#!/usr/bin/python3
"""TLS client side of spec/tls_spec.lua (Debian's python3 + python3-websockets).

Every subcommand prints one JSON object on its last line of output.

  echo URI [--ca F] [--servername N] [--no-deflate]
      websockets session against an echo.lua-like script: greeting, text,
      binary, 1 MiB binary, 1 MiB text; reports the negotiated extensions,
      TLS version and the peer certificate's serial / CN.
  verify URI [--ca F] [--servername N]
      only open the WebSocket (certificate verification on); ok or the error.
  handshake HOST PORT [--ca F] [--servername N] [--min V] [--max V]
            [--alpn P,P] [--resume] [--no-verify]
      a bare TLS handshake; version, ALPN, cipher, serial, session reuse.
  hold URI --ca F
      opens an echo session, prints {"phase":"open",...}, waits for a line on
      stdin, then checks that the same connection still echoes, and closes.
  raw HOST PORT DATA [--ca F] [--servername N]
      TLS up, send DATA (Python string escapes allowed, e.g. \\r\\n), read
      until the server closes; the reply and how long it took.
"""
import argparse
import asyncio
import json
import socket
import ssl
import sys
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)   # TLSVersion.TLSv1_1

import websockets

GUARD = 20  # seconds: a hung server fails the spec instead of hanging it

VERSIONS = {
    "1": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3,
}


def context(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if getattr(a, "no_verify", False):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif a.ca:
        ctx.load_verify_locations(a.ca)
    else:
        ctx.load_default_certs()      # the system's CAs: our test CA is not one of them
    if getattr(a, "min", None):
        ctx.minimum_version = VERSIONS[a.min]
    if getattr(a, "max", None):
        ctx.maximum_version = VERSIONS[a.max]
        if a.max in ("1", "1.1"):
            # Debian's OpenSSL would not even offer TLS < 1.2 at its default
            # security level; lower it so the refusal is the server's.
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if getattr(a, "alpn", None):
        ctx.set_alpn_protocols(a.alpn.split(","))
    return ctx


def cert_info(sslobj):
    out = {"tls_version": sslobj.version(), "cipher": sslobj.cipher()[0],
           "alpn": sslobj.selected_alpn_protocol(), "sni": sslobj.server_hostname}
    cert = sslobj.getpeercert()
    if cert:
        out["serial"] = cert.get("serialNumber")
        for rdn in cert.get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    out["cn"] = v
    return out


def ws_kwargs(a, deflate=True):
    kw = {"ssl": context(a), "max_size": None, "open_timeout": 10, "close_timeout": 5}
    if a.servername:
        kw["server_hostname"] = a.servername
    if not deflate:
        kw["compression"] = None
    return kw


async def echo_session(ws, out, tag=""):
    await ws.send("hello over TLS ✓" + tag)
    out["text"] = await ws.recv()
    data = bytes(range(256)) * 300                          # 76800 bytes
    await ws.send(data)
    r = await ws.recv()
    out["binary_ok"] = isinstance(r, bytes) and r == data


async def cmd_echo(a):
    out = {"library": "websockets " + websockets.__version__}
    async with websockets.connect(a.uri, **ws_kwargs(a, deflate=not a.no_deflate)) as ws:
        out.update(cert_info(ws.transport.get_extra_info("ssl_object")))
        out["extensions"] = ws.response_headers.get("Sec-WebSocket-Extensions")
        out["greeting"] = await ws.recv()
        await echo_session(ws, out)
        # 1 MiB binary, half incompressible (LCG bytes), half compressible
        x, b = 12345, bytearray()
        for _ in range(1 << 19):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            b.append((x >> 16) & 0xFF)
        big = bytes(b) + bytes(range(256)) * 2048
        assert len(big) == 1 << 20
        await ws.send(big)
        r = await ws.recv()
        out["big_binary_len"] = len(r)
        out["big_binary_ok"] = isinstance(r, bytes) and r == big
        big_text = "üï" * (1 << 18)                       # 1 MiB of 2-byte UTF-8
        await ws.send(big_text)
        r = await ws.recv()
        out["big_text_len"] = len(r.encode()) if isinstance(r, str) else len(r)
        out["big_text_ok"] = r == big_text
        await ws.send("exit")
        await ws.wait_closed()
        out["close_code"] = ws.close_code
    return out


async def cmd_verify(a):
    try:
        async with websockets.connect(a.uri, **ws_kwargs(a)) as ws:
            out = {"ok": True, "greeting": await ws.recv()}
            out.update(cert_info(ws.transport.get_extra_info("ssl_object")))
            return out
    except ssl.SSLCertVerificationError as e:
        return {"ok": False, "error_type": "SSLCertVerificationError",
                "verify_code": e.verify_code, "error": e.verify_message}
    except Exception as e:  # noqa: BLE001 — reported to the spec
        return {"ok": False, "error_type": type(e).__name__, "error": str(e)}


def upgrade(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got.split(b"\r\n", 1)[0].decode("latin-1")


def cmd_handshake(a):
    ctx = context(a)
    hostname = a.servername or a.host

    def connect(session=None):
        sock = socket.create_connection((a.host, a.port), timeout=GUARD)
        return ctx.wrap_socket(sock, server_hostname=hostname, session=session)

    try:
        s = connect()
    except ssl.SSLError as e:
        return {"ok": False, "error_type": type(e).__name__, "reason": e.reason, "error": str(e)}
    out = {"ok": True}
    out.update(cert_info(s))
    if a.resume:
        # TLS 1.3 tickets come after the handshake: an upgrade request and
        # its 101 make sure they have been read (and the server logs the
        # connection's TLS parameters once it has read plaintext).
        upgrade(s)
        session = s.session
        out["ticket_lifetime"] = session.ticket_lifetime_hint if session else None
        s.close()
        s2 = connect(session)
        out["session_reused"] = s2.session_reused
        out["second_status"] = upgrade(s2)
        s2.close()
    else:
        s.close()
    return out


async def cmd_hold(a):
    out = {"phase": "open"}
    async with websockets.connect(a.uri, **ws_kwargs(a)) as ws:
        out.update(cert_info(ws.transport.get_extra_info("ssl_object")))
        out["greeting"] = await ws.recv()
        await echo_session(ws, out, " (before)")
        print(json.dumps(out), flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        out = {"phase": "after", "got_go": line.strip() == "go"}
        out.update(cert_info(ws.transport.get_extra_info("ssl_object")))
        await echo_session(ws, out, " (after)")
        await ws.send("exit")
        await ws.wait_closed()
        out["close_code"] = ws.close_code
    return out


def cmd_raw(a):
    ctx = context(a)
    sock = socket.create_connection((a.host, a.port), timeout=GUARD)
    s = ctx.wrap_socket(sock, server_hostname=a.servername or a.host)
    out = cert_info(s)
    data = a.data.encode("latin-1").decode("unicode_escape").encode("latin-1")
    t0 = time.monotonic()
    s.sendall(data)
    reply = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    except (ssl.SSLError, ConnectionResetError) as e:
        out["read_error"] = str(e)
    except socket.timeout:
        out["read_error"] = "guard timeout"
    out["elapsed"] = time.monotonic() - t0
    out["reply"] = reply.decode("latin-1")
    return out


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("echo", "verify", "hold"):
        q = sub.add_parser(name)
        q.add_argument("uri")
        q.add_argument("--ca")
        q.add_argument("--servername")
        q.add_argument("--no-deflate", action="store_true")
    q = sub.add_parser("handshake")
    q.add_argument("host")
    q.add_argument("port", type=int)
    q.add_argument("--ca")
    q.add_argument("--servername")
    q.add_argument("--min")
    q.add_argument("--max")
    q.add_argument("--alpn")
    q.add_argument("--resume", action="store_true")
    q.add_argument("--no-verify", action="store_true")
    q = sub.add_parser("raw")
    q.add_argument("host")
    q.add_argument("port", type=int)
    q.add_argument("data")
    q.add_argument("--ca")
    q.add_argument("--servername")
    a = p.parse_args()

    if a.cmd == "echo":
        out = asyncio.run(asyncio.wait_for(cmd_echo(a), GUARD))
    elif a.cmd == "verify":
        out = asyncio.run(asyncio.wait_for(cmd_verify(a), GUARD))
    elif a.cmd == "hold":
        out = asyncio.run(asyncio.wait_for(cmd_hold(a), 60))
    elif a.cmd == "handshake":
        out = cmd_handshake(a)
    else:
        out = cmd_raw(a)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
