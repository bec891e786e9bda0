#!/usr/bin/python3
"""topics_clients.py -- many subscribers for spec/topics_spec.lua (asyncio + websockets).

    topics_clients.py --url ws://127.0.0.1:P/sub/room [--url ...] -n 1000
                      --expect t:HEX --expect b:HEX ... [--order exact|source]
                      [--workers W] [--end end] [--timeout 60]

Opens N connections spread round-robin over the URLs (every other one without
permessage-deflate), reads each one's greeting "hello id=ID ...", and prints
one JSON line per stage on stdout:

  {"stage": "ready", "n": N, "groups": {"0/w1": n, "0/w2": n, "1/w1": ...}}
      every connection is open and greeted (group: URL index / worker, the
      worker being (id - 1) % W + 1 as the server numbers its sockets)
  {"stage": "all"}
      every connection has received as many messages as --expect lists
  {"stage": "result", "ok": n, "bad": n, "distinct": n, "bad_samples": [...]}
      after the spec published the --end text: a connection is ok when what it
      received before the end marker is exactly the expected messages, each
      once: in the given order (--order exact), or in any order that keeps the
      order of messages from one source (--order source; the source of
      "A-3" is "A"). "distinct" counts the different sequences seen.

A stage that does not complete within --timeout prints
{"stage": "timeout", "waiting_for": ..., ...} and the script exits 1.
"""
import argparse
import asyncio
import json
import resource
import sys

import websockets


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def parse_expect(s):
    kind, _, hexdata = s.partition(":")
    data = bytes.fromhex(hexdata)
    if kind == "t":
        return ("t", data.decode("utf-8"))
    if kind == "b":
        return ("b", data)
    raise SystemExit("bad --expect " + s)


def show(m):
    kind, data = m
    if kind == "t":
        return "t:" + (data if len(data) <= 40 else data[:40] + "...(%d)" % len(data))
    return "b:" + data[:20].hex() + ("...(%d)" % len(data) if len(data) > 20 else "")


def source_of(m):
    kind, data = m
    text = data if kind == "t" else data.decode("latin-1")
    return kind + ":" + (text.rsplit("-", 1)[0] if "-" in text else text)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", action="append", required=True)
    ap.add_argument("-n", type=int, required=True)
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--order", choices=["exact", "source"], default="exact")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--end", default="end")
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, args.n + 256)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    expected = [parse_expect(e) for e in args.expect]
    end = ("t", args.end)
    conns = [None] * args.n
    ids = [None] * args.n
    got = [[] for _ in range(args.n)]
    extra = [[] for _ in range(args.n)]
    all_in = asyncio.Event()
    remaining = [args.n]
    sem = asyncio.Semaphore(100)

    async def open_one(i):
        url = args.url[i % len(args.url)]
        async with sem:
            c = await websockets.connect(url, max_size=None, ping_interval=None,
                                         compression=None if i % 2 else "deflate",
                                         open_timeout=args.timeout)
            greeting = await c.recv()
        if not isinstance(greeting, str) or not greeting.startswith("hello id="):
            raise RuntimeError("bad greeting %r" % (greeting,))
        ids[i] = int(greeting.split()[1][3:])
        conns[i] = c

    async def deadline(coro, what):
        try:
            return await asyncio.wait_for(coro, args.timeout)
        except asyncio.TimeoutError:
            done = sum(1 for g in got if len(g) >= len(expected))
            emit({"stage": "timeout", "waiting_for": what, "complete": done,
                  "counts": sorted(set(len(g) for g in got)),
                  "samples": [[show(m) for m in g] for g in got[:3]]})
            raise SystemExit(1)

    await deadline(asyncio.gather(*(open_one(i) for i in range(args.n))), "connections")
    groups = {}
    for i, id_ in enumerate(ids):
        k = "%d/w%d" % (i % len(args.url), (id_ - 1) % args.workers + 1)
        groups[k] = groups.get(k, 0) + 1
    emit({"stage": "ready", "n": args.n, "groups": groups})

    async def reader(i):
        c = conns[i]
        while True:
            msg = await c.recv()
            m = ("t", msg) if isinstance(msg, str) else ("b", bytes(msg))
            if m == end:
                return
            if len(got[i]) < len(expected):
                got[i].append(m)
                if len(got[i]) == len(expected):
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        all_in.set()
            else:
                extra[i].append(m)

    if not expected:
        all_in.set()
    readers = asyncio.gather(*(reader(i) for i in range(args.n)))
    await deadline(all_in.wait(), "all expected messages")
    emit({"stage": "all"})
    await deadline(readers, "the end marker")

    exp_sources = {}
    for m in expected:
        exp_sources.setdefault(source_of(m), []).append(m)
    ok, bad, seqs = 0, [], set()
    for i in range(args.n):
        seq = got[i] + extra[i]
        seqs.add(tuple(seq))
        if args.order == "exact":
            good = seq == expected
        else:
            per = {}
            for m in seq:
                per.setdefault(source_of(m), []).append(m)
            good = len(seq) == len(expected) and per == exp_sources
        if good:
            ok += 1
        else:
            bad.append({"conn": i, "id": ids[i], "got": [show(m) for m in seq]})
    emit({"stage": "result", "ok": ok, "bad": len(bad), "distinct": len(seqs),
          "bad_samples": bad[:5]})
    await asyncio.gather(*(c.close() for c in conns))


asyncio.run(main())
