/* http_conn.c — the HTTP phase of a connection: a complete request is
 * checked (the WebSocket handshake, the Origin allowlist), routed (metrics,
 * static files, else the host) and answered (conn_respond) or upgraded
 * (conn_upgrade). Reading and writing bytes is conn.c's. */
#include "conn.h"
#include "server.h"
#include "xalloc.h"
#include "log.h"
#include "static.h"
#include "proxy_proto.h"
#include "forwarded.h"
#include <arpa/inet.h>
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void respond_refusal(conn *c, int status, const char *why)
{
    char head[128] = "";
    size_t hlen = 0;
    if (status == 426) hlen = (size_t)snprintf(head, sizeof head, "Sec-WebSocket-Version: 13\r\n");
    char body[256];
    int blen = snprintf(body, sizeof body, "%d %s: %s\n", status, http_reason(status), why);
    conn_respond(c, status, head, hlen, body, (size_t)blen, false);
}

/* ---- the HTTP phase (conn.c calls it through http_phase) ---- */

static size_t http_feed(conn *c, uint8_t *buf, size_t len)
{
    conn_http *h = c->http;
    if (h->static_read) return 0;   /* the answer before is still being read */
    /* A client that sends requests faster than it reads the answers: past
     * --high-water bytes of answers waiting, read no more requests until
     * the queue drains (conn.c resumes us), as nginx does. */
    size_t limit = c->srv->cfg->write_high_water;
    if (conn_backlog(c) >= limit) {
        conn_uncork(c);
        if (c->queued >= limit) {
            log_debug("conn %llu: %zu bytes of answers unread, reading no more requests for now",
                      (unsigned long long)c->id, c->queued);
            c->output_paused = true;
            conn_pause(c);
            return 0;
        }
    }
    size_t n;
    enum http_read_status st = http_reader_feed(&h->reader, (char *)buf, len, &n);
    if (st == HTTP_FAILED) {
        int status = h->reader.error_status;
        char peer[ADDR_TEXT_MAX];
        log_warn("conn %llu: bad HTTP request from %s, answering %d", (unsigned long long)c->id,
                 conn_peer_text(c, peer), status);
        conn_respond(c, status, NULL, 0, http_reason(status), strlen(http_reason(status)), false);
        return len;
    }
    if (st == HTTP_DONE) http_conn_request(c);
    return n;
}

static void http_lost(conn *c, const char *why) {}

/* Freed in the HTTP phase: a --static read in flight only frees itself. */
static void http_release(conn *c) { static_conn_gone(c); }

static void begin(conn *c);

static const conn_phase http_phase = {
    .name = "http",
    .feed = http_feed,
    .lost = http_lost,
    .release = http_release,
};

/* A new connection on a listener: the HTTP phase starts. */
void conn_accept(listener *l)
{
    server *s = l->srv;
    conn *c = conn_new(s, l, server_take_id(s), &http_phase);
    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) != 0) {
        conn_close_now(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_read_peer(c);
    begin(c);
}

conn *conn_adopt(listener *l, int fd, const net_addr *peer)
{
    server *s = l->srv;
    conn *c = conn_new(s, l, server_take_id(s), &http_phase);
    int r = uv_tcp_open(&c->tcp, fd);
    if (r < 0) {
        log_error("conn %llu: cannot use socket %d: %s", (unsigned long long)c->id, fd, uv_strerror(r));
        close(fd);
        conn_close_now(c);
        return NULL;
    }
    c->peer = *peer;
    begin(c);
    return c;
}

/* url is path, or path followed by a query. */
static bool path_is(const char *url, const char *path)
{
    size_t n = strlen(path);
    return strncmp(url, path, n) == 0 && (url[n] == '\0' || url[n] == '?');
}

/* Answers 503 with Retry-After and closes: refused before any request. */
static void refuse_busy(conn *c)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                               "Connection: close\r\nRetry-After: 1\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)busy, sizeof busy - 1);
    uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    conn_close_now(c);
}

/* --max-conns-per-ip, once the client's address is known (from the
 * socket, or from a PROXY header): counts c, or refuses it. */
static bool admit_address(conn *c)
{
    server *s = c->srv;
    if (!s->ip_counts) return true;
    uint32_t b = ip_bucket(&c->peer);
    uint32_t n = server_ip_count(s, b);
    if (n >= s->cfg->max_conns_per_ip) {
        s->metrics->ip_refused++;
        char peer[ADDR_TEXT_MAX];
        log_warn("conn %llu from %s refused: %u connections from this address (--max-conns-per-ip)",
                 (unsigned long long)c->id, conn_peer_text(c, peer), n);
        refuse_busy(c);
        return false;
    }
    server_ip_add(s, b, 1);
    c->ip_slot = b + 1;
    return true;
}

/* ---- the PROXY phase: a listener with ?proxy= reads the balancer's
 * header before anything else, TLS included ---- */

struct proxy_wait {
    size_t len;
    uint8_t buf[PROXY_MAX_HEADER];   /* the parser decides within this many bytes */
};

static void start_http(conn *c);

/* Everything received is kept until the parser decides: DONE hands what
 * follows the header to the layer below HTTP (TLS, or plain). */
static size_t proxy_feed(conn *c, uint8_t *buf, size_t len)
{
    struct proxy_wait *w = c->http->proxy;
    size_t take = len < sizeof w->buf - w->len ? len : sizeof w->buf - w->len;
    memcpy(w->buf + w->len, buf, take);
    w->len += take;
    proxy_result r;
    enum proxy_status st = proxy_parse(w->buf, w->len, c->lst->proxy, &r);
    if (st == PROXY_NEED_MORE && take == len) return len;
    char was[ADDR_TEXT_MAX];
    if (st != PROXY_DONE) {
        log_warn("conn %llu from %s: no valid PROXY header (%s), closing", (unsigned long long)c->id,
                 conn_peer_text(c, was), st == PROXY_ERROR ? r.error : "too long");
        conn_close_now(c);
        return len;
    }
    conn_peer_text(c, was);
    if (!r.local) c->peer = addr_from_sockaddr(&r.src);
    char now[ADDR_TEXT_MAX];
    log_debug("conn %llu: PROXY v%d from %s: client %s", (unsigned long long)c->id, r.version, was,
              conn_peer_text(c, now));
    /* What came after the header: the rest of our buffer, then the rest of
     * this read (if the buffer filled). */
    size_t n = w->len - r.consumed + (len - take);
    uint8_t *rest = xmalloc(n);
    memcpy(rest, w->buf + r.consumed, w->len - r.consumed);
    memcpy(rest + (w->len - r.consumed), buf + take, len - take);
    free(w);
    c->http->proxy = NULL;
    if (admit_address(c)) {
        start_http(c);
        if (n && c->state == CONN_HTTP) c->io->input(c, rest, n);
    }
    free(rest);
    return len;
}

static void proxy_lost(conn *c, const char *why) {}

static const conn_phase proxy_phase = {
    .name = "proxy",
    .feed = proxy_feed,
    .lost = proxy_lost,
};

/* --trust-proxy: a request from a trusted peer names the client in
 * X-Forwarded-For or Forwarded; from then on it is the connection's
 * address (logs, the request table, --max-conns-per-ip). False if the
 * client's address is over --max-conns-per-ip (refused). */
static bool apply_forwarded(conn *c, const http_request *req)
{
    const struct cidr_list *trusted = c->srv->cfg->trusted_proxies;
    if (!trusted) return true;
    conn_http *h = c->http;
    /* Judged by the transport's peer, also on a keep-alive connection whose
     * earlier request already named a client. */
    const net_addr *from = h->forwarder.family ? &h->forwarder : &c->peer;
    struct sockaddr_storage peer;
    if (!addr_to_sockaddr(from, &peer)) return true;
    const char *fwd = http_header_get(req, "forwarded");
    const char *xff = http_header_get(req, "x-forwarded-for");
    struct sockaddr_storage client;
    enum forwarded_status st = fwd ? forwarded_client(trusted, &peer, FORWARDED_RFC7239, fwd, strlen(fwd), &client)
                                   : forwarded_client(trusted, &peer, FORWARDED_XFF, xff, xff ? strlen(xff) : 0, &client);
    char a[ADDR_TEXT_MAX], b[ADDR_TEXT_MAX];
    if (st != FORWARDED_CLIENT) {
        if (st != FORWARDED_PEER && st != FORWARDED_ABSENT)
            log_debug("conn %llu: %s from trusted %s gives no client address (%s); keeping the peer's",
                      (unsigned long long)c->id, fwd ? "Forwarded" : "X-Forwarded-For", conn_peer_text(c, a),
                      forwarded_status_name(st));
        /* This request names nobody: it is the forwarder's own. */
        if (h->forwarder.family) c->peer = h->forwarder;
        return true;
    }
    if (!h->forwarder.family) h->forwarder = c->peer;
    c->peer = addr_from_sockaddr(&client);
    log_debug("conn %llu: client %s, forwarded by %s", (unsigned long long)c->id, conn_peer_text(c, a),
              addr_text(&h->forwarder, b));
    if (c->ip_slot) {
        /* Counted under the proxy's address so far: count the client instead. */
        server_ip_add(c->srv, c->ip_slot - 1, -1);
        c->ip_slot = 0;
    }
    return admit_address(c);
}

/* The HTTP phase of a new connection starts (or it is refused at once). */
static void begin(conn *c)
{
    server *s = c->srv;
    listener *l = c->lst;
    char peer[ADDR_TEXT_MAX];
    size_t open = server_connections(s);
    if (open > s->cfg->max_connections) {
        log_warn("conn %llu from %s refused: %zu connections open (--max-connections)",
                 (unsigned long long)c->id, conn_peer_text(c, peer), open - 1);
        refuse_busy(c);
        return;
    }
    conn_http *h = conn_new_http(c);
    h->deadline = server_now(s) + s->cfg->handshake_timeout_ms;
    if (l->proxy) {
        /* The balancer's header first: the client's address, then the
         * limits that depend on it, then TLS and HTTP. */
        h->proxy = xmalloc(sizeof *h->proxy);
        h->proxy->len = 0;
        c->phase = &proxy_phase;
        log_debug("conn %llu connected from %s (PROXY header expected)", (unsigned long long)c->id,
                  conn_peer_text(c, peer));
        conn_start_reading(c);
        return;
    }
    if (!admit_address(c)) return;
    start_http(c);
    log_debug("conn %llu connected from %s", (unsigned long long)c->id, conn_peer_text(c, peer));
    conn_start_reading(c);
}

/* TLS (on a wss:// listener) and the HTTP reader. */
static void start_http(conn *c)
{
    server *s = c->srv;
    listener *l = c->lst;
    c->phase = &http_phase;
    if (l->tls) {
        tls_conn *t = tls_conn_new(l->tls);
        if (!t) {
            log_error("conn %llu: out of memory for TLS", (unsigned long long)c->id);
            conn_close_now(c);
            return;
        }
        conn_tls_attach(c, t);
    }
    http_reader_init(&c->http->reader, s->cfg->max_header, s->cfg->max_body);
}

/* "Bearer TOKEN" with the right token, compared in constant time. */
static bool bearer_ok(const char *value, const char *token)
{
    if (!value || strncasecmp(value, "Bearer ", 7) != 0) return false;
    value += 7;
    size_t n = strlen(token);
    if (strlen(value) != n) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(value[i] ^ token[i]);
    return diff == 0;
}

/* A whole request was read (see server.h). */
void http_conn_request(conn *c)
{
    http_request *req = &c->http->reader.req;
    if (!apply_forwarded(c, req)) return;
    const char *up = http_header_get(req, "upgrade");
    bool wants_ws = up && http_token_list_has(up, "websocket");
    if (wants_ws) {
        const char *why = "";
        int status = http_ws_check_upgrade(req, &why);
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
            char peer[ADDR_TEXT_MAX];
            log_warn("conn %llu: refused WebSocket handshake from %s: %s (%d)", (unsigned long long)c->id,
                     conn_peer_text(c, peer), why, status);
            respond_refusal(c, status, why);
            return;
        }
    } else if (req->upgrade) {
        /* Another protocol (h2c, CONNECT): answer, then close, since what
         * follows on the wire is not HTTP/1.1. */
        req->keep_alive = false;
    }
    const config *cfg = c->srv->cfg;
    if (!wants_ws && cfg->health_path && path_is(req->url, cfg->health_path) &&
        (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)) {
        /* For load balancers: 503 while draining (SIGTERM) or full, so that
         * they stop sending new connections before ours close. */
        server *s = c->srv;
        const char *body = s->draining || s->stopping ? "draining\n"
                         : server_connections(s) >= cfg->max_connections ? "full\n" : "ok\n";
        int status = body[0] == 'o' ? 200 : 503;
        static const char head[] = "Content-Type: text/plain\r\nCache-Control: no-store\r\n";
        conn_respond(c, status, head, sizeof head - 1, body, strlen(body), req->keep_alive);
        goto answered;
    }
    if (!wants_ws && cfg->metrics && strcmp(req->method, "GET") == 0 &&
        strncmp(req->url, "/metrics", 8) == 0 && (req->url[8] == '\0' || req->url[8] == '?')) {
        if (cfg->metrics_token && !bearer_ok(http_header_get(req, "authorization"), cfg->metrics_token)) {
            log_warn("conn %llu: /metrics without the right token (--metrics-token), answering 401",
                     (unsigned long long)c->id);
            static const char www[] = "WWW-Authenticate: Bearer realm=\"luaws metrics\"\r\n";
            static const char body[] = "401 Unauthorized: /metrics needs Authorization: Bearer TOKEN\n";
            conn_respond(c, 401, www, sizeof www - 1, body, sizeof body - 1, req->keep_alive);
            goto answered;
        }
        bytes out = {0};
        metrics_render(c->srv, &out);
        static const char type[] = "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n";
        conn_respond(c, 200, type, sizeof type - 1, (const char *)out.data, out.len, req->keep_alive);
        free(out.data);
    } else if (wants_ws || !cfg->static_dir || !static_serve(c, cfg->static_dir, req, cfg->static_dotfiles, cfg->static_symlinks)) {
        c->srv->host->request(c->srv->host_ud, c, req);
    }
answered:
    if (!c->http->static_read) http_conn_answered(c);
}

void http_conn_answered(conn *c)
{
    if (c->state == CONN_HTTP) {
        if (!c->close_after_write) http_reader_reset(&c->http->reader);
        c->http->deadline = server_now(c->srv) + c->srv->cfg->handshake_timeout_ms;
    } else {
        /* Upgraded, or done (lingering): the HTTP phase's state goes. */
        conn_drop_http(c);
    }
}

void conn_respond(conn *c, int status, const char *head, size_t head_len,
                  const char *body, size_t body_len, bool keep_alive)
{
    if (c->state != CONN_HTTP) return;
    c->srv->metrics->http_requests_total++;
    char line[256];
    const http_request *req = c->http ? &c->http->reader.req : NULL;
    bool is_head = req && req->method && strcmp(req->method, "HEAD") == 0;
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
    conn_write(c, out, total, NULL, 0, NULL, NULL);
    free(out);
    log_info("conn %llu %s %s -> %d", (unsigned long long)c->id, req && req->method ? req->method : "-",
             req && req->url ? req->url : "-", status);
    if (!keep_alive) {
        c->close_after_write = true;
        conn_linger(c);
    }
}

int conn_upgrade(conn *c, const http_request *req, const char *protocol, const char *head, size_t head_len)
{
    assert(c->state == CONN_HTTP);
    char accept[29];
    http_ws_accept_key(http_header_get(req, "sec-websocket-key"), accept);
    pmd_params params;
    char ext[256] = "";
    bool deflate = pmd_negotiate(http_header_get(req, "sec-websocket-extensions"), c->srv->cfg->deflate,
                                 &params, ext, sizeof ext);
    /* No fixed size: a long subprotocol or extra headers from the handler
     * must not cut the response short. */
    size_t cap = 256 + (protocol ? strlen(protocol) : 0) + strlen(ext) + head_len;
    char *out = malloc(cap);
    if (!out) abort();
    int n = snprintf(out, cap,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "%s%s%s%s%s%s",
                     accept, protocol ? "Sec-WebSocket-Protocol: " : "", protocol ? protocol : "",
                     protocol ? "\r\n" : "", deflate ? "Sec-WebSocket-Extensions: " : "", ext,
                     deflate ? "\r\n" : "");
    assert(n > 0 && (size_t)n + head_len + 2 <= cap);
    if (head_len) memcpy(out + n, head, head_len);
    memcpy(out + n + head_len, "\r\n", 2);
    conn_write(c, (const uint8_t *)out, (size_t)n + head_len + 2, NULL, 0, NULL, NULL);
    free(out);
    char peer[ADDR_TEXT_MAX];
    log_info("conn %llu open %s %s%s%s%s%s", (unsigned long long)c->id, conn_peer_text(c, peer), req->url,
             protocol ? " protocol " : "", protocol ? protocol : "", deflate ? " " : "", ext);
    if (protocol && !(c->protocol = strdup(protocol))) abort();
    c->host_knows = true;
    ws_start(c, deflate ? &params : NULL);
    return 0;
}

