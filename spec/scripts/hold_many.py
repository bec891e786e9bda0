#!/usr/bin/python3
# hold_many.py URL N FLAG — opens N WebSockets to URL (raising its own
# open-file limit first), prints "open N", waits until the file FLAG
# exists, closes them all (close handshake), prints "closed N", exits.
import asyncio, os, resource, sys
import websockets

async def main(url, n, flag):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
    conns = []
    for _ in range(n):
        conns.append(await websockets.connect(url, ping_interval=None, compression=None))
    print("open", len(conns), flush=True)
    while not os.path.exists(flag):
        await asyncio.sleep(0.05)
    await asyncio.gather(*(c.close() for c in conns))
    print("closed", len(conns), flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
