/* fuzz_session.c — libFuzzer target for the WebSocket session
 * (src/ws_session.c), driven as a host drives it, against a simple
 * reference peer written here.
 *
 * Input: 4 configuration bytes, then operations.
 *
 *   c0  bit 0 role (0 server: the peer masks; 1 client: it does not),
 *       bits 1-2 deflate mode (0 off, 1 shared, 2-3 dedicated),
 *       bits 3-5 max_message (see MAX_MESSAGE), bits 6-7 deflate_min
 *   c1  the permessage-deflate offer (server role) or answer (client role):
 *       bit 0 server_no_context_takeover, bit 1 client_no_context_takeover,
 *       bit 2 server_max_window_bits, bit 3 client_max_window_bits (bit 4:
 *       without a value, server role only), bits 5-7 compression level
 *   c2  window bits: low nibble server (8 + n % 8), high nibble client
 *   c3  PRNG seed (masking keys, large payloads)
 *
 * then, until the input ends, one byte op (op % 16) and its parameters:
 *
 *   0-1 the peer sends a message: text/binary, compressed or not, in 1-8
 *       fragments with pings/pongs (rarely a close) between them; its
 *       length from the input (0-255 bytes of it) or large (16-80 KiB,
 *       PRNG bytes); op 1: max_message - 2 .. max_message + 3 bytes
 *   2,3 the peer sends a ping / a pong
 *   4   the peer sends a close frame (a valid code and reason, or empty)
 *   5   the peer sends a protocol violation (enum inject): invalid UTF-8,
 *       a truncated character, corrupt deflate data, a message over
 *       max_message, a reserved opcode, a control frame over 125 bytes, a
 *       fragmented control frame, a data frame inside a fragmented message,
 *       RSV1 where it is not allowed, RSV2/RSV3, the wrong masking, a
 *       non-minimal length, a continuation without a message, a bad close
 *       code or close reason
 *   6   the peer sends raw garbage: from here on frames are unpredictable
 *       ("chaos"), only the invariants that need no reference are checked
 *   7,8 the host feeds 1-8 chunks of what the peer sent (sizes from the
 *       input, 0 included), into a heap copy of exactly that size or, when
 *       the session offers one, straight into wss_read_target's buffer
 *   9   the host sends (wss_send) a text/binary message or a ping/pong, or
 *       publishes a message as a topic does (wss_can_share: the frame
 *       shared by all subscribers, built without the session)
 *   10  the host closes (wss_close)
 *   11  the host pauses or resumes reading (s->paused, as conn.c does)
 *   12  what the next callback does (send, close, pause, abort) and the
 *       ping callback's next return values
 *   13  the n-th next non-close write fails: the write callback aborts the
 *       session and returns < 0, as ws.c does when its queue is full
 *   14  the host aborts (wss_abort), when the parameter byte is > 200
 *   15  the host feeds everything sent so far
 *
 * At the end the host resumes and feeds whatever is left, then once more
 * with no bytes.
 *
 * The reference: each peer operation knows what it sent, so it queues the
 * events the session must report (message, ping, pong, close, error with
 * its acceptable codes), each tagged with the stream offsets between which
 * it must happen: not before its decisive byte was handed over, and once
 * the session consumed that byte. Checked:
 *  - messages delivered exactly (opcode and bytes), in order, never over
 *    max_message, text valid UTF-8; pings/pongs reported with their payload;
 *  - every ping answered at once by a pong with the same payload, unless
 *    the ping callback returned true or a close was sent (then no callback);
 *  - every violation ends with one error callback and the right code
 *    (1002 for frame rules, 1007 invalid UTF-8 or deflate data, 1009 too
 *    big), failing fast (at the offending header or byte), after a close
 *    frame with that code when ours was not sent yet;
 *  - a peer close gives one closed callback, after our close frame echoing
 *    the code when we had not sent ours (with our code and reason if so);
 *  - after the error/closed callback or wss_abort: no callback, no write,
 *    wss_feed consumes everything, wss_send fails with -EPIPE;
 *  - callbacks only from wss_feed, never while paused; wss_feed consumes
 *    everything unless paused, and leaves the bytes it did not consume as
 *    they were; direct reads are consumed whole;
 *  - every write is one valid frame (parsed back with a frame_parser in the
 *    peer's role: masked iff we are the client, control payload <= 125, FIN
 *    set), RSV1 exactly on the messages that must be compressed, which
 *    inflate (zlib, with the negotiated window) to what wss_send was given;
 *    close frames carry a valid code and UTF-8 reason; done callbacks run
 *    exactly once; wss_send leaves its input alone;
 *  - wss_can_share: never for a client or a closed session; a frame it
 *    allows (plain or shared-compressed) decodes at the peer, and the
 *    session's own messages after it still do;
 *  - the close code the session keeps and its statistics. */
#include "ws_session.h"
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); abort(); } } while (0)

/* FUZZ_SESSION_TRACE=1 ./fuzz_session input: what happens, on stderr. */
static int trace = -1;
#define TRACE(...) do { if (trace) fprintf(stderr, __VA_ARGS__); } while (0)

/* ---- helpers ---- */

typedef struct buf {
    uint8_t *d;
    size_t n, cap;
} buf;

static void buf_reserve(buf *b, size_t extra)
{
    if (b->n + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra) cap *= 2;
    b->d = realloc(b->d, cap);
    CHECK(b->d);
    b->cap = cap;
}

static void buf_put(buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n) memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void buf_byte(buf *b, uint8_t c) { buf_put(b, &c, 1); }

static void buf_free(buf *b)
{
    free(b->d);
    memset(b, 0, sizeof *b);
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    CHECK(d);
    if (n) memcpy(d, p, n);
    return d;
}

/* Wraps on purpose: exempt from -fsanitize=integer builds. */
__attribute__((no_sanitize("integer")))
static uint32_t rnd(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

typedef struct input {
    const uint8_t *p;
    size_t n, i;
} input;

static uint8_t in_u8(input *in) { return in->i < in->n ? in->p[in->i++] : 0; }

static void in_bytes(input *in, buf *b, size_t n)
{
    for (size_t i = 0; i < n; i++) buf_byte(b, in_u8(in));
}

/* ---- reference rules, written independently of src/ ---- */

/* Returns the index of the first byte at which s[0..n) can no longer be
 * the beginning of valid UTF-8 (RFC 3629, Unicode table 3-7), or n; then
 * *complete tells whether it ends on a character boundary. */
static size_t ref_utf8(const uint8_t *s, size_t n, bool *complete)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i], lo = 0x80, hi = 0xBF;
        size_t need;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) need = 2, lo = 0xA0;
        else if (c >= 0xE1 && c <= 0xEC) need = 2;
        else if (c == 0xED) need = 2, hi = 0x9F;
        else if (c >= 0xEE && c <= 0xEF) need = 2;
        else if (c == 0xF0) need = 3, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) need = 3, hi = 0x8F;
        else {
            *complete = false;
            return i;
        }
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= n) {
                *complete = false;
                return n;
            }
            uint8_t d = s[i + k];
            if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) {
                *complete = false;
                return i + k;
            }
        }
        i += need + 1;
    }
    *complete = true;
    return n;
}

static bool ref_utf8_valid(const uint8_t *s, size_t n)
{
    bool complete;
    return ref_utf8(s, n, &complete) == n && complete;
}

/* Close codes an endpoint may send (RFC 6455 7.4, IANA registry). */
static bool ref_close_code_ok(unsigned c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

static void put_cp(buf *b, uint32_t cp)
{
    if (cp < 0x80) {
        buf_byte(b, (uint8_t)cp);
    } else if (cp < 0x800) {
        buf_byte(b, (uint8_t)(0xC0 | cp >> 6));
        buf_byte(b, (uint8_t)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        buf_byte(b, (uint8_t)(0xE0 | cp >> 12));
        buf_byte(b, (uint8_t)(0x80 | ((cp >> 6) & 0x3F)));
        buf_byte(b, (uint8_t)(0x80 | (cp & 0x3F)));
    } else {
        buf_byte(b, (uint8_t)(0xF0 | cp >> 18));
        buf_byte(b, (uint8_t)(0x80 | ((cp >> 12) & 0x3F)));
        buf_byte(b, (uint8_t)(0x80 | ((cp >> 6) & 0x3F)));
        buf_byte(b, (uint8_t)(0x80 | (cp & 0x3F)));
    }
}

/* Characters at the edges of every UTF-8 length. */
static const uint32_t code_points[16] = {0x80,   0xA9,   0x7FF,   0x800,  0x20AC,  0xD7FF,
                                         0xE000, 0xFFFD, 0xFFFF,  0x10000, 0x1F600, 0x10FFFF,
                                         0x100,  0x3B1,  0x4E2D,  0xFEFF};

/* Text from input bytes: one character per byte, at most max bytes. */
static void text_from_input(input *in, buf *b, size_t chars, size_t max)
{
    for (size_t i = 0; i < chars; i++) {
        uint8_t c = in_u8(in);
        buf t = {0};
        if (c < 0xC0) buf_byte(&t, c & 0x7F);
        else put_cp(&t, code_points[c & 15]);
        bool fits = b->n + t.n <= max;
        if (fits) buf_put(b, t.d, t.n);
        buf_free(&t);
        if (!fits) break;
    }
}

/* b->n + n bytes: text (mostly ASCII, valid UTF-8) or binary, from the PRNG. */
static void bytes_from_rng(uint32_t *r, buf *b, size_t n, bool text)
{
    size_t end = b->n + n;
    buf_reserve(b, n + 4);
    while (b->n < end) {
        uint32_t x = rnd(r);
        size_t before = b->n;
        if (!text) buf_byte(b, (uint8_t)x);
        else if ((x & 15) == 0) put_cp(b, code_points[(x >> 4) & 15]);
        else buf_byte(b, (uint8_t)(' ' + (x >> 8) % 95));
        if (b->n > end) b->n = before;   /* a character that does not fit: ASCII instead */
    }
}

/* ---- the harness ---- */

enum mstate { M_OPEN, M_CLOSE_SENT, M_CLOSED };
enum item_kind { IT_MSG, IT_PING, IT_PONG, IT_CLOSE, IT_ERROR };
enum { ACC_1002 = 1, ACC_1007 = 2, ACC_1009 = 4 };
enum cb_act { ACT_NONE, ACT_SEND, ACT_CLOSE, ACT_PAUSE, ACT_ABORT, ACT_COUNT };

/* An event the session must report, between stream offsets lo and hi:
 * not before byte lo - 1 was handed to it, and once byte hi - 1 was
 * consumed. */
typedef struct item {
    enum item_kind kind;
    uint8_t opcode;           /* IT_MSG */
    uint8_t *data;            /* message, ping/pong payload, close reason */
    size_t len;
    uint16_t code;            /* IT_CLOSE: the peer's code (1005: none) */
    unsigned accept;          /* IT_ERROR: ACC_* */
    size_t lo, hi;
} item;

/* A frame the session wrote, parsed back. */
typedef struct wframe {
    uint8_t opcode;
    bool rsv1;
    uint8_t *data;
    size_t len;
} wframe;

/* Bytes per input each way: beyond, peer operations are skipped and
 * sends are small (a few large messages find as much as many). */
#define STREAM_CAP (1u << 20)
#define MAX_CALLBACKS 100000

typedef struct fz {
    ws_session s;
    bool client;
    bool deflate;
    pmd_params params;
    pmd_worker worker;
    wss_config cfg;
    wss_stats stats;
    uint32_t rng;
    input in;

    /* the peer */
    buf stream;               /* every byte the peer sent, as sent */
    size_t consumed;          /* how many the session took */
    size_t feed_limit;        /* end of the bytes given to the current wss_feed */
    z_stream pdef;            /* the peer's compressor */
    z_stream oinf;            /* inflates what the session sends */
    bool zinit;
    frame_parser checker;        /* parses what the session sends */

    /* the reference */
    item *items;
    size_t nitems, head, items_cap;
    bool terminal;            /* a close or an error is queued: nothing after it counts */
    bool chaos;               /* garbage was sent: nothing after it is predicted */
    enum mstate state;
    bool peer_closed;
    uint16_t our_code;
    uint8_t our_reason[WS_MAX_CONTROL_PAYLOAD];
    size_t our_reason_len;
    uint16_t expect_close_code;

    /* the host */
    bool in_feed, in_local;
    enum cb_act act;
    uint32_t ping_bits;
    int break_write;          /* -1: never */
    bool aborted_in_write;
    unsigned callbacks;

    /* checks in flight */
    bool expect_pong;
    uint8_t pong[WS_MAX_CONTROL_PAYLOAD];
    size_t pong_len;
    bool close_written;
    uint16_t close_written_code;
    uint8_t close_written_reason[WS_MAX_CONTROL_PAYLOAD];
    size_t close_written_reason_len;
    int local_writes;
    wframe local;
    int done_calls, done_status;

    /* counts for the statistics */
    uint64_t messages, bytes_in, errors, sent_messages, sent_bytes;
} fz;

/* ---- the reference's queue ---- */

static void push_item(fz *z, enum item_kind k, uint8_t opcode, const uint8_t *d, size_t n, uint16_t code,
                      unsigned accept, size_t lo, size_t hi)
{
    if (z->terminal || z->chaos) return;
    if (z->nitems == z->items_cap) {
        z->items_cap = z->items_cap ? 2 * z->items_cap : 16;
        z->items = realloc(z->items, z->items_cap * sizeof *z->items);
        CHECK(z->items);
    }
    CHECK(z->nitems == 0 || z->items[z->nitems - 1].hi <= hi);
    z->items[z->nitems++] = (item){k, opcode, dup_bytes(d, n), n, code, accept, lo, hi};
    if (k == IT_CLOSE || k == IT_ERROR) z->terminal = true;
    TRACE("expect kind %d len %zu code %u accept %u at [%zu, %zu]\n", k, n, code, accept, lo, hi);
}

/* Pings the session rightly ignored: it had sent its close. */
static void skip_ignored_pings(fz *z, size_t upto)
{
    while (z->state == M_CLOSE_SENT && z->head < z->nitems && z->items[z->head].kind == IT_PING &&
           z->items[z->head].hi <= upto)
        z->head++;
}

/* The item the current callback must match, or NULL after garbage. */
static item *expect_head(fz *z, enum item_kind k)
{
    skip_ignored_pings(z, SIZE_MAX);
    if (z->head == z->nitems) {
        CHECK(z->chaos);   /* an event nobody sent */
        return NULL;
    }
    item *it = &z->items[z->head++];
    CHECK(it->kind == k);
    CHECK(it->lo <= z->feed_limit);   /* reported before its bytes arrived */
    return it;
}

/* ---- what the session writes ---- */

static void on_done(void *ud, int status)
{
    fz *z = ud;
    z->done_calls++;
    z->done_status = status;
}

static void parse_written(fz *z, const uint8_t *hdr, size_t hlen, const uint8_t *pay, size_t len, wframe *w)
{
    size_t n = hlen + len, off = 0;
    uint8_t *b = malloc(n);
    CHECK(b);
    memcpy(b, hdr, hlen);
    if (len) memcpy(b + hlen, pay, len);
    w->data = malloc(len ? len : 1);
    CHECK(w->data);
    w->len = 0;
    bool started = false;
    for (;;) {
        frame_event ev;
        size_t k = frame_parse(&z->checker, b + off, n - off, &ev);
        CHECK(ev.type != FRAME_EV_ERROR);       /* the session wrote an invalid frame */
        CHECK(ev.type != FRAME_EV_NEED_MORE);   /* ... or less than a frame */
        off += k;
        if (ev.type == FRAME_EV_FRAME) {
            const frame_head *f = &z->checker.frame;
            CHECK(!started && off == hlen);  /* hdr is the whole header */
            started = true;
            CHECK(f->fin);                   /* the session never fragments */
            CHECK(f->length == len);
            CHECK(f->masked == z->client);
            w->opcode = f->opcode;
            w->rsv1 = f->rsv1;
        } else if (ev.type == FRAME_EV_PAYLOAD) {
            memcpy(w->data + w->len, ev.data, ev.len);
            w->len += ev.len;
        } else {
            break;   /* FRAME_END */
        }
    }
    CHECK(started && off == n && w->len == len);
    free(b);
}

static void local_abort_model(fz *z, uint16_t code)
{
    z->state = M_CLOSED;
    z->expect_pong = false;
    if (!z->peer_closed) z->expect_close_code = code;
}

static int on_write(void *user, const uint8_t *hdr, size_t hlen, const uint8_t *payload, size_t len,
                    write_done_fn done, void *ud)
{
    fz *z = user;
    CHECK(z->state != M_CLOSED);           /* nothing goes out once closed */
    CHECK(z->in_feed || z->in_local);
    CHECK(hdr && hlen >= 2 && hlen <= WS_MAX_HEADER && (payload || len == 0));
    wframe w;
    parse_written(z, hdr, hlen, payload, len, &w);
    TRACE("  write %s opcode %u%s len %zu\n", z->in_local ? "local" : "session", w.opcode, w.rsv1 ? " rsv1" : "",
          w.len);
    if (w.rsv1) CHECK(z->deflate && !(w.opcode & 8));
    if (w.opcode == WS_OP_CLOSE) {
        /* A close frame an endpoint may send: nothing, or a code and UTF-8. */
        CHECK(w.len != 1);
        if (w.len >= 2) {
            CHECK(ref_close_code_ok((unsigned)w.data[0] << 8 | w.data[1]));
            CHECK(ref_utf8_valid(w.data + 2, w.len - 2));
        }
    }
    if (z->in_local) {
        z->local_writes++;
        free(z->local.data);
        z->local = w;
    } else {
        CHECK(done == NULL);
        switch (w.opcode) {
        case WS_OP_PONG:
            CHECK(z->expect_pong);
            CHECK(w.len == z->pong_len && memcmp(w.data, z->pong, w.len) == 0);
            z->expect_pong = false;
            break;
        case WS_OP_CLOSE:
            /* The echo of the peer's close, or ours for a violation: the
             * closed or error callback follows. */
            CHECK(z->state == M_OPEN && !z->close_written);
            z->close_written = true;
            z->close_written_code = w.len ? (uint16_t)(w.data[0] << 8 | w.data[1]) : WS_CLOSE_NO_STATUS;
            z->close_written_reason_len = w.len > 2 ? w.len - 2 : 0;
            memcpy(z->close_written_reason, w.data + (w.len > 2 ? 2 : 0), z->close_written_reason_len);
            break;
        default:
            CHECK(!"the session sent a message or a ping on its own");
        }
        free(w.data);
    }
    int r = 0;
    /* As ws.c: over the queue limit the connection is cut from inside the
     * write (close frames are exempt). */
    if (hdr[0] != (0x80 | WS_OP_CLOSE) && z->break_write >= 0 && z->break_write-- == 0) {
        wss_abort(&z->s, WS_CLOSE_POLICY, "send queue full");
        local_abort_model(z, WS_CLOSE_POLICY);
        z->aborted_in_write = true;
        r = -ENOBUFS;
    }
    if (done) done(ud, r);
    return r;
}

/* Inflates a compressed message the session sent. */
static void inflate_sent(fz *z, const uint8_t *p, size_t n, buf *out)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    z_stream *s = &z->oinf;
    if (z->params.server_no_context_takeover) CHECK(inflateReset(s) == Z_OK);
    for (int pass = 0; pass < 2; pass++) {
        s->next_in = (Bytef *)(pass ? tail : p);
        s->avail_in = (uInt)(pass ? 4 : n);
        for (;;) {
            buf_reserve(out, 4096);
            s->next_out = out->d + out->n;
            s->avail_out = (uInt)(out->cap - out->n);
            int r = inflate(s, Z_SYNC_FLUSH);
            out->n = out->cap - s->avail_out;
            /* Z_STREAM_END: the session never ends a deflate stream;
             * Z_DATA_ERROR: corrupt, or beyond the negotiated window. */
            CHECK(r == Z_OK || r == Z_BUF_ERROR);
            if (s->avail_in == 0 && s->avail_out != 0) break;
            CHECK(r == Z_OK);
        }
    }
}

/* The peer got w for a wss_send(opcode, data, len): compressed or not. */
static void check_sent(fz *z, const wframe *w, uint8_t opcode, const uint8_t *data, size_t len, bool compressed)
{
    CHECK(w->opcode == opcode);
    CHECK(w->rsv1 == compressed);
    if (compressed) {
        buf out = {0};
        inflate_sent(z, w->data, w->len, &out);
        CHECK(out.n == len && (len == 0 || memcmp(out.d, data, len) == 0));
        buf_free(&out);
    } else {
        CHECK(w->len == len && (len == 0 || memcmp(w->data, data, len) == 0));
    }
}

/* ---- what the host does ---- */

static void local_send(fz *z, uint8_t opcode, const uint8_t *data, size_t len, bool with_done)
{
    /* As the hosts do (the Lua binding passes "" for no payload): the
     * client's frame_out memcpy's from data even when len is 0. */
    if (!data) data = (const uint8_t *)"";
    enum mstate before = z->state;
    uint8_t *copy = dup_bytes(data, len);
    free(z->local.data);
    memset(&z->local, 0, sizeof z->local);
    z->local_writes = 0;
    z->done_calls = 0;
    z->done_status = 1;
    z->aborted_in_write = false;
    z->in_local = true;
    int r = wss_send(&z->s, opcode, data, len, with_done ? on_done : NULL, z);
    z->in_local = false;
    CHECK(len == 0 || memcmp(copy, data, len) == 0);   /* the caller's bytes are left alone */
    CHECK(with_done ? z->done_calls == 1 : z->done_calls == 0);
    if (before != M_OPEN) {
        CHECK(r == -EPIPE && z->local_writes == 0);
        CHECK(!with_done || z->done_status == -EPIPE);
    } else {
        CHECK(z->local_writes == 1);
        CHECK(z->aborted_in_write ? r < 0 : r == 0);
        CHECK(!with_done || z->done_status == r);
        bool compress = !(opcode & 8) && z->deflate && len >= z->cfg.deflate_min &&
                        z->params.server_max_window_bits;
        check_sent(z, &z->local, opcode, data, len, compress);
        if (!(opcode & 8)) {
            z->sent_messages++;
            z->sent_bytes += len;
        }
    }
    free(copy);
}

/* A topic publish, as lua_topic.c's fan_out and ws.c's ws_send_shared do
 * it: when the session says it can share, the frame built once for every
 * subscriber (plain, or compressed by the worker's shared compressor: no
 * context takeover, 15-bit window, shared mode only) goes out without the
 * session; else a wss_send. */
static void local_publish(fz *z, uint8_t opcode, const uint8_t *data, size_t len)
{
    bool compressed = false;
    bool share = wss_can_share(&z->s, len, &compressed);
    if (z->state != M_OPEN || z->client) CHECK(!share);   /* a client masks each frame */
    bool have_compressed = z->worker.mode == DEFLATE_SHARED && len >= z->cfg.deflate_min;
    if (!share || (compressed && !have_compressed)) {
        local_send(z, opcode, data, len, false);
        return;
    }
    uint8_t hdr[WS_MAX_HEADER];
    const uint8_t *payload = data;
    size_t plen = len;
    if (compressed) {
        pmd_conn one = {.params = {.server_no_context_takeover = true, .server_max_window_bits = 15}};
        CHECK(pmd_compress(&z->worker, &one, data, len));
        pmd_conn_free(&z->worker, &one);
        payload = z->worker.out.data;
        plen = z->worker.out.len;
    }
    size_t hlen = frame_write_header(hdr, true, compressed, opcode, plen, NULL);
    TRACE("  shared frame opcode %u%s len %zu\n", opcode, compressed ? " rsv1" : "", plen);
    wframe w;
    parse_written(z, hdr, hlen, payload, plen, &w);
    check_sent(z, &w, opcode, data, len, compressed);
    free(w.data);
}

static void local_close(fz *z, uint16_t code, const uint8_t *reason, size_t rlen)
{
    enum mstate before = z->state;
    free(z->local.data);
    memset(&z->local, 0, sizeof z->local);
    z->local_writes = 0;
    if (!reason) reason = (const uint8_t *)"";
    z->in_local = true;
    wss_close(&z->s, code, (const char *)reason, rlen);
    z->in_local = false;
    if (before != M_OPEN) {
        CHECK(z->local_writes == 0);   /* a no-op unless open */
        return;
    }
    CHECK(z->local_writes == 1 && z->local.opcode == WS_OP_CLOSE);
    if (code == WS_CLOSE_NO_STATUS) {
        CHECK(z->local.len == 0);
    } else {
        CHECK(z->local.len == 2 + rlen);
        CHECK(z->local.data[0] == code >> 8 && z->local.data[1] == (code & 0xFF));
        CHECK(rlen == 0 || memcmp(z->local.data + 2, reason, rlen) == 0);
    }
    z->state = M_CLOSE_SENT;
    z->our_code = code;
    if (rlen) memcpy(z->our_reason, reason, rlen);
    z->our_reason_len = rlen;
    z->expect_close_code = code;
    CHECK(!wss_is_open(&z->s) && !wss_is_closed(&z->s));
}

static void local_abort(fz *z, uint16_t code, const char *why)
{
    z->local_writes = 0;
    z->in_local = true;
    wss_abort(&z->s, code, why);
    z->in_local = false;
    CHECK(z->local_writes == 0);   /* nothing is sent */
    local_abort_model(z, code);
    CHECK(wss_is_closed(&z->s));
}

static const uint16_t valid_codes[16] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                         1011, 1012, 1013, 1014, 3000, 4000, 4999, WS_CLOSE_NO_STATUS};

/* A close with a code from valid_codes and a reason (<= 123 bytes). */
static void close_args(fz *z, uint8_t b, uint16_t *code, buf *reason, bool from_input)
{
    *code = valid_codes[b & 15];
    if (*code == WS_CLOSE_NO_STATUS) return;
    size_t chars = (b >> 4) * 3;
    if (from_input) {
        text_from_input(&z->in, reason, chars, WS_MAX_CONTROL_PAYLOAD - 2);
    } else {
        bytes_from_rng(&z->rng, reason, chars, true);
        /* cut at a character boundary within 123 bytes */
        bool complete;
        while (reason->n > WS_MAX_CONTROL_PAYLOAD - 2 || ref_utf8(reason->d, reason->n, &complete) != reason->n ||
               !complete)
            reason->n--;
    }
}

/* What the next callback does, from inside it. */
static void do_action(fz *z)
{
    enum cb_act a = z->act;
    z->act = ACT_NONE;
    switch (a) {
    case ACT_SEND: {
        static const uint8_t ops[4] = {WS_OP_TEXT, WS_OP_BINARY, WS_OP_PING, WS_OP_PONG};
        uint32_t r = rnd(&z->rng);
        uint8_t op = ops[r & 3];
        buf d = {0};
        bytes_from_rng(&z->rng, &d, (r >> 8) % 100, op == WS_OP_TEXT);
        if (op & 8 && d.n > WS_MAX_CONTROL_PAYLOAD) d.n = WS_MAX_CONTROL_PAYLOAD;
        local_send(z, op, d.d, d.n, r & 4);
        buf_free(&d);
        break;
    }
    case ACT_CLOSE: {
        uint16_t code;
        buf reason = {0};
        close_args(z, (uint8_t)rnd(&z->rng), &code, &reason, false);
        local_close(z, code, reason.d, reason.n);
        buf_free(&reason);
        break;
    }
    case ACT_PAUSE:
        z->s.paused = true;
        break;
    case ACT_ABORT:
        local_abort(z, WS_CLOSE_GOING_AWAY, "host gone");
        break;
    default:
        break;
    }
}

/* ---- the session's callbacks ---- */

static void enter_cb(fz *z)
{
    CHECK(z->state != M_CLOSED);   /* nothing after the session closed */
    CHECK(z->in_feed && !z->in_local);
    CHECK(!z->s.paused);           /* it stops before the next event once paused */
    CHECK(!z->expect_pong);        /* the pong went out right after its ping */
    CHECK(++z->callbacks < MAX_CALLBACKS);
}

static void on_message(void *user, uint8_t opcode, const uint8_t *data, size_t len)
{
    fz *z = user;
    enter_cb(z);
    TRACE("  message opcode %u len %zu\n", opcode, len);
    CHECK(!z->close_written);
    CHECK(opcode == WS_OP_TEXT || opcode == WS_OP_BINARY);
    CHECK(data || len == 0);
    CHECK(len <= z->cfg.max_message);
    if (opcode == WS_OP_TEXT) CHECK(ref_utf8_valid(data, len));
    item *it = expect_head(z, IT_MSG);
    if (it) CHECK(it->opcode == opcode && it->len == len && (len == 0 || memcmp(it->data, data, len) == 0));
    z->messages++;
    z->bytes_in += len;
    do_action(z);   /* after the checks: an abort frees what data points to */
}

static bool on_ping(void *user, const uint8_t *data, size_t len)
{
    fz *z = user;
    enter_cb(z);
    TRACE("  ping len %zu\n", len);
    CHECK(!z->close_written);
    CHECK(z->state == M_OPEN);     /* no ping callback after our close */
    CHECK(len <= WS_MAX_CONTROL_PAYLOAD);
    item *it = expect_head(z, IT_PING);
    if (it) CHECK(it->len == len && (len == 0 || memcmp(it->data, data, len) == 0));
    bool handled = z->ping_bits & 1;
    z->ping_bits = z->ping_bits >> 1 | (z->ping_bits & 1) << 31;
    uint8_t copy[WS_MAX_CONTROL_PAYLOAD];
    memcpy(copy, data, len);
    do_action(z);
    if (!handled && z->state == M_OPEN) {
        z->expect_pong = true;
        memcpy(z->pong, copy, len);
        z->pong_len = len;
    }
    return handled;
}

static void on_pong(void *user, const uint8_t *data, size_t len)
{
    fz *z = user;
    enter_cb(z);
    TRACE("  pong len %zu\n", len);
    CHECK(!z->close_written);
    CHECK(len <= WS_MAX_CONTROL_PAYLOAD);
    item *it = expect_head(z, IT_PONG);
    if (it) CHECK(it->len == len && (len == 0 || memcmp(it->data, data, len) == 0));
    do_action(z);
}

static void on_closed(void *user, uint16_t code, const char *reason, size_t reason_len)
{
    fz *z = user;
    enter_cb(z);
    TRACE("  closed %u\n", code);
    CHECK(reason && strlen(reason) == reason_len);
    CHECK(wss_is_closed(&z->s));
    item *it = expect_head(z, IT_CLOSE);
    if (z->state == M_OPEN) {
        /* The peer closed first: our close frame echoed its code. */
        CHECK(z->close_written && z->close_written_code == code && z->close_written_reason_len == 0);
        CHECK(code == WS_CLOSE_NO_STATUS || ref_close_code_ok(code));
        CHECK(ref_utf8_valid((const uint8_t *)reason, reason_len));
        /* The session keeps the reason as a C string: a U+0000 in it
         * cuts it there (reported; reason_len is its strlen). */
        if (it) CHECK(code == it->code && reason_len == strnlen((const char *)it->data, it->len) &&
                      memcmp(reason, it->data, reason_len) == 0);
        z->expect_close_code = code;
    } else {
        /* We closed first: the handshake is complete, with our code. */
        CHECK(!z->close_written);
        CHECK(code == z->our_code && reason_len == strnlen((const char *)z->our_reason, z->our_reason_len) &&
              memcmp(reason, z->our_reason, reason_len) == 0);
    }
    z->close_written = false;
    z->state = M_CLOSED;
    z->peer_closed = true;
    do_action(z);
}

static void on_error(void *user, uint16_t code, const char *why)
{
    fz *z = user;
    enter_cb(z);
    TRACE("  error %u: %s\n", code, why);
    CHECK(code == WS_CLOSE_PROTOCOL || code == WS_CLOSE_INVALID_DATA || code == WS_CLOSE_TOO_BIG);
    CHECK(why && why[0]);
    CHECK(wss_is_closed(&z->s));
    item *it = expect_head(z, IT_ERROR);
    if (it) {
        unsigned acc = code == WS_CLOSE_PROTOCOL ? ACC_1002 : code == WS_CLOSE_INVALID_DATA ? ACC_1007 : ACC_1009;
        if (!(it->accept & acc)) fprintf(stderr, "error %u (%s), expected mask %u\n", code, why, it->accept);
        CHECK(it->accept & acc);
    }
    if (z->state == M_OPEN) {
        /* Our close frame went first, with the code and why. */
        size_t wl = strlen(why);
        if (wl > WS_MAX_CONTROL_PAYLOAD - 2) wl = WS_MAX_CONTROL_PAYLOAD - 2;
        CHECK(z->close_written && z->close_written_code == code);
        CHECK(z->close_written_reason_len == wl && memcmp(z->close_written_reason, why, wl) == 0);
        z->expect_close_code = code;
    } else {
        CHECK(!z->close_written);   /* ours was sent already */
    }
    z->close_written = false;
    z->state = M_CLOSED;
    z->errors++;
    do_action(z);
}

static const wss_callbacks callbacks = {
    .message = on_message,
    .ping = on_ping,
    .pong = on_pong,
    .closed = on_closed,
    .error = on_error,
    .write = on_write,
};

/* ---- feeding ---- */

static void after_feed(fz *z)
{
    CHECK(!z->expect_pong && !z->close_written);
    CHECK(wss_is_open(&z->s) == (z->state == M_OPEN));
    CHECK(wss_is_closed(&z->s) == (z->state == M_CLOSED));
    if (z->state == M_CLOSED) return;
    /* Everything in what was consumed has been reported. */
    skip_ignored_pings(z, z->consumed);
    if (z->head < z->nitems && z->items[z->head].hi <= z->consumed)
        fprintf(stderr, "item %zu (kind %d, hi %zu) not reported, consumed %zu\n", z->head,
                z->items[z->head].kind, z->items[z->head].hi, z->consumed);
    CHECK(z->head == z->nitems || z->items[z->head].hi > z->consumed);
}

/* Feeds up to want bytes of what the peer sent; direct: into the
 * session's own buffer when it offers one. */
static void feed_chunk(fz *z, size_t want, bool direct)
{
    size_t avail = z->stream.n - z->consumed;
    if (want > avail) want = avail;
    size_t room = 0, used;
    uint8_t *target = direct ? wss_read_target(&z->s, &room) : NULL;
    if (z->s.paused || z->state == M_CLOSED) CHECK(!target);
    if (target && want) {
        CHECK(room > 0);
        if (want > room) want = room;
        memcpy(target, z->stream.d + z->consumed, want);
        z->feed_limit = z->consumed + want;
        z->in_feed = true;
        used = wss_feed(&z->s, target, want);
        z->in_feed = false;
        CHECK(used == want);   /* payload of one frame: taken whole */
    } else {
        uint8_t *b = malloc(want ? want : 1);
        CHECK(b);
        if (want) memcpy(b, z->stream.d + z->consumed, want);
        bool was_paused = z->s.paused;
        z->feed_limit = z->consumed + want;
        z->in_feed = true;
        used = wss_feed(&z->s, b, want);
        z->in_feed = false;
        CHECK(used <= want);
        if (z->state == M_CLOSED) {
            CHECK(used == want);
        } else {
            if (used < want) CHECK(z->s.paused);
            if (was_paused) CHECK(used == 0);
            /* what it did not consume is left as it was */
            CHECK(want == used || memcmp(b + used, z->stream.d + z->consumed + used, want - used) == 0);
        }
        free(b);
    }
    z->consumed += used;
    TRACE("fed %zu of %zu%s: consumed %zu/%zu%s\n", used, want, target && want ? " (direct)" : "", z->consumed,
          z->stream.n, z->s.paused ? " paused" : "");
    after_feed(z);
}

static size_t chunk_size(uint8_t s)
{
    if (s < 100) return s;
    if (s < 200) return (size_t)(s - 100) * 41;
    if (s < 255) return (size_t)(s - 200) * 1500;
    return SIZE_MAX;
}

static void feed_all(fz *z)
{
    while (z->consumed < z->stream.n && !z->s.paused) {
        uint32_t r = rnd(&z->rng);
        size_t c = r & 1 ? 1 + (r >> 8) % 70000 : 1 + (r >> 8) % 300;
        feed_chunk(z, c, r & 2);
    }
}

/* ---- the peer ---- */

typedef struct sent {
    size_t hdr_end, pay_start, end;   /* stream offsets */
} sent;

/* Appends one frame. The peer masks when the session is a server
 * (flip_mask: the other way round); nonminimal: a longer length form. */
static sent emit_frame(fz *z, bool fin, uint8_t rsv, uint8_t opcode, const uint8_t *pl, size_t n, bool flip_mask,
                       bool nonminimal)
{
    buf *st = &z->stream;
    sent s;
    bool masked = !z->client != flip_mask;
    int form = n < 126 ? 7 : n <= 0xFFFF ? 16 : 64;
    if (nonminimal) form = form == 7 ? 16 : 64;
    buf_byte(st, (uint8_t)((fin ? 0x80 : 0) | rsv | opcode));
    uint8_t mb = masked ? 0x80 : 0;
    if (form == 7) {
        buf_byte(st, (uint8_t)(mb | n));
    } else if (form == 16) {
        buf_byte(st, mb | 126);
        buf_byte(st, (uint8_t)(n >> 8));
        buf_byte(st, (uint8_t)n);
    } else {
        buf_byte(st, mb | 127);
        for (int k = 7; k >= 0; k--) buf_byte(st, (uint8_t)((uint64_t)n >> (8 * k)));
    }
    uint8_t key[4] = {0, 0, 0, 0};
    if (masked) {
        uint32_t r = rnd(&z->rng);
        if (r & 0x100000) memcpy(key, &r, 4);   /* else the all-zero key */
        buf_put(st, key, 4);
    }
    s.hdr_end = s.pay_start = st->n;
    buf_reserve(st, n);
    for (size_t i = 0; i < n; i++) st->d[st->n + i] = pl[i] ^ key[i & 3];
    st->n += n;
    s.end = st->n;
    return s;
}

static void peer_control(fz *z, uint8_t opcode)
{
    buf p = {0};
    in_bytes(&z->in, &p, in_u8(&z->in) % (WS_MAX_CONTROL_PAYLOAD + 1));
    sent s = emit_frame(z, true, 0, opcode, p.d, p.n, false, false);
    push_item(z, opcode == WS_OP_PING ? IT_PING : IT_PONG, 0, p.d, p.n, 0, 0, s.end, s.end);
    buf_free(&p);
}

static void peer_close(fz *z)
{
    uint16_t code;
    buf reason = {0}, p = {0};
    close_args(z, in_u8(&z->in), &code, &reason, true);
    if (code != WS_CLOSE_NO_STATUS) {
        buf_byte(&p, (uint8_t)(code >> 8));
        buf_byte(&p, (uint8_t)code);
        buf_put(&p, reason.d, reason.n);
    }
    sent s = emit_frame(z, true, 0, WS_OP_CLOSE, p.d, p.n, false, false);
    push_item(z, IT_CLOSE, 0, reason.d, reason.n, code, 0, s.end, s.end);
    buf_free(&reason);
    buf_free(&p);
}

/* The peer's compressor: raw deflate, sync flush with its 00 00 ff ff
 * dropped (RFC 7692 7.2.1), or (without context takeover) a final block. */
static void peer_compress(fz *z, const uint8_t *m, size_t n, bool bfinal, buf *out)
{
    z_stream *d = &z->pdef;
    if (z->params.client_no_context_takeover) CHECK(deflateReset(d) == Z_OK);
    else bfinal = false;
    d->next_in = (Bytef *)m;
    d->avail_in = (uInt)n;
    for (;;) {
        buf_reserve(out, deflateBound(d, d->avail_in) + 64);
        d->next_out = out->d + out->n;
        d->avail_out = (uInt)(out->cap - out->n);
        int r = deflate(d, bfinal ? Z_FINISH : Z_SYNC_FLUSH);
        out->n = out->cap - d->avail_out;
        if (bfinal && r == Z_STREAM_END) break;
        CHECK(r == Z_OK || r == Z_BUF_ERROR);
        if (!bfinal && d->avail_in == 0 && d->avail_out != 0) break;
    }
    if (!bfinal && out->n) {
        CHECK(out->n >= 4 && memcmp(out->d + out->n - 4, "\x00\x00\xff\xff", 4) == 0);
        out->n -= 4;
    }
}

enum inject {
    INJ_NONE,
    /* in the message's content */
    INJ_BAD_UTF8, INJ_TRUNC_UTF8, INJ_BAD_DEFLATE, INJ_TOO_BIG,
    /* a bad frame before fragment inj_at */
    INJ_RESERVED_OPCODE, INJ_BIG_CONTROL, INJ_FRAG_CONTROL, INJ_NEW_DATA,
    /* fragment inj_at's header */
    INJ_RSV1, INJ_RSV23, INJ_BAD_MASK, INJ_NONMINIMAL,
    /* alone */
    INJ_CONT_ALONE, INJ_BAD_CLOSE,
    INJ_COUNT
};

static const char *const bad_utf8[8] = {"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                        "\x80", "\xe0\x80\x80", "\xf5", "\xe2\x82("};

/* One peer message; inject: a violation inside it; edge: its length
 * around max_message. */
static void peer_message(fz *z, enum inject inj, bool edge)
{
    input *in = &z->in;
    uint8_t f = in_u8(in);
    bool text = f & 1;
    bool compressed = z->deflate && (f & 2);
    size_t nfrag = 1 + ((f >> 2) & 7);
    bool big = (f >> 5) == 7;
    unsigned density = (f >> 5) & 3;
    if (inj == INJ_BAD_UTF8 || inj == INJ_TRUNC_UTF8) text = true;
    if (inj == INJ_BAD_DEFLATE) compressed = true;
    uint8_t opcode = text ? WS_OP_TEXT : WS_OP_BINARY;

    /* content */
    buf m = {0};
    buf_reserve(&m, 1);   /* never NULL: p.d + offset below */
    if (inj == INJ_TOO_BIG) {
        bytes_from_rng(&z->rng, &m, z->cfg.max_message + 1 + in_u8(in) % 8, text);
    } else if (big) {
        size_t hi = in_u8(in), lo = in_u8(in);
        bytes_from_rng(&z->rng, &m, 16384 + (hi << 8 | lo), text);
    } else if (edge && z->cfg.max_message <= 100000) {
        /* around the limit: max - 2 .. max + 3 bytes */
        size_t n = z->cfg.max_message + in_u8(in) % 6;
        bytes_from_rng(&z->rng, &m, n < 2 ? 0 : n - 2, text);
    } else {
        size_t n = in_u8(in);
        if (text) text_from_input(in, &m, n, SIZE_MAX);
        else in_bytes(in, &m, n);
    }
    if (inj == INJ_BAD_UTF8) {
        const char *bad = bad_utf8[in_u8(in) & 7];
        size_t at = m.n * in_u8(in) / 256, bl = strlen(bad);
        buf_reserve(&m, bl);
        memmove(m.d + at + bl, m.d + at, m.n - at);
        memcpy(m.d + at, bad, bl);
        m.n += bl;
    } else if (inj == INJ_TRUNC_UTF8) {
        static const char *const cut[3] = {"\xc3", "\xe2\x82", "\xf0\x9f\x98"};
        const char *c = cut[in_u8(in) % 3];
        buf_put(&m, c, strlen(c));
    }
    bool complete = true;
    size_t bad_at = text ? ref_utf8(m.d, m.n, &complete) : m.n;

    /* payload */
    buf p = {0};
    buf_reserve(&p, 1);
    unsigned cerr = 0;
    if (compressed) {
        uint8_t c = in_u8(in);
        peer_compress(z, m.d, m.n, c & 1, &p);
        if (inj == INJ_BAD_DEFLATE) {
            /* A block starts at a byte boundary here (after the previous
             * message's flush): 0xff is BTYPE 11, reserved. (Appended,
             * 0xff could open a stored block with the 00 00 ff ff tail.) */
            buf_reserve(&p, 1);
            memmove(p.d + 1, p.d, p.n);
            p.d[0] = 0xff;
            p.n++;
            cerr = ACC_1007;
        } else {
            if (m.n > z->cfg.max_message) cerr |= ACC_1009;
            if (text && !complete) cerr |= ACC_1007;
        }
        /* Where inflating fails is zlib's business: nothing else in this
         * message, so the error is the only event in its span. */
        if (cerr) {
            density = 0;
            if (inj >= INJ_RESERVED_OPCODE) inj = INJ_NONE;
        }
    } else {
        buf_put(&p, m.d, m.n);
    }

    bool needs_cont = inj == INJ_NEW_DATA || (inj == INJ_RSV1 && z->deflate);
    if (needs_cont && nfrag < 2) nfrag = 2;
    size_t inj_at = inj >= INJ_RESERVED_OPCODE ? in_u8(in) % nfrag : SIZE_MAX;
    if (needs_cont && inj_at == 0) inj_at = 1;

    size_t cuts[9];
    cuts[0] = 0;
    cuts[nfrag] = p.n;
    for (size_t j = 1; j < nfrag; j++) cuts[j] = p.n * in_u8(in) / 255;
    for (size_t j = 1; j < nfrag; j++)   /* sort */
        for (size_t k = j; k > 1 && cuts[k - 1] > cuts[k]; k--) {
            size_t t = cuts[k];
            cuts[k] = cuts[k - 1];
            cuts[k - 1] = t;
        }

    /* emit, and judge each frame as the session must */
    size_t cum = 0, first_pay = SIZE_MAX;
    for (size_t j = 0; j < nfrag; j++) {
        if (j > 0 && density && (in_u8(in) & 3) < density) {
            uint8_t c = in_u8(in);
            if (c == 0xff) peer_close(z);
            else peer_control(z, c & 1 ? WS_OP_PONG : WS_OP_PING);
        }
        bool fin = j == nfrag - 1;
        uint8_t op = j == 0 ? opcode : WS_OP_CONT, rsv = compressed && j == 0 ? 0x40 : 0;
        bool flip = false, nonmin = false, bad = false;
        size_t flen = cuts[j + 1] - cuts[j];
        if (j == inj_at) {
            uint8_t junk[200];
            memset(junk, 'j', sizeof junk);
            sent s = {0, 0, 0};
            bool insert = true;
            uint8_t a = in_u8(in), b = in_u8(in);
            switch (inj) {
            case INJ_RESERVED_OPCODE: {
                static const uint8_t ops[10] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
                s = emit_frame(z, true, 0, ops[a % 10], junk, b % 4, false, false);
                break;
            }
            case INJ_BIG_CONTROL:
                s = emit_frame(z, true, 0, (uint8_t)(WS_OP_CLOSE + a % 3), junk, 126 + b % 70, false, false);
                break;
            case INJ_FRAG_CONTROL:
                s = emit_frame(z, false, 0, (uint8_t)(WS_OP_CLOSE + a % 3), junk, b % 8, false, false);
                break;
            case INJ_NEW_DATA:
                s = emit_frame(z, true, 0, a & 1 ? WS_OP_TEXT : WS_OP_BINARY, junk, b % 4, false, false);
                break;
            case INJ_RSV1:
                if (z->deflate && a & 1) {   /* on a control frame */
                    s = emit_frame(z, true, 0x40, WS_OP_PING, junk, 2, false, false);
                } else {                               /* on a continuation, or where not negotiated */
                    insert = false;
                    rsv |= 0x40;
                    bad = true;
                }
                break;
            case INJ_RSV23:
                insert = false;
                rsv |= a & 1 ? 0x20 : 0x10;
                bad = true;
                break;
            case INJ_BAD_MASK:
            case INJ_NONMINIMAL:
                insert = false;
                if (inj == INJ_NONMINIMAL && flen <= 0xFFFF) nonmin = true;
                else flip = true;
                bad = true;
                break;
            default:
                insert = false;
                break;
            }
            if (insert) push_item(z, IT_ERROR, 0, NULL, 0, 0, ACC_1002, s.hdr_end, s.hdr_end);
        }
        sent s = emit_frame(z, fin, rsv, op, p.d + cuts[j], flen, flip, nonmin);
        if (bad) {
            push_item(z, IT_ERROR, 0, NULL, 0, 0, ACC_1002, s.hdr_end, s.hdr_end);
        } else if (!compressed) {
            cum += flen;
            if (cum > z->cfg.max_message) {
                push_item(z, IT_ERROR, 0, NULL, 0, 0, ACC_1009, s.hdr_end, s.hdr_end);
            } else if (bad_at < m.n && bad_at >= cuts[j] && bad_at < cuts[j + 1]) {
                size_t at = s.pay_start + (bad_at - cuts[j]) + 1;   /* fail fast: at that byte */
                push_item(z, IT_ERROR, 0, NULL, 0, 0, ACC_1007, at, at);
            } else if (fin) {
                if (!complete) push_item(z, IT_ERROR, 0, NULL, 0, 0, ACC_1007, s.end, s.end);
                else push_item(z, IT_MSG, opcode, m.d, m.n, 0, 0, s.end, s.end);
            }
        } else {
            if (first_pay == SIZE_MAX && flen) first_pay = s.pay_start;
            if (fin) {
                if (cerr) push_item(z, IT_ERROR, 0, NULL, 0, 0, cerr, first_pay + 1, s.end);
                else push_item(z, IT_MSG, opcode, m.d, m.n, 0, 0, s.end, s.end);
            }
        }
    }
    buf_free(&m);
    buf_free(&p);
}

static void peer_bad(fz *z)
{
    input *in = &z->in;
    enum inject inj = 1 + in_u8(in) % (INJ_COUNT - 1);
    if (inj == INJ_BAD_DEFLATE && !z->deflate) inj = INJ_RSV1;
    if (inj == INJ_TOO_BIG && z->cfg.max_message > 100000) inj = INJ_RESERVED_OPCODE;
    if (inj == INJ_CONT_ALONE) {
        uint8_t b = in_u8(in);
        sent s = emit_frame(z, b & 1, 0, WS_OP_CONT, (const uint8_t *)"abc", b % 4, false, false);
        push_item(z, IT_ERROR, 0, NULL, 0, 0, ACC_1002, s.hdr_end, s.hdr_end);
    } else if (inj == INJ_BAD_CLOSE) {
        static const uint16_t bad_codes[12] = {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
        uint8_t b = in_u8(in);
        uint8_t pl[8] = {0x03, 0xE8, 'o', 'k', 0, 0, 0, 0};
        size_t n;
        unsigned acc = ACC_1002;
        if (b % 3 == 0) {
            n = 1;
        } else if (b % 3 == 1) {
            pl[0] = (uint8_t)(bad_codes[(b >> 2) % 12] >> 8);
            pl[1] = (uint8_t)bad_codes[(b >> 2) % 12];
            n = 2 + (b >> 7);
        } else {
            memcpy(pl + 2, bad_utf8[(b >> 2) & 7], strlen(bad_utf8[(b >> 2) & 7]));
            n = 2 + strlen(bad_utf8[(b >> 2) & 7]);
            acc = ACC_1007;
        }
        sent s = emit_frame(z, true, 0, WS_OP_CLOSE, pl, n, false, false);
        push_item(z, IT_ERROR, 0, NULL, 0, 0, acc, s.end, s.end);
    } else {
        peer_message(z, inj, false);
    }
}

static void peer_garbage(fz *z)
{
    buf g = {0};
    in_bytes(&z->in, &g, in_u8(&z->in) % 64);
    if (!z->terminal) z->chaos = true;
    buf_put(&z->stream, g.d, g.n);
    buf_free(&g);
}

/* ---- operations ---- */

static void op_send(fz *z)
{
    static const uint8_t ops[4] = {WS_OP_TEXT, WS_OP_BINARY, WS_OP_PING, WS_OP_PONG};
    uint8_t b = in_u8(&z->in);
    uint8_t op = ops[b & 3];
    buf d = {0};
    if (op & 8) {
        in_bytes(&z->in, &d, in_u8(&z->in) % (WS_MAX_CONTROL_PAYLOAD + 1));
    } else if (b & 0x10 && z->sent_bytes < STREAM_CAP) {
        bytes_from_rng(&z->rng, &d, 1000 + (rnd(&z->rng) % 80000), op == WS_OP_TEXT);
    } else {
        size_t n = in_u8(&z->in);
        if (op == WS_OP_TEXT) text_from_input(&z->in, &d, n, SIZE_MAX);
        else in_bytes(&z->in, &d, n);
    }
    if (b & 0x20 && !(op & 8)) local_publish(z, op, d.d ? d.d : (const uint8_t *)"", d.n);
    else local_send(z, op, d.d, d.n, b & 4);
    buf_free(&d);
}

static void op_feed(fz *z)
{
    uint8_t b = in_u8(&z->in);
    unsigned chunks = 1 + (b & 7);
    for (unsigned i = 0; i < chunks; i++) {
        size_t c = chunk_size(in_u8(&z->in));
        feed_chunk(z, c, b & 8 ? true : b & 0x10 ? i & 1 : false);
        if (z->s.paused) break;
    }
}

static void run_op(fz *z)
{
    input *in = &z->in;
    uint8_t op = in_u8(in);
    bool room = z->stream.n < STREAM_CAP;
    TRACE("op %u\n", op & 15);
    switch (op & 15) {
    case 0:
    case 1:
        if (room) peer_message(z, INJ_NONE, op & 1);
        break;
    case 2:
        if (room) peer_control(z, WS_OP_PING);
        break;
    case 3:
        if (room) peer_control(z, WS_OP_PONG);
        break;
    case 4:
        if (room) peer_close(z);
        break;
    case 5:
        if (room) peer_bad(z);
        break;
    case 6:
        if (room) peer_garbage(z);
        break;
    case 7:
    case 8:
        op_feed(z);
        break;
    case 9:
        op_send(z);
        break;
    case 10: {
        uint16_t code;
        buf reason = {0};
        close_args(z, in_u8(in), &code, &reason, true);
        local_close(z, code, reason.d, reason.n);
        buf_free(&reason);
        break;
    }
    case 11:
        z->s.paused = in_u8(in) & 1;
        break;
    case 12:
        z->act = (enum cb_act)(in_u8(in) % ACT_COUNT);
        z->ping_bits = in_u8(in);
        break;
    case 13: {
        uint8_t b = in_u8(in);
        z->break_write = b < 128 ? b % 4 : -1;
        break;
    }
    case 14:
        if (in_u8(in) > 200) local_abort(z, WS_CLOSE_GOING_AWAY, "host aborts");
        break;
    case 15:
        feed_all(z);
        break;
    }
}

/* ---- setup ---- */

static const size_t MAX_MESSAGE[8] = {1u << 20, 64, 1000, 20000, 70000, 300, 100000, 16};
static const size_t DEFLATE_MIN[4] = {0, 1, 20, 200};

static void setup(fz *z)
{
    input *in = &z->in;
    uint8_t c0 = in_u8(in), c1 = in_u8(in), c2 = in_u8(in), c3 = in_u8(in);
    if (trace < 0) trace = getenv("FUZZ_SESSION_TRACE") != NULL;
    z->client = c0 & 1;
    unsigned m = (c0 >> 1) & 3;
    enum deflate_mode mode = m == 0 ? DEFLATE_OFF : m == 1 ? DEFLATE_SHARED : DEFLATE_DEDICATED;
    int level = 1 + (c1 >> 5);
    int sbits = 8 + (c2 & 7), cbits = 8 + ((c2 >> 4) & 7);
    z->rng = 0x9E3779B9u ^ ((uint32_t)c3 << 8 | c2);
    if (!z->rng) z->rng = 1;

    pmd_worker_init(&z->worker, mode, level, DEFLATE_MIN[c0 >> 6]);
    z->cfg = (wss_config){MAX_MESSAGE[(c0 >> 3) & 7], DEFLATE_MIN[c0 >> 6], &z->worker, &z->stats, NULL};

    char ext[256];
    int n = snprintf(ext, sizeof ext, "permessage-deflate%s%s", c1 & 1 ? "; server_no_context_takeover" : "",
                     c1 & 2 ? "; client_no_context_takeover" : "");
    if (c1 & 4) n += snprintf(ext + n, sizeof ext - (size_t)n, "; server_max_window_bits=%d", sbits);
    if (c1 & 8) {
        if (c1 & 16 && !z->client) n += snprintf(ext + n, sizeof ext - (size_t)n, "; client_max_window_bits");
        else n += snprintf(ext + n, sizeof ext - (size_t)n, "; client_max_window_bits=%d", cbits);
    }
    if (mode != DEFLATE_OFF) {
        if (z->client) {
            z->deflate = pmd_client_accept(ext, &z->params);
        } else {
            char resp[256];
            z->deflate = pmd_negotiate(ext, mode, &z->params, resp, sizeof resp);
        }
    }
    if (z->deflate) {
        int peer_bits = z->params.client_max_window_bits;
        if (peer_bits < 9) peer_bits = 9;   /* zlib has no raw 256-byte window (inflating with 15 takes it) */
        int our_bits = z->params.server_max_window_bits ? z->params.server_max_window_bits : 15;
        CHECK(deflateInit2(&z->pdef, level, Z_DEFLATED, -peer_bits, 8, Z_DEFAULT_STRATEGY) == Z_OK);
        /* our window exactly: a back reference beyond it fails */
        CHECK(inflateInit2(&z->oinf, -our_bits) == Z_OK);
        z->zinit = true;
    }
    TRACE("%s, deflate %s (mode %d, %s), max_message %zu, deflate_min %zu\n", z->client ? "client" : "server",
          z->deflate ? "on" : "off", mode, ext, z->cfg.max_message, z->cfg.deflate_min);
    if (z->deflate)
        TRACE("  ours: nct %d bits %d; peer's: nct %d bits %d\n", z->params.server_no_context_takeover,
              z->params.server_max_window_bits, z->params.client_no_context_takeover, z->params.client_max_window_bits);
    wss_init(&z->s, z->client ? WS_ROLE_CLIENT : WS_ROLE_SERVER, z->deflate ? &z->params : NULL, &z->cfg,
             &callbacks, z);
    frame_parser_init(&z->checker, z->client ? WS_ROLE_SERVER : WS_ROLE_CLIENT);
    z->checker.allow_rsv1 = z->deflate;
    z->state = M_OPEN;
    z->break_write = -1;
}

static void finish(fz *z)
{
    /* The host resumes and reads the rest, then calls once more with no
     * bytes (a pending frame end). */
    for (int guard = 0; guard < 1000; guard++) {
        z->s.paused = false;
        feed_all(z);
        if (z->s.paused) continue;
        feed_chunk(z, 0, false);
        if (!z->s.paused) break;
    }
    CHECK(!z->s.paused && z->consumed == z->stream.n);
    if (z->state != M_CLOSED) {
        skip_ignored_pings(z, SIZE_MAX);
        CHECK(z->head == z->nitems);   /* everything sent was reported */
    }
    /* After a close, sending fails and changes nothing. */
    if (z->state != M_OPEN) local_send(z, WS_OP_TEXT, (const uint8_t *)"late", 4, true);
    CHECK(z->s.close_code == (z->state == M_OPEN ? 0 : z->expect_close_code));
    CHECK(z->stats.messages_in == z->messages && z->stats.bytes_in == z->bytes_in);
    CHECK(z->stats.messages_out == z->sent_messages && z->stats.bytes_out == z->sent_bytes);
    CHECK(z->stats.protocol_errors == z->errors && z->errors <= 1);
    if (z->state == M_CLOSED && (z->consumed & 1)) wss_trim(&z->s);
}

static void teardown(fz *z)
{
    wss_free(&z->s);
    pmd_worker_free(&z->worker);
    if (z->zinit) {
        deflateEnd(&z->pdef);
        inflateEnd(&z->oinf);
    }
    for (size_t i = 0; i < z->nitems; i++) free(z->items[i].data);
    free(z->items);
    free(z->local.data);
    buf_free(&z->stream);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz *z = calloc(1, sizeof *z);
    CHECK(z);
    z->in = (input){data, size, 0};
    setup(z);
    while (z->in.i < z->in.n) run_op(z);
    finish(z);
    teardown(z);
    free(z);
    return 0;
}
