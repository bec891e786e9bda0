#!/usr/bin/python3
"""bench/soak/soak.py — the load half of bench/soak/run (see there).

Thousands of asyncio clients (python3-websockets) connect to a running luaws,
chat (every echo is checked byte for byte) and drop in assorted ways, for a
bounded time split into rounds. Between rounds every client is gone and the
server should go back to idle: its open-fd count must come back to the
baseline, and its RSS must not keep climbing from round to round. The
server's RSS (VmRSS, and VmHWM for the peak) and fd count are read from
/proc/PID.

Exit status: 0 when every check passed, 1 otherwise, 2 on bad usage.
"""
import argparse
import asyncio
import collections
import os
import random
import sys
import time

import websockets
import websockets.exceptions


def proc_rss_kb(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Stats:
    def __init__(self):
        self.sessions = 0
        self.modes = collections.Counter()
        self.connect_failed = 0
        self.checked = 0
        self.failed = 0
        self.bytes = 0
        self.reasons = collections.Counter()
        self.examples = {}
        self.deflate = 0

    def fail(self, reason, example=None, count_message=True):
        if count_message:
            self.failed += 1
        self.reasons[reason] += 1
        if example is not None and reason not in self.examples:
            self.examples[reason] = example


# Payload pools: slices of these are the messages (cheap to make, varied).
TEXT_ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?-_"
                 "éàüßçøλπЖж中文字€𝄞😀")


def make_pools(rng, n=400_000):
    text = "".join(rng.choice(TEXT_ALPHABET) for _ in range(n))
    data = rng.randbytes(n)
    return text, data


def pick_size(rng, max_size):
    r = rng.random()
    if r < 0.75:
        n = rng.randint(0, 200)
    elif r < 0.98:
        n = rng.randint(200, 16 * 1024)
    else:
        n = rng.randint(16 * 1024, max_size)
    return min(n, max_size)


class Soak:
    def __init__(self, args):
        self.args = args
        self.uri = f"ws://{args.host}:{args.port}/soak"
        self.stats = Stats()
        self.rng = random.Random(args.seed)
        self.text_pool, self.data_pool = make_pools(self.rng)
        self.peak_fds = 0
        self.samples = 0
        self.attacks = collections.Counter()

    def payload(self, rng):
        n = pick_size(rng, self.args.max_size)
        if rng.random() < 0.5:
            off = rng.randint(0, len(self.text_pool) - n)
            return self.text_pool[off:off + n]
        off = rng.randint(0, len(self.data_pool) - n)
        return self.data_pool[off:off + n]

    async def recv_checked(self, ws, expected):
        st = self.stats
        try:
            reply = await asyncio.wait_for(ws.recv(), self.args.reply_timeout)
        except asyncio.TimeoutError:
            st.fail("reply timeout", f"{len(expected)} bytes")
            return False
        except websockets.exceptions.ConnectionClosed as e:
            st.fail("connection closed while waiting for an echo", repr(e))
            return False
        if reply == expected:
            st.checked += 1
            st.bytes += len(expected)
            return True
        kind = "text" if isinstance(expected, str) else "binary"
        st.fail("echo mismatch",
                f"{kind} {len(expected)} bytes, got {type(reply).__name__} {len(reply)} bytes")
        return False

    async def session(self, rng, deadline):
        st = self.stats
        st.sessions += 1
        compression = "deflate" if rng.random() < self.args.deflate_share else None
        try:
            ws = await asyncio.wait_for(
                websockets.connect(self.uri, compression=compression, max_size=None,
                                   ping_interval=None, close_timeout=10, open_timeout=20),
                30)
        except Exception as e:  # noqa: BLE001 — any failure to connect counts
            st.connect_failed += 1
            st.fail("connect: " + type(e).__name__, repr(e), count_message=False)
            await asyncio.sleep(0.1)
            return
        if compression and ws.extensions:
            st.deflate += 1
        r = rng.random()
        mode = ("close" if r < 0.55 else "abort" if r < 0.75 else "abort mid-frame" if r < 0.85
                else "abort in flight" if r < 0.95 else "close in flight")
        st.modes[mode] += 1
        try:
            greeting = await asyncio.wait_for(ws.recv(), self.args.reply_timeout)
            if not (isinstance(greeting, str) and greeting.startswith("hello ")):
                st.fail("bad greeting", repr(greeting)[:80])
            n = rng.randint(1, self.args.max_messages)
            i = 0
            while i < n and time.monotonic() < deadline:
                if rng.random() < 0.2:          # pipeline a few
                    batch = [self.payload(rng) for _ in range(rng.randint(2, 8))]
                    for p in batch:
                        await ws.send(p)
                    for p in batch:
                        if not await self.recv_checked(ws, p):
                            raise _Broken()
                    i += len(batch)
                else:
                    p = self.payload(rng)
                    await ws.send(p)
                    if not await self.recv_checked(ws, p):
                        raise _Broken()
                    i += 1
                await asyncio.sleep(rng.uniform(0, self.args.think))
            if mode == "close":
                await ws.close()
            elif mode == "abort":
                ws.transport.abort()
            elif mode == "abort mid-frame":
                # a masked binary frame announcing 1000 bytes, 10 of them sent
                ws.transport.write(b"\x82\xfe\x03\xe8" + b"\x01\x02\x03\x04" + b"x" * 10)
                ws.transport.abort()
            elif mode == "abort in flight":
                await ws.send(self.payload(rng))
                ws.transport.abort()
            else:  # close in flight: the close goes out behind a message
                await ws.send(self.payload(rng))
                await ws.close()
        except _Broken:
            ws.transport.abort()
        except websockets.exceptions.ConnectionClosed as e:
            st.fail("connection closed unexpectedly", repr(e), count_message=False)
            ws.transport.abort()
        except Exception as e:  # noqa: BLE001
            st.fail("client error: " + type(e).__name__, repr(e), count_message=False)
            ws.transport.abort()

    # ---- attacks mixed into the traffic (the hardening issue's) ----

    async def attack(self, rng):
        """One attack on a connection of its own; returns its name."""
        a = self.args
        kind = rng.choice(["pipeline", "pings", "long-header", "empty-headers", "half-message", "slowloris"])
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(a.host, a.port), 5)
        except Exception:  # noqa: BLE001
            return kind + " (no connection)"
        sock = w.get_extra_info("socket")
        try:
            sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
        except OSError:
            pass
        upgrade = (b"GET / HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        try:
            if kind == "pipeline":        # answers piling up for a client that does not read
                w.write(b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n" * 3000)
            elif kind == "pings":         # pongs piling up for a client that does not read
                w.write(upgrade)
                w.write(b"\x89\x80\x00\x00\x00\x00" * 20000)
            elif kind == "long-header":   # --max-header counts whitespace
                w.write(b"GET / HTTP/1.1\r\nHost: soak\r\nX:" + b" " * 70000 + b"\r\n\r\n")
            elif kind == "empty-headers":
                w.write(b"GET / HTTP/1.1\r\nHost: soak\r\n" + b"a:\r\n" * 5000 + b"\r\n")
            elif kind == "half-message":  # a big fragment that never ends
                w.write(upgrade)
                w.write(b"\x02\xff" + (4 << 20).to_bytes(8, "big") + b"\x00\x00\x00\x00" + b"h" * (1 << 20))
            else:                         # slowloris: a request that never completes
                w.write(b"GET / HTTP/1.1\r\nHost: soak\r\nX-a: 1\r\n")
            await asyncio.wait_for(w.drain(), 5)
            await asyncio.sleep(rng.uniform(0.2, 1.5))
        except Exception:  # noqa: BLE001
            pass
        finally:
            w.transport.abort()
        return kind

    async def attacker(self, seed, deadline):
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            kind = await self.attack(rng)
            self.attacks[kind] += 1

    async def slot(self, seed, deadline):
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            await self.session(rng, deadline)

    async def sampler(self, stop):
        while not stop.is_set():
            fds = proc_fds(self.args.pid)
            if fds is not None:
                self.peak_fds = max(self.peak_fds, fds)
            self.samples += 1
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except asyncio.TimeoutError:
                pass

    async def wait_idle(self, baseline_fds, timeout):
        """Polls until the server's fd count is back to baseline_fds."""
        deadline = time.monotonic() + timeout
        fds = proc_fds(self.args.pid)
        while fds is not None and fds > baseline_fds and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            fds = proc_fds(self.args.pid)
        return fds

    async def http_probe(self):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(self.args.host, self.args.port), 5)
            w.write(b"GET /probe HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            data = await asyncio.wait_for(r.read(), 5)
            w.close()
            return data.startswith(b"HTTP/1.1 200")
        except Exception:  # noqa: BLE001
            return False

    async def run(self):
        a = self.args
        pid = a.pid
        start_rss, start_fds = proc_rss_kb(pid), proc_fds(pid)
        if start_rss is None:
            print(f"soak: no process {pid}", file=sys.stderr)
            return 2
        print(f"soak: server pid {pid}, {self.uri}, {a.duration:g} s in {a.rounds} rounds, "
              f"{a.clients} concurrent clients, seed {a.seed}", flush=True)
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.sampler(stop))
        idle = []          # (rss, fds) after each round
        t_start = time.monotonic()
        per_round = a.duration / a.rounds
        ok = True
        for rnd in range(1, a.rounds + 1):
            deadline = time.monotonic() + per_round
            before = (self.stats.checked, self.stats.sessions)
            slots = [asyncio.create_task(self.slot(self.rng.random(), deadline)) for _ in range(a.clients)]
            slots += [asyncio.create_task(self.attacker(self.rng.random(), deadline)) for _ in range(a.attackers)]
            await asyncio.gather(*slots)
            fds = await self.wait_idle(start_fds, a.settle)
            await asyncio.sleep(0.5)    # let the allocator settle before reading RSS
            rss = proc_rss_kb(pid)
            fds = proc_fds(pid)
            idle.append((rss, fds))
            print(f"  round {rnd}: {self.stats.sessions - before[1]} sessions, "
                  f"{self.stats.checked - before[0]} echoes checked; idle after: rss {rss} kB, fds {fds}",
                  flush=True)
        elapsed = time.monotonic() - t_start
        stop.set()
        await sampler
        alive = await self.http_probe()
        peak_rss = proc_rss_kb(pid, "VmHWM")
        st = self.stats

        print()
        print(f"sessions: {st.sessions} in {elapsed:.0f} s ({st.sessions / elapsed:.0f}/s), "
              f"{st.deflate} with permessage-deflate; connect failures: {st.connect_failed}")
        print("  endings: " + ", ".join(f"{k} {v}" for k, v in sorted(st.modes.items())))
        if self.attacks:
            print("attacks: " + ", ".join(f"{k} {v}" for k, v in sorted(self.attacks.items())))
        print(f"messages: checked {st.checked} ({st.bytes / 1e6:.1f} MB, {st.checked / elapsed:.0f}/s), "
              f"failed {st.failed}")
        for reason, n in st.reasons.most_common(8):
            print(f"  {n} x {reason}: {st.examples.get(reason, '')}"[:200])
        print()
        print(f"{'server':10} {'start':>10} {'peak':>10} " + " ".join(f"{'after r' + str(i + 1):>10}" for i in range(len(idle))))
        print(f"{'rss kB':10} {start_rss:>10} {peak_rss:>10} " + " ".join(f"{r:>10}" for r, _ in idle))
        print(f"{'fds':10} {start_fds:>10} {self.peak_fds:>10} " + " ".join(f"{f:>10}" for _, f in idle))
        print()

        checks = []
        final_rss = idle[-1][0]
        checks.append(("server answers plain HTTP after the soak", alive))
        checks.append((f"fds back to baseline after every round ({start_fds})",
                       all(f == start_fds for _, f in idle)))
        # RSS: the first round warms the allocator, the Lua state and the
        # task pool up; after that an idle server must not keep growing.
        if a.no_rss_check:
            print("  (rss not judged: " + a.no_rss_check + ")")
        elif len(idle) > 1:
            ref = idle[0][0]
            growth = final_rss - ref
            limit = max(a.rss_slack_kb, ref * a.rss_slack_pct / 100)
            checks.append((f"rss after the last round within {limit:.0f} kB of after round 1 ({growth:+d} kB)",
                           growth <= limit))
        else:
            print("  (rss growth is judged from round 2 on: use --rounds 2 or more)")
        checks.append(("no echo failed", st.failed == 0))
        checks.append(("no connect failed", st.connect_failed == 0))
        checks.append((f"peak fds show the load ({self.peak_fds} > {start_fds + a.clients // 2})",
                       self.peak_fds > start_fds + a.clients // 2))
        checks.append(("no unexpected disconnects or client errors",
                       sum(n for r, n in st.reasons.items()
                           if r.startswith(("connection closed unexpectedly", "client error"))) == 0))
        for what, good in checks:
            print(f"  {'ok  ' if good else 'FAIL'} {what}")
            ok = ok and good
        print(f"soak: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1


class _Broken(Exception):
    """An echo failed: the session is dropped (already counted)."""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pid", type=int, required=True, help="the luaws process (its /proc is read)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=120, help="seconds of load in all (default 120)")
    p.add_argument("--rounds", type=int, default=4, help="load rounds, idle checks between (default 4)")
    p.add_argument("--clients", type=int, default=2000, help="concurrent client loops (default 2000)")
    p.add_argument("--max-messages", type=int, default=20, help="messages per session, at most")
    p.add_argument("--max-size", type=int, default=256 * 1024, help="largest message (default 256 KiB)")
    p.add_argument("--think", type=float, default=0.05, help="max pause between messages (s)")
    p.add_argument("--deflate-share", type=float, default=0.3, help="share of sessions offering deflate")
    p.add_argument("--reply-timeout", type=float, default=60)
    p.add_argument("--settle", type=float, default=30, help="max wait for fds to return after a round")
    p.add_argument("--rss-slack-kb", type=int, default=8192)
    p.add_argument("--rss-slack-pct", type=float, default=10)
    p.add_argument("--no-rss-check", metavar="WHY", default="",
                   help="report RSS but do not judge it (e.g. under ASan, whose quarantine keeps freed memory)")
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--attackers", type=int, default=8,
                   help="concurrent attack loops mixed into the traffic: pipelined requests and pings from "
                        "clients that do not read, long and empty headers, a message that never ends, "
                        "slowloris (default 8; 0: none)")
    args = p.parse_args()
    if args.rounds < 1 or args.clients < 1 or args.duration <= 0:
        p.error("rounds, clients and duration must be positive")
    try:
        return asyncio.run(Soak(args).run())
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
