/* fuzz_inflate.c — libFuzzer target for permessage-deflate (src/deflate.c).
 *
 * Input: byte 0 picks the inflate limit (low 3 bits) and the chunking (the
 * rest), byte 1 the round trip's level, window bits and mode; the rest is
 * used three ways:
 *
 *  1. as a Sec-WebSocket-Extensions value (up to the first NUL) for
 *     pmd_negotiate in every mode: off declines; an accepted offer gives
 *     parameters in range, a response that fits its buffer (also a tiny one,
 *     heap-allocated to its exact size) and that, offered back, is accepted
 *     with the same parameters and the same response;
 *  2. as a compressed message for pmd_inflate with a small limit: the result
 *     is 0, 1007 or 1009; out->len stays within the limit (on 1009 it may hold
 *     the single probe byte past it, see below); whole-buffer and chunked
 *     delivery (frames with final=false, then a NULL final call, as ws.c does)
 *     agree; and a reference inflate with plain zlib agrees on the bytes;
 *  3. as a message for a round trip: pmd_compress then pmd_inflate gives the
 *     bytes back, with the window bits and level chosen, in shared mode and in
 *     dedicated mode with context takeover across three messages; a limit one
 *     byte short gives 1009.
 *
 * The deflate.h comment promises out "never grow[s] past limit"; pmd_inflate
 * actually lets it reach limit + 1 when it returns 1009 (it inflates one byte
 * more to tell a bomb from an exact fit). ws.c discards the message then, so
 * this checks limit + 1 on 1009 and the exact limit on success.
 *
 * Bug found (reproducer in regressions/fuzz_inflate/, fixed in 0838cf9):
 * empty-message-after-context-takeover — with context takeover, an empty
 * message right after another one compressed to 0 bytes, and the receiver's
 * 00 00 ff ff then opened a stored block that swallowed the next messages. */
#include "deflate.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); abort(); } } while (0)

static const size_t limits[8] = {0, 1, 100, 1000, 4096, 16384, 65536, 1u << 20};

/* ---- 1. negotiation ---- */

static void check_params(const pmd_params *p, enum deflate_mode mode)
{
    CHECK(p->server_max_window_bits >= 9 && p->server_max_window_bits <= 15);
    CHECK(p->client_max_window_bits >= 8 && p->client_max_window_bits <= 15);
    if (mode == DEFLATE_SHARED) CHECK(p->server_no_context_takeover && p->client_no_context_takeover);
}

static void fuzz_negotiate(const uint8_t *data, size_t size, uint8_t tiny)
{
    size_t n = strnlen((const char *)data, size);
    char *offers = malloc(n + 1);
    memcpy(offers, data, n);
    offers[n] = '\0';

    static const enum deflate_mode modes[3] = {DEFLATE_OFF, DEFLATE_SHARED, DEFLATE_DEDICATED};
    for (int m = 0; m < 3; m++) {
        pmd_params p, p2;
        memset(&p, 0xEE, sizeof p);
        char *resp = malloc(256);
        bool ok = pmd_negotiate(offers, modes[m], &p, resp, 256);
        size_t small = tiny % 48 + 1;
        char *resp_small = malloc(small);
        pmd_params ps;
        bool ok_small = pmd_negotiate(offers, modes[m], &ps, resp_small, small);
        if (modes[m] == DEFLATE_OFF) {
            CHECK(!ok && !ok_small);
        } else if (ok) {
            size_t rl = strnlen(resp, 256);
            CHECK(rl < 256);
            CHECK(strncmp(resp, "permessage-deflate", 18) == 0);
            check_params(&p, modes[m]);
            /* A client that offers exactly our answer is answered the same. */
            char *resp2 = malloc(256);
            CHECK(pmd_negotiate(resp, DEFLATE_DEDICATED, &p2, resp2, 256));
            CHECK(memcmp(&p, &p2, sizeof p) == 0);
            CHECK(strcmp(resp, resp2) == 0);
            free(resp2);
            if (ok_small) {
                CHECK(strnlen(resp_small, small) < small);
                CHECK(strcmp(resp_small, resp) == 0);
                CHECK(memcmp(&p, &ps, sizeof p) == 0);
            }
        } else {
            CHECK(!ok_small);
        }
        free(resp);
        free(resp_small);
    }
    pmd_negotiate(NULL, DEFLATE_SHARED, NULL, NULL, 0);   /* no header: declines */
    free(offers);
}

/* ---- 2. inflating arbitrary data ---- */

/* Reference: raw inflate of data + 00 00 ff ff, starting afresh after the
 * end of a stream like pmd_inflate, into at most cap bytes. Returns 0, 1007
 * for corrupt data, 1009 when more than cap bytes come out. */
static int ref_inflate(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    size_t tot = len + 4;
    uint8_t *all = malloc(tot);
    memcpy(all, in, len);
    memcpy(all + len, tail, 4);
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(inflateInit2(&z, -15) == Z_OK);
    z.next_in = all;
    z.avail_in = (uInt)tot;
    z.next_out = out;
    z.avail_out = (uInt)cap + 1;
    int code = 0;
    while (z.avail_in) {
        int r = inflate(&z, Z_SYNC_FLUSH);
        if ((size_t)(z.next_out - out) > cap) { code = 1009; break; }
        if (r == Z_STREAM_END) { inflateReset(&z); continue; }
        if (r != Z_OK) { code = 1007; break; }
    }
    *out_len = (size_t)(z.next_out - out);
    inflateEnd(&z);
    free(all);
    return code;
}

/* Wraps on purpose: exempt from -fsanitize=integer builds. */
__attribute__((no_sanitize("integer")))
static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

__attribute__((no_sanitize("integer")))
static uint32_t seed_state(uint32_t seed, uint32_t salt)
{
    return seed * 2654435761u + salt;
}

static void check_limit(int code, const bytes *out, size_t limit)
{
    CHECK(code == 0 || code == 1007 || code == 1009);
    if (code == 0) CHECK(out->len <= limit);
    if (code == 1009) CHECK(out->len == limit + 1);
    if (code == 1007) CHECK(out->len <= limit);
    CHECK(out->len <= out->cap);
}

static void fuzz_inflate_data(const uint8_t *data, size_t size, uint8_t sel)
{
    size_t limit = limits[sel & 7];
    pmd_worker w;
    pmd_worker_init(&w, DEFLATE_SHARED, 6, 0);
    pmd_conn pc;
    memset(&pc, 0, sizeof pc);
    pc.params.client_no_context_takeover = true;
    pc.params.server_no_context_takeover = true;
    pc.params.client_max_window_bits = pc.params.server_max_window_bits = 15;

    /* Whole message in one call. */
    bytes whole = {0};
    int c1 = pmd_inflate(&w, &pc, data, size, true, &whole, limit);
    check_limit(c1, &whole, limit);
    pmd_message_done(&w, &pc);

    /* Frames of pseudo-random sizes, then the final call with no data; the
     * input of each call is a heap copy of exactly its size. */
    bytes chunked = {0};
    int c2 = 0;
    uint32_t st = seed_state(sel, 1);
    size_t max = (sel >> 3) % 4 == 0 ? size + 1 : ((size_t)1 << (2 * ((sel >> 3) % 4) + 1));
    for (size_t i = 0; i < size && !c2;) {
        size_t c = 1 + xorshift(&st) % max;
        if (c > size - i) c = size - i;
        uint8_t *piece = malloc(c);
        memcpy(piece, data + i, c);
        c2 = pmd_inflate(&w, &pc, piece, c, false, &chunked, limit);
        free(piece);
        i += c;
    }
    if (!c2) c2 = pmd_inflate(&w, &pc, NULL, 0, true, &chunked, limit);
    check_limit(c2, &chunked, limit);
    pmd_message_done(&w, &pc);

    CHECK(c1 == c2);
    if (c1 == 0) CHECK(whole.len == chunked.len && (!whole.len || memcmp(whole.data, chunked.data, whole.len) == 0));

    /* Plain zlib agrees. */
    uint8_t *ref = malloc(limit + 1);
    size_t ref_len;
    int c3 = ref_inflate(data, size, ref, limit, &ref_len);
    CHECK(c3 == c1);
    if (c1 == 0) CHECK(ref_len == whole.len && (!ref_len || memcmp(ref, whole.data, ref_len) == 0));
    free(ref);

    free(whole.data);
    free(chunked.data);
    pmd_conn_free(&w, &pc);
    pmd_worker_free(&w);
}

/* ---- 3. round trip ---- */

static void round_trip_one(pmd_worker *ws, pmd_conn *sc, pmd_worker *wr, pmd_conn *rc,
                           const uint8_t *msg, size_t len, bool split)
{
    CHECK(pmd_compress(ws, sc, msg, len));
    size_t clen = ws->out.len;
    uint8_t *comp = malloc(clen + 1);
    memcpy(comp, ws->out.data, clen);

    bytes out = {0};
    int code;
    if (split && clen > 1) {
        code = pmd_inflate(wr, rc, comp, clen / 2, false, &out, len);
        if (!code) code = pmd_inflate(wr, rc, comp + clen / 2, clen - clen / 2, false, &out, len);
        if (!code) code = pmd_inflate(wr, rc, NULL, 0, true, &out, len);
    } else {
        code = pmd_inflate(wr, rc, comp, clen, true, &out, len);
    }
    CHECK(code == 0);
    CHECK(out.len == len && (len == 0 || memcmp(out.data, msg, len) == 0));
    pmd_message_done(wr, rc);
    free(out.data);
    free(comp);
}

static void fuzz_round_trip(const uint8_t *data, size_t size, uint8_t opt)
{
    int level = (opt & 0x0F) % 10;
    int bits = 9 + ((opt >> 4) & 7) % 7;
    bool dedicated = opt & 0x80;
    bool takeover = dedicated && (opt & 0x10);

    pmd_worker ws, wr;
    pmd_worker_init(&ws, dedicated ? DEFLATE_DEDICATED : DEFLATE_SHARED, level, 0);
    pmd_worker_init(&wr, dedicated ? DEFLATE_DEDICATED : DEFLATE_SHARED, level, 0);
    pmd_conn sc, rc;
    memset(&sc, 0, sizeof sc);
    memset(&rc, 0, sizeof rc);
    /* The sender is the server here; the receiver reads the server's frames
     * with the same parameters seen from the other side. */
    sc.params.server_no_context_takeover = !takeover;
    sc.params.server_max_window_bits = (uint8_t)bits;
    sc.params.client_max_window_bits = 15;
    rc.params.client_no_context_takeover = !takeover;
    rc.params.client_max_window_bits = (uint8_t)bits;
    rc.params.server_max_window_bits = 15;

    /* Whole input, then two parts, then the first part again (with context
     * takeover it now compresses against the window). */
    round_trip_one(&ws, &sc, &wr, &rc, data, size, false);
    size_t k = size ? opt % (size + 1) : 0;
    round_trip_one(&ws, &sc, &wr, &rc, data, k, true);
    round_trip_one(&ws, &sc, &wr, &rc, data + k, size - k, false);
    round_trip_one(&ws, &sc, &wr, &rc, data, k, true);

    /* One byte short of the message: too big. */
    if (size > 0) {
        CHECK(pmd_compress(&ws, &sc, data, size));
        bytes out = {0};
        pmd_conn tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.params.client_no_context_takeover = true;
        int code = pmd_inflate(&wr, &tmp, ws.out.data, ws.out.len, true, &out, size - 1);
        /* With context takeover the message may refer to earlier ones,
         * which a fresh stream cannot resolve: then it is corrupt to it. */
        CHECK(code == 1009 || (takeover && code == 1007));
        if (code == 1009) CHECK(out.len == size);
        pmd_message_done(&wr, &tmp);
        pmd_conn_free(&wr, &tmp);
        free(out.data);
    }

    pmd_conn_free(&ws, &sc);
    pmd_conn_free(&wr, &rc);
    pmd_worker_free(&ws);
    pmd_worker_free(&wr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t sel = data[0], opt = data[1];
    data += 2;
    size -= 2;
    fuzz_negotiate(data, size, sel ^ opt);
    fuzz_inflate_data(data, size, sel);
    if (size <= 64 * 1024) fuzz_round_trip(data, size, opt);
    return 0;
}
