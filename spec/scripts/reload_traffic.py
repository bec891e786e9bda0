#!/usr/bin/python3
"""Steady traffic across hot reloads, for spec/reload_spec.lua.

    /usr/bin/python3 reload_traffic.py URI CLIENTS FINAL [WINDOW] [AFTER]

CLIENTS connections each send numbered text messages "1", "2", ... keeping up
to WINDOW (default 4) unanswered. The server runs reload_spec's traffic
script at some version K: it answers "vK SEQ N" (N = its count of messages on
this socket, kept in socket.data) and its on_reload sends "reload vK N".

Prints, one line each, flushed:
  ready           every client is connected
  saw K           every client got PER (20) echoes from version K (K = 1, 2, ...)
  stat NAME VALUE after the run
  problem TEXT    anything wrong (lost, duplicated or reordered replies,
                  version going back, a missing or extra on_reload, a drop)
  done            the last line
The run ends once every client got AFTER (default 50) echoes from version
FINAL; then each client stops sending, takes its last replies and closes.
A guard timeout (60 s) ends a run that hangs, with a problem line.
"""
import asyncio
import sys
import time

import websockets

URI = sys.argv[1]
CLIENTS = int(sys.argv[2])
FINAL = int(sys.argv[3])
WINDOW = int(sys.argv[4]) if len(sys.argv) > 4 else 4
AFTER = int(sys.argv[5]) if len(sys.argv) > 5 else 50
PER = 20

problems = []
saw = {}               # version -> set of client indexes with PER echoes from it
announced = 0          # highest K printed as "saw K"


def say(line):
    print(line, flush=True)


def problem(text):
    if len(problems) < 50:
        problems.append(text)


class Client:
    def __init__(self, i):
        self.i = i
        self.sent = 0
        self.echoes = 0          # echoes received, in order
        self.final_echoes = 0
        self.events = []         # (version, kind) in arrival order, kind "echo" | "reload"
        self.reloads = {}        # version -> count of "reload vK" messages
        self.by_version = {}
        self.done_sending = asyncio.Event()


def note_saw(c, version):
    global announced
    if c.by_version.get(version, 0) < PER:
        return
    s = saw.setdefault(version, set())
    s.add(c.i)
    while announced + 1 in saw and len(saw[announced + 1]) == CLIENTS:
        announced += 1
        say("saw %d" % announced)


async def run_client(c, ws):
    window = asyncio.Semaphore(WINDOW)

    async def sender():
        while not c.done_sending.is_set():
            await window.acquire()
            if c.done_sending.is_set():
                break
            c.sent += 1
            await ws.send(str(c.sent))

    async def receiver():
        last_version = 0
        while c.echoes < c.sent or not c.done_sending.is_set():
            msg = await ws.recv()
            words = msg.split()
            if len(words) == 3 and words[0] == "reload" and words[1].startswith("v"):
                v, n = int(words[1][1:]), int(words[2])
                c.reloads[v] = c.reloads.get(v, 0) + 1
                if n != c.echoes:
                    problem("client %d: reload v%d says %d messages, %d echoes came before it"
                            % (c.i, v, n, c.echoes))
                if v < last_version:
                    problem("client %d: reload v%d after an echo from v%d" % (c.i, v, last_version))
                if v > last_version and last_version and v != last_version + 1:
                    problem("client %d: version jumped from v%d to v%d" % (c.i, last_version, v))
                last_version = max(last_version, v)
                c.events.append((v, "reload"))
                continue
            if len(words) != 3 or not words[0].startswith("v"):
                problem("client %d: unexpected message %r" % (c.i, msg))
                continue
            v, seq, n = int(words[0][1:]), int(words[1]), int(words[2])
            expect = c.echoes + 1
            if seq != expect:
                problem("client %d: echo of %d where %d was due (lost, duplicated or reordered)"
                        % (c.i, seq, expect))
            if n != seq:
                problem("client %d: server counted %d messages at message %d (socket.data lost?)"
                        % (c.i, n, seq))
            if v < last_version:
                problem("client %d: echo from v%d after v%d (went back to old code)"
                        % (c.i, v, last_version))
            if v > last_version and last_version and (c.events[-1] != (v, "reload")):
                problem("client %d: first echo from v%d came without its on_reload first" % (c.i, v))
            last_version = max(last_version, v)
            c.events.append((v, "echo"))
            c.by_version[v] = c.by_version.get(v, 0) + 1
            c.echoes += 1
            window.release()
            note_saw(c, v)
            if v == FINAL:
                c.final_echoes += 1
                if c.final_echoes >= AFTER:
                    c.done_sending.set()
                    window.release()   # wake the sender so it sees the flag

    await asyncio.gather(sender(), receiver())


async def main():
    conns = await asyncio.gather(*[
        websockets.connect(URI, compression=None, max_size=None, ping_interval=None)
        for _ in range(CLIENTS)])
    clients = [Client(i) for i in range(CLIENTS)]
    say("ready")
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(
            asyncio.gather(*[run_client(c, ws) for c, ws in zip(clients, conns)]), 60)
    except asyncio.TimeoutError:
        problem("timed out; echoes per client: %s; saw up to v%d"
                % ([c.echoes for c in clients], announced))
    except websockets.ConnectionClosed as e:
        problem("a connection closed during the run: %s" % e)
    elapsed = time.monotonic() - t0
    for c in clients:
        if c.sent != c.echoes:
            problem("client %d: sent %d, got %d echoes" % (c.i, c.sent, c.echoes))
        for v in range(2, FINAL + 1):
            if c.reloads.get(v, 0) != 1:
                problem("client %d: %d on_reload messages from v%d, want 1"
                        % (c.i, c.reloads.get(v, 0), v))
        for v in c.reloads:
            if not 2 <= v <= FINAL:
                problem("client %d: on_reload from v%d" % (c.i, v))
    for ws in conns:
        await ws.close()
    say("stat clients %d" % CLIENTS)
    say("stat messages %d" % sum(c.echoes for c in clients))
    say("stat seconds %.2f" % elapsed)
    for v in range(1, FINAL + 1):
        say("stat echoes_v%d %d" % (v, sum(c.by_version.get(v, 0) for c in clients)))
    for p in problems:
        say("problem " + p)
    say("done")


try:
    asyncio.run(main())
except Exception as e:  # connect failures and the like: report, do not hang
    say("problem %s: %s" % (type(e).__name__, e))
    say("done")
