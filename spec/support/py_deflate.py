#!/usr/bin/python3
"""Independent client (Python websockets) for the deflate interop spec:
negotiates permessage-deflate and round-trips text and binary messages of
0 B to 16 MiB. Prints one JSON object."""
import asyncio, json, os, sys
import websockets

SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20]

async def main(uri):
    out = {"ok": [], "bad": []}
    async with websockets.connect(uri, max_size=None) as ws:   # offers permessage-deflate
        out["extensions"] = ws.response_headers.get("Sec-WebSocket-Extensions")
        for n in SIZES:
            text = ("luaws " * (n // 6 + 1))[:n]                 # compressible, ASCII: n bytes
            await ws.send(text)
            (out["ok"] if await ws.recv() == text else out["bad"]).append("text %d" % n)
            data = os.urandom(n // 2) + bytes(n - n // 2)       # half random, half zeros
            await ws.send(data)
            (out["ok"] if await ws.recv() == data else out["bad"]).append("binary %d" % n)
    print(json.dumps(out))

asyncio.run(main(sys.argv[1]))
