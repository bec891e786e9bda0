#!/usr/bin/env python3
"""gen_session_corpus.py — writes the seeds of fuzz_session under
fuzz/corpus/fuzz_session/ (the input layout is described at the top of
fuzz_session.c: four configuration bytes, then operations).

    python3 fuzz/gen_session_corpus.py     (also run by `make -C fuzz corpus`)
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "fuzz_session")

# c0: bit 0 client, bits 1-2 deflate mode (0 off, 1 shared, 2 dedicated),
#     bits 3-5 max_message index (0: 1 MiB, 1: 64, 2: 1000, 3: 20000,
#     4: 70000, 5: 300, 6: 100000, 7: 16), bits 6-7 deflate_min index
# c1: bit 0 server_no_context_takeover, 1 client_no_context_takeover,
#     2 server_max_window_bits, 3 client_max_window_bits, 4 without value,
#     5-7 level - 1
# c2: window bits (low nibble server, high nibble client: 8 + n % 8)
# c3: PRNG seed


def cfg(client=False, mode=0, maxmsg=0, dmin=0, snct=False, cnct=False, sbits=None, cbits=None, level=6, seed=1):
    c0 = int(client) | mode << 1 | maxmsg << 3 | dmin << 6
    c1 = int(snct) | int(cnct) << 1 | (4 if sbits else 0) | (8 if cbits else 0) | (level - 1) << 5
    c2 = ((sbits or 8) - 8) | ((cbits or 8) - 8) << 4
    return bytes([c0, c1, c2, seed])


# operations (see run_op)
def msg(text=True, payload=b"", compress=False, nfrag=1, density=0, cuts=(), ctl=()):
    """A peer message of len(payload) input bytes (text: one character per byte)."""
    f = int(text) | int(compress) << 1 | (nfrag - 1) << 2 | density << 5
    out = bytes([0, f, len(payload)]) + payload
    if compress:
        out += b"\x00"                     # sync flush, not a final block
    out += bytes(cuts[:nfrag - 1]).ljust(nfrag - 1, b"\x80")
    # one (byte & 3 < density) and one control byte per fragment boundary
    for c in ctl:
        out += c
    return out


def ping(p=b""):
    return bytes([2, len(p)]) + p


def pong(p=b""):
    return bytes([3, len(p)]) + p


def close(b=0x10):                         # code index | (chars / 3) << 4
    return bytes([4, b]) + (b"hi!" * 5)[:(b >> 4) * 3]


def bad(kind, *args):                      # enum inject, then what that op reads
    return bytes([5, kind - 1]) + b"".join(a if isinstance(a, bytes) else bytes([a]) for a in args)


def feed(*sizes, direct=False):
    return bytes([7, (len(sizes) - 1) | (8 if direct else 0)]) + bytes(sizes)


FEED_ALL = b"\x0f"


def send(op=0, payload=b"", done=False, publish=False):   # op: 0 text, 1 binary, 2 ping, 3 pong
    return bytes([9, op | (4 if done else 0) | (0x20 if publish else 0), len(payload)]) + payload


def our_close(b=0x20):
    return bytes([10, b]) + (b"bye" * 5)[:(b >> 4) * 3]


def pause(on):
    return bytes([11, int(on)])


def action(act, ping_bits=0):              # 1 send, 2 close, 3 pause, 4 abort
    return bytes([12, act, ping_bits])


def break_write(n):
    return bytes([13, n])


SEEDS = {
    "echo_server": cfg() + msg(payload=b"Hello") + feed(255) + send(0, b"Hello") + FEED_ALL,
    "echo_client": cfg(client=True) + msg(payload=b"Hello") + ping(b"p") + FEED_ALL,
    "fragmented_ping": cfg() + msg(payload=b"\xc1\xc2\xc3abcdef", nfrag=3, density=3, cuts=(60, 120),
                               ctl=(b"\x00\x00\x02pp", b"\x00\x01\x00")) + feed(1, 2, 3, 5, 8, 13, 21, 34),
    "shared_deflate": cfg(mode=1) + msg(payload=b"compress me " * 4, compress=True) + send(0, b"a" * 40)
                      + FEED_ALL,
    "dedicated_takeover": cfg(mode=2, sbits=10, cbits=12) + msg(payload=b"abcabcabc", compress=True)
                          + msg(payload=b"abcabcabc", compress=True) + send(1, b"xyz" * 30) + send(1, b"xyz" * 30)
                          + FEED_ALL,
    "client_deflate": cfg(client=True, mode=2, cnct=True) + msg(payload=b"zzzzzzzz", compress=True, nfrag=2)
                      + send(0, b"q" * 50) + FEED_ALL,
    "close_first": cfg() + our_close() + msg(payload=b"late") + ping(b"ignored") + close() + FEED_ALL,
    "peer_close": cfg(client=True) + ping(b"x") + close(0x31) + feed(3, 255),
    "bad_utf8": cfg() + bad(1, 0, 5, b"Hello", 0, 128) + feed(1) + FEED_ALL,
    "too_big": cfg(maxmsg=1) + bad(4, 3) + FEED_ALL,
    "reserved_opcode": cfg() + msg(payload=b"ok") + bad(5, 0, 2, b"ok", 0, 3, 1) + FEED_ALL,
    "pause_resume": cfg() + action(3) + msg(payload=b"one") + msg(payload=b"two") + feed(255) + pause(False)
                    + FEED_ALL,
    "actions": cfg() + action(1, 0x55) + ping(b"a") + ping(b"b") + action(2) + msg(payload=b"m") + FEED_ALL,
    "break_write": cfg() + break_write(1) + ping(b"a") + ping(b"b") + FEED_ALL,
    "garbage": cfg() + msg(payload=b"before") + b"\x06\x0b\x81\x85\x00\x00\x00\x00Hello" + FEED_ALL,
    # one 32 KiB binary frame (f >> 5 == 7: a large message), read straight into the message buffer
    "publish_shared": cfg(mode=1) + send(0, b"to every subscriber " * 3, publish=True) + send(0, b"own " * 10)
                      + send(1, b"x", publish=True) + msg(payload=b"ok") + FEED_ALL,
    "publish_dedicated_nct": cfg(mode=2, snct=True) + send(0, b"abc" * 20, publish=True)
                             + send(0, b"abc" * 20) + FEED_ALL,
    # a large publish to a session whose window is 9 bits: not shareable compressed
    "publish_small_window": cfg(mode=1, sbits=9) + bytes([9, 0x30]) + FEED_ALL,
    "big_direct": cfg(maxmsg=4) + bytes([0, 0xe0, 0x40, 0x00]) + feed(99, 199, 230, 230, direct=True) + FEED_ALL,
    "big_text_fragments": cfg(maxmsg=4) + bytes([0, 0xe1 | 2 << 2, 0x40, 0x00, 0x80, 0x40, 3, 3])
                          + feed(99, 199, 230, 230, direct=True) + FEED_ALL,
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
