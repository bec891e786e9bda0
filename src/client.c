/* client.c — outbound WebSocket connections (luaws.connect): resolve,
 * connect, send the upgrade request, and check the server's answer
 * (RFC 6455 4.1). From the 101 on, the connection is like any other, with
 * the roles of masking reversed. */
#include "client.h"
#include "server.h"
#include "xalloc.h"
#include "log.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <assert.h>
#include <unistd.h>

struct client {
    uv_getaddrinfo_t gai;     /* first: an orphaned resolve finds cl from it */
    uv_connect_t connect;
    char *host;
    int port;
    char *request;
    size_t request_len;
    char accept[29];          /* the Sec-WebSocket-Accept we expect */
    char *protocols;
    bool deflate;
    bool resolving;
    bool tls, verify, request_sent;
    char *ca;
};

static void client_destroy(struct client *cl)
{
    free(cl->ca);
    free(cl->host);
    free(cl->request);
    free(cl->protocols);
    free(cl);
}

/* The handshake in progress (NULL once open, or given up). */
static struct client *client_of(const conn *c) { return c->http ? c->http->client : NULL; }

void client_free(conn *c)
{
    struct client *cl = client_of(c);
    if (!cl) return;
    c->http->client = NULL;
    if (cl->resolving) {
        /* The resolver still holds cl: its callback frees it. */
        cl->gai.data = NULL;
        uv_cancel((uv_req_t *)&cl->gai);
        return;
    }
    client_destroy(cl);
}

bool client_is_connecting(const conn *c)
{
    return c->is_client && (c->state == CONN_CONNECTING || c->state == CONN_CLIENT_HANDSHAKE);
}

void client_failed(conn *c, const char *why)
{
    if (conn_is_dead(c)) return;
    struct client *cl = client_of(c);
    char peer[ADDR_TEXT_MAX];
    if (cl) log_warn("conn %llu: cannot open %s://%s:%d: %s", (unsigned long long)c->id, cl->tls ? "wss" : "ws",
                     cl->host, cl->port, why);
    else log_warn("conn %llu: cannot open ws://%s: %s", (unsigned long long)c->id, conn_peer_text(c, peer), why);
    wss_record_close(&c->ws, WS_CLOSE_ABNORMAL, why, strlen(why));
    conn_close_now(c);
    if (!c->host_closed) c->srv->host->error(c->srv->host_ud, c, why);
    conn_tell_close(c);
}

void client_abandon(conn *c, uint16_t code, const char *reason)
{
    assert(client_is_connecting(c));
    wss_record_close(&c->ws, code, reason, strlen(reason));
    conn_close_now(c);   /* on_close(code, reason) once it is gone */
}

/* ---- the phase conn.c feeds until the 101 ---- */

static size_t client_feed(conn *c, uint8_t *buf, size_t len)
{
    if (c->state != CONN_CLIENT_HANDSHAKE) return len;   /* nothing is due before our request */
    size_t n;
    enum http_read_status st = http_reader_feed(&c->http->reader, (char *)buf, len, &n);
    if (st == HTTP_FAILED) {
        client_failed(c, "the server's answer is not valid HTTP");
        return len;
    }
    if (st == HTTP_DONE) client_on_response(c);
    return n;
}

static void client_lost(conn *c, const char *why) { client_failed(c, why); }

static const conn_phase client_phase = {
    .name = "client handshake",
    .feed = client_feed,
    .lost = client_lost,
    .secured = client_send_request,
    .release = client_free,
};

/* The connection is up: TLS, then the upgrade request. */
static void connected(conn *c)
{
    struct client *cl = client_of(c);
    c->state = CONN_CLIENT_HANDSHAKE;
    c->http->deadline = server_now(c->srv) + c->srv->cfg->handshake_timeout_ms;
    conn_read_peer(c);        /* the address we reached (a socket pair has none) */
    if (cl->tls) {
        char err[256];
        tls_server *ctx = tls_client_ctx_new(cl->ca, cl->verify, err, sizeof err);
        if (ctx) {
            tls_conn *t = tls_client_new(ctx, cl->host);
            tls_server_free(ctx);   /* the connection holds its own reference */
            if (t) conn_tls_attach(c, t);
        }
        if (!c->tls || tls_start(c->tls) < 0) {
            client_failed(c, ctx ? "cannot start TLS" : err);
            return;
        }
        conn_tls_flush(c);          /* the ClientHello; the request follows the handshake */
    } else {
        client_send_request(c);
    }
    conn_start_reading(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn *c = req->data;
    if (status == UV_ECANCELED || conn_is_dead(c)) return;
    if (status < 0) {
        client_failed(c, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    connected(c);
}

void client_start_fd(conn *c, int fd)
{
    struct client *cl = client_of(c);
    log_debug("conn %llu connecting to %s://%s:%d over a socket pair", (unsigned long long)c->id,
              cl->tls ? "wss" : "ws", cl->host, cl->port);
    int r = uv_tcp_open(&c->tcp, fd);
    if (r < 0) {
        close(fd);
        client_failed(c, uv_strerror(r));
        return;
    }
    connected(c);
}

void client_send_request(conn *c)
{
    struct client *cl = client_of(c);
    if (!cl || cl->request_sent) return;
    cl->request_sent = true;
    conn_write(c, (const uint8_t *)cl->request, cl->request_len, NULL, 0, NULL, NULL);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    conn *c = req->data;
    if (!c) {
        uv_freeaddrinfo(res);
        client_destroy((struct client *)req);   /* gai is its first member */
        return;
    }
    struct client *cl = client_of(c);
    cl->resolving = false;
    if (conn_is_dead(c)) {
        /* Closed while resolving (given up, timed out): connect no more. */
        uv_freeaddrinfo(res);
        return;
    }
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        char why[160];
        snprintf(why, sizeof why, "cannot resolve host '%.100s': %s", cl->host,
                 status < 0 ? uv_strerror(status) : "no address");
        client_failed(c, why);
        return;
    }
    cl->connect.data = c;
    int r = uv_tcp_connect(&cl->connect, &c->tcp, res->ai_addr, on_connect);
    uv_freeaddrinfo(res);
    if (r < 0) client_failed(c, uv_strerror(r));
}

conn *client_connect(server *s, const client_request *req, uint64_t id)
{
    conn *c = conn_new(s, NULL, id, &client_phase);
    struct client *cl = calloc(1, sizeof *cl);
    if (!cl) abort();
    conn_http *h = conn_new_http(c);
    h->client = cl;
    c->is_client = true;
    c->host_knows = true;     /* the host made it: it hears its close */
    c->state = CONN_CONNECTING;
    h->deadline = server_now(s) + s->cfg->handshake_timeout_ms;
    cl->host = xstrdup(req->host);
    cl->port = req->port;
    cl->request = malloc(req->request_len);
    if (!cl->request) abort();
    memcpy(cl->request, req->request, req->request_len);
    cl->request_len = req->request_len;
    cl->protocols = req->protocols ? xstrdup(req->protocols) : NULL;
    cl->deflate = req->deflate;
    cl->tls = req->tls;
    cl->verify = req->verify;
    cl->ca = req->ca ? xstrdup(req->ca) : NULL;
    http_ws_accept_key(req->key, cl->accept);
    http_reader_init_response(&h->reader, s->cfg->max_header, s->cfg->max_body);
    return c;
}

void client_start(conn *c)
{
    struct client *cl = client_of(c);
    char port[8];
    snprintf(port, sizeof port, "%d", cl->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    cl->gai.data = c;
    cl->resolving = true;
    log_info("conn %llu connecting to %s://%s:%d", (unsigned long long)c->id, cl->tls ? "wss" : "ws", cl->host,
             cl->port);
    int r = uv_getaddrinfo(c->srv->loop, &cl->gai, on_resolved, cl->host, port, &hints);
    if (r < 0) {
        cl->resolving = false;
        client_failed(c, uv_strerror(r));
    }
}

/* The whole response head arrived: is it the 101 we asked for? */
void client_on_response(conn *c)
{
    struct client *cl = client_of(c);
    http_request *res = &c->http->reader.req;
    char why[160];
    bool deflate;
    pmd_params params;
    if (c->srv->host->response) c->srv->host->response(c->srv->host_ud, c, res);
    if (conn_is_dead(c)) return;
    if (!http_ws_check_101(res, cl->accept, cl->protocols, cl->deflate, &deflate, &params, why, sizeof why)) {
        client_failed(c, why);
        return;
    }
    const char *proto = http_header_get(res, "sec-websocket-protocol");
    const char *ext = http_header_get(res, "sec-websocket-extensions");
    log_info("conn %llu open to %s://%s:%d%s%s%s%s", (unsigned long long)c->id, cl->tls ? "wss" : "ws", cl->host,
             cl->port, proto ? " protocol " : "", proto ? proto : "", ext ? " " : "", ext ? ext : "");
    if (proto) {
        free(c->protocol);
        c->protocol = xstrdup(proto);
    }
    client_free(c);
    conn_drop_http(c);
    ws_start(c, deflate ? &params : NULL);
    c->srv->host->open(c->srv->host_ud, c);
}
