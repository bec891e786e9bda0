/* ws_session.c — one WebSocket connection's protocol, pure: message
 * assembly, UTF-8 and size checks, permessage-deflate, control frames and
 * the close handshake. See ws_session.h. */
#include "ws_session.h"
#include "xalloc.h"
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>

/* A message buffer larger than this is not kept between messages, so an
 * idle connection holds no big allocation. */
#define KEEP_MSG_BUFFER (16 * 1024)
/* Below this, reading into a shared buffer and copying costs less than
 * growing the message buffer ahead of the data. */
#define DIRECT_READ_MIN (16 * 1024)

void wss_init(ws_session *s, enum ws_role role, const pmd_params *deflate, const wss_config *cfg,
              const wss_callbacks *cb, void *user)
{
    memset(s, 0, sizeof *s);
    frame_parser_init(&s->parser, role);
    s->client = role == WS_ROLE_CLIENT;
    s->state = WSS_OPEN;
    s->cfg = cfg;
    s->cb = cb;
    s->user = user;
    utf8_init(&s->utf8);
    if (deflate) {
        s->pmd = calloc(1, sizeof *s->pmd);
        if (!s->pmd) abort();
        s->pmd->params = *deflate;
        s->parser.allow_rsv1 = true;
    }
}

/* The message buffer was resized from old bytes: keeps the worker's count
 * of message buffer bytes (wss_config.buffered) in step. Call after
 * anything that may resize it. */
static void count_buffer(ws_session *s, size_t old)
{
    if (s->cfg && s->cfg->buffered && s->msg.cap != old) {
        if (s->msg.cap > old) *s->cfg->buffered += s->msg.cap - old;
        else *s->cfg->buffered -= old - s->msg.cap;
    }
}

static void drop_message(ws_session *s)
{
    size_t old = s->msg.cap;
    free(s->msg.data);
    memset(&s->msg, 0, sizeof s->msg);
    count_buffer(s, old);
    if (s->pmd) {
        pmd_conn_free(s->cfg->pmd, s->pmd);
        free(s->pmd);
        s->pmd = NULL;
    }
}

void wss_free(ws_session *s)
{
    drop_message(s);
    free(s->close_reason);
    s->close_reason = NULL;
    free(s->ctl);
    s->ctl = NULL;
}

void wss_record_close(ws_session *s, uint16_t code, const char *reason, size_t reason_len)
{
    s->close_code = code;
    free(s->close_reason);
    s->close_reason = malloc(reason_len + 1);
    if (!s->close_reason) abort();
    if (reason_len) memcpy(s->close_reason, reason, reason_len);
    s->close_reason[reason_len] = '\0';
}

/* ---- sending ---- */

static int frame_out(ws_session *s, bool compressed, uint8_t opcode, const uint8_t *data, size_t len,
                     write_done_fn done, void *ud)
{
    uint8_t hdr[WS_MAX_HEADER];
    if (!s->client) {
        size_t hlen = frame_write_header(hdr, true, compressed, opcode, len, NULL);
        return s->cb->write(s->user, hdr, hlen, data, len, done, ud);
    }
    /* A client masks every frame (RFC 6455 5.3): mask a copy. */
    uint8_t mask[4];
    if (RAND_bytes(mask, sizeof mask) != 1) {
        if (done) done(ud, -EIO);
        return -EIO;
    }
    size_t hlen = frame_write_header(hdr, true, compressed, opcode, len, mask);
    uint8_t *masked = xmalloc(len);
    if (len) memcpy(masked, data, len);
    frame_mask(masked, len, mask, 0);
    int r = s->cb->write(s->user, hdr, hlen, masked, len, done, ud);
    free(masked);
    return r;
}

int wss_send(ws_session *s, uint8_t opcode, const uint8_t *data, size_t len, write_done_fn done, void *ud)
{
    assert(opcode != WS_OP_CLOSE && opcode != WS_OP_CONT);
    if (s->state != WSS_OPEN) {
        if (done) done(ud, -EPIPE);
        return -EPIPE;
    }
    bool control = opcode & 0x8;
    bool compress = !control && s->pmd && len >= s->cfg->deflate_min && s->pmd->params.server_max_window_bits;
    if (!control && s->cfg->stats) {
        s->cfg->stats->messages_out++;
        s->cfg->stats->bytes_out += len;
    }
    if (compress) {
        if (!pmd_compress(s->cfg->pmd, s->pmd, data, len)) {
            if (done) done(ud, -ENOMEM);
            return -ENOMEM;
        }
        data = s->cfg->pmd->out.data;
        len = s->cfg->pmd->out.len;
    }
    return frame_out(s, compress, opcode, data, len, done, ud);
}

bool wss_can_share(const ws_session *s, size_t len, bool *compressed)
{
    if (s->client || s->state != WSS_OPEN) return false;
    *compressed = s->pmd && len >= s->cfg->deflate_min;
    if (!*compressed) return true;
    /* Only a compressor without context takeover and with the full window
     * produces what the worker's shared compressor does. */
    return s->pmd->params.server_no_context_takeover && s->pmd->params.server_max_window_bits == 15;
}

static void send_close_frame(ws_session *s, uint16_t code, const char *reason, size_t reason_len)
{
    uint8_t payload[WS_MAX_CONTROL_PAYLOAD];
    size_t n = 0;
    if (code != WS_CLOSE_NO_STATUS) {
        if (reason_len > WS_MAX_CONTROL_PAYLOAD - 2) {
            /* Cut at a character boundary: the reason must stay UTF-8. */
            reason_len = WS_MAX_CONTROL_PAYLOAD - 2;
            while (reason_len && ((uint8_t)reason[reason_len] & 0xC0) == 0x80) reason_len--;
        }
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        if (reason_len) memcpy(payload + 2, reason, reason_len);
        n = 2 + reason_len;
    }
    frame_out(s, false, WS_OP_CLOSE, payload, n, NULL, NULL);
}

void wss_close(ws_session *s, uint16_t code, const char *reason, size_t reason_len)
{
    if (s->state != WSS_OPEN) return;
    /* The state first: the write below may re-enter (a host that cuts the
     * connection from inside it) and must find the session closing. */
    s->state = WSS_CLOSE_SENT;
    wss_record_close(s, code, reason, reason_len);
    send_close_frame(s, code, reason, reason_len);
}

void wss_abort(ws_session *s, uint16_t code, const char *why)
{
    if (!s->peer_closed) wss_record_close(s, code, why, strlen(why));
    s->state = WSS_CLOSED;
    drop_message(s);
}

void wss_trim(ws_session *s) { drop_message(s); }

/* A protocol violation: close with code (unless we already sent ours),
 * then tell the host, once. */
static void fail(ws_session *s, uint16_t code, const char *why)
{
    if (s->state == WSS_CLOSED) return;
    bool sent = s->state == WSS_CLOSE_SENT;
    s->state = WSS_CLOSED;
    if (s->cfg->stats) s->cfg->stats->protocol_errors++;
    if (!sent) {
        wss_record_close(s, code, why, strlen(why));
        send_close_frame(s, code, why, strlen(why));
    }
    drop_message(s);
    s->cb->error(s->user, code, why);
}

/* ---- receiving ---- */

static void on_close_frame(ws_session *s, const uint8_t *data, size_t len)
{
    uint16_t code;
    const char *reason;
    size_t reason_len;
    uint16_t bad = frame_close_payload_parse(data, len, &code, &reason, &reason_len);
    if (bad) {
        fail(s, bad, bad == WS_CLOSE_INVALID_DATA ? "close reason is not valid UTF-8" : "invalid close frame");
        return;
    }
    s->peer_closed = true;
    bool echo = s->state == WSS_OPEN;
    s->state = WSS_CLOSED;
    if (echo) {
        wss_record_close(s, code, reason, reason_len);
        /* Echo the status code (RFC 6455 5.5.1). */
        send_close_frame(s, code, "", 0);
    }
    drop_message(s);
    s->cb->closed(s->user, s->close_code, s->close_reason, strlen(s->close_reason));
}

/* A whole control frame; data (never NULL) stays valid through the call. */
static void on_control(ws_session *s, uint8_t opcode, const uint8_t *data, size_t len)
{
    switch (opcode) {
    case WS_OP_CLOSE:
        on_close_frame(s, data, len);
        break;
    case WS_OP_PING:
        /* After our close frame, nothing more goes out. */
        if (s->state != WSS_OPEN) break;
        if (!s->cb->ping(s->user, data, len) && s->state == WSS_OPEN)
            frame_out(s, false, WS_OP_PONG, data, len, NULL, NULL);
        break;
    case WS_OP_PONG:
        s->cb->pong(s->user, data, len);
        break;
    }
}

static void deliver(ws_session *s, const uint8_t *data, size_t len)
{
    if (s->msg_opcode == WS_OP_TEXT && !utf8_complete(&s->utf8)) {
        fail(s, WS_CLOSE_INVALID_DATA, "text message is not valid UTF-8");
        return;
    }
    /* After we sent a close, the peer may still send messages until its
     * own close frame (RFC 6455 5.5.1): they are delivered. */
    if (s->cfg->stats) {
        s->cfg->stats->messages_in++;
        s->cfg->stats->bytes_in += len;
    }
    s->cb->message(s->user, s->msg_opcode, data, len);
}

static void reset_message(ws_session *s)
{
    s->msg.len = 0;
    s->msg_delivered = false;
    if (s->msg.cap > KEEP_MSG_BUFFER) {
        size_t old = s->msg.cap;
        free(s->msg.data);
        memset(&s->msg, 0, sizeof s->msg);
        count_buffer(s, old);
    }
    if (s->msg_compressed && s->pmd) pmd_message_done(s->cfg->pmd, s->pmd);
    s->msg_compressed = false;
}

static bool reserve_message(ws_session *s, size_t need)
{
    bytes *m = &s->msg;
    if (need <= m->cap) return true;
    size_t cap = m->cap ? m->cap : 1024;
    while (cap < need) cap *= 2;
    if (cap > s->cfg->max_message && need <= s->cfg->max_message) cap = s->cfg->max_message;
    uint8_t *p = realloc(m->data, cap);
    if (!p) return false;
    size_t old = m->cap;
    m->data = p;
    m->cap = cap;
    count_buffer(s, old);
    return true;
}

static bool append_message(ws_session *s, const uint8_t *data, size_t len)
{
    bytes *m = &s->msg;
    /* Read straight into place (wss_read_target): nothing to copy. */
    if (m->data && data == m->data + m->len) {
        m->len += len;
        return true;
    }
    if (!reserve_message(s, m->len + len)) return false;
    memcpy(m->data + m->len, data, len);
    m->len += len;
    return true;
}

uint8_t *wss_read_target(ws_session *s, size_t *room)
{
    if (s->paused || s->msg_compressed || s->state == WSS_CLOSED) return NULL;
    /* A control frame never has this much payload left. */
    uint64_t left = frame_payload_left(&s->parser);
    if (left < DIRECT_READ_MIN) return NULL;
    /* Grow at most to twice what has arrived (and 64 KiB ahead at first),
     * never to a length a peer merely announced. */
    size_t ahead = s->msg.len > 64 * 1024 ? s->msg.len : 64 * 1024;
    if (ahead > left) ahead = (size_t)left;
    if (s->msg.cap - s->msg.len < DIRECT_READ_MIN && !reserve_message(s, s->msg.len + ahead)) return NULL;
    size_t n = s->msg.cap - s->msg.len;
    *room = n < left ? n : (size_t)left;
    return s->msg.data + s->msg.len;
}

/* Inflates a chunk of a compressed message into s->msg, checking the size
 * limit on the inflated bytes and UTF-8 as they come out. */
static bool inflate_chunk(ws_session *s, const uint8_t *data, size_t len, bool final)
{
    size_t before = s->msg.len, old = s->msg.cap;
    int code = pmd_inflate(s->cfg->pmd, s->pmd, data, len, final, &s->msg, s->cfg->max_message);
    count_buffer(s, old);
    if (code) {
        fail(s, (uint16_t)code, code == WS_CLOSE_TOO_BIG ? "inflated message over the size limit"
                                                        : "invalid compressed data");
        return false;
    }
    /* msg.data may still be NULL (an empty message): nothing to check then. */
    if (s->msg_opcode == WS_OP_TEXT && s->msg.len > before &&
        !utf8_feed(&s->utf8, s->msg.data + before, s->msg.len - before)) {
        fail(s, WS_CLOSE_INVALID_DATA, "text message is not valid UTF-8");
        return false;
    }
    return true;
}

size_t wss_feed(ws_session *s, uint8_t *buf, size_t len)
{
    frame_parser *p = &s->parser;
    size_t off = 0;
    frame_event ev;
    /* A control frame's payload that came whole in this input: used where
     * it lies, since its end follows in this same call (no callback runs
     * between its payload and its end, so nothing can pause us there). */
    const uint8_t *ctl_in = NULL;

    while (!s->paused && s->state != WSS_CLOSED) {
        off += frame_parse(p, buf + off, len - off, &ev);
        const frame_head *f = &p->frame;
        bool control = f->opcode & 0x8;
        switch (ev.type) {
        case FRAME_EV_NEED_MORE:
            return off;
        case FRAME_EV_ERROR:
            fail(s, ev.close_code, ev.reason);
            return len;
        case FRAME_EV_FRAME:
            if (control) {
                assert(!s->ctl);
                s->ctl_len = 0;
                ctl_in = NULL;
                break;
            }
            if (f->opcode != WS_OP_CONT) {
                s->msg_opcode = f->opcode;
                s->msg_compressed = f->rsv1;
                s->msg.len = 0;
                utf8_init(&s->utf8);
            }
            /* Compressed frames are judged by their inflated size. */
            if (!s->msg_compressed && f->length > s->cfg->max_message - s->msg.len) {
                fail(s, WS_CLOSE_TOO_BIG, "message over the size limit");
                return len;
            }
            break;
        case FRAME_EV_PAYLOAD:
            if (control) {
                assert(s->ctl_len + ev.len <= f->length && f->length <= WS_MAX_CONTROL_PAYLOAD);
                if (s->ctl_len == 0 && ev.len == f->length) {
                    ctl_in = ev.data;
                } else {
                    /* Split over reads: collected in a buffer of its size. */
                    if (!s->ctl) s->ctl = xmalloc((size_t)f->length);
                    memcpy(s->ctl + s->ctl_len, ev.data, ev.len);
                }
                s->ctl_len = (uint8_t)(s->ctl_len + ev.len);
                break;
            }
            if (s->msg_compressed) {
                if (!inflate_chunk(s, ev.data, ev.len, false)) return len;
                break;
            }
            /* ASCII after a code point boundary needs no second look. */
            if (s->msg_opcode == WS_OP_TEXT && !(ev.ascii && utf8_complete(&s->utf8)) &&
                !utf8_feed(&s->utf8, ev.data, ev.len)) {
                fail(s, WS_CLOSE_INVALID_DATA, "text message is not valid UTF-8");
                return len;
            }
            /* A whole single-frame message in this input: hand it over
             * straight from the input buffer, without another copy. */
            if (f->fin && f->opcode != WS_OP_CONT && ev.len == f->length) {
                s->msg_delivered = true;
                deliver(s, ev.data, ev.len);
                break;
            }
            if (!append_message(s, ev.data, ev.len)) {
                fail(s, WS_CLOSE_TOO_BIG, "out of memory for message");
                return len;
            }
            break;
        case FRAME_EV_FRAME_END:
            if (control) {
                assert(!s->ctl_len || s->ctl || ctl_in);
                uint8_t *owned = s->ctl;
                const uint8_t *data = !s->ctl_len ? (const uint8_t *)"" : owned ? owned : ctl_in;
                /* Owned here from now on: freed after the callbacks, whatever they do. */
                s->ctl = NULL;
                ctl_in = NULL;
                on_control(s, f->opcode, data, s->ctl_len);
                free(owned);
                break;
            }
            if (!f->fin) break;
            if (s->msg_compressed && !inflate_chunk(s, NULL, 0, true)) return len;
            if (!s->msg_delivered) deliver(s, s->msg.data ? s->msg.data : (const uint8_t *)"", s->msg.len);
            if (s->state != WSS_CLOSED) reset_message(s);
            break;
        }
    }
    return s->state == WSS_CLOSED ? len : off;
}
