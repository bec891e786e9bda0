#!/usr/bin/python3
"""python_echo.py — an independent echo server on Python `websockets`, to
check the conformance suite itself. Echoes every message in kind, no
greeting. Prints the same startup line as luaws, so spec/support/server.lua
can drive it.

  /usr/bin/python3 python_echo.py [--deflate=off|shared|dedicated|default]
    off        no permessage-deflate
    shared     server_no_context_takeover + client_no_context_takeover always
    dedicated  ServerPerMessageDeflateFactory() (context takeover honoured)
    default    websockets' own default (compression="deflate": window bits 12)
"""
import asyncio
import signal
import sys

import websockets
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

mode = "dedicated"
for a in sys.argv[1:]:
    if a.startswith("--deflate="):
        mode = a.split("=", 1)[1]

if mode == "off":
    kwargs = {"compression": None}
elif mode == "shared":
    kwargs = {"extensions": [ServerPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True)], "compression": None}
elif mode == "dedicated":
    kwargs = {"extensions": [ServerPerMessageDeflateFactory()], "compression": None}
else:
    kwargs = {"compression": "deflate"}


async def echo(ws, path=None):
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with websockets.serve(echo, "127.0.0.1", 0, max_size=16 * 1024 * 1024,
                                ping_interval=None, max_queue=None, **kwargs) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}, script python-websockets-echo (deflate {mode})",
              file=sys.stderr, flush=True)
        await stop


asyncio.run(main())
