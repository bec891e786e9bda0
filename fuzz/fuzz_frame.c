/* fuzz_frame.c — libFuzzer target for the RFC 6455 frame parser (src/frame.c).
 *
 * Input: byte 0-1 pick a chunking (seed and maximum chunk size), the rest is
 * a byte stream as it could arrive from a peer.
 *
 * The stream is parsed in the four configurations (server/client role,
 * allow_rsv1 on/off), each with three deliveries: the whole buffer at once,
 * one byte at a time, and pseudo-random chunks derived from bytes 0-1. Every
 * chunk is a heap copy of exactly its size, so ASan sees any read past it.
 * Each run is checked against a simple reference walker written here:
 * the same frames (fin, rsv1, opcode, mask, length), the same unmasked
 * payload bytes, FRAME_END exactly when the payload is complete, and a
 * FRAME_EV_ERROR (close code 1002) exactly at the first frame whose header the
 * reference rejects. Per-call invariants: consumed <= len, payload pointers
 * inside the buffer handed in, payload bytes of a frame sum to its length,
 * nothing outside the payload modified, no progress-free loops, and the
 * parser is never called again after an error.
 *
 * Also exercised: frame_write_header (re-encoding a parsed header gives back its
 * bytes), frame_mask at arbitrary offsets and splits, frame_close_payload_parse on
 * every complete payload. */
#include "frame.h"
#include "utf8.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); abort(); } } while (0)

/* ---- reference walker ---- */

typedef struct ref_frame {
    bool fin, rsv1, masked;
    uint8_t opcode;
    uint64_t length;
    uint8_t mask[4];
    size_t hdr_off, hdr_len;
    size_t pay_off, pay_avail;    /* payload bytes present in the stream */
    bool complete;
} ref_frame;

typedef struct ref_result {
    ref_frame *frames;
    size_t nframes;
    bool error;                   /* the header of frame nframes is invalid */
    uint8_t *expect;              /* the stream after in-place unmasking */
} ref_result;

static bool ref_valid(const ref_frame *f, const uint8_t *h, enum ws_role role, bool allow_rsv1, bool *in_msg)
{
    unsigned len7 = h[1] & 0x7F;
    if (len7 == 126 && f->length < 126) return false;
    if (len7 == 127 && (f->length > 0x7FFFFFFFFFFFFFFFull || f->length < 65536)) return false;
    if (role == WS_ROLE_SERVER && !f->masked) return false;
    if (role == WS_ROLE_CLIENT && f->masked) return false;
    if (h[0] & 0x30) return false;                          /* RSV2, RSV3 */
    switch (f->opcode) {
    case 0x8: case 0x9: case 0xA:
        return f->fin && f->length <= 125 && !f->rsv1;
    case 0x0:
        if (!*in_msg || f->rsv1) return false;
        break;
    case 0x1: case 0x2:
        if (*in_msg || (f->rsv1 && !allow_rsv1)) return false;
        break;
    default:
        return false;
    }
    *in_msg = !f->fin;
    return true;
}

static void ref_walk(const uint8_t *s, size_t n, enum ws_role role, bool allow_rsv1, ref_result *r)
{
    size_t pos = 0;
    bool in_msg = false;
    r->nframes = 0;
    r->error = false;
    memcpy(r->expect, s, n);
    while (n - pos >= 2) {
        const uint8_t *h = s + pos;
        unsigned len7 = h[1] & 0x7F;
        size_t hl = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
        if (n - pos < hl) break;
        ref_frame *f = &r->frames[r->nframes];
        memset(f, 0, sizeof *f);
        f->fin = h[0] >> 7;
        f->rsv1 = (h[0] >> 6) & 1;
        f->opcode = h[0] & 0x0F;
        f->masked = h[1] >> 7;
        size_t i = 2;
        if (len7 == 126) {
            f->length = (uint64_t)h[2] * 256 + h[3];
            i = 4;
        } else if (len7 == 127) {
            for (int k = 0; k < 8; k++) f->length = f->length * 256 + h[2 + k];
            i = 10;
        } else {
            f->length = len7;
        }
        if (f->masked) memcpy(f->mask, h + i, 4);
        if (!ref_valid(f, h, role, allow_rsv1, &in_msg)) {
            r->error = true;
            return;
        }
        f->hdr_off = pos;
        f->hdr_len = hl;
        pos += hl;
        f->pay_off = pos;
        f->pay_avail = f->length < n - pos ? (size_t)f->length : n - pos;
        f->complete = f->pay_avail == f->length;
        if (f->masked)
            for (size_t k = 0; k < f->pay_avail; k++) r->expect[pos + k] ^= f->mask[k % 4];
        pos += f->pay_avail;
        r->nframes++;
        if (!f->complete) break;
    }
}

/* ---- the parser under test ---- */

typedef struct seen_frame {
    frame_head f;
    size_t pay_start, pay_len;    /* into run.out */
    bool ended;
} seen_frame;

typedef struct run {
    frame_parser p;
    seen_frame *frames;
    size_t nframes;
    bool open;                    /* a FRAME without its FRAME_END yet */
    bool error;
    uint8_t *out;                 /* every payload chunk, concatenated */
    size_t out_len;
    size_t pos;                   /* stream bytes consumed */
    const ref_result *ref;
} run;

/* Feeds one chunk (a private heap copy) until the parser wants more. */
static void feed_chunk(run *r, const uint8_t *src, size_t clen)
{
    if (r->error) return;
    uint8_t *buf = malloc(clen ? clen : 1);
    memcpy(buf, src, clen);
    size_t off = 0;
    int idle = 0;                 /* consecutive events that consumed nothing */
    for (;;) {
        frame_event ev;
        memset(&ev, 0xA5, sizeof ev);
        size_t n = frame_parse(&r->p, buf + off, clen - off, &ev);
        CHECK(n <= clen - off);
        switch (ev.type) {
        case FRAME_EV_NEED_MORE:
            CHECK(off + n == clen);   /* "all input consumed" */
            break;
        case FRAME_EV_FRAME: {
            CHECK(n > 0);
            CHECK(!r->open);
            seen_frame *sf = &r->frames[r->nframes++];
            sf->f = r->p.frame;
            sf->pay_start = r->out_len;
            sf->pay_len = 0;
            sf->ended = false;
            r->open = true;
            break;
        }
        case FRAME_EV_PAYLOAD: {
            CHECK(r->open);
            CHECK(n > 0 && ev.len == n);
            CHECK(ev.data == buf + off);
            CHECK(ev.data >= buf && ev.data + ev.len <= buf + clen);
            seen_frame *sf = &r->frames[r->nframes - 1];
            CHECK(sf->pay_len + ev.len <= sf->f.length);
            if (ev.ascii) {                 /* the hint must never lie */
                for (size_t k = 0; k < ev.len; k++) CHECK(ev.data[k] < 0x80);
            }
            memcpy(r->out + r->out_len, ev.data, ev.len);
            r->out_len += ev.len;
            sf->pay_len += ev.len;
            break;
        }
        case FRAME_EV_FRAME_END: {
            CHECK(n == 0);
            CHECK(r->open);
            seen_frame *sf = &r->frames[r->nframes - 1];
            CHECK(sf->pay_len == sf->f.length);
            sf->ended = true;
            r->open = false;
            break;
        }
        case FRAME_EV_ERROR:
            CHECK(ev.close_code == WS_CLOSE_PROTOCOL);
            CHECK(ev.reason && ev.reason[0]);
            r->error = true;
            break;
        default:
            CHECK(!"unknown event type");
        }
        off += n;
        r->pos += n;
        if (ev.type == FRAME_EV_NEED_MORE || ev.type == FRAME_EV_ERROR) break;
        idle = n ? 0 : idle + 1;
        CHECK(idle < 2);
    }
    /* Only payload bytes may change, and only by unmasking (the reference
     * leaves everything from a rejected header on untouched). */
    CHECK(memcmp(buf, r->ref->expect + (r->pos - off), clen) == 0);
    free(buf);
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

enum delivery { WHOLE, BYTEWISE, RANDOM };

static void parse_stream(const uint8_t *s, size_t n, enum ws_role role, bool allow_rsv1,
                         enum delivery how, uint16_t seed, const ref_result *ref)
{
    run r;
    memset(&r, 0, sizeof r);
    frame_parser_init(&r.p, role);
    r.p.allow_rsv1 = allow_rsv1;
    r.frames = calloc(n / 2 + 2, sizeof *r.frames);
    r.out = malloc(n + 1);
    r.ref = ref;

    if (how == WHOLE) {
        feed_chunk(&r, s, n);
    } else if (how == BYTEWISE) {
        for (size_t i = 0; i < n && !r.error; i++) feed_chunk(&r, s + i, 1);
    } else {
        uint32_t st = seed_state(seed, 0x9E3779B9u);
        static const size_t maxes[4] = {3, 17, 300, 0};
        size_t max = maxes[seed >> 14] ? maxes[seed >> 14] : n + 1;
        for (size_t i = 0; i < n && !r.error;) {
            size_t c = 1 + xorshift(&st) % max;
            if (c > n - i) c = n - i;
            feed_chunk(&r, s + i, c);
            i += c;
        }
    }
    /* Like a caller at the end of a read: a zero-length call delivers a
     * pending FRAME_END (the empty buffer is still a valid pointer). */
    if (!r.error) feed_chunk(&r, s + n, 0);

    /* Compare with the reference. */
    CHECK(r.error == ref->error);
    CHECK(r.nframes == ref->nframes);
    for (size_t i = 0; i < r.nframes; i++) {
        const seen_frame *sf = &r.frames[i];
        const ref_frame *rf = &ref->frames[i];
        CHECK(sf->f.fin == rf->fin && sf->f.rsv1 == rf->rsv1 && sf->f.opcode == rf->opcode);
        CHECK(!sf->f.rsv2 && !sf->f.rsv3);
        CHECK(sf->f.masked == rf->masked && sf->f.length == rf->length);
        if (rf->masked) CHECK(memcmp(sf->f.mask, rf->mask, 4) == 0);
        CHECK(sf->pay_len == rf->pay_avail);
        CHECK(memcmp(r.out + sf->pay_start, ref->expect + rf->pay_off, rf->pay_avail) == 0);
        CHECK(sf->ended == rf->complete);

        /* The encoder gives back the (minimal) header we parsed. */
        uint8_t hdr[WS_MAX_HEADER];
        size_t hl = frame_write_header(hdr, sf->f.fin, sf->f.rsv1, sf->f.opcode, sf->f.length,
                                    sf->f.masked ? sf->f.mask : NULL);
        CHECK(hl == rf->hdr_len && memcmp(hdr, s + rf->hdr_off, hl) == 0);
    }
    if (!r.error) CHECK(r.pos == n);
    free(r.frames);
    free(r.out);
}

/* frame_mask at an arbitrary offset, whole and split, against a bytewise XOR. */
static void check_mask(const uint8_t *s, size_t n, uint16_t seed)
{
    if (n < 4) return;
    const uint8_t *key = s;
    uint64_t off = seed % 13;
    size_t len = n - 4, cut = len ? seed % (len + 1) : 0;
    uint8_t *a = malloc(len + 1), *b = malloc(len + 1);
    memcpy(a, s + 4, len);
    memcpy(b, s + 4, len);
    frame_mask(a, len, key, off);
    frame_mask(b, cut, key, off);
    frame_mask(b + cut, len - cut, key, off + cut);
    for (size_t i = 0; i < len; i++) CHECK(a[i] == (s[4 + i] ^ key[(off + i) % 4]));
    CHECK(memcmp(a, b, len) == 0);
    free(a);
    free(b);
}

/* frame_close_payload_parse on a payload: its answer against the rules. */
static void check_close(const uint8_t *pay, size_t n)
{
    uint16_t code = 0;
    const char *reason = NULL;
    size_t rlen = 99;
    uint16_t r = frame_close_payload_parse(pay, n, &code, &reason, &rlen);
    if (n == 0) {
        CHECK(r == 0 && code == WS_CLOSE_NO_STATUS && reason && rlen == 0);
        return;
    }
    if (n == 1) { CHECK(r == WS_CLOSE_PROTOCOL); return; }
    unsigned c = (unsigned)pay[0] << 8 | pay[1];
    bool cv = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
    CHECK(frame_close_code_valid(c) == cv);
    if (!cv) { CHECK(r == WS_CLOSE_PROTOCOL); return; }
    if (!utf8_valid(pay + 2, n - 2)) { CHECK(r == WS_CLOSE_INVALID_DATA); return; }
    CHECK(r == 0 && code == c && reason == (const char *)pay + 2 && rlen == n - 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint16_t seed = 0;
    if (size >= 2) {
        seed = (uint16_t)(data[0] | data[1] << 8);
        data += 2;
        size -= 2;
    }
    ref_result ref;
    ref.frames = calloc(size / 2 + 2, sizeof *ref.frames);
    ref.expect = malloc(size + 1);

    for (int cfg = 0; cfg < 4; cfg++) {
        enum ws_role role = cfg & 1 ? WS_ROLE_CLIENT : WS_ROLE_SERVER;
        bool allow_rsv1 = cfg & 2;
        ref_walk(data, size, role, allow_rsv1, &ref);
        parse_stream(data, size, role, allow_rsv1, WHOLE, seed, &ref);
        parse_stream(data, size, role, allow_rsv1, BYTEWISE, seed, &ref);
        parse_stream(data, size, role, allow_rsv1, RANDOM, seed, &ref);
        for (size_t i = 0; i < ref.nframes; i++)
            if (ref.frames[i].complete)
                check_close(ref.expect + ref.frames[i].pay_off, ref.frames[i].pay_avail);
    }
    check_mask(data, size, seed);
    free(ref.frames);
    free(ref.expect);
    return 0;
}
