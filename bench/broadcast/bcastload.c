/*
 * bcastload — the client side of bench/broadcast/run: the broadcast test of
 * the Hashrocket websocket-shootout (websocket-bench broadcast), on loopback.
 *
 *   bcastload [--initial N] [--step N] [--max N] [-c CONC] [-s SAMPLES]
 *             [--rate R [-d SECS]] [--limit-ms MS] [--percentile P]
 *             [--limit-on all|result|own] [--padding BYTES] [-t THREADS]
 *             [--sources K] [--cpu NAME=PID]... ws://127.0.0.1:PORT/PATH
 *
 * Protocol (the shootout's "json" server type): a client sends
 *   {"type":"broadcast","payload":{"id":17,"padding":"1234567890..."}}
 * and the server sends {"type":"broadcast","payload":<payload>} to every
 * connected client (the sender included) and
 * {"type":"broadcastResult","payload":<payload>} to the sender. Key order
 * and spacing of the server's JSON do not matter.
 *
 * Steps: open clients until there are N (--initial, then --step more each
 * step), send one warm-up broadcast (it must reach every client), then
 * measure:
 *   closed loop (default, the shootout's): CONC broadcasts in flight, each
 *     from a random client, until SAMPLES have completed;
 *   --rate R: every client sends R broadcasts per second (spread evenly over
 *     time, open loop, so N clients make N*R broadcasts/s) for -d seconds.
 * A broadcast is in flight until the sender has its broadcastResult AND every
 * client has received the broadcast. Three round trips are kept per
 * broadcast, from the sender's send to:
 *   result  the sender receives its broadcastResult (what websocket-bench
 *           measures);
 *   own     the sender receives its own copy of the broadcast;
 *   all     the last of the N clients receives the broadcast.
 * The step passes when the PERCENTILE (95) of the --limit-on round trip (all)
 * is at most --limit-ms (500); the first step that fails ends the run, and
 * the highest N that passed is the result. A broadcast that never completes
 * (10 s without progress) counts as lost, with an infinite round trip.
 * Every delivery is checked: a broadcast reaches each client at most once
 * and every client gets it (lost otherwise); results come to the sender only.
 *
 * THREADS event loops (default: enough for --max at 19,000 clients per
 * thread), each a nonblocking level-triggered epoll loop with its own file
 * table (unshare(CLONE_FILES)), so the per-process open-files cap applies to
 * each thread's share. Sources are spread over 127.0.0.1 .. 127.0.0.K
 * (IP_BIND_ADDRESS_NO_PORT) so no address runs out of ephemeral ports. Only
 * loopback targets are accepted; a guard alarm ends a hung run.
 *
 * Output (stdout): one line per step and one at the end,
 *   STEP clients=N ... p95_ms=... pass=1
 *   RESULT max_clients=N stopped=limit|max|error ...
 * with the server CPU seconds (utime+stime of each --cpu process and its
 * descendants, from /proc) over the measured part of each step.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LOADTOOL_NAME "bcastload"
#include "../loadtool.h"

#define RING            (1u << 16)      /* broadcasts remembered; ids map to id % RING */
#define MAX_CONNECTING  256             /* handshakes in progress per thread */
#define READ_CHUNK      (256 * 1024)
#define MAX_FRAME       (1u << 20)
#define PER_THREAD      19000           /* clients per thread when -t is not given */
#define PER_SOURCE      10000           /* clients per source address by default */
#define STALL_S         10.0            /* no progress for this long: the rest is lost */
#define DONE_RESULT     1u
#define DONE_ALL        2u

enum cstate { CS_CONNECTING, CS_HANDSHAKE, CS_OPEN, CS_DEAD };
enum phase { PH_IDLE, PH_CLOSED, PH_RATE, PH_QUIT };
enum limit_on { ON_ALL, ON_RESULT, ON_OWN };

struct buf {
    uint8_t *p;
    size_t len, cap;
};

struct conn {
    int fd;
    uint8_t state;
    bool want_out;      /* EPOLLOUT registered */
    bool in_msg;        /* a fragmented message is being assembled in msg */
    uint32_t idx;       /* the client's number, unique over all threads */
    struct buf in;      /* the handshake response, or an incomplete frame */
    struct buf msg;     /* fragments so far */
    struct buf out;     /* bytes not sent yet */
};

/* One broadcast. The sender's thread fills it before sending; the fields are
 * written by the thread that sees the event and read by the main thread after
 * the phase (the atomics order them). */
struct bcast {
    _Atomic uint32_t id;
    _Atomic uint32_t count;     /* clients that received it */
    _Atomic uint32_t done;      /* DONE_RESULT | DONE_ALL */
    uint32_t expect, sender;
    double t_send, t_result, t_own, t_all;
};

struct worker {
    pthread_t th;
    int id, epfd;
    struct conn *conns;
    int cap, nstarted, n_open, n_connecting;
    uint64_t rng;
    uint8_t *rbuf, *jbuf;
    uint32_t gen;
    /* rate phase */
    double next_send, interval;
    uint32_t rr;
    /* read by the main thread */
    _Atomic int target;         /* connections this thread should have open */
    _Atomic int opened;
    _Atomic int dead;
    _Atomic int kick;           /* closed loop: broadcasts to start at the phase start */
    _Atomic uint64_t deliveries;
    _Atomic uint64_t errors;
};

static struct {
    int initial, step, max, conc, samples, threads, sources, padding, percentile, secs, guard;
    double rate, limit_ms;
    enum limit_on on;
    char host[64], path[256];
    int port;
    struct watched_cpu cpu[MAX_CPU];
    int ncpu;
} opt = { .initial = 1000, .step = 1000, .max = 19000, .conc = 4, .samples = 100, .threads = 0,
          .sources = 0, .padding = 0, .percentile = 95, .secs = 5, .guard = 3600, .rate = 0,
          .limit_ms = 500, .on = ON_ALL, .path = "/" };

static struct {
    _Atomic int phase;
    _Atomic uint32_t gen;           /* bumped when phase changes */
    _Atomic uint32_t next_id;
    _Atomic int64_t to_start;       /* closed loop: broadcasts that may still start */
    _Atomic uint32_t started, completed;
    _Atomic uint32_t n_clients;     /* deliveries each broadcast must get */
    _Atomic uint32_t overrun;       /* rate: sends skipped, the ring was full */
    _Atomic uint64_t proto_errors;
    double t_stop;                  /* rate: end of sending */
} g;

static struct bcast *ring;
static struct worker *workers;
static struct sockaddr_in dst;
static char *pad_json;              /* ,"padding":"1234567890..." or "" */


static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) die("out of memory");
    return p;
}

static void buf_add(struct buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n) cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    *b = (struct buf){ 0 };
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}


/* ---- connections (each belongs to one worker thread) ---- */

static void conn_dead(struct worker *w, struct conn *c, const char *why)
{
    if (c->state == CS_DEAD) return;
    static _Atomic int reported;
    if (atomic_fetch_add(&reported, 1) < 5) fprintf(stderr, "bcastload: client %u lost: %s\n", c->idx, why);
    if (c->state == CS_OPEN) w->n_open--;
    else w->n_connecting--;
    c->state = CS_DEAD;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->msg);
    buf_free(&c->out);
    atomic_fetch_add(&w->dead, 1);
    atomic_fetch_add(&w->errors, 1);
}

static void set_out(struct worker *w, struct conn *c, bool want)
{
    if (want == c->want_out) return;
    c->want_out = want;
    struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c };
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

static void flush(struct worker *w, struct conn *c)
{
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + off, c->out.len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            conn_dead(w, c, strerror(errno));
            return;
        }
        off += (size_t)n;
    }
    memmove(c->out.p, c->out.p + off, c->out.len - off);
    c->out.len -= off;
    set_out(w, c, c->out.len > 0);
}

/* A masked client frame, sent at once (what the socket does not take waits). */
static void send_frame(struct worker *w, struct conn *c, uint8_t opcode, const void *payload, size_t len)
{
    uint32_t r = (uint32_t)xorshift(&w->rng);
    uint8_t h[14], k[4];
    memcpy(k, &r, 4);
    buf_add(&c->out, h, client_frame_head(h, opcode, len, k));
    size_t base = c->out.len;
    buf_add(&c->out, payload, len);
    mask_bytes((uint8_t *)c->out.p + base, len, k);
    flush(w, c);
}

/* ---- broadcasts ---- */

static void send_broadcast(struct worker *w, struct conn *c)
{
    uint32_t id = atomic_fetch_add(&g.next_id, 1);
    struct bcast *b = &ring[id % RING];
    b->expect = atomic_load(&g.n_clients);
    b->sender = c->idx;
    b->t_result = b->t_own = b->t_all = 0;
    atomic_store(&b->count, 0);
    atomic_store(&b->done, 0);
    b->t_send = now_s();
    atomic_store(&b->id, id);
    int n = snprintf((char *)w->jbuf, (size_t)opt.padding + 128,
                     "{\"type\":\"broadcast\",\"payload\":{\"id\":%u%s}}", id, pad_json);
    send_frame(w, c, 0x1, w->jbuf, (size_t)n);
}

static struct conn *random_conn(struct worker *w)
{
    if (w->nstarted == 0) return NULL;
    for (int tries = 0; tries < 64; tries++) {
        struct conn *c = &w->conns[xorshift(&w->rng) % (uint64_t)w->nstarted];
        if (c->state == CS_OPEN) return c;
    }
    return NULL;
}

/* Closed loop: start one more broadcast if the phase still allows one.
 * started is raised first, so the main thread never sees to_start spent
 * while a broadcast it has not counted is about to leave. */
static void try_start(struct worker *w)
{
    if (atomic_load(&g.phase) != PH_CLOSED) return;
    atomic_fetch_add(&g.started, 1);
    if (atomic_fetch_sub(&g.to_start, 1) <= 0) {
        atomic_fetch_sub(&g.started, 1);
        return;
    }
    struct conn *c = random_conn(w);
    if (!c) {
        atomic_fetch_sub(&g.started, 1);
        atomic_fetch_add(&w->errors, 1);
        return;
    }
    send_broadcast(w, c);
}

static void finish(struct worker *w, struct bcast *b, uint32_t bit)
{
    if ((atomic_fetch_or(&b->done, bit) | bit) != (DONE_RESULT | DONE_ALL)) return;
    atomic_fetch_add(&g.completed, 1);
    try_start(w);
}

static void proto_error(struct conn *c, const char *what, const uint8_t *p, size_t n)
{
    if (atomic_fetch_add(&g.proto_errors, 1) < 5)
        fprintf(stderr, "bcastload: client %u: %s: %.*s\n", c->idx, what, (int)(n < 200 ? n : 200), p);
}

static const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* A whole text message from the server. */
static void on_message(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    const uint8_t *t = memmem(p, n, "\"type\"", 6);
    if (!t) { proto_error(c, "no type", p, n); atomic_fetch_add(&w->errors, 1); return; }
    t = skip_ws(t + 6, end);
    if (t == end || *t != ':') { proto_error(c, "bad type", p, n); atomic_fetch_add(&w->errors, 1); return; }
    t = skip_ws(t + 1, end);
    bool result;
    if ((size_t)(end - t) >= 17 && memcmp(t, "\"broadcastResult\"", 17) == 0) result = true;
    else if ((size_t)(end - t) >= 11 && memcmp(t, "\"broadcast\"", 11) == 0) result = false;
    else { proto_error(c, "unknown type", p, n); atomic_fetch_add(&w->errors, 1); return; }
    const uint8_t *q = memmem(p, n, "\"id\"", 4);
    if (!q) { proto_error(c, "no id", p, n); atomic_fetch_add(&w->errors, 1); return; }
    q = skip_ws(q + 4, end);
    if (q == end || *q != ':') { proto_error(c, "bad id", p, n); atomic_fetch_add(&w->errors, 1); return; }
    q = skip_ws(q + 1, end);
    uint64_t id = 0;
    int digits = 0;
    while (q < end && isdigit(*q) && digits < 11) { id = id * 10 + (uint64_t)(*q++ - '0'); digits++; }
    if (!digits || id > UINT32_MAX) { proto_error(c, "bad id", p, n); atomic_fetch_add(&w->errors, 1); return; }

    struct bcast *b = &ring[id % RING];
    if (atomic_load(&b->id) != (uint32_t)id) {
        proto_error(c, "a broadcast it did not send (or a stale one)", p, n);
        atomic_fetch_add(&w->errors, 1);
        return;
    }
    double t_now = now_s();
    if (result) {
        if (c->idx != b->sender || b->t_result != 0) {
            proto_error(c, c->idx != b->sender ? "broadcastResult to a client that did not send it"
                                               : "broadcastResult twice", p, n);
            atomic_fetch_add(&w->errors, 1);
            return;
        }
        b->t_result = t_now;
        finish(w, b, DONE_RESULT);
        return;
    }
    if (c->idx == b->sender) b->t_own = t_now;
    uint32_t k = atomic_fetch_add(&b->count, 1) + 1;
    atomic_fetch_add_explicit(&w->deliveries, 1, memory_order_relaxed);
    if (k == b->expect) {
        b->t_all = t_now;
        finish(w, b, DONE_ALL);
    } else if (k > b->expect) {
        proto_error(c, "a broadcast delivered more often than there are clients", p, n);
        atomic_fetch_add(&w->errors, 1);
    }
}

static void on_frame(struct worker *w, struct conn *c, uint8_t op, bool fin, const uint8_t *p, size_t n)
{
    switch (op) {
    case 0x1:
    case 0x2:
        if (c->in_msg) { conn_dead(w, c, "a new message inside a fragmented one"); return; }
        if (fin) on_message(w, c, p, n);
        else { c->in_msg = true; c->msg.len = 0; buf_add(&c->msg, p, n); }
        return;
    case 0x0:
        if (!c->in_msg) { conn_dead(w, c, "continuation without a message"); return; }
        buf_add(&c->msg, p, n);
        if (fin) {
            c->in_msg = false;
            on_message(w, c, c->msg.p, c->msg.len);
            c->msg.len = 0;
        }
        return;
    case 0x8: conn_dead(w, c, "close frame from the server"); return;
    case 0x9: send_frame(w, c, 0xA, p, n); return;
    case 0xA: return;
    default: conn_dead(w, c, "unknown opcode"); return;
    }
}

/* Parses the whole frames at p; returns the bytes used. */
static size_t parse_frames(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (c->state == CS_OPEN && n - off >= 2) {
        const uint8_t *h = p + off;
        if (h[0] & 0x70) { conn_dead(w, c, "RSV bits set (no extension was negotiated)"); break; }
        if (h[1] & 0x80) { conn_dead(w, c, "masked server frame"); break; }
        uint64_t len = h[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (n - off < 4) break;
            len = ((uint64_t)h[2] << 8) | h[3];
            hl = 4;
        } else if (len == 127) {
            if (n - off < 10) break;
            len = 0;
            for (int k = 2; k < 10; k++) len = (len << 8) | h[k];
            hl = 10;
        }
        if (len > MAX_FRAME) { conn_dead(w, c, "frame too long"); break; }
        if (n - off - hl < len) break;
        on_frame(w, c, h[0] & 0x0f, (h[0] & 0x80) != 0, h + hl, (size_t)len);
        off += hl + (size_t)len;
    }
    return off;
}

/* Bytes after the 101 response, or read while a frame was incomplete. */
static void feed(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
    if (c->in.len == 0) {
        size_t used = parse_frames(w, c, p, n);
        if (c->state == CS_OPEN && used < n) buf_add(&c->in, p + used, n - used);
        return;
    }
    buf_add(&c->in, p, n);
    size_t used = parse_frames(w, c, c->in.p, c->in.len);
    if (c->state != CS_OPEN) return;
    memmove(c->in.p, c->in.p + used, c->in.len - used);
    c->in.len -= used;
}

static int source_count(void)
{
    if (opt.sources > 0) return opt.sources;
    return opt.max / PER_SOURCE + 1;
}

static void conn_start(struct worker *w, struct conn *c, uint32_t idx)
{
    memset(c, 0, sizeof *c);
    c->idx = idx;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s (the open-files limit?)", strerror(errno));
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = { .sin_family = AF_INET };
    src.sin_addr.s_addr = htonl(0x7F000001u + idx % (uint32_t)source_count());
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind: %s", strerror(errno));
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->state = CS_CONNECTING;
    c->want_out = true;
    w->n_connecting++;
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)
        conn_dead(w, c, strerror(errno));
}

static void on_connected(struct worker *w, struct conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) { conn_dead(w, c, strerror(err)); return; }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     opt.path, opt.host, opt.port);
    c->state = CS_HANDSHAKE;
    buf_add(&c->out, req, (size_t)n);
    flush(w, c);
}

static void on_handshake(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
    buf_add(&c->in, p, n);
    uint8_t *end = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
    if (!end) {
        if (c->in.len > 8192) conn_dead(w, c, "handshake response too long");
        return;
    }
    if (c->in.len < 12 || memcmp(c->in.p, "HTTP/1.1 101", 12) != 0) {
        char line[80];
        size_t l = strcspn((char *)c->in.p, "\r\n");
        snprintf(line, sizeof line, "%.*s", (int)(l < 79 ? l : 79), (char *)c->in.p);
        conn_dead(w, c, line);
        return;
    }
    size_t hdr = (size_t)(end + 4 - c->in.p);
    c->state = CS_OPEN;
    w->n_connecting--;
    w->n_open++;
    struct buf rest = c->in;
    c->in = (struct buf){ 0 };
    if (rest.len > hdr) feed(w, c, rest.p + hdr, rest.len - hdr);
    buf_free(&rest);
}

static void on_readable(struct worker *w, struct conn *c)
{
    ssize_t n = recv(c->fd, w->rbuf, READ_CHUNK, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        conn_dead(w, c, strerror(errno));
        return;
    }
    if (n == 0) { conn_dead(w, c, "EOF"); return; }
    if (c->state == CS_HANDSHAKE) on_handshake(w, c, w->rbuf, (size_t)n);
    else feed(w, c, w->rbuf, (size_t)n);
}

static void loop_once(struct worker *w, int timeout_ms)
{
    struct epoll_event evs[1024];
    int n = epoll_wait(w->epfd, evs, 1024, timeout_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        struct conn *c = evs[i].data.ptr;
        if (c->state == CS_DEAD) continue;
        if (c->state == CS_CONNECTING) {
            if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(w, c);
            continue;
        }
        if (evs[i].events & EPOLLOUT) flush(w, c);
        if (c->state != CS_DEAD && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(w, c);
    }
}

/* A new phase, seen by this thread (g.phase was set before g.gen). */
static void on_phase(struct worker *w, int phase)
{
    if (phase == PH_CLOSED) {
        int k = atomic_exchange(&w->kick, 0);
        for (int i = 0; i < k; i++) try_start(w);
    } else if (phase == PH_RATE) {
        w->interval = w->n_open > 0 ? 1.0 / (opt.rate * w->n_open) : 1e9;
        /* threads start at different offsets within one interval */
        w->next_send = now_s() + w->interval * (double)w->id / (double)opt.threads;
    }
}

/* Rate phase: the sends that are due; returns ms until the next one. */
static int send_due(struct worker *w)
{
    double t = now_s();
    while (t >= w->next_send && t < g.t_stop && w->nstarted > 0) {
        uint32_t inflight = atomic_load(&g.started) - atomic_load(&g.completed);
        if (inflight >= RING / 2) atomic_fetch_add(&g.overrun, 1);
        else {
            struct conn *c = &w->conns[w->rr++ % (uint32_t)w->nstarted];
            if (c->state == CS_OPEN) {
                atomic_fetch_add(&g.started, 1);
                send_broadcast(w, c);
            }
        }
        w->next_send += w->interval;
    }
    if (t >= g.t_stop) return 5;
    double ms = (w->next_send - t) * 1000;
    return ms < 0 ? 0 : ms > 5 ? 5 : (int)ms;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* Its own file table: the open-files limit is per table, so each thread
     * holds up to the limit (the main thread opens no sockets). */
    if (opt.threads > 1 && unshare(CLONE_FILES) < 0) die("unshare(CLONE_FILES): %s", strerror(errno));
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0) die("epoll_create1: %s", strerror(errno));
    for (;;) {
        uint32_t gen = atomic_load(&g.gen);
        int phase = atomic_load(&g.phase);
        if (gen != w->gen) {
            w->gen = gen;
            on_phase(w, phase);
        }
        if (phase == PH_QUIT) break;
        int target = atomic_load(&w->target);
        while (w->nstarted < target && w->n_connecting < MAX_CONNECTING) {
            conn_start(w, &w->conns[w->nstarted], (uint32_t)(w->nstarted * opt.threads + w->id));
            w->nstarted++;
        }
        int timeout = 5;
        if (phase == PH_RATE) timeout = send_due(w);
        loop_once(w, timeout);
        atomic_store(&w->opened, w->n_open);
    }
    for (int i = 0; i < w->nstarted; i++)
        if (w->conns[i].state != CS_DEAD) close(w->conns[i].fd);
    close(w->epfd);
    return NULL;
}

/* ---- the main thread: steps ---- */

static int sum_opened(void)
{
    int s = 0;
    for (int i = 0; i < opt.threads; i++) s += atomic_load(&workers[i].opened);
    return s;
}

static int sum_dead(void)
{
    int s = 0;
    for (int i = 0; i < opt.threads; i++) s += atomic_load(&workers[i].dead);
    return s;
}

static uint64_t sum_deliveries(void)
{
    uint64_t s = 0;
    for (int i = 0; i < opt.threads; i++) s += atomic_load(&workers[i].deliveries);
    return s;
}

static uint64_t sum_errors(void)
{
    uint64_t s = 0;
    for (int i = 0; i < opt.threads; i++) s += atomic_load(&workers[i].errors);
    return s;
}

static void set_phase(int phase)
{
    atomic_store(&g.phase, phase);
    atomic_fetch_add(&g.gen, 1);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Open clients until n are open; false if one failed. */
static bool open_clients(int n)
{
    for (int i = 0; i < opt.threads; i++)
        atomic_store(&workers[i].target, n / opt.threads + (i < n % opt.threads));
    double t0 = now_s();
    while (sum_opened() < n) {
        if (sum_dead() > 0) return false;
        if (now_s() - t0 > 120) {
            fprintf(stderr, "bcastload: only %d of %d clients open after 120 s\n", sum_opened(), n);
            return false;
        }
        sleep_ms(2);
    }
    atomic_store(&g.n_clients, (uint32_t)n);
    return true;
}

/* Waits until every broadcast started in this phase completed, or nothing
 * progressed for STALL_S (the rest are lost). */
static void wait_completed(void)
{
    uint32_t last = atomic_load(&g.completed);
    double t_prog = now_s();
    for (;;) {
        uint32_t done = atomic_load(&g.completed);
        /* rate: a thread may still be in its last send for a moment after t_stop */
        bool sending = atomic_load(&g.phase) == PH_RATE ? now_s() < g.t_stop + 0.05
                                                        : atomic_load(&g.to_start) > 0;
        if (!sending && done == atomic_load(&g.started)) return;
        if (done != last) { last = done; t_prog = now_s(); }
        else if (now_s() - t_prog > STALL_S) return;
        if (sum_dead() > 0) return;
        sleep_ms(1);
    }
}

static void run_closed(int samples, int conc)
{
    atomic_store(&g.started, 0);
    atomic_store(&g.completed, 0);
    atomic_store(&g.to_start, samples);
    for (int i = 0; i < opt.threads; i++)
        atomic_store(&workers[i].kick, conc / opt.threads + (i < conc % opt.threads));
    set_phase(PH_CLOSED);
    wait_completed();
    set_phase(PH_IDLE);
}

static void run_rate(double secs)
{
    atomic_store(&g.started, 0);
    atomic_store(&g.completed, 0);
    atomic_store(&g.overrun, 0);
    g.t_stop = now_s() + secs;
    set_phase(PH_RATE);
    wait_completed();
    set_phase(PH_IDLE);
}

/* Nearest-rank percentile of a sorted array, in ms. */
static double pct(const double *v, size_t n, double p)
{
    if (!n) return 0;
    size_t k = (size_t)ceil(p / 100.0 * (double)n);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return v[k - 1];
}

struct step {
    int clients;
    uint32_t sent, completed;
    double p50[3], p95[3], pmax[3], pmin;   /* [ON_ALL, ON_RESULT, ON_OWN], ms */
    double secs, server_cpu[MAX_CPU], load_cpu_pct, other_cpu_pct;
    uint64_t deliveries, errors;
    bool pass;
};

static void measure_step(int n, struct step *s)
{
    memset(s, 0, sizeof *s);
    s->clients = n;
    uint32_t first = atomic_load(&g.next_id);
    uint64_t d0 = sum_deliveries(), e0 = sum_errors();
    double cpu0[MAX_CPU];
    for (int i = 0; i < opt.ncpu; i++) cpu0[i] = tree_cpu(opt.cpu[i].pid);
    double self0 = self_cpu(), busy0 = machine_busy(), t0 = now_s();
    uint32_t overrun = 0;
    if (opt.rate > 0) {
        run_rate(opt.secs);
        overrun = atomic_load(&g.overrun);
    } else {
        run_closed(opt.samples, opt.conc);
    }
    double t1 = now_s();
    double self1 = self_cpu(), busy1 = machine_busy();
    s->secs = t1 - t0;
    double others = (busy1 - busy0) - (self1 - self0);
    for (int i = 0; i < opt.ncpu; i++) {
        s->server_cpu[i] = tree_cpu(opt.cpu[i].pid) - cpu0[i];
        others -= s->server_cpu[i];
    }
    s->load_cpu_pct = (self1 - self0) / s->secs * 100;
    s->other_cpu_pct = others > 0 ? others / s->secs * 100 : 0;
    s->deliveries = sum_deliveries() - d0;
    s->errors = sum_errors() - e0;

    uint32_t last = atomic_load(&g.next_id);
    s->sent = last - first;
    size_t m = s->sent + overrun;
    double *v[3];
    for (int k = 0; k < 3; k++) v[k] = xrealloc(NULL, (m ? m : 1) * sizeof(double));
    s->pmin = INFINITY;
    for (uint32_t id = first; id != last; id++) {
        struct bcast *b = &ring[id % RING];
        bool done = atomic_load(&b->done) == (DONE_RESULT | DONE_ALL);
        size_t i = id - first;
        if (done) {
            s->completed++;
            v[ON_ALL][i] = (b->t_all - b->t_send) * 1000;
            v[ON_RESULT][i] = (b->t_result - b->t_send) * 1000;
            v[ON_OWN][i] = b->t_own > 0 ? (b->t_own - b->t_send) * 1000 : INFINITY;
            if (v[opt.on][i] < s->pmin) s->pmin = v[opt.on][i];
        } else {
            v[ON_ALL][i] = v[ON_RESULT][i] = v[ON_OWN][i] = INFINITY;
        }
    }
    /* rate: a send skipped because the ring was full is an infinite round trip */
    for (size_t i = s->sent; i < m; i++) v[ON_ALL][i] = v[ON_RESULT][i] = v[ON_OWN][i] = INFINITY;
    for (int k = 0; k < 3; k++) {
        qsort(v[k], m, sizeof(double), cmp_double);
        s->p50[k] = pct(v[k], m, 50);
        s->p95[k] = pct(v[k], m, opt.percentile);
        s->pmax[k] = m ? v[k][m - 1] : 0;
        free(v[k]);
    }
    if (s->pmin == INFINITY) s->pmin = 0;
    s->pass = m > 0 && s->p95[opt.on] <= opt.limit_ms && s->errors == 0 && sum_dead() == 0;
}

static void print_ms(const char *key, double v)
{
    if (isinf(v)) printf(" %s=inf", key);
    else printf(" %s=%.2f", key, v);
}

static void print_step_fields(const struct step *s)
{
    printf(" clients=%d sent=%u completed=%u lost=%u", s->clients, s->sent, s->completed, s->sent - s->completed);
    print_ms("p50_ms", s->p50[opt.on]);
    print_ms("p95_ms", s->p95[opt.on]);
    print_ms("min_ms", s->pmin);
    print_ms("max_ms", s->pmax[opt.on]);
    print_ms("all_p95_ms", s->p95[ON_ALL]);
    print_ms("result_p50_ms", s->p50[ON_RESULT]);
    print_ms("result_p95_ms", s->p95[ON_RESULT]);
    print_ms("own_p95_ms", s->p95[ON_OWN]);
    double cpu = 0;
    for (int i = 0; i < opt.ncpu; i++) {
        printf(" cpu_%s_s=%.2f", opt.cpu[i].name, s->server_cpu[i]);
        cpu += s->server_cpu[i];
    }
    printf(" secs=%.3f deliveries=%lu deliveries_per_s=%.0f", s->secs, (unsigned long)s->deliveries,
           s->secs > 0 ? (double)s->deliveries / s->secs : 0);
    if (opt.ncpu) printf(" deliveries_per_server_cpu_s=%.0f", cpu > 0 ? (double)s->deliveries / cpu : 0);
    printf(" load_cpu_pct=%.0f other_cpu_pct=%.0f errors=%lu", s->load_cpu_pct, s->other_cpu_pct,
           (unsigned long)s->errors);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bcastload [options] ws://127.0.0.1:PORT[/PATH]\n"
            "  --initial N      clients in the first step (1000)\n"
            "  --step N         clients added per step (1000)\n"
            "  --max N          stop after the step with N clients (19000)\n"
            "  -c CONC          closed loop: broadcasts in flight (4)\n"
            "  -s SAMPLES       closed loop: broadcasts measured per step (100)\n"
            "  --rate R         open loop instead: each client sends R broadcasts/s ...\n"
            "  -d SECS          ... for SECS per step (5)\n"
            "  --limit-ms MS    the round-trip limit (500)\n"
            "  --percentile P   ... at this percentile (95)\n"
            "  --limit-on K     all (the last client got it; default), result\n"
            "                   (the sender got broadcastResult) or own (the sender got its copy)\n"
            "  --padding B      bytes of padding in each payload (0)\n"
            "  -t THREADS       event-loop threads, each with its own file table\n"
            "                   (default: max / 19000, rounded up)\n"
            "  --sources K      spread clients over 127.0.0.1..127.0.0.K (max / 10000 + 1)\n"
            "  --cpu NAME=PID   report the CPU seconds of PID and its descendants\n"
            "  --guard SECS     give up after this long (3600)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "initial", required_argument, NULL, 'I' }, { "step", required_argument, NULL, 'S' },
        { "max", required_argument, NULL, 'M' },     { "rate", required_argument, NULL, 'R' },
        { "limit-ms", required_argument, NULL, 'L' }, { "percentile", required_argument, NULL, 'P' },
        { "limit-on", required_argument, NULL, 'O' }, { "padding", required_argument, NULL, 'D' },
        { "sources", required_argument, NULL, 'K' }, { "cpu", required_argument, NULL, 'C' },
        { "guard", required_argument, NULL, 'G' },   { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:s:d:t:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'I': opt.initial = atoi(optarg); break;
        case 'S': opt.step = atoi(optarg); break;
        case 'M': opt.max = atoi(optarg); break;
        case 'c': opt.conc = atoi(optarg); break;
        case 's': opt.samples = atoi(optarg); break;
        case 'R': opt.rate = atof(optarg); break;
        case 'd': opt.secs = atoi(optarg); break;
        case 'L': opt.limit_ms = atof(optarg); break;
        case 'P': opt.percentile = atoi(optarg); break;
        case 'O':
            if (!strcmp(optarg, "all")) opt.on = ON_ALL;
            else if (!strcmp(optarg, "result")) opt.on = ON_RESULT;
            else if (!strcmp(optarg, "own")) opt.on = ON_OWN;
            else usage();
            break;
        case 'D': opt.padding = atoi(optarg); break;
        case 't': opt.threads = atoi(optarg); break;
        case 'K': opt.sources = atoi(optarg); break;
        case 'G': opt.guard = atoi(optarg); break;
        case 'C':
            if (!add_cpu_opt(optarg, opt.cpu, &opt.ncpu)) usage();
            break;
        default: usage();
        }
    }
    if (opt.threads <= 0) opt.threads = (opt.max + PER_THREAD - 1) / PER_THREAD;
    if (optind != argc - 1 || opt.initial < 1 || opt.step < 0 || opt.max < opt.initial || opt.conc < 1 ||
        opt.samples < 1 || (uint32_t)opt.samples > RING / 2 || opt.rate < 0 || opt.secs < 1 || opt.secs > 600 ||
        opt.limit_ms <= 0 || opt.percentile < 1 || opt.percentile > 100 || opt.padding < 0 ||
        opt.padding > 65536 || opt.threads < 1 || opt.threads > 64 || opt.sources > 254 || opt.guard < 1)
        usage();
    if (sscanf(argv[optind], "ws://%63[^:/]:%d%255s", opt.host, &opt.port, opt.path) < 2) usage();
    if (opt.path[0] != '/') die("the URL path must start with /");
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &dst.sin_addr) != 1) die("host must be an IPv4 address: %s", opt.host);
    if ((ntohl(dst.sin_addr.s_addr) >> 24) != 127) die("only loopback targets (127.0.0.0/8)");

    /* each thread's file table holds its share of the clients */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)(opt.max / opt.threads + 1) + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < want)
            die("need %lu open files per thread, the hard limit is %lu (use more -t)", (unsigned long)want,
                (unsigned long)rl.rlim_max);
    }
    signal(SIGALRM, on_alarm);
    alarm((unsigned)opt.guard);

    ring = calloc(RING, sizeof *ring);
    pad_json = malloc((size_t)opt.padding + 16);
    if (!ring || !pad_json) die("out of memory");
    pad_json[0] = '\0';
    if (opt.padding) {
        int n = sprintf(pad_json, ",\"padding\":\"");
        for (int i = 0; i < opt.padding; i++) pad_json[n + i] = (char)('0' + (i + 1) % 10);
        strcpy(pad_json + n + opt.padding, "\"");
    }
    atomic_store(&g.next_id, 1);
    workers = calloc((size_t)opt.threads, sizeof *workers);
    if (!workers) die("out of memory");
    for (int i = 0; i < opt.threads; i++) {
        struct worker *w = &workers[i];
        w->id = i;
        w->cap = opt.max / opt.threads + 1;
        w->conns = calloc((size_t)w->cap, sizeof *w->conns);
        w->rbuf = malloc(READ_CHUNK);
        w->jbuf = malloc((size_t)opt.padding + 128);
        w->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)getpid() << 16) ^ (uint64_t)(i + 1) * 0x2545F4914F6CDD1Dull;
        if (!w->conns || !w->rbuf || !w->jbuf) die("out of memory");
        if (pthread_create(&w->th, NULL, worker_main, w)) die("pthread_create failed");
    }

    fprintf(stderr, "bcastload: %s, %d..%d clients by %d, p%d of the '%s' round trip <= %.0f ms, %d thread(s)\n",
            opt.rate > 0 ? "open loop" : "closed loop", opt.initial, opt.max, opt.step, opt.percentile,
            opt.on == ON_ALL ? "all" : opt.on == ON_RESULT ? "result" : "own", opt.limit_ms, opt.threads);
    struct step best = { 0 }, s;
    const char *stopped = "max";
    int steps = 0;
    for (int n = opt.initial; n <= opt.max; n += opt.step ? opt.step : opt.max + 1) {
        double tc = now_s();
        if (!open_clients(n)) { stopped = "error"; fprintf(stderr, "bcastload: could not open %d clients\n", n); break; }
        double topen = now_s() - tc;
        run_closed(1, 1);   /* warm-up: one broadcast that must reach everybody */
        if (atomic_load(&g.completed) != 1 || sum_dead() > 0) {
            stopped = "error";
            fprintf(stderr, "bcastload: the warm-up broadcast did not reach all %d clients\n", n);
            break;
        }
        measure_step(n, &s);
        steps++;
        printf("STEP");
        print_step_fields(&s);
        printf(" open_s=%.2f pass=%d\n", topen, s.pass);
        fflush(stdout);
        fprintf(stderr, "bcastload: %6d clients: p%d %s %.1f ms (result %.1f, own %.1f, all %.1f), "
                        "%u/%u completed, %.0f deliveries/s, load %.0f%%%s\n",
                n, opt.percentile, opt.on == ON_ALL ? "all" : opt.on == ON_RESULT ? "result" : "own",
                s.p95[opt.on], s.p95[ON_RESULT], s.p95[ON_OWN], s.p95[ON_ALL], s.completed, s.sent,
                s.secs > 0 ? (double)s.deliveries / s.secs : 0, s.load_cpu_pct, s.pass ? "" : "  -> over the limit");
        if (!s.pass) {
            stopped = (s.errors || sum_dead()) ? "error" : "limit";
            break;
        }
        best = s;
        if (opt.step == 0) break;
    }
    printf("RESULT max_clients=%d stopped=%s steps=%d limit_ms=%.0f percentile=%d limit_on=%s mode=%s conc=%d "
           "samples=%d rate=%g padding=%d threads=%d",
           best.clients, stopped, steps, opt.limit_ms, opt.percentile,
           opt.on == ON_ALL ? "all" : opt.on == ON_RESULT ? "result" : "own", opt.rate > 0 ? "rate" : "closed",
           opt.conc, opt.samples, opt.rate, opt.padding, opt.threads);
    print_step_fields(&best);
    printf("\n");
    fflush(stdout);
    set_phase(PH_QUIT);
    for (int i = 0; i < opt.threads; i++) pthread_join(workers[i].th, NULL);
    return strcmp(stopped, "error") == 0 ? 1 : 0;
}
