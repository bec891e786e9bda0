/* conn.c — a connection's transport and lifetime: reading, the HTTP phase,
 * the write queue, the lingering close, and freeing. The WebSocket protocol
 * itself is in ws.c; whatever drives the server (the Lua binding) is
 * reached only through s->host (host.h). */
#include "conn.h"
#include "server.h"
#include "xalloc.h"
#include "log.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <assert.h>

/* Larger payloads are not copied into the cork: they leave at once, with
 * whatever the cork holds in front of them, in one writev. */
#define CORK_COPY_MAX (4 * 1024)

/* What one queued write costs beyond its bytes: the request, malloc's
 * header and libuv's own bookkeeping. --max-backpressure counts it, so that
 * a flood of tiny writes (pongs to a client that never reads) is bounded
 * by memory, not by payload bytes. */
#define WREQ_COST (sizeof(struct wreq) + 64)

/* A queued write owns a copy of its bytes, right behind the request. */
typedef struct wreq {
    uv_write_t req;
    conn *c;
    write_done_fn done;       /* NULL: nobody to tell */
    void *ud;
    size_t len;
    shared_frame *shared;     /* set: the bytes are a published frame's, by reference */
    uint8_t data[];
} wreq;

static void on_closed(uv_handle_t *h);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static size_t feed(conn *c, uint8_t *buf, size_t len);
static const conn_io plain_io;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    size_t room;
    /* Not under TLS (records, not frames, arrive) nor while kept bytes wait. */
    uint8_t *direct = !c->io->raw || c->pending || !c->phase->read_target ? NULL : c->phase->read_target(c, &room);
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

void conn_read_peer(conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    c->peer = addr_from_sockaddr(uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0 ? &ss : NULL);
}

conn_http *conn_new_http(conn *c)
{
    assert(!c->http);
    c->http = xcalloc(sizeof *c->http);
    return c->http;
}

void conn_drop_http(conn *c)
{
    conn_http *h = c->http;
    if (!h) return;
    assert(!h->static_read && !h->client);
    http_reader_free(&h->reader);
    free(h->proxy);
    free(h);
    c->http = NULL;
}

conn *conn_new(server *s, listener *l, uint64_t id, const conn_phase *phase)
{
    conn *c = xcalloc(sizeof *c);
    c->srv = s;
    c->phase = phase;
    c->io = &plain_io;
    c->lst = l;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->id = id;
    s->metrics->connections_total++;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    server_count_conn(s, 1);
    return c;
}

void conn_start_reading(conn *c) { start_reading(c); }

/* Keeps bytes that could not be consumed because an event is suspended. */
static void keep_pending(conn *c, const uint8_t *buf, size_t len)
{
    if (len == 0) return;
    conn_pending *p = c->pending;
    if (p && buf >= p->data && buf < p->data + p->len) {
        p->off = (size_t)(buf - p->data);
        return;
    }
    size_t old = p ? p->len - p->off : 0;
    conn_pending *q = xmalloc(sizeof *q + old + len);
    if (old) memcpy(q->data, p->data + p->off, old);
    memcpy(q->data + old, buf, len);
    q->len = old + len;
    q->off = 0;
    free(p);
    c->pending = q;
}

static void drop_pending(conn *c)
{
    free(c->pending);
    c->pending = NULL;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = st->data;
    c->srv->activity++;
    if (nread == 0) return;
    if (nread < 0) {
        if (nread != UV_EOF && nread != UV_ECONNRESET)
            log_debug("conn %llu read error: %s", (unsigned long long)c->id, uv_strerror((int)nread));
        c->phase->lost(c, "the peer closed the connection");
        conn_close_now(c);
        return;
    }
    uint8_t *data = (uint8_t *)buf->base;
    c->last_seen = server_now(c->srv);
    c->ping_sent = false;
    c->io->input(c, data, (size_t)nread);
}

/* Plain TCP: the bytes read are the protocol's. */
void conn_feed_input(conn *c, uint8_t *data, size_t n)
{
    size_t used = feed(c, data, n);
    if (used < n && !conn_is_finished(c)) keep_pending(c, data + used, n - used);
}

void conn_hold(conn *c, uint8_t who)
{
    c->holds |= who;
    c->paused = true;
    c->ws.paused = true;
    if (!conn_is_finished(c)) uv_read_stop((uv_stream_t *)&c->tcp);
}

void conn_release(conn *c, uint8_t who)
{
    if (!c->paused) return;
    c->holds &= (uint8_t)~who;
    if (c->holds) return;   /* the other holder still holds it */
    c->paused = false;
    c->ws.paused = false;
    if (conn_is_dead(c)) return;
    if (c->pending) {
        conn_pending *p = c->pending;
        size_t n = p->len - p->off;
        size_t used = feed(c, p->data + p->off, n);
        if (used == n || conn_is_finished(c)) drop_pending(c);
        else if (c->pending) c->pending->off += used;
    }
    if (c->io->resume && !c->paused) c->io->resume(c);
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
    while (off < len && !c->paused && !conn_is_finished(c)) {
        const conn_phase *before = c->phase;
        size_t n = c->phase->feed(c, buf + off, len - off);
        off += n;
        /* Nothing taken and still the same phase: it waits for more. */
        if (n == 0 && c->phase == before) break;
    }
    return conn_is_finished(c) ? len : off;   /* lingering or dead: input is discarded */
}

void conn_tell_close(conn *c)
{
    if (!c->host_knows || c->host_closed) return;
    c->host_closed = true;
    c->srv->host->close(c->srv->host_ud, c, conn_close_code(c), conn_close_reason(c));
}

/* ---- writing ---- */

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    conn *c = w->c;
    c->srv->activity++;
    size_t w_len = w->len + WREQ_COST;
    c->queued -= w_len;
    if (w->done) w->done(w->ud, status);
    if (w->shared) shared_frame_unref(w->shared);
    free(w);
    if (status < 0 && status != UV_ECANCELED && c->state != CONN_DEAD) {
        log_debug("conn %llu write error: %s", (unsigned long long)c->id, uv_strerror(status));
        c->phase->lost(c, "write error");
        conn_close_now(c);
        return;
    }
    /* A peer that takes our data is alive, even if its pong still waits
     * behind what we queued before the ping. */
    if (status == 0) {
        c->last_seen = server_now(c->srv);
        c->ping_sent = false;
    }
    if (c->queued == 0 && c->phase->drained) c->phase->drained(c);
    if (c->queued < c->srv->cfg->write_high_water && c->queued + w_len >= c->srv->cfg->write_high_water) {
        if (c->output_paused) {
            c->output_paused = false;
            conn_resume(c);
            return;
        }
        c->srv->host->writable(c->srv->host_ud, c);
    }
}

int conn_write(conn *c, const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t len,
               write_done_fn done, void *ud)
{
    if (conn_is_dead(c)) {
        if (done) done(ud, UV_EPIPE);
        return UV_EPIPE;
    }
    if (c->corked && !done && len < CORK_COPY_MAX) {
        size_t n = hlen + len;
        bytes_reserve(&c->cork, n, 4096);
        memcpy(c->cork.data + c->cork.len, hdr, hlen);
        if (len) memcpy(c->cork.data + c->cork.len + hlen, data, len);
        c->cork.len += n;
        return 0;
    }
    /* The cork's bytes go first (keep the order), in the same writev. */
    bytes cork = c->cork;
    memset(&c->cork, 0, sizeof c->cork);
    uv_buf_t bufs[3];
    unsigned n = 0;
    if (cork.len) bufs[n++] = uv_buf_init((char *)cork.data, (unsigned)cork.len);
    bufs[n++] = uv_buf_init((char *)hdr, (unsigned)hlen);
    if (len) bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
    int r = c->io->writev(c, bufs, n, done, ud);
    free(cork.data);
    return r;
}

void conn_uncork(conn *c)
{
    bytes cork = c->cork;
    memset(&c->cork, 0, sizeof c->cork);
    if (cork.len && !conn_is_dead(c)) {
        uv_buf_t b = uv_buf_init((char *)cork.data, (unsigned)cork.len);
        c->io->writev(c, &b, 1, NULL, NULL);
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

/* Hands w (bytes at p) to libuv; on_write frees it (and tells w->done). */
static int enqueue(conn *c, wreq *w, uint8_t *p, size_t n)
{
    w->c = c;
    w->len = n;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r < 0) {
        if (w->done) w->done(w->ud, r);
        shared_frame_unref(w->shared);
        free(w);
        return r;
    }
    c->queued += n + WREQ_COST;
    return 0;
}

int conn_raw_writev(conn *c, const uv_buf_t *bufs, unsigned nbufs, write_done_fn done, void *ud)
{
    if (conn_is_dead(c)) {
        if (done) done(ud, UV_EPIPE);
        return UV_EPIPE;
    }
    size_t total = 0, skip = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    /* Nobody to tell: try the kernel first, and only copy what it did not take. */
    if (!done) {
        skip = try_write(c, bufs, nbufs);
        if (skip == total) return 0;
    }
    wreq *w = xmalloc(sizeof *w + (total - skip));
    w->shared = NULL;
    w->done = done;
    w->ud = ud;
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

int conn_raw_write(conn *c, const uint8_t *p, size_t n, write_done_fn done, void *ud)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    return conn_raw_writev(c, &b, 1, done, ud);
}

/* Plain TCP, the default layer under a connection. */
static const conn_io plain_io = {
    .input = conn_feed_input,
    .writev = conn_raw_writev,
    .raw = true,
};

/* ---- closing ---- */

static void on_timer_closed(wtimer *t) { free(t); }

static void stop_timer(conn *c)
{
    if (c->timer) {
        wtimer_close(c->timer, on_timer_closed);
        c->timer = NULL;
    }
    if (c->rate_timer) {
        wtimer_close(c->rate_timer, on_timer_closed);
        c->rate_timer = NULL;
    }
}

static void on_timeout(wtimer *t)
{
    conn *c = t->data;
    c->phase->lost(c, "timeout");
    conn_close_now(c);
}

static void on_rate_timer(wtimer *t)
{
    conn *c = t->data;
    conn_release(c, CONN_HOLD_RATE);
}

void conn_hold_for(conn *c, uint8_t who, uint64_t ms)
{
    if (c->state == CONN_DEAD) return;
    if (!c->rate_timer) {
        c->rate_timer = xmalloc(sizeof *c->rate_timer);
        wtimer_init(&c->srv->clock, c->rate_timer);
        c->rate_timer->data = c;
    }
    conn_hold(c, who);
    wtimer_start(c->rate_timer, on_rate_timer, ms, 0);
}

void conn_set_timer(conn *c, unsigned ms)
{
    if (!c->timer) {
        c->timer = xmalloc(sizeof *c->timer);
        wtimer_init(&c->srv->clock, c->timer);
        c->timer->data = c;
    }
    wtimer_start(c->timer, on_timeout, ms, 0);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn *c = req->data;
    free(req);
    c->srv->activity++;
    if (status < 0 && c->state != CONN_DEAD) conn_close_now(c);
}

/* The WebSocket (or HTTP exchange) is over: send our FIN once the queue is
 * written, then wait for the peer's, so that we close the TCP connection
 * first (RFC 6455 7.1.1) without resetting it under unread data. */
void conn_linger(conn *c)
{
    if (conn_is_finished(c)) return;
    /* What the cork holds goes before our FIN. */
    conn_uncork(c);
    c->corked = false;
    c->state = CONN_LINGER;
    wss_trim(&c->ws);
    drop_pending(c);
    if (c->io->shutdown) c->io->shutdown(c);
    uv_shutdown_t *req = xmalloc(sizeof *req);
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        free(req);
        conn_close_now(c);
        return;
    }
    conn_set_timer(c, c->srv->cfg->close_timeout_ms);
    c->paused = false;
    c->holds = 0;
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
    s->activity++;
    conn_tell_close(c);
    s->host->gone(s->host_ud, c);
    assert(!c->user);
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    server_count_conn(s, -1);
    if (c->ip_slot) server_ip_add(s, c->ip_slot - 1, -1);
    /* The phase first: it lets go of what it shares with others (a --static
     * read in flight, an outbound handshake's resolver), then its state goes. */
    if (c->phase->release) c->phase->release(c);
    conn_drop_http(c);
    free(c->pending);
    free(c->cork.data);
    free(c->pong);
    free(c->rate);
    wss_free(&c->ws);
    free(c->protocol);
    if (c->io->release) c->io->release(c);
    log_debug("conn %llu freed", (unsigned long long)c->id);
    free(c);
    if (s->nconns == 0 && s->on_empty) s->on_empty(s);
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
    if (!c->io->raw) return conn_write(c, f->data, f->len, NULL, 0, NULL, NULL);
    uv_buf_t b = uv_buf_init((char *)f->data, (unsigned)f->len);
    size_t skip = try_write(c, &b, 1);
    if (skip == f->len) return 0;
    /* Whatever the kernel did not take waits in the queue by reference. */
    wreq *w = xmalloc(sizeof *w);
    w->done = NULL;
    w->ud = NULL;
    w->shared = f;
    f->refs++;
    return enqueue(c, w, f->data + skip, f->len - skip);
}
