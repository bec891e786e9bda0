#!/usr/bin/python3
"""An independent client (the `websockets` library) for the interop spec.

Talks to a server with scripts/echo.lua semantics and prints one JSON object
with what it saw. Run with Debian's /usr/bin/python3 (python3-websockets).
    /usr/bin/python3 py_client.py ws://127.0.0.1:PORT/path
"""
import asyncio
import json
import sys

import websockets


async def main(uri):
    out = {"library": "websockets " + websockets.__version__}
    async with websockets.connect(uri, max_size=None, compression=None) as ws:
        out["greeting"] = await ws.recv()
        await ws.send("hello from python ✓")
        out["text"] = await ws.recv()
        data = bytes(range(256)) * 300          # 76800 bytes: 64-bit length
        await ws.send(data)
        reply = await ws.recv()
        out["binary_type"] = type(reply).__name__
        out["binary_ok"] = reply == data
        out["binary_len"] = len(reply)
        big = "ü" * 40000                        # 80000 bytes of 2-byte UTF-8
        await ws.send(big)
        out["big_text_ok"] = (await ws.recv()) == big
        await ws.send(["frag", "mented"])        # a fragmented message
        out["fragmented"] = await ws.recv()
        pong = await ws.ping(b"py-ping")
        await asyncio.wait_for(pong, 5)
        out["pong"] = True
        await ws.send("exit")
        try:
            extra = await asyncio.wait_for(ws.recv(), 5)
            out["unexpected"] = repr(extra)
        except websockets.ConnectionClosed:
            pass
        await ws.wait_closed()
        out["close_code"] = ws.close_code
        out["close_reason"] = ws.close_reason
    print(json.dumps(out))


asyncio.run(asyncio.wait_for(main(sys.argv[1]), 20))
