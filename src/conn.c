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

/* What a connection has to send that is not with the kernel or libuv yet,
 * in order: small frames copied, published frames by reference (ref[i].f
 * goes after copy.data[0 .. ref[i].at)). It collects while a batch of the
 * connection's own input is processed (the cork: the replies to pipelined
 * messages leave in one write when the batch is done) and, for what is
 * sent from anywhere else (timers, other sockets' events, publishes, the
 * topic links), until the end of the loop iteration: the connection is
 * then on the server's dirty list, which conn_flush_pass sends. So a
 * subscriber sent 8 messages in one iteration gets one writev, not 8. */
typedef struct out_ref {
    shared_frame *f;
    size_t at;
} out_ref;

struct conn_out {
    uint32_t dirty;           /* index + 1 in srv->dirty; 0: not listed */
    uint32_t nrefs, cap;
    size_t wire;              /* bytes of the frames held by reference */
    bytes copy;
    out_ref ref[];
};

/* What holding a frame by reference costs beyond its bytes: the pointer
 * here or in the write request, and libuv's copy of the buffer list. */
#define REF_COST (sizeof(out_ref) + sizeof(uv_buf_t))
/* A batch's room for frames at first, and the largest copy buffer the
 * spare batch keeps. */
#define OUT_REFS 4
#define OUT_SPARE_COPY (16 * 1024)
/* A batch this big is sent without waiting for the end of the iteration. */
#define OUT_FLUSH_AT (64 * 1024)
/* The most batches one pass at the end of a loop iteration sends. A fan-out
 * to more sockets goes over several iterations, a sweep through the dirty
 * list: what is published meanwhile joins the batches not yet sent (one
 * writev carries it too), and the loop reads other sockets between passes
 * instead of after the whole fan-out. */
#define FLUSH_PASS 1024

/* A queued write, with what it holds right behind the request: the
 * published frames its buffers point into (by reference), then the bytes
 * it owns (a copy). */
typedef struct wreq {
    uv_write_t req;
    conn *c;
    write_done_fn done;       /* NULL: nobody to tell */
    void *ud;
    size_t cost;              /* what it adds to c->queued */
    unsigned nrefs;
} wreq;

static shared_frame **wreq_refs(wreq *w) { return (shared_frame **)(w + 1); }

/* What one queued write costs beyond its bytes: the request, malloc's
 * header and libuv's own bookkeeping. --max-backpressure counts it, so that
 * a flood of tiny writes (pongs to a client that never reads) is bounded
 * by memory, not by payload bytes. */
#define WREQ_COST (sizeof(wreq) + 64)

/* Larger payloads are not copied into the batch: they leave at once, with
 * whatever the batch holds in front of them, in one writev. */
#define CORK_COPY_MAX (4 * 1024)

size_t conn_unsent(const conn *c)
{
    const conn_out *o = c->out;
    return o ? o->copy.len + o->wire : 0;
}

size_t conn_backlog(const conn *c)
{
    return c->queued + conn_unsent(c) + (c->out ? c->out->nrefs * REF_COST : 0);
}

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    conn *c = w->c;
    c->srv->activity++;
    size_t cost = w->cost;
    c->queued -= cost;
    if (w->done) w->done(w->ud, status);
    for (unsigned i = 0; i < w->nrefs; i++) shared_frame_unref(wreq_refs(w)[i]);
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
    if (c->queued < c->srv->cfg->write_high_water && c->queued + cost >= c->srv->cfg->write_high_water) {
        if (c->output_paused) {
            c->output_paused = false;
            conn_resume(c);
            return;
        }
        c->srv->host->writable(c->srv->host_ud, c);
    }
}

/* Nothing queued: offers the bytes to the kernel at once; returns how
 * many it took. */
static size_t try_write(conn *c, const uv_buf_t *bufs, unsigned nbufs)
{
    if (c->queued) return 0;
    c->srv->metrics->socket_writes++;
    int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    return r > 0 ? (size_t)r : 0;
}

/* Plain TCP: writes bufs in order. When nobody waits for the outcome the
 * kernel is offered them first; what it does not take is queued in libuv:
 * copied, except the bytes of published frames (refs[i] set: bufs[i] lies
 * in that frame), which are held by reference. done as for conn_write. */
static int raw_send(conn *c, const uv_buf_t *bufs, shared_frame *const *refs, unsigned nbufs,
                    write_done_fn done, void *ud)
{
    if (conn_is_dead(c)) {
        if (done) done(ud, UV_EPIPE);
        return UV_EPIPE;
    }
    size_t total = 0, skip = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    if (!done) {
        skip = try_write(c, bufs, nbufs);
        if (skip == total) return 0;
    }
    /* Past what the kernel took: whole buffers, then skip bytes of bufs[first]. */
    unsigned first = 0;
    while (skip && skip >= bufs[first].len) skip -= bufs[first++].len;
    size_t copy = 0, left = 0;
    unsigned nrefs = 0;
    for (unsigned i = first; i < nbufs; i++) {
        size_t n = bufs[i].len - (i == first ? skip : 0);
        left += n;
        if (refs && refs[i]) nrefs++;
        else copy += n;
    }
    wreq *w = xmalloc(sizeof *w + nrefs * sizeof(shared_frame *) + copy);
    w->c = c;
    w->done = done;
    w->ud = ud;
    w->nrefs = nrefs;
    w->cost = left + WREQ_COST + nrefs * REF_COST;
    uint8_t *p = (uint8_t *)(wreq_refs(w) + nrefs);
    /* With no frame by reference, the copy is one buffer. */
    uv_buf_t one = uv_buf_init((char *)p, (unsigned)copy), *out = &one;
    unsigned nout = 1, k = 0;
    if (nrefs) {
        out = xmalloc((nbufs - first) * sizeof *out);
        nout = 0;
    }
    for (unsigned i = first; i < nbufs; i++) {
        size_t off = i == first ? skip : 0, n = bufs[i].len - off;
        char *src = bufs[i].base + off;
        if (refs && refs[i]) {
            refs[i]->refs++;
            wreq_refs(w)[k++] = refs[i];
            out[nout++] = uv_buf_init(src, (unsigned)n);
            continue;
        }
        if (n) memcpy(p, src, n);
        if (nrefs) out[nout++] = uv_buf_init((char *)p, (unsigned)n);
        p += n;
    }
    c->srv->metrics->socket_writes++;
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, out, nout, on_write);
    if (out != &one) free(out);
    if (r < 0) {
        if (done) done(ud, r);
        for (unsigned i = 0; i < nrefs; i++) shared_frame_unref(wreq_refs(w)[i]);
        free(w);
        return r;
    }
    c->queued += w->cost;
    return 0;
}

int conn_raw_writev(conn *c, const uv_buf_t *bufs, unsigned nbufs, write_done_fn done, void *ud)
{
    return raw_send(c, bufs, NULL, nbufs, done, ud);
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

/* ---- the batch ---- */

/* c's batch, made on first use; the worker keeps one spare (the usual
 * size, its copy buffer kept), so that echoing does not allocate. */
static conn_out *out_get(conn *c)
{
    if (!c->out) {
        server *s = c->srv;
        c->out = s->spare_out;
        s->spare_out = NULL;
        if (!c->out) {
            c->out = xcalloc(sizeof *c->out + OUT_REFS * sizeof(out_ref));
            c->out->cap = OUT_REFS;
        }
    }
    return c->out;
}

/* Moves what the dirty list still holds (from dirty_head on, sent slots
 * dropped) to its front, and tells each batch its new place. */
static void dirty_compact(server *s)
{
    uint32_t n = 0;
    for (uint32_t i = s->dirty_head; i < s->ndirty; i++) {
        conn *c = s->dirty[i];
        if (!c) continue;
        assert(c->out && c->out->dirty == i + 1);
        s->dirty[n++] = c;
        c->out->dirty = n;
    }
    s->dirty_head = 0;
    s->ndirty = n;
}

/* Something was added to c's batch. Outside a batch of its own input (which
 * sends it when done), it goes at the end of this loop iteration; a batch
 * past OUT_FLUSH_AT goes at once, so that a burst of sends in one iteration
 * meets the kernel's buffers, not --max-backpressure. */
static void out_added(conn *c)
{
    conn_out *o = c->out;
    server *s = c->srv;
    if (conn_unsent(c) >= OUT_FLUSH_AT || uv_is_closing((uv_handle_t *)&s->flush_check)) {
        conn_uncork(c);   /* (or the server is stopping: no iteration end will come) */
        return;
    }
    if (c->corked || o->dirty) return;
    if (s->ndirty == s->dirty_cap && s->dirty_head) dirty_compact(s);
    if (s->ndirty == s->dirty_cap) {
        s->dirty_cap = s->dirty_cap ? 2 * s->dirty_cap : 64;
        s->dirty = xrealloc(s->dirty, s->dirty_cap * sizeof *s->dirty);
    }
    s->dirty[s->ndirty++] = c;
    o->dirty = s->ndirty;
}

/* Takes c's batch off c (and off the dirty list); the caller owns it. */
static conn_out *out_take(conn *c)
{
    conn_out *o = c->out;
    c->out = NULL;
    if (o && o->dirty) {
        assert(c->srv->dirty[o->dirty - 1] == c);
        c->srv->dirty[o->dirty - 1] = NULL;
        o->dirty = 0;
    }
    return o;
}

static void out_free(server *s, conn_out *o)
{
    if (!o) return;
    for (uint32_t i = 0; i < o->nrefs; i++) shared_frame_unref(o->ref[i].f);
    if (!s->spare_out && o->cap == OUT_REFS && o->copy.cap <= OUT_SPARE_COPY &&
        !uv_is_closing((uv_handle_t *)&s->flush_check)) {
        o->nrefs = 0;
        o->wire = 0;
        o->copy.len = 0;
        s->spare_out = o;
        return;
    }
    free(o->copy.data);
    free(o);
}

/* Sends c's batch, then hdr and data (either may be empty), in one writev
 * where the layer allows; done as for conn_write. */
static int out_send(conn *c, const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t len,
                    write_done_fn done, void *ud)
{
    conn_out *o = out_take(c);
    unsigned max = (o ? 2 * o->nrefs + 1 : 0) + 2, n = 0;
    uv_buf_t sbufs[19], *bufs = sbufs;
    shared_frame *srefs[19], **refs = srefs;
    if (max > 19) {
        bufs = xmalloc(max * sizeof *bufs);
        refs = xmalloc(max * sizeof *refs);
    }
    if (o) {
        size_t at = 0;
        for (uint32_t i = 0; i <= o->nrefs; i++) {
            size_t upto = i < o->nrefs ? o->ref[i].at : o->copy.len;
            if (upto > at) {
                refs[n] = NULL;
                bufs[n++] = uv_buf_init((char *)o->copy.data + at, (unsigned)(upto - at));
                at = upto;
            }
            if (i < o->nrefs) {
                refs[n] = o->ref[i].f;
                bufs[n++] = uv_buf_init((char *)o->ref[i].f->data, (unsigned)o->ref[i].f->len);
            }
        }
    }
    if (hlen) {
        refs[n] = NULL;
        bufs[n++] = uv_buf_init((char *)hdr, (unsigned)hlen);
    }
    if (len) {
        refs[n] = NULL;
        bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
    }
    int r = 0;
    if (n || done)
        r = c->io->raw ? raw_send(c, bufs, refs, n, done, ud) : c->io->writev(c, bufs, n, done, ud);
    out_free(c->srv, o);
    if (bufs != sbufs) {
        free(bufs);
        free(refs);
    }
    return r;
}

int conn_write(conn *c, const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t len,
               write_done_fn done, void *ud)
{
    if (conn_is_dead(c)) {
        if (done) done(ud, UV_EPIPE);
        return UV_EPIPE;
    }
    if (done || len >= CORK_COPY_MAX) return out_send(c, hdr, hlen, data, len, done, ud);
    conn_out *o = out_get(c);
    bytes_reserve(&o->copy, hlen + len, 4096);
    memcpy(o->copy.data + o->copy.len, hdr, hlen);
    if (len) memcpy(o->copy.data + o->copy.len + hlen, data, len);
    o->copy.len += hlen + len;
    out_added(c);
    return 0;
}

int conn_write_shared(conn *c, shared_frame *f)
{
    if (conn_is_dead(c)) return UV_EPIPE;
    conn_out *o = out_get(c);
    if (o->nrefs == o->cap) {
        o->cap *= 2;
        o = c->out = xrealloc(o, sizeof *o + o->cap * sizeof(out_ref));
    }
    f->refs++;
    o->ref[o->nrefs++] = (out_ref){f, o->copy.len};
    o->wire += f->len;
    out_added(c);
    return 0;
}

void conn_uncork(conn *c)
{
    if (!c->out) return;
    assert(!conn_is_dead(c));   /* conn_close_now dropped the batch; nothing adds to a dead one */
    out_send(c, NULL, 0, NULL, 0, NULL, NULL);
}

/* Sends up to budget batches from the head of the dirty list. Sending may
 * list more (a failed write's callback runs the host, which may send and
 * even compact the list): they join the sweep at its end. */
static void flush_batches(server *s, uint32_t budget)
{
    uint32_t sent = 0;
    while (s->dirty_head < s->ndirty && sent < budget) {
        conn *c = s->dirty[s->dirty_head++];
        if (!c) continue;   /* sent or dropped since it was listed */
        sent++;
        conn_uncork(c);     /* (out_take clears its slot) */
    }
    if (s->dirty_head == s->ndirty) s->dirty_head = s->ndirty = 0;
    if (sent) s->activity++;
}

bool conn_flush_pass(server *s)
{
    flush_batches(s, FLUSH_PASS);
    return s->ndirty > s->dirty_head;
}

void conn_flush_end(server *s)
{
    flush_batches(s, UINT32_MAX);
    assert(!s->ndirty);
    free(s->dirty);
    s->dirty = NULL;
    s->dirty_head = s->ndirty = s->dirty_cap = 0;
    conn_out *o = s->spare_out;
    s->spare_out = NULL;
    if (o) free(o->copy.data);
    free(o);
}

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
    out_free(c->srv, out_take(c));   /* nothing more goes out */
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
    assert(!c->out);
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
