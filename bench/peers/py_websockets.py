#!/usr/bin/python3
"""Echo server on Debian's python3-websockets (10.4), asyncio.

usage: /usr/bin/python3 py_websockets.py [PORT]   (or PORT=...; DEFLATE=1 enables
permessage-deflate)
"""
import asyncio
import os
import sys

import websockets


async def echo(ws, _path=None):
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def main(port):
    async with websockets.serve(
        echo,
        "127.0.0.1",
        port,
        max_size=64 * 1024 * 1024,
        compression="deflate" if os.environ.get("DEFLATE") == "1" else None,
        ping_interval=None,
        backlog=4096,
    ):
        print(f"py_websockets: listening on 127.0.0.1:{port}", file=sys.stderr)
        await asyncio.Future()


if __name__ == "__main__":
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "9004"))
    try:
        asyncio.run(main(port))
    except KeyboardInterrupt:
        pass
