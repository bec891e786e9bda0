/* ws.c — the WebSocket protocol over a connection (RFC 6455): message
 * assembly, UTF-8 and size checks, control frames and the close handshake.
 * Frames are parsed by frame.c; events go to Lua through lua_api.c. */
#include "server.h"
#include "lua_api.h"
#include "log.h"
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>

#define NOREF (-2)
/* A message buffer larger than this is not kept between messages, so an
 * idle connection holds no big allocation. */
#define KEEP_MSG_BUFFER (16 * 1024)

void ws_start(conn *c, const pmd_params *deflate)
{
    c->state = CONN_WS;
    ws_parser_init(&c->parser, c->is_client ? WS_ROLE_CLIENT : WS_ROLE_SERVER);
    c->last_seen = uv_now(c->srv->loop);
    utf8_init(&c->utf8);
    c->open_event_done = true;
    c->srv->metrics.websockets_total++;
    if (deflate) {
        c->pmd = calloc(1, sizeof *c->pmd);
        if (!c->pmd) abort();
        c->pmd->params = *deflate;
        c->parser.allow_rsv1 = true;
    }
}

bool ws_is_open(const conn *c) { return c->state == CONN_WS && !c->close_sent; }

static const char *op_name(uint8_t op)
{
    switch (op) {
    case WS_OP_TEXT: return "text";
    case WS_OP_BINARY: return "binary";
    case WS_OP_CLOSE: return "close";
    case WS_OP_PING: return "ping";
    case WS_OP_PONG: return "pong";
    default: return "continuation";
    }
}

/* A data message of len bytes (wire bytes: wire) may be queued: under the
 * --max-backpressure cap (else the socket is cut), and counted. */
static bool admit(conn *c, uint8_t opcode, size_t len, size_t wire)
{
    if (conn_backlog(c) + wire > c->srv->cfg->max_backpressure) {
        ws_abort(c, WS_CLOSE_POLICY, "send queue over the --max-backpressure limit (slow reader)");
        return false;
    }
    if (!(opcode & 0x8)) {
        c->srv->metrics.messages_out++;
        c->srv->metrics.bytes_out += len;
    }
    return true;
}

int ws_send(conn *c, uint8_t opcode, const uint8_t *data, size_t len, int ok_ref, int fail_ref)
{
    if (c->state != CONN_WS && c->state != CONN_WS_CLOSING) return UV_EPIPE;
    if (c->close_sent) return UV_EPIPE;
    uint8_t hdr[WS_MAX_HEADER];
    if (!admit(c, opcode, len, len)) return UV_ENOBUFS;
    bool compress = c->pmd && !(opcode & 0x8) && len >= c->srv->cfg->deflate_min &&
                    c->pmd->params.server_max_window_bits;
    if (compress) {
        if (!pmd_compress(&c->srv->pmd, c->pmd, data, len)) return UV_ENOMEM;
        data = c->srv->pmd.out.data;
        len = c->srv->pmd.out.len;
    }
    log_debug("conn %llu send %s %zu bytes%s", (unsigned long long)c->id, op_name(opcode), len,
              compress ? " compressed" : "");
    if (!c->is_client) {
        size_t hlen = ws_frame_header(hdr, true, compress, opcode, len, NULL);
        return conn_write(c, hdr, hlen, data, len, ok_ref, fail_ref);
    }
    /* A client masks every frame (RFC 6455 5.3): mask a copy. */
    uint8_t mask[4];
    if (RAND_bytes(mask, sizeof mask) != 1) return UV_EIO;
    size_t hlen = ws_frame_header(hdr, true, compress, opcode, len, mask);
    uint8_t *masked = malloc(len ? len : 1);
    if (!masked) return UV_ENOMEM;
    memcpy(masked, data, len);
    ws_mask(masked, len, mask, 0);
    int res = conn_write(c, hdr, hlen, masked, len, ok_ref, fail_ref);
    free(masked);
    return res;
}

int ws_send_shared(conn *c, uint8_t opcode, const uint8_t *payload, size_t len, shared_frame *plain,
                   shared_frame *compressed)
{
    if (!ws_is_open(c)) return UV_EPIPE;
    bool by_ref = !c->is_client && (!c->pmd || len < c->srv->cfg->deflate_min ||
                                    (compressed && c->pmd->params.server_no_context_takeover &&
                                     c->pmd->params.server_max_window_bits == 15));
    if (!by_ref) return ws_send(c, opcode, payload, len, NOREF, NOREF);
    shared_frame *f = c->pmd && len >= c->srv->cfg->deflate_min ? compressed : plain;
    if (!admit(c, opcode, len, f->len)) return UV_ENOBUFS;
    return conn_write_shared(c, f);
}

static void send_close_frame(conn *c, uint16_t code, const char *reason, size_t reason_len)
{
    uint8_t payload[WS_MAX_CONTROL_PAYLOAD];
    size_t n = 0;
    if (code != WS_CLOSE_NO_STATUS) {
        if (reason_len > WS_MAX_CONTROL_PAYLOAD - 2) reason_len = WS_MAX_CONTROL_PAYLOAD - 2;
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        memcpy(payload + 2, reason, reason_len);
        n = 2 + reason_len;
    }
    ws_send(c, WS_OP_CLOSE, payload, n, NOREF, NOREF);
    c->close_sent = true;
}

static void record_close(conn *c, uint16_t code, const char *reason, size_t reason_len)
{
    c->close_code = code;
    free(c->close_reason);
    c->close_reason = malloc(reason_len + 1);
    if (!c->close_reason) abort();
    memcpy(c->close_reason, reason, reason_len);
    c->close_reason[reason_len] = '\0';
}

/* The WebSocket is closed: tell Lua once, then shut TCP down. */
static void finish(conn *c)
{
    log_info("conn %llu closed code %u%s%s", (unsigned long long)c->id, c->close_code,
             c->close_reason && *c->close_reason ? " reason " : "", c->close_reason ? c->close_reason : "");
    lh_on_close(c);
    conn_linger(c);
}

void ws_close(conn *c, uint16_t code, const char *reason, size_t reason_len)
{
    if (!ws_is_open(c)) return;
    record_close(c, code, reason, reason_len);
    send_close_frame(c, code, reason, reason_len);
    c->state = CONN_WS_CLOSING;
    conn_set_timer(c, c->srv->cfg->close_timeout_ms);
}

void ws_fail(conn *c, uint16_t code, const char *why)
{
    if (c->state != CONN_WS && c->state != CONN_WS_CLOSING) return;
    log_warn("conn %llu: %s, closing with %u", (unsigned long long)c->id, why, code);
    c->srv->metrics.protocol_errors++;
    if (!c->close_sent) {
        record_close(c, code, why, strlen(why));
        send_close_frame(c, code, why, strlen(why));
    }
    c->state = CONN_WS_CLOSING;
    lh_on_error(c, why);
    finish(c);
}

void ws_on_disconnect(conn *c)
{
    if (!c->close_received) record_close(c, WS_CLOSE_ABNORMAL, "", 0);
    if (c->state == CONN_WS || c->state == CONN_WS_CLOSING) {
        log_info("conn %llu closed code %u (connection lost)", (unsigned long long)c->id, c->close_code);
        c->state = CONN_WS_CLOSING;
        lh_on_close(c);
    }
}

void ws_abort(conn *c, uint16_t code, const char *why)
{
    if (c->state != CONN_WS && c->state != CONN_WS_CLOSING) return;
    log_warn("conn %llu: %s, closing with %u", (unsigned long long)c->id, why, code);
    c->state = CONN_WS_CLOSING;
    c->close_sent = true;   /* nothing more goes out */
    record_close(c, code, why, strlen(why));
    lh_on_error(c, why);
    lh_on_close(c);
    conn_close_now(c);
}

static void on_close_frame(conn *c)
{
    uint16_t code;
    const char *reason;
    size_t reason_len;
    uint16_t bad = ws_close_payload_parse(c->ctl, c->ctl_len, &code, &reason, &reason_len);
    if (bad) {
        ws_fail(c, bad, bad == WS_CLOSE_INVALID_DATA ? "close reason is not valid UTF-8" : "invalid close frame");
        return;
    }
    c->close_received = true;
    if (!c->close_sent) {
        record_close(c, code, reason, reason_len);
        /* Echo the status code (RFC 6455 5.5.1). */
        send_close_frame(c, code, "", 0);
    }
    finish(c);
}

static void on_control(conn *c, uint8_t opcode)
{
    switch (opcode) {
    case WS_OP_CLOSE:
        on_close_frame(c);
        break;
    case WS_OP_PING:
        if (c->close_sent) break;
        if (lh_has_ping_handler(c)) lh_on_ping(c, c->ctl, c->ctl_len);
        else ws_send(c, WS_OP_PONG, c->ctl, c->ctl_len, NOREF, NOREF);
        break;
    case WS_OP_PONG:
        lh_on_pong(c, c->ctl, c->ctl_len);
        break;
    }
}

static void deliver(conn *c, const uint8_t *data, size_t len)
{
    if (c->msg_opcode == WS_OP_TEXT && !utf8_complete(&c->utf8)) {
        ws_fail(c, WS_CLOSE_INVALID_DATA, "text message is not valid UTF-8");
        return;
    }
    /* After we sent a close, the peer may still send messages until its
     * own close frame (RFC 6455 5.5.1): they are delivered. */
    c->srv->metrics.messages_in++;
    c->srv->metrics.bytes_in += len;
    lh_on_message(c, c->msg_opcode, data, len);
}

static void reset_message(conn *c)
{
    c->msg.len = 0;
    c->msg_delivered = false;
    if (c->msg.cap > KEEP_MSG_BUFFER) {
        free(c->msg.data);
        memset(&c->msg, 0, sizeof c->msg);
    }
    if (c->msg_compressed && c->pmd) pmd_message_done(&c->srv->pmd, c->pmd);
    c->msg_compressed = false;
}

static bool reserve_message(conn *c, size_t need)
{
    bytes *m = &c->msg;
    if (need <= m->cap) return true;
    size_t cap = m->cap ? m->cap : 1024;
    while (cap < need) cap *= 2;
    if (cap > c->srv->cfg->max_message && need <= c->srv->cfg->max_message) cap = c->srv->cfg->max_message;
    uint8_t *p = realloc(m->data, cap);
    if (!p) return false;
    m->data = p;
    m->cap = cap;
    return true;
}

static bool append_message(conn *c, const uint8_t *data, size_t len)
{
    bytes *m = &c->msg;
    /* Read straight into place by ws_read_target: nothing to copy. */
    if (m->data && data == m->data + m->len) {
        m->len += len;
        return true;
    }
    if (!reserve_message(c, m->len + len)) return false;
    memcpy(m->data + m->len, data, len);
    m->len += len;
    return true;
}

/* Below this, reading into the shared buffer and copying costs less than
 * growing the message buffer ahead of the data. */
#define DIRECT_READ_MIN (16 * 1024)

uint8_t *ws_read_target(conn *c, size_t *room)
{
    if (c->paused || c->msg_compressed) return NULL;
    if (c->state != CONN_WS && c->state != CONN_WS_CLOSING) return NULL;
    /* A control frame never has this much payload left. */
    uint64_t left = ws_payload_left(&c->parser);
    if (left < DIRECT_READ_MIN) return NULL;
    /* Grow at most to twice what has arrived (and 64 KiB ahead at first),
     * never to a length a peer merely announced. */
    size_t ahead = c->msg.len > 64 * 1024 ? c->msg.len : 64 * 1024;
    if (ahead > left) ahead = (size_t)left;
    if (c->msg.cap - c->msg.len < DIRECT_READ_MIN && !reserve_message(c, c->msg.len + ahead)) return NULL;
    size_t n = c->msg.cap - c->msg.len;
    *room = n < left ? n : (size_t)left;
    return c->msg.data + c->msg.len;
}

/* Inflates a chunk of a compressed message into c->msg, checking the
 * size limit on the inflated bytes and UTF-8 as they come out. */
static bool inflate_chunk(conn *c, const uint8_t *data, size_t len, bool final)
{
    size_t before = c->msg.len;
    int code = pmd_inflate(&c->srv->pmd, c->pmd, data, len, final, &c->msg, c->srv->cfg->max_message);
    if (code) {
        ws_fail(c, (uint16_t)code, code == WS_CLOSE_TOO_BIG ? "inflated message over the size limit"
                                                           : "invalid compressed data");
        return false;
    }
    if (c->msg_opcode == WS_OP_TEXT && !utf8_feed(&c->utf8, c->msg.data + before, c->msg.len - before)) {
        ws_fail(c, WS_CLOSE_INVALID_DATA, "text message is not valid UTF-8");
        return false;
    }
    return true;
}

size_t ws_consume(conn *c, uint8_t *buf, size_t len)
{
    ws_parser *p = &c->parser;
    size_t off = 0;
    ws_event ev;

    while (!c->paused && (c->state == CONN_WS || c->state == CONN_WS_CLOSING)) {
        off += ws_parse(p, buf + off, len - off, &ev);
        const ws_frame *f = &p->frame;
        bool control = f->opcode & 0x8;
        switch (ev.type) {
        case WS_EV_NEED_MORE:
            return off;
        case WS_EV_ERROR:
            ws_fail(c, ev.close_code, ev.reason);
            return len;
        case WS_EV_FRAME:
            if (control) {
                c->ctl_len = 0;
                break;
            }
            if (f->opcode != WS_OP_CONT) {
                c->msg_opcode = f->opcode;
                c->msg_compressed = f->rsv1;
                c->msg.len = 0;
                utf8_init(&c->utf8);
            }
            /* Compressed frames are judged by their inflated size. */
            if (!c->msg_compressed && f->length > c->srv->cfg->max_message - c->msg.len) {
                ws_fail(c, WS_CLOSE_TOO_BIG, "message over the size limit");
                return len;
            }
            break;
        case WS_EV_PAYLOAD:
            if (control) {
                memcpy(c->ctl + c->ctl_len, ev.data, ev.len);
                c->ctl_len += ev.len;
                break;
            }
            if (c->msg_compressed) {
                if (!inflate_chunk(c, ev.data, ev.len, false)) return len;
                break;
            }
            /* ASCII after a code point boundary needs no second look. */
            if (c->msg_opcode == WS_OP_TEXT && !(ev.ascii && utf8_complete(&c->utf8)) &&
                !utf8_feed(&c->utf8, ev.data, ev.len)) {
                ws_fail(c, WS_CLOSE_INVALID_DATA, "text message is not valid UTF-8");
                return len;
            }
            /* A whole single-frame message in this read: hand it to Lua
             * straight from the read buffer, without another copy. */
            if (f->fin && f->opcode != WS_OP_CONT && ev.len == f->length) {
                c->msg_delivered = true;
                deliver(c, ev.data, ev.len);
                break;
            }
            if (!append_message(c, ev.data, ev.len)) {
                ws_fail(c, WS_CLOSE_TOO_BIG, "out of memory for message");
                return len;
            }
            break;
        case WS_EV_FRAME_END:
            if (control) {
                on_control(c, f->opcode);
                break;
            }
            if (!f->fin) break;
            if (c->msg_compressed && !inflate_chunk(c, NULL, 0, true)) return len;
            if (!c->msg_delivered) deliver(c, c->msg.data ? c->msg.data : (const uint8_t *)"", c->msg.len);
            reset_message(c);
            break;
        }
    }
    return off;
}
