/* ws.c — a WebSocket over a connection: the transport's side of the
 * session (ws_session.c does the protocol). It feeds the session what
 * arrives, writes what it sends under the --max-backpressure cap, times
 * the close handshake, and passes the session's events to the host. */
#include "ws.h"
#include "server.h"
#include "log.h"
#include "xalloc.h"
#include "rate.h"
#include <stdlib.h>
#include <assert.h>
#include <string.h>

#define HOST(c) ((c)->srv->host)
#define HOST_UD(c) ((c)->srv->host_ud)

/* ---- the session's callbacks ---- */

/* --rate: each message takes a token. Paused (the default), a socket that
 * has used its burst reads nothing more until a token is back; with
 * --rate-action close it is closed with 1008 instead, the message dropped. */
static bool rate_check(conn *c)
{
    server *s = c->srv;
    uint64_t now = server_now(s);
    if (s->cfg->rate_close) {
        if (rate_allows(c->rate, now)) {
            rate_take(c->rate, now);
            return true;
        }
        s->metrics->rate_limited++;
        char peer[ADDR_TEXT_MAX];
        log_warn("conn %llu from %s: over its message rate (%g/s, burst %g), closing with 1008",
                 (unsigned long long)c->id, conn_peer_text(c, peer), c->rate->rate, c->rate->burst);
        static const char why[] = "message rate limit";
        ws_close(c, WS_CLOSE_POLICY, why, sizeof why - 1);
        return false;
    }
    rate_take(c->rate, now);
    return true;
}

/* After a message: with no token left, stop reading until there is one. */
static void rate_pause(conn *c)
{
    if (!c->rate || c->srv->cfg->rate_close || rate_allows(c->rate, server_now(c->srv)) || !ws_is_open(c)) return;
    c->srv->metrics->rate_limited++;
    uint64_t ms = rate_wait_ms(c->rate);
    log_debug("conn %llu: message rate limit: reading again in %llu ms", (unsigned long long)c->id,
              (unsigned long long)ms);
    conn_hold_for(c, CONN_HOLD_RATE, ms);
}

static void on_message(void *user, uint8_t opcode, const uint8_t *data, size_t len)
{
    conn *c = user;
    if (c->rate && !rate_check(c)) return;
    HOST(c)->message(HOST_UD(c), c, opcode, data, len);
    rate_pause(c);
}

void ws_set_rate(conn *c, double rate, double burst)
{
    if (rate <= 0) {
        free(c->rate);
        c->rate = NULL;
        if (c->holds & CONN_HOLD_RATE) conn_release(c, CONN_HOLD_RATE);
        return;
    }
    if (!c->rate) c->rate = xmalloc(sizeof *c->rate);
    rate_init(c->rate, rate, burst >= 1 ? burst : 1, server_now(c->srv));
}

static bool on_ping(void *user, const uint8_t *data, size_t len)
{
    conn *c = user;
    if (HOST(c)->ping(HOST_UD(c), c, data, len)) return true;
    if (!c->queued) return false;   /* the session answers at once */
    /* A peer that pings but does not read would have us queue a pong per
     * ping. Hold back one, for the most recent ping (RFC 6455 5.5.3): it
     * goes when the queue has drained (ws_drained). */
    if (!c->pong) c->pong = xmalloc(1 + WS_MAX_CONTROL_PAYLOAD);
    c->pong[0] = (uint8_t)len;
    if (len) memcpy(c->pong + 1, data, len);
    return true;
}

/* The queue drained: the pong held back goes now. */
static void ws_drained(conn *c)
{
    if (!c->pong) return;
    uint8_t *pong = c->pong;
    c->pong = NULL;
    if (ws_is_open(c)) ws_send(c, WS_OP_PONG, pong + 1, pong[0], NULL, NULL);
    free(pong);
}

static void on_pong(void *user, const uint8_t *data, size_t len)
{
    conn *c = user;
    HOST(c)->pong(HOST_UD(c), c, data, len);
}

/* The WebSocket is closed: tell the host once, then shut TCP down. */
static void finish(conn *c)
{
    log_info("conn %llu closed code %u%s%s", (unsigned long long)c->id, conn_close_code(c),
             *conn_close_reason(c) ? " reason " : "", conn_close_reason(c));
    conn_tell_close(c);
    conn_linger(c);
}

static void on_closed(void *user, uint16_t code, const char *reason, size_t reason_len)
{
    finish(user);
}

static void on_error(void *user, uint16_t code, const char *why)
{
    conn *c = user;
    log_warn("conn %llu: %s, closing with %u", (unsigned long long)c->id, why, code);
    HOST(c)->error(HOST_UD(c), c, why);
    if (!conn_is_finished(c)) finish(c);
}

/* wire more bytes may be queued: under the --max-backpressure cap, else
 * the socket is cut (1008) and false returned. */
static bool admit(conn *c, size_t wire)
{
    if (conn_backlog(c) + wire <= c->srv->cfg->max_backpressure) return true;
    /* The close frame (small, exempt from the cap) still goes, behind the
     * queue: a reader that catches up learns why; one that does not is cut
     * by the close timeout. */
    static const char why[] = "send queue over the --max-backpressure limit (slow reader)";
    if (ws_is_open(c) && !conn_is_dead(c)) {
        log_warn("conn %llu: %s, closing with %u", (unsigned long long)c->id, why, WS_CLOSE_POLICY);
        c->srv->host->error(c->srv->host_ud, c, why);
        ws_close(c, WS_CLOSE_POLICY, "slow reader: send queue over the limit", 38);
        /* For the host it is over now, with the real reason. */
        wss_record_close(&c->ws, WS_CLOSE_POLICY, why, sizeof why - 1);
        conn_tell_close(c);
    } else {
        ws_abort(c, WS_CLOSE_POLICY, why);
    }
    return false;
}

/* A frame is queued if admitted. The close frame is exempt: it is small
 * and ends the queue. */
static int on_write(void *user, const uint8_t *hdr, size_t hlen, const uint8_t *payload, size_t len,
                    write_done_fn done, void *ud)
{
    conn *c = user;
    if ((hdr[0] & 0x0f) != WS_OP_CLOSE && !admit(c, hlen + len)) {
        if (done) done(ud, UV_ENOBUFS);
        return UV_ENOBUFS;
    }
    return conn_write(c, hdr, hlen, payload, len, done, ud);
}

static const wss_callbacks session_callbacks = {
    .message = on_message,
    .ping = on_ping,
    .pong = on_pong,
    .closed = on_closed,
    .error = on_error,
    .write = on_write,
};

/* ---- the phase conn.c feeds ---- */

/* Past --max-buffered-total, the socket holding the biggest incomplete
 * message is closed (1009), until the worker is under the cap again. */
static void over_buffered_total(server *s)
{
    while (s->buffered_total > s->cfg->max_buffered_total) {
        conn *worst = NULL;
        for (conn *c = s->conns; c; c = c->next)
            if (conn_is_websocket(c) && !conn_is_dead(c) && (!worst || c->ws.msg.cap > worst->ws.msg.cap)) worst = c;
        if (!worst || !worst->ws.msg.cap) return;
        static const char why[] = "incomplete messages of all sockets over --max-buffered-total; this one holds the most";
        log_warn("conn %llu: holds %zu bytes of an incomplete message; the worker holds %zu (--max-buffered-total %zu)",
                 (unsigned long long)worst->id, worst->ws.msg.cap, s->buffered_total, s->cfg->max_buffered_total);
        ws_close(worst, WS_CLOSE_TOO_BIG, "server busy: too much buffered", 30);
        ws_abort(worst, WS_CLOSE_TOO_BIG, why);
    }
}

static size_t ws_feed(conn *c, uint8_t *buf, size_t len)
{
    assert(c->ws.paused == c->paused);
    size_t n = wss_feed(&c->ws, buf, len);
    if (c->srv->buffered_total > c->srv->cfg->max_buffered_total) over_buffered_total(c->srv);
    return n;
}

/* Gone (EOF, reset, write error) or the close timer fired. */
static void ws_lost(conn *c, const char *why)
{
    if (c->ws.state == WSS_CLOSE_SENT && strcmp(why, "timeout") == 0)
        log_info("conn %llu: no close frame from the peer in time", (unsigned long long)c->id);
    ws_on_disconnect(c);
}

static uint8_t *ws_target(conn *c, size_t *room)
{
    if (c->paused) return NULL;
    return wss_read_target(&c->ws, room);
}

static const conn_phase ws_phase = {
    .name = "websocket",
    .feed = ws_feed,
    .lost = ws_lost,
    .read_target = ws_target,
    .drained = ws_drained,
};

/* ---- the connection's side ---- */

void ws_start(conn *c, const pmd_params *deflate)
{
    assert(!conn_is_websocket(c));
    c->state = CONN_WS;
    c->phase = &ws_phase;
    c->last_seen = server_now(c->srv);
    c->srv->metrics->websockets_total++;
    if (!c->is_client && c->srv->cfg->rate > 0) ws_set_rate(c, c->srv->cfg->rate, c->srv->cfg->rate_burst);
    wss_init(&c->ws, c->is_client ? WS_ROLE_CLIENT : WS_ROLE_SERVER, deflate, &c->srv->wss_cfg,
             &session_callbacks, c);
}

bool ws_is_open(const conn *c) { return conn_is_websocket(c) && wss_is_open(&c->ws); }

static const char *op_name(uint8_t op)
{
    switch (op) {
    case WS_OP_TEXT: return "text";
    case WS_OP_BINARY: return "binary";
    case WS_OP_PING: return "ping";
    case WS_OP_PONG: return "pong";
    default: return "close";
    }
}

int ws_send(conn *c, uint8_t opcode, const uint8_t *data, size_t len, write_done_fn done, void *ud)
{
    if (!ws_is_open(c)) {
        if (done) done(ud, UV_EPIPE);
        return UV_EPIPE;
    }
    log_debug("conn %llu send %s %zu bytes", (unsigned long long)c->id, op_name(opcode), len);
    return wss_send(&c->ws, opcode, data, len, done, ud);
}

int ws_send_shared(conn *c, uint8_t opcode, const uint8_t *payload, size_t len, shared_frame *plain,
                   shared_frame *compressed)
{
    bool use_compressed;
    if (!ws_is_open(c)) return UV_EPIPE;
    if (!wss_can_share(&c->ws, len, &use_compressed) || (use_compressed && !compressed))
        return ws_send(c, opcode, payload, len, NULL, NULL);
    shared_frame *f = use_compressed ? compressed : plain;
    if (!admit(c, f->len)) return UV_ENOBUFS;
    c->srv->metrics->ws.messages_out++;
    c->srv->metrics->ws.bytes_out += len;
    return conn_write_shared(c, f);
}

void ws_close(conn *c, uint16_t code, const char *reason, size_t reason_len)
{
    if (!ws_is_open(c)) return;
    wss_close(&c->ws, code, reason, reason_len);
    /* Wait for the peer's close frame, not forever. */
    if (conn_is_websocket(c)) conn_set_timer(c, c->srv->cfg->close_timeout_ms);
}

void ws_on_disconnect(conn *c)
{
    if (!conn_is_websocket(c) || c->host_closed) return;
    wss_abort(&c->ws, WS_CLOSE_ABNORMAL, "");
    log_info("conn %llu closed code %u (connection lost)", (unsigned long long)c->id, conn_close_code(c));
    conn_tell_close(c);
}

void ws_drop(conn *c)
{
    if (conn_is_dead(c)) return;
    if (conn_is_websocket(c)) ws_on_disconnect(c);
    conn_close_now(c);
}

void ws_abort(conn *c, uint16_t code, const char *why)
{
    if (!conn_is_websocket(c) || conn_is_dead(c)) return;
    log_warn("conn %llu: %s, closing with %u", (unsigned long long)c->id, why, code);
    wss_abort(&c->ws, code, why);
    conn_close_now(c);      /* first: the host may act on the events below */
    HOST(c)->error(HOST_UD(c), c, why);
    conn_tell_close(c);
}
