/* conn.c — a connection's transport and lifetime: reading, the HTTP phase,
 * the write queue, the lingering close, and freeing. The WebSocket protocol
 * itself is in ws.c, the Lua side in lua_api.c. */
#include "server.h"
#include "lua_api.h"
#include "log.h"
#include "static.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LUA_NOREF_ (-2)   /* same value as lauxlib's LUA_NOREF */
/* Larger payloads are not copied into the cork: they leave at once, with
 * whatever the cork holds in front of them, in one writev. */
#define CORK_COPY_MAX (4 * 1024)

/* A queued write owns a copy of its bytes, right behind the request. */
typedef struct wreq {
    uv_write_t req;
    conn *c;
    int ok_ref, fail_ref;
    size_t len;
    shared_frame *shared;     /* set: the bytes are a published frame's, by reference */
    uint8_t data[];
} wreq;

static void on_closed(uv_handle_t *h);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static size_t feed(conn *c, uint8_t *buf, size_t len);
static void handle_request(conn *c);
static void tls_failed(conn *c, int r);
static void tls_drain(conn *c);

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    size_t room;
    /* Not under TLS (records, not frames, arrive) nor while kept bytes wait. */
    uint8_t *direct = c->tls || c->pending ? NULL : ws_read_target(c, &room);
    if (direct) {
        buf->base = (char *)direct;
        buf->len = room;
        return;
    }
    buf->base = c->srv->readbuf;
    buf->len = sizeof c->srv->readbuf;
}

static void start_reading(conn *c)
{
    if (c->state != CONN_DEAD && !uv_is_active((uv_handle_t *)&c->tcp))
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void format_peer(conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
}

conn *conn_new(server *s, listener *l)
{
    conn *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->srv = s;
    c->lst = l;
    c->socket_ref = LUA_NOREF_;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->id = s->id_base + 1 + s->id_step * s->next_id++;
    s->metrics.connections_total++;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    return c;
}

void conn_start_reading(conn *c) { start_reading(c); }

void conn_accept(listener *l)
{
    server *s = l->srv;
    conn *c = conn_new(s, l);
    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) != 0) {
        conn_close_now(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    format_peer(c);
    c->deadline = uv_now(s->loop) + s->cfg->handshake_timeout_ms;
    if (s->nconns > s->cfg->max_connections) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                   "Connection: close\r\nRetry-After: 1\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)busy, sizeof busy - 1);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        log_warn("conn %llu from %s refused: %zu connections open (--max-connections)",
                 (unsigned long long)c->id, c->peer, s->nconns - 1);
        conn_close_now(c);
        return;
    }
    if (l->tls && !(c->tls = tls_conn_new(l->tls))) {
        log_error("conn %llu: out of memory for TLS", (unsigned long long)c->id);
        conn_close_now(c);
        return;
    }
    c->http = xmalloc(sizeof *c->http);
    http_reader_init(c->http, s->cfg->max_header, s->cfg->max_body);
    log_debug("conn %llu connected from %s", (unsigned long long)c->id, c->peer);
    start_reading(c);
}

/* Keeps bytes that could not be consumed because an event is suspended. */
static void keep_pending(conn *c, const uint8_t *buf, size_t len)
{
    if (len == 0) return;
    if (c->pending && buf >= c->pending && buf < c->pending + c->pending_len) {
        c->pending_off = (size_t)(buf - c->pending);
        return;
    }
    uint8_t *p = xmalloc(c->pending_len - c->pending_off + len);
    size_t old = c->pending_len - c->pending_off;
    if (old) memcpy(p, c->pending + c->pending_off, old);
    memcpy(p + old, buf, len);
    free(c->pending);
    c->pending = p;
    c->pending_len = old + len;
    c->pending_off = 0;
}

static void drop_pending(conn *c)
{
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = st->data;
    if (nread == 0) return;
    if (nread < 0) {
        if (nread != UV_EOF && nread != UV_ECONNRESET)
            log_debug("conn %llu read error: %s", (unsigned long long)c->id, uv_strerror((int)nread));
        if (c->state == CONN_WS || c->state == CONN_WS_CLOSING) ws_on_disconnect(c);
        else if (c->state == CONN_CLIENT_HANDSHAKE) lh_client_failed(c, "the server closed the connection");
        conn_close_now(c);
        return;
    }
    uint8_t *data = (uint8_t *)buf->base;
    c->last_seen = uv_now(c->srv->loop);
    c->ping_sent = false;
    if (c->tls) {
        /* After a failure (or once closed) input is only drained: feeding a
         * failed session again would log the same error for every read. */
        if (c->state >= CONN_LINGER) return;
        int r = tls_feed(c->tls, data, (size_t)nread);
        if (r < 0) tls_failed(c, r);
        else tls_drain(c);
        return;
    }
    size_t used = feed(c, data, (size_t)nread);
    if (used < (size_t)nread && c->state < CONN_LINGER) keep_pending(c, data + used, (size_t)nread - used);
}

/* ---- TLS: records in, plaintext through feed(), records out ---- */

static int raw_write(conn *c, const uint8_t *p, size_t n, int ok_ref, int fail_ref);
static int raw_writev(conn *c, const uv_buf_t *bufs, unsigned nbufs, int ok_ref, int fail_ref);

/* Sends what the TLS engine has for the socket; callbacks ride on the last piece. */
static int tls_flush(conn *c, int ok_ref, int fail_ref)
{
    const uint8_t *p;
    size_t n;
    int r = 0;
    while ((n = tls_pending_out(c->tls, &p)) > 0) {
        r = raw_write(c, p, n, LUA_NOREF_, LUA_NOREF_);
        tls_consume_out(c->tls, n);
        if (r < 0) break;
    }
    if (ok_ref != LUA_NOREF_ || fail_ref != LUA_NOREF_) {
        /* Tell the sender once the kernel has taken everything so far. */
        if (r == 0) r = raw_write(c, (const uint8_t *)"", 0, ok_ref, fail_ref);
        else lh_send_done(c->srv->lua, ok_ref, fail_ref, uv_strerror(r));
    }
    return r;
}

static void tls_failed(conn *c, int r)
{
    if (r == TLS_ERR_PLAIN_HTTP) {
        static const char resp[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                                   "Content-Length: 46\r\nConnection: close\r\n\r\n"
                                   "This port speaks TLS: use https:// or wss://.\n";
        log_warn("conn %llu from %s: plain HTTP on the TLS port", (unsigned long long)c->id, c->peer);
        raw_write(c, (const uint8_t *)resp, sizeof resp - 1, LUA_NOREF_, LUA_NOREF_);
    } else if (r == TLS_CLOSED) {
        log_debug("conn %llu: TLS close_notify from the peer", (unsigned long long)c->id);
    } else {
        log_warn("conn %llu from %s: TLS error: %s", (unsigned long long)c->id, c->peer, tls_error(c->tls));
        tls_flush(c, LUA_NOREF_, LUA_NOREF_);   /* the alert, if any */
    }
    if (c->state == CONN_WS || c->state == CONN_WS_CLOSING) ws_on_disconnect(c);
    if (c->state == CONN_CLIENT_HANDSHAKE) {
        lh_client_failed(c, *tls_error(c->tls) ? tls_error(c->tls) : "TLS closed by the server");
        conn_close_now(c);
        return;
    }
    if (c->state < CONN_LINGER) conn_linger(c);
}

/* Decrypts and processes what the TLS engine holds, until paused. */
static void tls_drain(conn *c)
{
    uint8_t *buf = (uint8_t *)c->srv->plainbuf;
    while (!c->paused && c->state < CONN_DEAD) {
        ssize_t n = tls_read(c->tls, buf, sizeof c->srv->plainbuf);
        if (n == 0) break;
        if (n < 0) {
            tls_failed(c, (int)n);
            return;
        }
        if (!c->tls_logged) {
            char desc[160];
            const char *sni = tls_servername(c->tls);
            c->tls_logged = true;
            log_debug("conn %llu: %s%s%s", (unsigned long long)c->id, tls_describe(c->tls, desc, sizeof desc),
                      sni ? " sni=" : "", sni ? sni : "");
        }
        if (c->state >= CONN_LINGER) continue;
        size_t used = feed(c, buf, (size_t)n);
        if (used < (size_t)n && c->state < CONN_LINGER) keep_pending(c, buf + used, (size_t)n - used);
    }
    /* luaws.connect over TLS: the upgrade request waits for the handshake. */
    if (c->client && c->state == CONN_CLIENT_HANDSHAKE && tls_handshake_done(c->tls)) client_send_request(c);
    if (c->state < CONN_DEAD) tls_flush(c, LUA_NOREF_, LUA_NOREF_);
}

void conn_tls_flush(conn *c) { tls_flush(c, LUA_NOREF_, LUA_NOREF_); }

void conn_pause(conn *c)
{
    c->paused = true;
    if (c->state < CONN_LINGER) uv_read_stop((uv_stream_t *)&c->tcp);
}

void conn_resume(conn *c)
{
    if (!c->paused) return;
    c->paused = false;
    if (c->state >= CONN_DEAD) return;
    if (c->pending) {
        size_t n = c->pending_len - c->pending_off;
        size_t used = feed(c, c->pending + c->pending_off, n);
        if (used == n || c->state >= CONN_LINGER) drop_pending(c);
        else c->pending_off += used;
    }
    if (c->tls && !c->paused) tls_drain(c);
    if (!c->paused) start_reading(c);
}

/* Runs the bytes through whichever protocol the connection speaks now.
 * Returns how many were consumed: fewer than len only when paused. */
static size_t feed_bytes(conn *c, uint8_t *buf, size_t len);

/* Feeds input with the cork on: the replies to a batch of pipelined
 * messages leave in one write. */
static size_t feed(conn *c, uint8_t *buf, size_t len)
{
    bool outer = !c->corked;
    c->corked = true;
    size_t n = feed_bytes(c, buf, len);
    if (outer) {
        c->corked = false;
        conn_uncork(c);
    }
    return n;
}

static size_t feed_bytes(conn *c, uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len && !c->paused) {
        enum conn_state before = c->state;
        size_t n;
        switch (c->state) {
        case CONN_HTTP: {
            enum http_read_status st = http_reader_feed(c->http, (char *)buf + off, len - off, &n);
            if (st == HTTP_FAILED) {
                int status = c->http->error_status;
                log_warn("conn %llu: bad HTTP request from %s, answering %d", (unsigned long long)c->id,
                         c->peer, status);
                conn_respond(c, status, NULL, 0, http_reason(status), strlen(http_reason(status)), false);
                return len;
            }
            off += n;
            if (st == HTTP_DONE) handle_request(c);
            break;
        }
        case CONN_CLIENT_HANDSHAKE: {
            enum http_read_status st = http_reader_feed(c->http, (char *)buf + off, len - off, &n);
            if (st == HTTP_FAILED) {
                lh_client_failed(c, "the server's answer is not valid HTTP");
                conn_close_now(c);
                return len;
            }
            off += n;
            if (st == HTTP_DONE) client_on_response(c);
            break;
        }
        case CONN_WS:
        case CONN_WS_CLOSING:
            n = ws_consume(c, buf + off, len - off);
            off += n;
            break;
        default:
            return len;   /* lingering or dead: input is discarded */
        }
        if (n == 0 && c->state == before && !c->paused) break;
    }
    return off;
}

static void respond_refusal(conn *c, int status, const char *why)
{
    char head[128] = "";
    size_t hlen = 0;
    if (status == 426) hlen = (size_t)snprintf(head, sizeof head, "Sec-WebSocket-Version: 13\r\n");
    char body[256];
    int blen = snprintf(body, sizeof body, "%d %s: %s\n", status, http_reason(status), why);
    conn_respond(c, status, head, hlen, body, (size_t)blen, false);
}

/* A whole request was read: refuse a broken handshake, else ask Lua. */
static void handle_request(conn *c)
{
    http_request *req = &c->http->req;
    const char *up = http_header_get(req, "upgrade");
    bool wants_ws = up && http_token_list_has(up, "websocket");
    if (wants_ws) {
        const char *why = "";
        int status = ws_handshake_check(req, &why);
        const char *origin = http_header_get(req, "origin");
        if (!status && origin && c->srv->cfg->norigins) {
            bool allowed = false;
            for (size_t i = 0; i < c->srv->cfg->norigins; i++)
                if (strcasecmp(origin, c->srv->cfg->origins[i]) == 0) allowed = true;
            if (!allowed) {
                status = 403;
                why = "Origin not in the --origin allowlist";
            }
        }
        if (status) {
            log_warn("conn %llu: refused WebSocket handshake from %s: %s (%d)", (unsigned long long)c->id,
                     c->peer, why, status);
            respond_refusal(c, status, why);
            return;
        }
    } else if (req->upgrade) {
        /* Another protocol (h2c, CONNECT): answer, then close, since what
         * follows on the wire is not HTTP/1.1. */
        req->keep_alive = false;
    }
    const config *cfg = c->srv->cfg;
    if (!wants_ws && cfg->metrics && strcmp(req->method, "GET") == 0 &&
        strncmp(req->url, "/metrics", 8) == 0 && (req->url[8] == '\0' || req->url[8] == '?')) {
        bytes out = {0};
        metrics_render(c->srv, &out);
        static const char type[] = "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n";
        conn_respond(c, 200, type, sizeof type - 1, (const char *)out.data, out.len, req->keep_alive);
        free(out.data);
    } else if (wants_ws || !cfg->static_dir || !static_serve(c, cfg->static_dir, req)) {
        lh_request(c->srv->lua, c, req);
    }
    if (c->state == CONN_HTTP) {
        if (!c->close_after_write) http_reader_reset(c->http);
        c->deadline = uv_now(c->srv->loop) + c->srv->cfg->handshake_timeout_ms;
    } else if (c->http) {
        http_reader_free(c->http);
        free(c->http);
        c->http = NULL;
    }
}

void conn_respond(conn *c, int status, const char *head, size_t head_len,
                  const char *body, size_t body_len, bool keep_alive)
{
    if (c->state != CONN_HTTP) return;
    c->srv->metrics.http_requests_total++;
    char line[256];
    bool is_head = c->http && c->http->req.method && strcmp(c->http->req.method, "HEAD") == 0;
    int n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, http_reason(status));
    char tail[128];
    int m = snprintf(tail, sizeof tail, "Content-Length: %zu\r\n%s\r\n", body_len,
                     keep_alive ? "" : "Connection: close\r\n");
    size_t total = (size_t)n + head_len + (size_t)m + (is_head ? 0 : body_len);
    uint8_t *out = xmalloc(total), *p = out;
    memcpy(p, line, (size_t)n); p += n;
    if (head_len) { memcpy(p, head, head_len); p += head_len; }
    memcpy(p, tail, (size_t)m); p += m;
    if (!is_head && body_len) memcpy(p, body, body_len);
    conn_write(c, out, total, NULL, 0, LUA_NOREF_, LUA_NOREF_);
    free(out);
    log_info("conn %llu %s %s -> %d", (unsigned long long)c->id,
             c->http && c->http->req.method ? c->http->req.method : "-",
             c->http && c->http->req.url ? c->http->req.url : "-", status);
    if (!keep_alive) {
        c->close_after_write = true;
        conn_linger(c);
    }
}

void conn_upgrade(conn *c, const http_request *req, const char *protocol,
                  const char *head, size_t head_len)
{
    char accept[29];
    ws_accept_key(http_header_get(req, "sec-websocket-key"), accept);
    pmd_params params;
    char ext[256] = "";
    bool deflate = pmd_negotiate(http_header_get(req, "sec-websocket-extensions"), c->srv->cfg->deflate,
                                 &params, ext, sizeof ext);
    char line[768];
    int n = snprintf(line, sizeof line,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "%s%s%s%s%s%s",
                     accept, protocol ? "Sec-WebSocket-Protocol: " : "", protocol ? protocol : "",
                     protocol ? "\r\n" : "", deflate ? "Sec-WebSocket-Extensions: " : "", ext,
                     deflate ? "\r\n" : "");
    if (n >= (int)sizeof line) n = (int)sizeof line - 1;
    conn_write(c, (const uint8_t *)line, (size_t)n, (const uint8_t *)head, head_len, LUA_NOREF_, LUA_NOREF_);
    conn_write(c, (const uint8_t *)"\r\n", 2, NULL, 0, LUA_NOREF_, LUA_NOREF_);
    log_info("conn %llu open %s %s%s%s%s%s", (unsigned long long)c->id, c->peer, req->url,
             protocol ? " protocol " : "", protocol ? protocol : "", deflate ? " " : "", ext);
    ws_start(c, deflate ? &params : NULL);
}

/* ---- writing ---- */

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    conn *c = w->c;
    c->queued -= w->len;
    if (w->ok_ref != LUA_NOREF_ || w->fail_ref != LUA_NOREF_)
        lh_send_done(c->srv->lua, w->ok_ref, w->fail_ref, status ? uv_strerror(status) : NULL);
    if (w->shared) shared_frame_unref(w->shared);
    free(w);
    if (status < 0 && status != UV_ECANCELED && c->state != CONN_DEAD) {
        log_debug("conn %llu write error: %s", (unsigned long long)c->id, uv_strerror(status));
        if (c->state == CONN_WS || c->state == CONN_WS_CLOSING) ws_on_disconnect(c);
        conn_close_now(c);
        return;
    }
    /* A peer that takes our data is alive, even if its pong still waits
     * behind what we queued before the ping. */
    if (status == 0) {
        c->last_seen = uv_now(c->srv->loop);
        c->ping_sent = false;
    }
    if (c->waiters && c->queued < c->srv->cfg->write_high_water) lh_wake_writers(c);
}

int conn_write(conn *c, const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t len,
               int ok_ref, int fail_ref)
{
    if (c->state == CONN_DEAD) return UV_EPIPE;
    bool notify = ok_ref != LUA_NOREF_ || fail_ref != LUA_NOREF_;
    if (c->corked && !notify && len < CORK_COPY_MAX) {
        size_t n = hlen + len;
        if (c->cork.len + n > c->cork.cap) {
            size_t cap = c->cork.cap ? c->cork.cap * 2 : 4096;
            while (cap < c->cork.len + n) cap *= 2;
            c->cork.data = realloc(c->cork.data, cap);
            if (!c->cork.data) abort();
            c->cork.cap = cap;
        }
        memcpy(c->cork.data + c->cork.len, hdr, hlen);
        if (len) memcpy(c->cork.data + c->cork.len + hlen, data, len);
        c->cork.len += n;
        return 0;
    }
    if (c->tls) {
        if (c->cork.len) conn_uncork(c);   /* keep the order */
        /* Header and a small payload in one record. */
        uint8_t one[4096];
        int r;
        if (hlen + len <= sizeof one) {
            memcpy(one, hdr, hlen);
            if (len) memcpy(one + hlen, data, len);
            r = tls_write(c->tls, one, hlen + len);
        } else {
            r = tls_write(c->tls, hdr, hlen);
            if (r == 0 && len) r = tls_write(c->tls, data, len);
        }
        if (r < 0) {
            if (notify) lh_send_done(c->srv->lua, ok_ref, fail_ref, "TLS error");
            return UV_EPROTO;
        }
        return tls_flush(c, ok_ref, fail_ref);
    }
    /* The cork's bytes go first (keep the order), in the same writev. */
    bytes cork = c->cork;
    memset(&c->cork, 0, sizeof c->cork);
    uv_buf_t bufs[3];
    unsigned n = 0;
    if (cork.len) bufs[n++] = uv_buf_init((char *)cork.data, (unsigned)cork.len);
    bufs[n++] = uv_buf_init((char *)hdr, (unsigned)hlen);
    if (len) bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
    int r = raw_writev(c, bufs, n, ok_ref, fail_ref);
    free(cork.data);
    return r;
}

void conn_uncork(conn *c)
{
    bytes cork = c->cork;
    memset(&c->cork, 0, sizeof c->cork);
    if (cork.len && c->state != CONN_DEAD) {
        if (c->tls) {
            if (tls_write(c->tls, cork.data, cork.len) == 0) tls_flush(c, LUA_NOREF_, LUA_NOREF_);
        } else {
            raw_write(c, cork.data, cork.len, LUA_NOREF_, LUA_NOREF_);
        }
    }
    free(cork.data);
}

/* Nothing queued: offers the bytes to the kernel at once; returns how
 * many it took. */
static size_t try_write(conn *c, const uv_buf_t *bufs, unsigned nbufs)
{
    if (c->queued) return 0;
    int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    return r > 0 ? (size_t)r : 0;
}

/* Hands w (bytes at p) to libuv; on_write frees it. */
static int enqueue(conn *c, wreq *w, uint8_t *p, size_t n)
{
    w->c = c;
    w->len = n;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r < 0) {
        shared_frame_unref(w->shared);
        free(w);
        return r;
    }
    c->queued += n;
    return 0;
}

static int raw_writev(conn *c, const uv_buf_t *bufs, unsigned nbufs, int ok_ref, int fail_ref)
{
    if (c->state == CONN_DEAD) return UV_EPIPE;
    size_t total = 0, skip = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    /* Nobody to tell: try the kernel first, and only copy what it did not take. */
    if (ok_ref == LUA_NOREF_ && fail_ref == LUA_NOREF_) {
        skip = try_write(c, bufs, nbufs);
        if (skip == total) return 0;
    }
    wreq *w = xmalloc(sizeof *w + (total - skip));
    w->shared = NULL;
    w->ok_ref = ok_ref;
    w->fail_ref = fail_ref;
    uint8_t *p = w->data;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t n = bufs[i].len;
        if (skip >= n) {
            skip -= n;
            continue;
        }
        memcpy(p, bufs[i].base + skip, n - skip);
        p += n - skip;
        skip = 0;
    }
    return enqueue(c, w, w->data, (size_t)(p - w->data));
}

static int raw_write(conn *c, const uint8_t *p, size_t n, int ok_ref, int fail_ref)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    return raw_writev(c, &b, 1, ok_ref, fail_ref);
}

/* ---- closing ---- */

static void on_timer_closed(uv_handle_t *h) { free(h); }

static void stop_timer(conn *c)
{
    if (c->timer) {
        uv_close((uv_handle_t *)c->timer, on_timer_closed);
        c->timer = NULL;
    }
}

static void on_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->state == CONN_WS_CLOSING) {
        log_info("conn %llu: no close frame from the peer in time", (unsigned long long)c->id);
        ws_on_disconnect(c);
    }
    conn_close_now(c);
}

void conn_set_timer(conn *c, unsigned ms)
{
    if (!c->timer) {
        c->timer = xmalloc(sizeof *c->timer);
        uv_timer_init(c->srv->loop, c->timer);
        c->timer->data = c;
    }
    uv_timer_start(c->timer, on_timeout, ms, 0);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn *c = req->data;
    free(req);
    if (status < 0 && c->state != CONN_DEAD) conn_close_now(c);
}

/* The WebSocket (or HTTP exchange) is over: send our FIN once the queue is
 * written, then wait for the peer's, so that we close the TCP connection
 * first (RFC 6455 7.1.1) without resetting it under unread data. */
void conn_linger(conn *c)
{
    if (c->state >= CONN_LINGER) return;
    /* What the cork holds goes before our FIN. */
    conn_uncork(c);
    c->corked = false;
    c->state = CONN_LINGER;
    free(c->msg.data);
    memset(&c->msg, 0, sizeof c->msg);
    if (c->pmd) {
        pmd_conn_free(&c->srv->pmd, c->pmd);
        free(c->pmd);
        c->pmd = NULL;
    }
    drop_pending(c);
    if (c->tls && tls_close_notify(c->tls) == 0) tls_flush(c, LUA_NOREF_, LUA_NOREF_);
    uv_shutdown_t *req = xmalloc(sizeof *req);
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        free(req);
        conn_close_now(c);
        return;
    }
    conn_set_timer(c, c->srv->cfg->close_timeout_ms);
    c->paused = false;
    start_reading(c);
}

void conn_close_now(conn *c)
{
    if (c->state == CONN_DEAD) return;
    c->state = CONN_DEAD;
    stop_timer(c);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* The one place a connection is freed. */
static void on_closed(uv_handle_t *h)
{
    conn *c = h->data;
    server *s = c->srv;
    lh_conn_gone(c);
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    if (c->http) {
        http_reader_free(c->http);
        free(c->http);
    }
    free(c->pending);
    free(c->msg.data);
    free(c->cork.data);
    if (c->pmd) {
        pmd_conn_free(&s->pmd, c->pmd);
        free(c->pmd);
    }
    free(c->close_reason);
    free(c->client_protocol);
    client_free(c);
    if (c->tls) tls_conn_free(c->tls);
    log_debug("conn %llu freed", (unsigned long long)c->id);
    free(c);
    if (s->stopping && s->nconns == 0) server_stop(s);
}

/* ---- timeouts and pings, checked for every connection by one timer ---- */

static void check_conn(conn *c, uint64_t now)
{
    const config *cfg = c->srv->cfg;
    if (c->state == CONN_HTTP && now >= c->deadline) {
        if (c->tls && !tls_handshake_done(c->tls)) {
            /* No TLS yet: nothing can be answered. */
            log_warn("conn %llu from %s: TLS handshake not finished within %u ms, closing",
                     (unsigned long long)c->id, c->peer, cfg->handshake_timeout_ms);
            conn_close_now(c);
            return;
        }
        log_warn("conn %llu from %s: no complete request within %u ms, answering 408", (unsigned long long)c->id,
                 c->peer, cfg->handshake_timeout_ms);
        static const char body[] = "408 Request Timeout\n";
        conn_respond(c, 408, NULL, 0, body, sizeof body - 1, false);
        return;
    }
    if ((c->state == CONN_CONNECTING || c->state == CONN_CLIENT_HANDSHAKE) && now >= c->deadline) {
        lh_client_failed(c, "timed out (--handshake-timeout)");
        conn_close_now(c);
        return;
    }
    if (c->state != CONN_WS || !cfg->ping_interval_ms) return;
    /* Silent for an interval: ping. Still silent an interval after the
     * ping (not after the last byte: the loop may have been busy): cut. */
    if (c->ping_sent && now - c->ping_at >= cfg->ping_interval_ms) {
        ws_abort(c, WS_CLOSE_ABNORMAL, "no answer to ping (--ping-interval), peer presumed dead");
    } else if (!c->ping_sent && now - c->last_seen >= cfg->ping_interval_ms) {
        c->ping_sent = true;
        c->ping_at = now;
        ws_send(c, WS_OP_PING, (const uint8_t *)"luaws", 5, LUA_NOREF_, LUA_NOREF_);
    }
}

static void on_housekeeping(uv_timer_t *t)
{
    server *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        check_conn(c, now);
    }
}

void conn_housekeeping_start(server *s)
{
    const config *cfg = s->cfg;
    uint64_t tick = cfg->handshake_timeout_ms / 4;
    if (cfg->ping_interval_ms && cfg->ping_interval_ms / 4 < tick) tick = cfg->ping_interval_ms / 4;
    if (tick < 25) tick = 25;
    if (tick > 1000) tick = 1000;
    uv_timer_init(s->loop, &s->housekeeping);
    s->housekeeping.data = s;
    uv_timer_start(&s->housekeeping, on_housekeeping, tick, tick);
    uv_unref((uv_handle_t *)&s->housekeeping);
}

/* ---- published frames, shared by every subscriber's write queue ---- */

shared_frame *shared_frame_new(const uint8_t *hdr, size_t hlen, const uint8_t *payload, size_t len)
{
    shared_frame *f = xmalloc(sizeof *f + hlen + len);
    f->refs = 1;
    f->len = hlen + len;
    memcpy(f->data, hdr, hlen);
    if (len) memcpy(f->data + hlen, payload, len);
    return f;
}

void shared_frame_unref(shared_frame *f)
{
    if (f && --f->refs == 0) free(f);
}

int conn_write_shared(conn *c, shared_frame *f)
{
    if (c->state == CONN_DEAD) return UV_EPIPE;
    if (c->cork.len) conn_uncork(c);   /* keep the order */
    if (c->tls) return conn_write(c, f->data, f->len, NULL, 0, LUA_NOREF_, LUA_NOREF_);
    uv_buf_t b = uv_buf_init((char *)f->data, (unsigned)f->len);
    size_t skip = try_write(c, &b, 1);
    if (skip == f->len) return 0;
    /* Whatever the kernel did not take waits in the queue by reference. */
    wreq *w = xmalloc(sizeof *w);
    w->ok_ref = w->fail_ref = LUA_NOREF_;
    w->shared = f;
    f->refs++;
    return enqueue(c, w, f->data + skip, f->len - skip);
}
