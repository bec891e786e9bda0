/* wssload — a small ws:// and wss:// echo load client (OpenSSL, epoll).
 *
 *   wssload -d SECONDS [-c CONNS] [-k INFLIGHT] [-s SIZE] [-t THREADS]
 *           [--churn | --hold N] [--skip-greeting] [--server-pid PID] URL
 *
 * URL is ws://127.0.0.1:PORT/PATH or wss://127.0.0.1:PORT/PATH (loopback
 * only). The same code path serves both, so ws and wss figures differ only
 * by TLS. Certificates are not verified (a benchmark, not a client); the
 * TLS version is whatever the server picks (1.3 with OpenSSL 3 peers).
 *
 * Echo mode: CONNS connections, each keeping INFLIGHT masked text messages
 * of SIZE bytes in flight; every echo is checked byte for byte (message n
 * carries the printable pattern from offset n mod 95, so reordered, lost or
 * corrupted echoes are caught). All connections are opened first; the
 * window of -d seconds starts then; at its end no new messages are sent,
 * echoes in flight are awaited (5 s at most), and each connection gets a
 * close frame.
 *
 * --churn: each of CONNS slots loops connect, TLS handshake, upgrade, one
 * echo, close handshake, RST; the result counts those cycles per second.
 *
 * --hold N: open N connections (at most 128 handshakes under way per
 * thread), echo one message on each, hold them all idle for -d seconds and
 * report the server's RSS growth per connection (RSS of PID and its
 * descendants, sampled before the first connection and at the end of the
 * hold); then close them. For the memory an idle ws:// or wss:// connection
 * costs: start a fresh server for each measurement.
 *
 * --server-pid: the server's CPU time (utime+stime of PID and all its
 * descendants, from /proc) over the window gives msgs per server CPU-second,
 * a figure much less sensitive to the load generator than msgs/s.
 *
 * Output: a summary and one line
 *   RESULT mode=echo tls=wss conns=100 k=1 size=32 msgs=... secs=... msgs_per_s=...
 *          p50_us=... p99_us=... errors=0 client_cpu_pct=... other_cpu_pct=...
 *          steal_pct=... server_cpu_s=... msgs_per_server_cpu_s=...
 * (other_cpu_pct: what the rest of the machine used in the window, in % of
 * one core; a busy machine makes the figures noisy.)
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PATTERN_N 95            /* printable ASCII: valid UTF-8 text */
#define HIST_US 200000          /* latency histogram: 1 us buckets up to 200 ms */
#define DRAIN_S 5.0

enum { ST_CONNECT, ST_TLS, ST_UPGRADE, ST_GREETING, ST_RUN, ST_CLOSING, ST_DONE };

typedef struct conn {
    int fd;
    SSL *ssl;
    int state;
    struct thread *th;
    /* output */
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    bool want_out;              /* EPOLLOUT registered */
    /* input: header being assembled, current frame */
    uint8_t hdr[14];
    size_t hdr_have, hdr_need;
    uint64_t payload_left;
    int opcode, fin;
    uint8_t ctl[125];
    size_t ctl_len;
    uint64_t msg_off;           /* bytes of the current data message so far */
    int msg_opcode;
    /* HTTP response */
    char http[4096];
    size_t http_len;
    /* messages */
    uint64_t sent, recvd;       /* message numbers: next to send / expected */
    int inflight;
    double *sent_at;            /* ring of k send times */
    uint32_t mask;
} conn;

typedef struct thread {
    int id, epfd;
    conn *conns;
    int nconns;
    uint64_t msgs_window, errors, cycles_window, opened;
    int next, pending;          /* --hold: next conn to start, handshakes under way */
    uint32_t *hist;
    uint64_t hist_over;
    pthread_t tid;
    uint32_t rng;
} thread;

/* options */
static double opt_d = 0;
static int opt_c = 1, opt_k = 1, opt_t = 1;
static size_t opt_s = 32;
static bool opt_churn, opt_skip_greeting, opt_tls;
static int opt_hold;            /* --hold N: 0 = echo or churn mode */
static int opt_server_pid;
static char host_hdr[128], path[1024];
static struct sockaddr_in addr;

static SSL_CTX *ctx;
static uint8_t *pattern;        /* PATTERN_N + size bytes */

/* shared phases */
static atomic_int phase;        /* 0 opening, 1 window, 2 draining, 3 closing, 4 stop */
static atomic_int opened_total;
static double t_window0, t_window1;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "wssload: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static uint32_t xrand(thread *t)
{
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 17;
    t->rng ^= t->rng << 5;
    return t->rng;
}

/* ---- output buffer ---- */

static uint8_t *out_reserve(conn *c, size_t n)
{
    if (c->out_off > 0 && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
            while (cap < c->out_len + n) cap *= 2;
            c->out = realloc(c->out, cap);
            if (!c->out) abort();
            c->out_cap = cap;
        }
    }
    uint8_t *p = c->out + c->out_len;
    c->out_len += n;
    return p;
}

static void put_frame(conn *c, int opcode, const uint8_t *data, size_t len)
{
    size_t h = 2 + (len < 126 ? 0 : len < 65536 ? 2 : 8) + 4;
    uint8_t *p = out_reserve(c, h + len);
    p[0] = 0x80 | opcode;
    if (len < 126) { p[1] = 0x80 | len; p += 2; }
    else if (len < 65536) { p[1] = 0x80 | 126; p[2] = len >> 8; p[3] = len; p += 4; }
    else { p[1] = 0x80 | 127; for (int i = 0; i < 8; i++) p[2 + i] = (uint64_t)len >> (56 - 8 * i); p += 10; }
    uint8_t key[4];
    c->mask = xrand(c->th);
    memcpy(key, &c->mask, 4);
    memcpy(p, key, 4);
    p += 4;
    uint64_t k8;
    uint8_t kk[8];
    memcpy(kk, key, 4);
    memcpy(kk + 4, key, 4);
    memcpy(&k8, kk, 8);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, data + i, 8);
        w ^= k8;
        memcpy(p + i, &w, 8);
    }
    for (; i < len; i++) p[i] = data[i] ^ key[i & 3];
}

/* ---- transport: plain or TLS ---- */

/* >0 bytes, 0 would block, -1 EOF or error */
static ssize_t io_read(conn *c, void *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t r = read(c->fd, buf, n);
        if (r > 0) return r;
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
        return -1;
    }
    int r = SSL_read(c->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    return -1;
}

static ssize_t io_write(conn *c, const void *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t r = write(c->fd, buf, n);
        if (r >= 0) return r;
        if (errno == EAGAIN || errno == EINTR) return 0;
        return -1;
    }
    int r = SSL_write(c->ssl, buf, (int)(n > (1 << 30) ? (1 << 30) : n));
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    return -1;
}

static void set_events(conn *c, bool want_out)
{
    if (c->want_out == want_out) return;
    struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(c->th->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want_out;
}

static void conn_reset(conn *c)
{
    if (c->fd >= 0) {
        struct linger lg = { 1, 0 };   /* RST: no TIME_WAIT pile-up in churn */
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        epoll_ctl(c->th->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->ssl) SSL_free(c->ssl);
    c->fd = -1;
    c->ssl = NULL;
    c->out_len = c->out_off = 0;
    c->hdr_have = 0;
    c->hdr_need = 2;
    c->payload_left = 0;
    c->ctl_len = 0;
    c->msg_off = 0;
    c->http_len = 0;
    c->sent = c->recvd = 0;
    c->inflight = 0;
    c->want_out = false;
}

static void conn_start(conn *c)
{
    conn_reset(c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { perror("socket"); exit(2); }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS) { perror("connect"); exit(2); }
    c->state = ST_CONNECT;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
    epoll_ctl(c->th->epfd, EPOLL_CTL_ADD, c->fd, &ev);
    c->want_out = true;
}

static void fail(conn *c, const char *why)
{
    thread *t = c->th;
    t->errors++;
    if (t->errors <= 5) fprintf(stderr, "wssload: connection error: %s\n", why);
    if (opt_churn && atomic_load(&phase) <= 1) { conn_start(c); return; }
    if (opt_hold && c->state < ST_RUN) t->pending--;
    conn_reset(c);
    c->state = ST_DONE;
}

static void send_upgrade(conn *c)
{
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, host_hdr);
    memcpy(out_reserve(c, n), req, n);
    c->state = ST_UPGRADE;
}

static void send_message(conn *c)
{
    size_t k = c->sent % opt_k;
    c->sent_at[k] = now();
    put_frame(c, 1, pattern + c->sent % PATTERN_N, opt_s);
    c->sent++;
    c->inflight++;
}

static void start_running(conn *c)
{
    c->state = ST_RUN;
    if (opt_churn || opt_hold) { send_message(c); return; }   /* hold: counted at its echo */
    atomic_fetch_add(&opened_total, 1);
    /* messages start with the window */
}

static void hist_add(thread *t, double secs)
{
    long us = (long)(secs * 1e6);
    if (us < 0) us = 0;
    if (us >= HIST_US) t->hist_over++;
    else t->hist[us]++;
}

/* A whole echo arrived. */
static void message_done(conn *c)
{
    thread *t = c->th;
    int ph = atomic_load(&phase);
    double at = c->sent_at[c->recvd % opt_k];
    c->recvd++;
    c->inflight--;
    if (opt_hold) {
        if (c->recvd == 1) {
            t->pending--;
            atomic_fetch_add(&opened_total, 1);
        }
        return;
    }
    if (opt_churn) {
        if (ph == 1) hist_add(t, now() - at);
        /* close handshake: send close, wait for the server's */
        uint8_t code[2] = { 0x03, 0xe8 };
        put_frame(c, 8, code, 2);
        c->state = ST_CLOSING;
        return;
    }
    if (ph == 1) {
        t->msgs_window++;
        hist_add(t, now() - at);
        send_message(c);
    }
}

/* Payload bytes of a data frame: check against the pattern. */
static int data_bytes(conn *c, const uint8_t *p, size_t n)
{
    if (c->msg_off + n > opt_s) return -1;
    const uint8_t *want = pattern + c->recvd % PATTERN_N + c->msg_off;
    if (memcmp(p, want, n) != 0) return -1;
    c->msg_off += n;
    return 0;
}

/* Parse server frames from buf; -1 on a protocol or echo error. */
static int ws_input(conn *c, const uint8_t *buf, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (c->payload_left == 0 && c->hdr_have < c->hdr_need) {
            while (c->hdr_have < c->hdr_need && i < n) c->hdr[c->hdr_have++] = buf[i++];
            if (c->hdr_have < c->hdr_need) return 0;
            if (c->hdr_need == 2) {
                if (c->hdr[1] & 0x80) return -1;   /* server frames are not masked */
                int l7 = c->hdr[1] & 0x7f;
                c->hdr_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
                if (c->hdr_have < c->hdr_need) continue;
            }
            c->fin = c->hdr[0] & 0x80;
            c->opcode = c->hdr[0] & 0x0f;
            int l7 = c->hdr[1] & 0x7f;
            uint64_t len = l7;
            if (l7 == 126) len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
            else if (l7 == 127) { len = 0; for (int j = 0; j < 8; j++) len = len << 8 | c->hdr[2 + j]; }
            c->hdr_have = 0;
            c->hdr_need = 2;
            c->payload_left = len;
            c->ctl_len = 0;
            if (c->opcode >= 8) {
                if (len > 125) return -1;
            } else if (c->opcode == 0) {
                if (!c->msg_opcode) return -1;
            } else {
                if (c->msg_opcode) return -1;
                c->msg_opcode = c->opcode;
                c->msg_off = 0;
                if (c->opcode != 1 && c->state != ST_GREETING) return -1;
            }
            if (len > 0) continue;
        } else {
            size_t take = n - i;
            if (take > c->payload_left) take = c->payload_left;
            if (c->opcode >= 8) {
                memcpy(c->ctl + c->ctl_len, buf + i, take);
                c->ctl_len += take;
            } else if (c->state == ST_GREETING) {
                /* ignored */
            } else if (data_bytes(c, buf + i, take) < 0) {
                return -1;
            }
            i += take;
            c->payload_left -= take;
            if (c->payload_left > 0) return 0;
        }
        /* a whole frame */
        if (c->opcode == 9) {
            put_frame(c, 10, c->ctl, c->ctl_len);
        } else if (c->opcode == 8) {
            if (c->state == ST_CLOSING) { c->state = ST_DONE; return 1; }
            return -1;
        } else if (c->opcode < 8 && c->fin) {
            c->msg_opcode = 0;
            if (c->state == ST_GREETING) { start_running(c); continue; }
            if (c->msg_off != opt_s || c->inflight <= 0) return -1;
            c->msg_off = 0;
            message_done(c);
        }
    }
    return 0;
}

static int http_input(conn *c, const uint8_t *buf, size_t n, size_t *used)
{
    size_t room = sizeof c->http - 1 - c->http_len;
    size_t take = n < room ? n : room;
    memcpy(c->http + c->http_len, buf, take);
    c->http_len += take;
    c->http[c->http_len] = 0;
    char *end = strstr(c->http, "\r\n\r\n");
    if (!end) {
        *used = take;
        return c->http_len >= sizeof c->http - 1 ? -1 : 0;
    }
    size_t hlen = (size_t)(end + 4 - c->http);
    *used = take - (c->http_len - hlen);
    if (strncmp(c->http, "HTTP/1.1 101", 12) != 0) return -1;
    /* the accept for the fixed key of RFC 6455 section 1.3 */
    if (!strstr(c->http, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) return -1;
    if (opt_skip_greeting) c->state = ST_GREETING;
    else start_running(c);
    return 1;
}

static void on_readable(conn *c)
{
    static __thread uint8_t buf[256 * 1024];
    for (;;) {
        ssize_t r = io_read(c, buf, sizeof buf);
        if (r == 0) return;
        if (r < 0) {
            if (c->state == ST_CLOSING) {   /* server closed after its close frame */
                c->state = ST_DONE;
                return;
            }
            fail(c, "connection closed by the server");
            return;
        }
        size_t off = 0;
        if (c->state == ST_UPGRADE) {
            size_t used;
            int h = http_input(c, buf, (size_t)r, &used);
            if (h < 0) { fail(c, "bad upgrade response"); return; }
            if (h == 0) continue;
            off = used;
        }
        if (off < (size_t)r) {
            int w = ws_input(c, buf + off, (size_t)r - off);
            if (w < 0) { fail(c, "bad frame or echo mismatch"); return; }
            if (c->state == ST_DONE) return;
        }
    }
}

static void flush_out(conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = io_write(c, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) { fail(c, "write failed"); return; }
        if (w == 0) break;
        c->out_off += (size_t)w;
    }
    set_events(c, c->out_off < c->out_len);
}

static void step(conn *c, uint32_t events)
{
    if (c->state == ST_CONNECT) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) { fail(c, strerror(err)); return; }
        if (opt_tls) {
            c->ssl = SSL_new(ctx);
            SSL_set_fd(c->ssl, c->fd);
            SSL_set_tlsext_host_name(c->ssl, "localhost");
            SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
            SSL_set_connect_state(c->ssl);
            c->state = ST_TLS;
        } else {
            send_upgrade(c);
        }
    }
    if (c->state == ST_TLS) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) { set_events(c, false); return; }
            if (e == SSL_ERROR_WANT_WRITE) { set_events(c, true); return; }
            char b[256];
            ERR_error_string_n(ERR_get_error(), b, sizeof b);
            fail(c, b);
            return;
        }
        send_upgrade(c);
    }
    if (c->state >= ST_UPGRADE && c->state < ST_DONE) on_readable(c);
    if (c->state == ST_DONE) {
        if (opt_churn) {
            if (atomic_load(&phase) == 1) c->th->cycles_window++;
            conn_reset(c);
            if (atomic_load(&phase) <= 1) conn_start(c);
        } else {
            conn_reset(c);
        }
        return;
    }
    if (c->fd >= 0 && c->state >= ST_UPGRADE) flush_out(c);
}

static void *thread_main(void *arg)
{
    thread *t = arg;
    struct epoll_event evs[256];
    int last_phase = 0;
    if (!opt_hold)
        for (int i = 0; i < t->nconns; i++) conn_start(&t->conns[i]);
    for (;;) {
        int ph = atomic_load(&phase);
        if (ph == 4) break;
        /* --hold: a few handshakes at a time, so no listen backlog overflows */
        while (opt_hold && ph == 0 && t->next < t->nconns && t->pending < 128) {
            t->pending++;
            conn_start(&t->conns[t->next++]);
        }
        if (ph != last_phase) {
            if (ph == 1 && !opt_churn) {
                for (int i = 0; i < t->nconns; i++) {
                    conn *c = &t->conns[i];
                    if (c->state != ST_RUN) continue;
                    while (c->inflight < opt_k) send_message(c);
                    flush_out(c);
                }
            }
            if (ph == 3) {
                for (int i = 0; i < t->nconns; i++) {
                    conn *c = &t->conns[i];
                    if (c->state != ST_RUN) continue;
                    uint8_t code[2] = { 0x03, 0xe8 };
                    put_frame(c, 8, code, 2);
                    c->state = ST_CLOSING;
                    flush_out(c);
                }
            }
            last_phase = ph;
        }
        int n = epoll_wait(t->epfd, evs, 256, 20);
        for (int i = 0; i < n; i++) step(evs[i].data.ptr, evs[i].events);
    }
    for (int i = 0; i < t->nconns; i++) conn_reset(&t->conns[i]);
    return NULL;
}

/* ---- CPU time of the server (pid + descendants) ---- */

static double proc_cpu(int pid, long *ppid)
{
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *s = strrchr(buf, ')');
    if (!s) return -1;
    unsigned long ut = 0, st = 0;
    long pp = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(s + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &pp, &ut, &st) != 3) return -1;
    if (ppid) *ppid = pp;
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static long proc_rss_kb(int pid)
{
    char p[64], line[256];
    long kb = 0;
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* CPU seconds of the server and its descendants; their RSS in *rss_kb. */
static double server_sample(long *rss_kb)
{
    if (rss_kb) *rss_kb = 0;
    if (!opt_server_pid) return -1;
    /* pid plus every process whose ancestry leads to it */
    int pids[4096], np = 0;
    long parents[4096];
    DIR *d = opendir("/proc");
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)) && np < 4096) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        long pp;
        int pid = atoi(e->d_name);
        if (proc_cpu(pid, &pp) < 0) continue;
        pids[np] = pid;
        parents[np++] = pp;
    }
    closedir(d);
    double total = 0;
    for (int i = 0; i < np; i++) {
        long cur = pids[i];
        for (int depth = 0; depth < 16 && cur > 1; depth++) {
            if (cur == opt_server_pid) {
                total += proc_cpu(pids[i], NULL);
                if (rss_kb) *rss_kb += proc_rss_kb(pids[i]);
                break;
            }
            long next = -1;
            for (int j = 0; j < np; j++) if (pids[j] == cur) { next = parents[j]; break; }
            cur = next;
        }
    }
    return total;
}

/* Busy and steal seconds of the whole machine (all cores), from /proc/stat. */
static void machine_cpu(double *busy, double *steal)
{
    unsigned long long u = 0, n = 0, sy = 0, id = 0, io = 0, irq = 0, sirq = 0, st = 0;
    FILE *f = fopen("/proc/stat", "r");
    *busy = *steal = 0;
    if (!f) return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &n, &sy, &id, &io, &irq, &sirq, &st) >= 7) {
        double hz = sysconf(_SC_CLK_TCK);
        *busy = (u + n + sy + irq + sirq) / hz;
        *steal = st / hz;
    }
    fclose(f);
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void usage(void)
{
    fprintf(stderr, "usage: wssload -d SECONDS [-c CONNS] [-k INFLIGHT] [-s SIZE] [-t THREADS]\n"
                    "               [--churn | --hold N] [--skip-greeting] [--server-pid PID]\n"
                    "               ws[s]://127.0.0.1:PORT/PATH\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-d") && i + 1 < argc) opt_d = atof(argv[++i]);
        else if (!strcmp(a, "-c") && i + 1 < argc) opt_c = atoi(argv[++i]);
        else if (!strcmp(a, "-k") && i + 1 < argc) opt_k = atoi(argv[++i]);
        else if (!strcmp(a, "-s") && i + 1 < argc) opt_s = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "-t") && i + 1 < argc) opt_t = atoi(argv[++i]);
        else if (!strcmp(a, "--server-pid") && i + 1 < argc) opt_server_pid = atoi(argv[++i]);
        else if (!strcmp(a, "--churn")) opt_churn = true;
        else if (!strcmp(a, "--hold") && i + 1 < argc) opt_c = opt_hold = atoi(argv[++i]);
        else if (!strcmp(a, "--skip-greeting")) opt_skip_greeting = true;
        else if (a[0] != '-' && !url) url = a;
        else usage();
    }
    if (!url || opt_d <= 0 || opt_d > 3600 || opt_c < 1 || opt_k < 1 || opt_t < 1 || opt_s < 1) usage();
    if (opt_churn && opt_hold) usage();
    if (opt_churn || opt_hold) opt_k = 1;
    if (opt_t > opt_c) opt_t = opt_c;

    const char *rest;
    if (!strncmp(url, "wss://", 6)) { opt_tls = true; rest = url + 6; }
    else if (!strncmp(url, "ws://", 5)) rest = url + 5;
    else die("not a ws:// or wss:// URL: %s", url);
    char hostport[128];
    const char *slash = strchr(rest, '/');
    size_t hl = slash ? (size_t)(slash - rest) : strlen(rest);
    if (hl >= sizeof hostport) die("bad URL %s", url);
    memcpy(hostport, rest, hl);
    hostport[hl] = 0;
    snprintf(path, sizeof path, "%s", slash ? slash : "/");
    snprintf(host_hdr, sizeof host_hdr, "%s", hostport);
    char *colon = strrchr(hostport, ':');
    if (!colon) die("no port in %s", url);
    *colon = 0;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, hostport, &addr.sin_addr) != 1) die("not an IPv4 address: %s", hostport);
    if ((ntohl(addr.sin_addr.s_addr) >> 24) != 127) die("only loopback targets: %s", hostport);

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (opt_tls) {
        ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);   /* churn: full handshakes */
    }
    pattern = malloc(PATTERN_N + opt_s);
    for (size_t i = 0; i < PATTERN_N + opt_s; i++) pattern[i] = (uint8_t)(32 + i % PATTERN_N);

    thread *ths = calloc(opt_t, sizeof *ths);
    for (int i = 0; i < opt_t; i++) {
        thread *t = &ths[i];
        t->id = i;
        t->rng = 0x9e3779b9u * (i + 1) ^ (uint32_t)getpid();
        t->epfd = epoll_create1(EPOLL_CLOEXEC);
        t->nconns = opt_c / opt_t + (i < opt_c % opt_t);
        t->conns = calloc(t->nconns, sizeof *t->conns);
        t->hist = calloc(HIST_US, sizeof *t->hist);
        for (int j = 0; j < t->nconns; j++) {
            conn *c = &t->conns[j];
            c->fd = -1;
            c->th = t;
            c->hdr_need = 2;
            c->sent_at = calloc(opt_k, sizeof *c->sent_at);
        }
    }
    long rss0 = 0;
    server_sample(&rss0);
    for (int i = 0; i < opt_t; i++) pthread_create(&ths[i].tid, NULL, thread_main, &ths[i]);

    /* open everything (echo mode) */
    double t0 = now();
    if (!opt_churn) {
        while (atomic_load(&opened_total) < opt_c) {
            uint64_t errs = 0;
            for (int i = 0; i < opt_t; i++) errs += ths[i].errors;
            if (errs || now() - t0 > (opt_hold ? 300 : 30)) {
                fprintf(stderr, "wssload: only %d of %d connections opened (%llu errors)\n",
                        atomic_load(&opened_total), opt_c, (unsigned long long)errs);
                atomic_store(&phase, 4);
                for (int i = 0; i < opt_t; i++) pthread_join(ths[i].tid, NULL);
                printf("RESULT mode=%s tls=%s conns=%d errors=%llu failed=open\n", opt_hold ? "hold" : "echo",
                       opt_tls ? "wss" : "ws", opt_c,
                       (unsigned long long)(errs ? errs : 1));
                return 1;
            }
            usleep(2000);
        }
    }
    double open_secs = now() - t0;
    if (opt_hold) {
        /* Idle: nothing moves; then the RSS of a server holding them all. */
        double h0 = now();
        while (now() - h0 < opt_d) usleep(10000);
        long rss1 = 0;
        server_sample(&rss1);
        int still = 0;
        for (int i = 0; i < opt_t; i++)
            for (int j = 0; j < ths[i].nconns; j++) still += ths[i].conns[j].state == ST_RUN;
        atomic_store(&phase, 3);        /* close frames */
        double c0 = now();
        for (;;) {
            int open = 0;
            for (int i = 0; i < opt_t; i++)
                for (int j = 0; j < ths[i].nconns; j++) open += ths[i].conns[j].state == ST_CLOSING;
            if (!open || now() - c0 > 10) break;
            usleep(10000);
        }
        atomic_store(&phase, 4);
        uint64_t errors = 0;
        for (int i = 0; i < opt_t; i++) {
            pthread_join(ths[i].tid, NULL);
            errors += ths[i].errors;
        }
        double per = opt_c ? (double)(rss1 - rss0) / opt_c : 0;
        fprintf(stderr, "%s hold: %d conns opened in %.2f s, held %.1f s, %d still open; server RSS %ld kB -> "
                        "%ld kB = %.2f kB per connection; %llu errors\n",
                opt_tls ? "wss" : "ws", opt_c, open_secs, opt_d, still, rss0, rss1, per,
                (unsigned long long)errors);
        printf("RESULT mode=hold tls=%s conns=%d open=%d still_open=%d secs=%.3f rss_before_kb=%ld "
               "server_rss_kb=%ld kb_per_conn=%.2f errors=%llu connect_s=%.2f\n",
               opt_tls ? "wss" : "ws", opt_c, atomic_load(&opened_total), still, opt_d, rss0, rss1, per,
               (unsigned long long)errors, open_secs);
        return errors || still != opt_c ? 1 : 0;
    }
    double scpu0 = server_sample(NULL), ccpu0 = self_cpu(), mbusy0, msteal0, mbusy1, msteal1;
    machine_cpu(&mbusy0, &msteal0);
    t_window0 = now();
    atomic_store(&phase, 1);
    while (now() - t_window0 < opt_d) usleep(2000);
    atomic_store(&phase, 2);
    t_window1 = now();
    double scpu1 = server_sample(NULL), ccpu1 = self_cpu();
    machine_cpu(&mbusy1, &msteal1);
    /* drain echoes in flight */
    if (!opt_churn) {
        double d0 = now();
        for (;;) {
            int left = 0;
            for (int i = 0; i < opt_t; i++)
                for (int j = 0; j < ths[i].nconns; j++) left += ths[i].conns[j].state == ST_RUN && ths[i].conns[j].inflight > 0;
            if (!left || now() - d0 > DRAIN_S) break;
            usleep(2000);
        }
        atomic_store(&phase, 3);
        usleep(100000);
    }
    atomic_store(&phase, 4);
    for (int i = 0; i < opt_t; i++) pthread_join(ths[i].tid, NULL);

    uint64_t msgs = 0, errors = 0, cycles = 0, over = 0, total = 0;
    uint64_t *hist = calloc(HIST_US, sizeof *hist);
    for (int i = 0; i < opt_t; i++) {
        msgs += ths[i].msgs_window;
        errors += ths[i].errors;
        cycles += ths[i].cycles_window;
        over += ths[i].hist_over;
        for (int j = 0; j < HIST_US; j++) hist[j] += ths[i].hist[j];
    }
    for (int j = 0; j < HIST_US; j++) total += hist[j];
    total += over;
    long p50 = -1, p99 = -1;
    uint64_t acc = 0;
    for (int j = 0; j < HIST_US && total; j++) {
        acc += hist[j];
        if (p50 < 0 && acc * 100 >= total * 50) p50 = j;
        if (p99 < 0 && acc * 100 >= total * 99) { p99 = j; break; }
    }
    if (total && p99 < 0) p99 = HIST_US;
    double secs = t_window1 - t_window0;
    double scpu = (scpu0 >= 0 && scpu1 >= 0) ? scpu1 - scpu0 : -1;
    double ccpu_pct = 100.0 * (ccpu1 - ccpu0) / secs;
    /* what the rest of the machine used meanwhile, in % of one core */
    double other_pct = 100.0 * ((mbusy1 - mbusy0) - (ccpu1 - ccpu0) - (scpu > 0 ? scpu : 0)) / secs;
    if (other_pct < 0) other_pct = 0;
    double steal_pct = 100.0 * (msteal1 - msteal0) / secs;
    uint64_t count = opt_churn ? cycles : msgs;
    double rate = count / secs;
    fprintf(stderr, "%s %s: %d conns, %.1f s: %llu %s, %.0f/s, p50 %ld us, p99 %ld us, %llu errors, "
                    "opened in %.2f s, client CPU %.0f %%\n",
            opt_tls ? "wss" : "ws", opt_churn ? "churn" : "echo", opt_c, secs, (unsigned long long)count,
            opt_churn ? "cycles" : "msgs", rate, p50, p99, (unsigned long long)errors, open_secs, ccpu_pct);
    printf("RESULT mode=%s tls=%s conns=%d k=%d size=%zu %s=%llu secs=%.3f %s=%.0f p50_us=%ld p99_us=%ld "
           "errors=%llu client_cpu_pct=%.0f other_cpu_pct=%.0f steal_pct=%.0f server_cpu_s=%.2f %s=%.0f\n",
           opt_churn ? "churn" : "echo", opt_tls ? "wss" : "ws", opt_c, opt_k, opt_s,
           opt_churn ? "cycles" : "msgs", (unsigned long long)count, secs,
           opt_churn ? "cycles_per_s" : "msgs_per_s", rate, p50, p99, (unsigned long long)errors, ccpu_pct, other_pct, steal_pct, scpu,
           opt_churn ? "cycles_per_server_cpu_s" : "msgs_per_server_cpu_s", scpu > 0 ? count / scpu : 0);
    return errors ? 1 : 0;
}
