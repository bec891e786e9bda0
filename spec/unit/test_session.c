/* test_session.c — unit tests for the WebSocket session (src/ws_session.c):
 * message assembly, control frames between fragments, UTF-8 across frames
 * and failing fast, the close handshake both ways, masking by role,
 * permessage-deflate (shared and dedicated), max_message, sending after a
 * close, and one error callback per session.
 *
 *   make -C spec/unit            # builds and runs this and test_parsers
 *   spec/unit/test_session -v    # also name every test that passes
 *
 * Same conventions as test_parsers.c: each TEST is a function, CHECK
 * records a failure and goes on, the last line is "N passed, N failed".
 *
 * Each test drives a session as a host does and compares what it reports
 * with an event log: "ping:<payload>", "pong:<payload>", "msg:<text|binary>:
 * <payload>", "closed:<code>:<reason>", "error:<code>", and what it writes,
 * parsed back here: "w:<opcode name>[+z]:<payload>" ("+z": RSV1, the payload
 * inflated), "w:close:<code>:<reason>". */
#include "deflate.h"
#include "frame.h"
#include "ws_session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "unit.h"

/* ---- a host that records ---- */

typedef struct host {
    ws_session s;
    pmd_worker w;
    wss_config cfg;
    wss_stats stats;
    bool client;
    char log[8192];
    size_t loglen;
    int errors, closed, writes;
    bool ping_handled;       /* what the ping callback returns */
    bool pause_on_ping;      /* the ping callback pauses reading */
    z_stream inf;            /* inflates what the session sends (RSV1) */
    bool inf_ready;
    bool inf_reset;          /* reset it per message (our no context takeover) */
    uint8_t last[1 << 16];   /* the last frame written, unmasked (before inflating) */
    size_t last_len;
    uint8_t last_hdr[WS_MAX_HEADER];
    const uint8_t *expect;   /* set: messages are compared with it, logged as "msg:<len>:<ok|bad>" */
    size_t expect_len;
} host;

static void logf_(host *h, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(h->log + h->loglen, sizeof h->log - h->loglen, fmt, ap);
    va_end(ap);
    if (n > 0) h->loglen += (size_t)n < sizeof h->log - h->loglen ? (size_t)n : sizeof h->log - h->loglen - 1;
}

static void on_message(void *u, uint8_t opcode, const uint8_t *d, size_t n)
{
    host *h = u;
    if (h->expect)
        logf_(h, "msg:%zu:%s ", n, n == h->expect_len && memcmp(d, h->expect, n) == 0 ? "ok" : "bad");
    else
        logf_(h, "msg:%s:%.*s ", opcode == WS_OP_TEXT ? "text" : "binary", (int)n, (const char *)d);
}

static bool on_ping(void *u, const uint8_t *d, size_t n)
{
    host *h = u;
    logf_(h, "ping:%.*s ", (int)n, (const char *)d);
    if (h->pause_on_ping) h->s.paused = true;
    return h->ping_handled;
}

static void on_pong(void *u, const uint8_t *d, size_t n) { logf_(u, "pong:%.*s ", (int)n, (const char *)d); }

static void on_closed(void *u, uint16_t code, const char *reason, size_t n)
{
    host *h = u;
    h->closed++;
    logf_(h, "closed:%u:%.*s ", code, (int)n, reason);
}

static void on_error(void *u, uint16_t code, const char *why)
{
    host *h = u;
    h->errors++;
    logf_(h, "error:%u ", code);
}

static const char *opname(uint8_t op)
{
    switch (op) {
    case WS_OP_TEXT: return "text";
    case WS_OP_BINARY: return "binary";
    case WS_OP_PING: return "ping";
    case WS_OP_PONG: return "pong";
    case WS_OP_CLOSE: return "close";
    default: return "?";
    }
}

/* Inflates p (RSV1 payload) with the host's stream; returns the length. */
static size_t inflate_into(host *h, const uint8_t *p, size_t n, uint8_t *out, size_t cap)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    if (h->inf_reset) inflateReset(&h->inf);
    size_t got = 0;
    for (int pass = 0; pass < 2; pass++) {
        h->inf.next_in = (Bytef *)(pass ? tail : p);
        h->inf.avail_in = (uInt)(pass ? 4 : n);
        h->inf.next_out = out + got;
        h->inf.avail_out = (uInt)(cap - got);
        int r = inflate(&h->inf, Z_SYNC_FLUSH);
        CHECKF(r == Z_OK || r == Z_BUF_ERROR, "inflate %d", r);
        CHECK(h->inf.avail_in == 0);
        got = cap - h->inf.avail_out;
    }
    return got;
}

/* Parses the frame the session hands over (hdr + payload) like the peer. */
static int on_write(void *u, const uint8_t *hdr, size_t hlen, const uint8_t *p, size_t n, write_done_fn done,
                    void *ud)
{
    host *h = u;
    h->writes++;
    CHECK(hlen >= 2 && hlen <= WS_MAX_HEADER);
    memcpy(h->last_hdr, hdr, hlen);
    bool fin = hdr[0] & 0x80, rsv1 = hdr[0] & 0x40, masked = hdr[1] & 0x80;
    uint8_t op = hdr[0] & 0x0F;
    uint64_t len = hdr[1] & 0x7F;
    size_t i = 2;
    if (len == 126) len = (uint64_t)hdr[2] << 8 | hdr[3], i = 4;
    else if (len == 127) for (len = 0, i = 2; i < 10; i++) len = len << 8 | hdr[i];
    CHECK(fin && !(hdr[0] & 0x30));
    CHECK(len == n);
    CHECKF(masked == h->client, "a %s frame %s masked", h->client ? "client" : "server", masked ? "is" : "is not");
    CHECK(hlen == i + (masked ? 4 : 0));
    CHECK(n <= sizeof h->last);
    memcpy(h->last, p, n);
    if (masked) frame_mask(h->last, n, hdr + i, 0);
    h->last_len = n;
    if (op == WS_OP_CLOSE) {
        if (n >= 2) logf_(h, "w:close:%u:%.*s ", h->last[0] << 8 | h->last[1], (int)n - 2, (const char *)h->last + 2);
        else logf_(h, "w:close ");
    } else if (rsv1) {
        static uint8_t out[1 << 16];
        CHECK(h->inf_ready);
        size_t m = h->inf_ready ? inflate_into(h, h->last, n, out, sizeof out) : 0;
        logf_(h, "w:%s+z:%.*s ", opname(op), (int)m, (const char *)out);
    } else {
        logf_(h, "w:%s:%.*s ", opname(op), (int)n, (const char *)h->last);
    }
    if (done) done(ud, 0);
    return 0;
}

static const wss_callbacks callbacks = {on_message, on_ping, on_pong, on_closed, on_error, on_write};

/* deflate: NULL, or the negotiated parameters (our point of view). */
static void host_init(host *h, enum ws_role role, const pmd_params *deflate, enum deflate_mode mode,
                      size_t max_message)
{
    memset(h, 0, sizeof *h);
    h->client = role == WS_ROLE_CLIENT;
    pmd_worker_init(&h->w, mode, 6, 0);
    h->cfg = (wss_config){max_message, 0, &h->w, &h->stats, NULL};
    if (deflate) {
        h->inf_ready = inflateInit2(&h->inf, -15) == Z_OK;
        h->inf_reset = deflate->server_no_context_takeover;
    }
    wss_init(&h->s, role, deflate, &h->cfg, &callbacks, h);
}

static void host_free(host *h)
{
    wss_free(&h->s);
    pmd_worker_free(&h->w);
    if (h->inf_ready) inflateEnd(&h->inf);
}

/* Feeds a copy of data (the session unmasks in place); returns what it took. */
static size_t feed(host *h, const void *data, size_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    if (n) memcpy(b, data, n);
    size_t used = wss_feed(&h->s, b, n);
    free(b);
    return used;
}

static bool log_is(host *h, const char *want)
{
    return CHECKF(strcmp(h->log, want) == 0, "log \"%s\", want \"%s\"", h->log, want);
}

/* ---- the peer's frames ---- */

static const uint8_t KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends a frame to out (at *n): masked when to a server. */
static void frame(uint8_t *out, size_t *n, bool to_server, bool fin, uint8_t rsv, uint8_t opcode, const void *payload,
                  size_t len)
{
    size_t o = *n;
    out[o++] = (uint8_t)((fin ? 0x80 : 0) | rsv | opcode);
    uint8_t m = to_server ? 0x80 : 0;
    if (len < 126) {
        out[o++] = (uint8_t)(m | len);
    } else {
        out[o++] = m | 126;
        out[o++] = (uint8_t)(len >> 8);
        out[o++] = (uint8_t)len;
    }
    if (to_server) {
        memcpy(out + o, KEY, 4);
        o += 4;
    }
    for (size_t i = 0; i < len; i++) out[o + i] = ((const uint8_t *)payload)[i] ^ (to_server ? KEY[i & 3] : 0);
    *n = o + len;
}

static void close_frame(uint8_t *out, size_t *n, bool to_server, uint16_t code, const char *reason)
{
    uint8_t p[125] = {(uint8_t)(code >> 8), (uint8_t)code};
    size_t rl = strlen(reason);
    memcpy(p + 2, reason, rl);
    frame(out, n, to_server, true, 0, WS_OP_CLOSE, p, 2 + rl);
}

/* Raw deflate with a sync flush, the 00 00 ff ff dropped (RFC 7692 7.2.1). */
static size_t compress_msg(z_stream *z, const char *msg, uint8_t *out, size_t cap)
{
    z->next_in = (Bytef *)msg;
    z->avail_in = (uInt)strlen(msg);
    z->next_out = out;
    z->avail_out = (uInt)cap;
    CHECK(deflate(z, Z_SYNC_FLUSH) == Z_OK);
    size_t n = cap - z->avail_out;
    CHECK(n >= 4 && memcmp(out + n - 4, "\x00\x00\xff\xff", 4) == 0);
    return n - 4;
}

/* ---- tests ---- */

TEST(fragmented_text_with_ping_between)
{
    uint8_t in[256];
    size_t n = 0;
    frame(in, &n, true, false, 0, WS_OP_TEXT, "Hel", 3);
    frame(in, &n, true, true, 0, WS_OP_PING, "p1", 2);
    frame(in, &n, true, false, 0, WS_OP_CONT, "l", 1);
    frame(in, &n, true, true, 0, WS_OP_PONG, "q", 1);
    frame(in, &n, true, true, 0, WS_OP_CONT, "o", 1);
    static const char *want = "ping:p1 w:pong:p1 pong:q msg:text:Hello ";
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        host h;
        host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
        if (bytewise) {
            for (size_t i = 0; i < n; i++) CHECK(feed(&h, in + i, 1) == 1);
        } else {
            CHECK(feed(&h, in, n) == n);
        }
        log_is(&h, want);
        CHECK(wss_is_open(&h.s) && h.stats.messages_in == 1);
        host_free(&h);
    }
}

TEST(ping_answered_unless_the_callback_handles_it)
{
    uint8_t in[64];
    size_t n = 0;
    frame(in, &n, true, true, 0, WS_OP_PING, "a", 1);
    frame(in, &n, true, true, 0, WS_OP_PING, "", 0);
    host h;
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    CHECK(feed(&h, in, n) == n);
    log_is(&h, "ping:a w:pong:a ping: w:pong: ");
    host_free(&h);
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    h.ping_handled = true;
    CHECK(feed(&h, in, n) == n);
    log_is(&h, "ping:a ping: ");
    CHECK(h.writes == 0);
    host_free(&h);
}

TEST(control_payload_split_over_reads)
{
    /* A control payload is used where it lies when it comes whole, else
     * collected over reads in a buffer that lives only until the frame's
     * end; every split of a full-size ping and of a close frame. */
    uint8_t big[WS_MAX_CONTROL_PAYLOAD];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)('a' + i % 26);
    uint8_t in[256];
    size_t n = 0;
    frame(in, &n, true, true, 0, WS_OP_PING, big, sizeof big);
    size_t ping_end = n;
    close_frame(in, &n, true, 1000, "bye");
    char want[512];
    snprintf(want, sizeof want, "ping:%.*s w:pong:%.*s w:close:1000: closed:1000:bye ", (int)sizeof big,
             (const char *)big, (int)sizeof big, (const char *)big);
    for (size_t cut = 1; cut < n; cut++) {
        host h;
        host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
        CHECK(feed(&h, in, cut) == cut);
        CHECK(!h.s.ctl || (cut > 6 && cut < ping_end) || cut > ping_end + 6);   /* only mid-payload */
        CHECK(feed(&h, in + cut, n - cut) == n - cut);
        if (!CHECKF(strcmp(h.log, want) == 0, "cut at %zu: %s", cut, h.log)) break;
        CHECK(!h.s.ctl);
        host_free(&h);
    }
    /* Freed in the middle of a control frame: its buffer goes too (LeakSanitizer). */
    host h;
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    CHECK(feed(&h, in, 40) == 40);
    CHECK(h.s.ctl != NULL);
    host_free(&h);
}

TEST(utf8_split_across_frames)
{
    /* "a€!😀" with the euro sign and the emoji cut inside, in both roles */
    for (int client = 0; client < 2; client++) {
        uint8_t in[128];
        size_t n = 0;
        frame(in, &n, !client, false, 0, WS_OP_TEXT, "a\xe2", 2);
        frame(in, &n, !client, false, 0, WS_OP_CONT, "\x82", 1);
        frame(in, &n, !client, false, 0, WS_OP_CONT, "\xac!\xf0\x9f", 4);
        frame(in, &n, !client, true, 0, WS_OP_CONT, "\x98\x80", 2);
        host h;
        host_init(&h, client ? WS_ROLE_CLIENT : WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
        CHECK(feed(&h, in, n) == n);
        log_is(&h, "msg:text:a\xe2\x82\xac!\xf0\x9f\x98\x80 ");
        host_free(&h);
    }
}

TEST(invalid_utf8_fails_fast_with_1007)
{
    /* The first fragment is enough: the message has not ended. */
    static const char *const bad[] = {"ok\xff", "ok\xe0\x80", "\xed\xa0", "\xc0", "x\xf4\x90"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint8_t in[64];
        size_t n = 0;
        frame(in, &n, true, false, 0, WS_OP_TEXT, bad[i], strlen(bad[i]));
        host h;
        host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
        CHECK(feed(&h, in, n) == n);
        CHECKF(h.errors == 1, "case %zu", i);
        CHECKF(strncmp(h.log, "w:close:1007:", 13) == 0 && strstr(h.log, "error:1007 "), "case %zu: %s", i, h.log);
        CHECK(wss_is_closed(&h.s));
        host_free(&h);
    }
    /* A character cut at the end of the message fails at its end. */
    uint8_t in[64];
    size_t n = 0;
    frame(in, &n, true, false, 0, WS_OP_TEXT, "ab\xe2\x82", 4);
    host h;
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    CHECK(feed(&h, in, n) == n && h.errors == 0);   /* could still be valid */
    n = 0;
    frame(in, &n, true, true, 0, WS_OP_CONT, "", 0);
    CHECK(feed(&h, in, n) == n && h.errors == 1 && strstr(h.log, "error:1007 "));
    host_free(&h);
}

TEST(close_handshake_we_close_first)
{
    host h;
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    wss_close(&h.s, 1000, "bye", 3);
    CHECK(!wss_is_open(&h.s) && !wss_is_closed(&h.s));
    wss_close(&h.s, 1001, "again", 5);   /* a no-op now */
    /* The peer's messages still count; its pings get no answer. */
    uint8_t in[128];
    size_t n = 0;
    frame(in, &n, true, true, 0, WS_OP_TEXT, "late", 4);
    frame(in, &n, true, true, 0, WS_OP_PING, "p", 1);
    close_frame(in, &n, true, 1000, "ok");
    frame(in, &n, true, true, 0, WS_OP_TEXT, "after", 5);
    CHECK(feed(&h, in, n) == n);
    log_is(&h, "w:close:1000:bye msg:text:late closed:1000:bye ");
    CHECK(h.closed == 1 && h.writes == 1 && wss_is_closed(&h.s));
    CHECK(h.s.close_code == 1000);
    host_free(&h);
}

TEST(close_handshake_peer_closes_first)
{
    for (int client = 0; client < 2; client++) {
        host h;
        host_init(&h, client ? WS_ROLE_CLIENT : WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
        uint8_t in[128];
        size_t n = 0;
        close_frame(in, &n, !client, 1001, "going");
        frame(in, &n, !client, true, 0, WS_OP_PING, "p", 1);
        CHECK(feed(&h, in, n) == n);
        /* our close echoes the code (RFC 6455 5.5.1), then the callback */
        log_is(&h, "w:close:1001: closed:1001:going ");
        CHECK(h.closed == 1 && wss_is_closed(&h.s) && h.s.close_code == 1001);
        host_free(&h);
    }
    /* An empty close frame is echoed empty; the code reads 1005. */
    host h;
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    uint8_t in[16];
    size_t n = 0;
    frame(in, &n, true, true, 0, WS_OP_CLOSE, "", 0);
    CHECK(feed(&h, in, n) == n);
    log_is(&h, "w:close closed:1005: ");
    host_free(&h);
}

TEST(client_role_masks_its_frames)
{
    host h;
    host_init(&h, WS_ROLE_CLIENT, NULL, DEFLATE_OFF, 1000);
    CHECK(wss_send(&h.s, WS_OP_TEXT, (const uint8_t *)"Hello", 5, NULL, NULL) == 0);
    CHECK(h.last_hdr[1] & 0x80);
    CHECK(wss_send(&h.s, WS_OP_PING, (const uint8_t *)"p", 1, NULL, NULL) == 0);
    wss_close(&h.s, 1000, "", 0);
    log_is(&h, "w:text:Hello w:ping:p w:close:1000: ");   /* on_write checks every mask bit */
    host_free(&h);

    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    CHECK(wss_send(&h.s, WS_OP_BINARY, (const uint8_t *)"x", 1, NULL, NULL) == 0);
    CHECK(!(h.last_hdr[1] & 0x80) && h.last_hdr[0] == 0x82);
    host_free(&h);

    /* The wrong masking from the peer is a protocol error either way. */
    for (int client = 0; client < 2; client++) {
        uint8_t in[32];
        size_t n = 0;
        frame(in, &n, client, true, 0, WS_OP_TEXT, "x", 1);
        host_init(&h, client ? WS_ROLE_CLIENT : WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
        CHECK(feed(&h, in, n) == n);
        CHECKF(h.errors == 1 && strstr(h.log, "error:1002 ") && !strstr(h.log, "msg:"), "%s", h.log);
        host_free(&h);
    }
}

/* A peer message compressed with z, fragmented in two, RSV1 on the first. */
static void compressed_msg(z_stream *z, const char *msg, uint8_t *in, size_t *n, bool to_server)
{
    uint8_t c[1024];
    size_t cl = compress_msg(z, msg, c, sizeof c);
    frame(in, n, to_server, false, 0x40, WS_OP_TEXT, c, cl / 2);
    frame(in, n, to_server, true, 0, WS_OP_CONT, c + cl / 2, cl - cl / 2);
}

TEST(deflate_shared_round_trip)
{
    pmd_params pp;
    char resp[256];
    CHECK(pmd_negotiate("permessage-deflate; client_max_window_bits", DEFLATE_SHARED, &pp, resp, sizeof resp));
    CHECK(pp.server_no_context_takeover && pp.client_no_context_takeover);
    host h;
    host_init(&h, WS_ROLE_SERVER, &pp, DEFLATE_SHARED, 1000);
    static const char msg[] = "hello hello hello hello hello";
    for (int i = 0; i < 2; i++) CHECK(wss_send(&h.s, WS_OP_TEXT, (const uint8_t *)msg, strlen(msg), NULL, NULL) == 0);
    CHECK(h.last_len < strlen(msg));
    /* The peer compresses each message afresh (client_no_context_takeover). */
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    uint8_t in[512];
    size_t n = 0;
    compressed_msg(&z, "abcabcabcabc", in, &n, true);
    deflateReset(&z);
    compressed_msg(&z, "€ uncompressed size 24 €", in, &n, true);
    CHECK(feed(&h, in, n) == n);
    log_is(&h, "w:text+z:hello hello hello hello hello w:text+z:hello hello hello hello hello "
               "msg:text:abcabcabcabc msg:text:€ uncompressed size 24 € ");
    deflateEnd(&z);
    host_free(&h);

    /* Under deflate_min a message goes out plain; controls never compressed. */
    host_init(&h, WS_ROLE_SERVER, &pp, DEFLATE_SHARED, 1000);
    h.cfg.deflate_min = 10;
    CHECK(wss_send(&h.s, WS_OP_TEXT, (const uint8_t *)"short", 5, NULL, NULL) == 0);
    CHECK(wss_send(&h.s, WS_OP_TEXT, (const uint8_t *)"long enough", 11, NULL, NULL) == 0);
    CHECK(wss_send(&h.s, WS_OP_PING, (const uint8_t *)"ping payload", 12, NULL, NULL) == 0);
    log_is(&h, "w:text:short w:text+z:long enough w:ping:ping payload ");
    host_free(&h);
}

TEST(deflate_dedicated_round_trip)
{
    /* Context takeover both ways; the client's side too. */
    for (int client = 0; client < 2; client++) {
        pmd_params pp;
        char resp[256];
        if (client) CHECK(pmd_client_accept("permessage-deflate; client_max_window_bits=12", &pp));
        else CHECK(pmd_negotiate("permessage-deflate", DEFLATE_DEDICATED, &pp, resp, sizeof resp));
        CHECK(!pp.server_no_context_takeover && !pp.client_no_context_takeover);
        host h;
        host_init(&h, client ? WS_ROLE_CLIENT : WS_ROLE_SERVER, &pp, DEFLATE_DEDICATED, 1000);
        static const char msg[] = "the same words, twice over";
        CHECK(wss_send(&h.s, WS_OP_BINARY, (const uint8_t *)msg, strlen(msg), NULL, NULL) == 0);
        size_t first = h.last_len;
        CHECK(h.last_hdr[0] == 0xC2);   /* FIN, RSV1, binary */
        CHECK(wss_send(&h.s, WS_OP_BINARY, (const uint8_t *)msg, strlen(msg), NULL, NULL) == 0);
        CHECKF(h.last_len < first, "the second copy refers to the first: %zu < %zu", h.last_len, first);
        z_stream z;
        memset(&z, 0, sizeof z);
        CHECK(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
        uint8_t in[512];
        size_t n = 0;
        compressed_msg(&z, "context takeover", in, &n, !client);
        compressed_msg(&z, "context takeover", in, &n, !client);   /* back references into the first */
        CHECK(feed(&h, in, n) == n);
        log_is(&h, "w:binary+z:the same words, twice over w:binary+z:the same words, twice over "
                   "msg:text:context takeover msg:text:context takeover ");
        deflateEnd(&z);
        host_free(&h);
    }
}

TEST(max_message_1009)
{
    host h;
    uint8_t in[512];
    size_t n = 0;
    /* One frame over the limit: failed at its header, before its payload. */
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 10);
    frame(in, &n, true, true, 0, WS_OP_BINARY, "0123456789A", 11);
    CHECK(feed(&h, in, 6) == 6);
    log_is(&h, "w:close:1009:message over the size limit error:1009 ");
    host_free(&h);
    /* Exactly the limit is fine; one fragment more is not. */
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 10);
    n = 0;
    frame(in, &n, true, true, 0, WS_OP_BINARY, "0123456789", 10);
    frame(in, &n, true, false, 0, WS_OP_BINARY, "01234", 5);
    frame(in, &n, true, true, 0, WS_OP_CONT, "56789A", 6);
    CHECK(feed(&h, in, n) == n);
    CHECKF(strncmp(h.log, "msg:binary:0123456789 w:close:1009:", 35) == 0 && strstr(h.log, "error:1009 "), "%s",
           h.log);
    CHECK(h.errors == 1);
    host_free(&h);
    /* Compressed: judged by the inflated size. */
    pmd_params pp;
    char resp[256];
    CHECK(pmd_negotiate("permessage-deflate", DEFLATE_SHARED, &pp, resp, sizeof resp));
    host_init(&h, WS_ROLE_SERVER, &pp, DEFLATE_SHARED, 100);
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    char big[102];
    memset(big, 'a', 101);
    big[101] = '\0';
    uint8_t c[256];
    size_t cl = compress_msg(&z, big, c, sizeof c);
    CHECK(cl < 20);
    n = 0;
    frame(in, &n, true, true, 0x40, WS_OP_TEXT, c, cl);
    CHECK(feed(&h, in, n) == n);
    CHECKF(h.errors == 1 && strstr(h.log, "error:1009 ") && !strstr(h.log, "msg:"), "%s", h.log);
    deflateEnd(&z);
    host_free(&h);
}

static int done_calls, done_status;
static void count_done(void *ud, int status)
{
    done_calls++;
    done_status = status;
}

TEST(send_after_close_fails_with_epipe)
{
    host h;
    /* after our close */
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    wss_close(&h.s, 1000, "", 0);
    int writes = h.writes;
    done_calls = 0;
    CHECK(wss_send(&h.s, WS_OP_TEXT, (const uint8_t *)"x", 1, count_done, NULL) == -EPIPE);
    CHECK(wss_send(&h.s, WS_OP_PING, (const uint8_t *)"", 0, NULL, NULL) == -EPIPE);
    CHECK(done_calls == 1 && done_status == -EPIPE && h.writes == writes);
    host_free(&h);
    /* after the peer's close, after an error, after an abort */
    for (int how = 0; how < 3; how++) {
        host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
        uint8_t in[32];
        size_t n = 0;
        if (how == 0) close_frame(in, &n, true, 1000, "");
        if (how == 1) frame(in, &n, true, true, 0, 0x3, "", 0);   /* reserved opcode */
        if (how == 2) wss_abort(&h.s, WS_CLOSE_ABNORMAL, "gone");
        CHECK(feed(&h, in, n) == n);
        CHECK(wss_is_closed(&h.s));
        writes = h.writes;
        done_calls = 0;
        CHECK(wss_send(&h.s, WS_OP_BINARY, (const uint8_t *)"x", 1, count_done, NULL) == -EPIPE);
        CHECK(done_calls == 1 && done_status == -EPIPE && h.writes == writes);
        host_free(&h);
    }
}

TEST(error_callback_exactly_once)
{
    host h;
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    uint8_t in[128];
    size_t n = 0;
    frame(in, &n, true, true, 0x20, WS_OP_TEXT, "rsv2", 4);   /* RSV2 */
    frame(in, &n, true, true, 0, 0xB, "", 0);                 /* reserved control opcode */
    frame(in, &n, true, true, 0, WS_OP_TEXT, "\xff", 1);      /* invalid UTF-8 */
    close_frame(in, &n, true, 1000, "");
    CHECK(feed(&h, in, n) == n);
    CHECK(feed(&h, in, n) == n);   /* a closed session takes and ignores everything */
    log_is(&h, "w:close:1002:reserved bit set error:1002 ");
    CHECK(h.errors == 1 && h.closed == 0 && h.writes == 1);
    CHECK(h.stats.protocol_errors == 1 && h.s.close_code == 1002);
    wss_close(&h.s, 1000, "", 0);           /* no-op */
    wss_abort(&h.s, WS_CLOSE_ABNORMAL, "");   /* no callback */
    CHECK(h.errors == 1 && h.writes == 1);
    host_free(&h);

    /* After our close, a violation is reported without a second close frame. */
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    wss_close(&h.s, 4000, "mine", 4);
    n = 0;
    frame(in, &n, true, false, 0, WS_OP_PING, "", 0);   /* fragmented control frame */
    CHECK(feed(&h, in, n) == n);
    log_is(&h, "w:close:4000:mine error:1002 ");
    CHECK(h.s.close_code == 4000);
    host_free(&h);
}

TEST(bad_close_frames)
{
    static const struct { const char *p; size_t n; const char *want; } cases[] = {
        {"\x03", 1, "error:1002 "},                 /* one byte */
        {"\x03\xed", 2, "error:1002 "},             /* 1005 must not be sent */
        {"\x03\xe7", 2, "error:1002 "},             /* 999 */
        {"\x13\x88", 2, "error:1002 "},             /* 5000 */
        {"\x03\xe8\xc0\xaf", 4, "error:1007 "},     /* reason not UTF-8 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        host h;
        host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
        uint8_t in[32];
        size_t n = 0;
        frame(in, &n, true, true, 0, WS_OP_CLOSE, cases[i].p, cases[i].n);
        CHECK(feed(&h, in, n) == n);
        CHECKF(strstr(h.log, cases[i].want) && h.errors == 1 && h.closed == 0, "case %zu: %s", i, h.log);
        host_free(&h);
    }
}

TEST(pause_stops_before_the_next_frame)
{
    host h;
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1000);
    h.pause_on_ping = true;
    uint8_t in[64];
    size_t n = 0;
    frame(in, &n, true, true, 0, WS_OP_PING, "a", 1);
    size_t first = n;
    frame(in, &n, true, true, 0, WS_OP_TEXT, "next", 4);
    uint8_t copy[64];
    memcpy(copy, in, n);
    size_t used = wss_feed(&h.s, copy, n);
    CHECK(used == first);                              /* stopped after the ping */
    CHECK(memcmp(copy + used, in + used, n - used) == 0);   /* the rest untouched */
    log_is(&h, "ping:a w:pong:a ");                    /* its pong still went out */
    CHECK(wss_feed(&h.s, copy + used, n - used) == 0); /* nothing while paused */
    h.s.paused = false;
    CHECK(wss_feed(&h.s, copy + used, n - used) == n - used);
    log_is(&h, "ping:a w:pong:a msg:text:next ");
    host_free(&h);
}

TEST(large_message_read_in_place)
{
    /* A 40000-byte frame, its payload read straight into the message. */
    enum { LEN = 40000 };
    uint8_t *in = malloc(LEN + 16), *payload = malloc(LEN);
    for (size_t i = 0; i < LEN; i++) payload[i] = (uint8_t)('a' + i % 26);
    size_t n = 0;
    in[n++] = 0x82;
    in[n++] = 0x80 | 126;
    in[n++] = LEN >> 8;
    in[n++] = LEN & 0xFF;
    memcpy(in + n, KEY, 4);
    n += 4;
    for (size_t i = 0; i < LEN; i++) in[n + i] = payload[i] ^ KEY[i & 3];
    host h;
    host_init(&h, WS_ROLE_SERVER, NULL, DEFLATE_OFF, 1 << 20);
    h.expect = payload;
    h.expect_len = LEN;
    size_t room, off = 0;
    CHECK(wss_read_target(&h.s, &room) == NULL);   /* nothing announced yet */
    CHECK(feed(&h, in, 100) == 100);
    off = 100;
    int direct = 0;
    while (off < n + LEN) {
        uint8_t *t = wss_read_target(&h.s, &room);
        size_t k = n + LEN - off;
        if (t) {
            direct++;
            CHECK(room > 0 && room <= k);
            if (k > room) k = room;
            if (k > 5000) k = 5000;   /* a short read */
            memcpy(t, in + off, k);
            CHECK(wss_feed(&h.s, t, k) == k);
        } else {
            CHECK(feed(&h, in + off, k) == k);
        }
        off += k;
    }
    CHECK(direct > 0);
    CHECK(h.stats.messages_in == 1 && h.stats.bytes_in == LEN);
    log_is(&h, "msg:40000:ok ");
    host_free(&h);
    free(in);
    free(payload);
}

/* ---- main ---- */

int main(int argc, char **argv) { return unit_main(argc, argv); }
