/*
 * reloadbench — measures luaws hot reload from the client side (loopback only).
 *
 *   reloadbench script PATH VERSION ON_RELOAD
 *       Writes version VERSION of the bench script to PATH.
 *
 *   reloadbench latency PORT SCRIPT COUNT MODE
 *       One connection echoes back to back. COUNT times: write version k of
 *       SCRIPT (MODE "rename": temp file + rename, like vim; "inplace":
 *       truncate + write), then echo until a reply comes from version k.
 *       Prints the time from the write to that reply, per round and as
 *       min/median/p90/max.
 *
 *   reloadbench stall PORT SCRIPT CONNS ACTIVE SOURCES BEFORE_MS AFTER_MS ON_RELOAD
 *       Opens CONNS connections (source addresses 127.0.0.1 ..
 *       127.0.0.SOURCES), then ACTIVE of them run a steady echo stream (one
 *       message in flight each, back to back). After BEFORE_MS of that, it
 *       writes version 2 of SCRIPT (temp file + rename) and goes on until
 *       every active stream got a version-2 reply and AFTER_MS passed. Then
 *       every one of the CONNS connections sends one message and must get a
 *       version-2 reply. Prints the largest gap between two replies (any
 *       stream) before and during the reload, the worst gap of one stream,
 *       the write-to-first/all version-2 times, and drops.
 *       ON_RELOAD 1 gives the new listener an on_reload (one more event per
 *       socket during the reload).
 *
 * Server scripts written here: version K answers "vK " .. message.
 * The last line is machine-readable: "RESULT key=value ...".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "reloadbench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(1);
}

/* ---- scripts ---- */

static void script_text(char *buf, size_t len, int version, bool on_reload)
{
    snprintf(buf, len,
             "-- written by bench/reload/reloadbench, version %d\n"
             "local V = \"v%d \"\n"
             "return function(request)\n"
             "  return { listener = {\n"
             "    on_message = function(s, m) s:send(V .. m) end,\n"
             "%s"
             "  } }\n"
             "end\n",
             version, version, on_reload ? "    on_reload = function(s) s.data.reloads = (s.data.reloads or 0) + 1 end,\n" : "");
}

static void write_all(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("cannot write %s", path);
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0) die("write %s failed", path);
        off += (size_t)w;
    }
    close(fd);
}

static void write_script(const char *path, int version, bool on_reload, bool rename_over)
{
    char text[1024];
    script_text(text, sizeof text, version, on_reload);
    if (!rename_over) {
        write_all(path, text);
        return;
    }
    char tmp[4096];
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(tmp, sizeof tmp, "%.*s/.%s.tmp", (int)(slash - path), path, slash + 1);
    else
        snprintf(tmp, sizeof tmp, ".%s.tmp", path);
    write_all(tmp, text);
    if (rename(tmp, path) < 0) die("rename over %s failed", path);
}

/* ---- connections ---- */

enum cstate { C_CONNECTING, C_HANDSHAKE, C_OPEN, C_DEAD };

typedef struct conn {
    int fd;
    enum cstate state;
    char buf[1024];
    size_t len;
    int inflight;          /* our messages not answered yet */
    int version;           /* version of the last reply */
    double last_reply;     /* ms */
    double max_gap;        /* between two replies of this stream, in the measured window */
    bool active;
} conn;

static int ep;
static int port;
static conn *conns;
static int nconns;
static int dropped;

static const char request_fmt[] =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

static void set_events(conn *c, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void kill_conn(conn *c, const char *why)
{
    if (c->state == C_DEAD) return;
    if (c->state == C_OPEN) {
        dropped++;
        if (dropped <= 5) fprintf(stderr, "reloadbench: connection %ld dropped: %s\n", (long)(c - conns), why);
    }
    c->state = C_DEAD;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static bool start_conn(conn *c, int source)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) return false;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)source);
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
        close(c->fd);
        return false;
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    int r = connect(c->fd, (struct sockaddr *)&dst, sizeof dst);
    if (r < 0 && errno != EINPROGRESS) {
        close(c->fd);
        return false;
    }
    c->state = C_CONNECTING;
    c->len = 0;
    struct epoll_event e = {.events = EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    return true;
}

/* A masked text frame (payload < 126 bytes), written whole or the
 * connection counts as dropped (the socket buffer is never near full here). */
static void send_text(conn *c, const char *msg)
{
    unsigned char f[2 + 4 + 125];
    size_t n = strlen(msg);
    static const unsigned char key[4] = {0x12, 0x34, 0x56, 0x78};
    f[0] = 0x81;
    f[1] = (unsigned char)(0x80 | n);
    memcpy(f + 2, key, 4);
    for (size_t i = 0; i < n; i++) f[6 + i] = (unsigned char)msg[i] ^ key[i & 3];
    ssize_t w = write(c->fd, f, 6 + n);
    if (w != (ssize_t)(6 + n)) {
        kill_conn(c, "short write");
        return;
    }
    c->inflight++;
}

/* Called per complete text message from the server. */
typedef void (*on_msg_fn)(conn *c, const char *msg, size_t len, double t);

/* Reads what is there; handles the handshake and whole frames. */
static void do_read(conn *c, on_msg_fn on_msg)
{
    for (;;) {
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r == 0) {
            kill_conn(c, "EOF from the server");
            return;
        }
        if (r < 0) {
            if (errno == EAGAIN) return;
            kill_conn(c, strerror(errno));
            return;
        }
        c->len += (size_t)r;
        double t = now_ms();
        if (c->state == C_HANDSHAKE) {
            char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (!end) {
                if (c->len == sizeof c->buf) kill_conn(c, "handshake too long");
                continue;
            }
            if (c->len < 12 || memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
                kill_conn(c, "no 101");
                return;
            }
            size_t used = (size_t)(end + 4 - c->buf);
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            c->state = C_OPEN;
            set_events(c, EPOLLIN | EPOLLRDHUP);
        }
        size_t off = 0;
        while (c->len - off >= 2) {
            unsigned char *p = (unsigned char *)c->buf + off;
            int op = p[0] & 0x0f;
            size_t plen = p[1] & 0x7f, hdr = 2;
            if (plen == 126) {
                if (c->len - off < 4) break;
                plen = ((size_t)p[2] << 8) | p[3];
                hdr = 4;
            } else if (plen == 127) {
                kill_conn(c, "unexpectedly large frame");
                return;
            }
            if (c->len - off < hdr + plen) break;
            if (op == 0x8) {
                kill_conn(c, "close frame from the server");
                return;
            }
            if (op == 0x1 && on_msg) on_msg(c, (char *)p + hdr, plen, t);
            off += hdr + plen;
            if (c->state == C_DEAD) return;
        }
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
        if (c->len == sizeof c->buf) {
            kill_conn(c, "frame too large for the buffer");
            return;
        }
    }
}

static void do_write_ready(conn *c)
{
    if (c->state != C_CONNECTING) return;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        kill_conn(c, strerror(err));
        return;
    }
    char req[512];
    int n = snprintf(req, sizeof req, request_fmt, port);
    if (write(c->fd, req, (size_t)n) != n) {
        kill_conn(c, "short handshake write");
        return;
    }
    c->state = C_HANDSHAKE;
    set_events(c, EPOLLIN | EPOLLRDHUP);
}

static void poll_once(int timeout_ms, on_msg_fn on_msg)
{
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, timeout_ms);
    for (int i = 0; i < n; i++) {
        conn *c = evs[i].data.ptr;
        if (c->state == C_DEAD) continue;
        if (evs[i].events & EPOLLOUT) do_write_ready(c);
        if (c->state == C_DEAD) continue;
        if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) do_read(c, on_msg);
    }
}

/* Opens nconns connections, at most `window` handshakes at a time. */
static int open_all(int sources, int window, double deadline)
{
    int started = 0, open_n = 0;
    while (open_n < nconns && now_ms() < deadline) {
        int pending = 0;
        open_n = 0;
        for (int i = 0; i < started; i++) {
            if (conns[i].state == C_OPEN) open_n++;
            else if (conns[i].state != C_DEAD) pending++;
        }
        while (pending < window && started < nconns) {
            if (!start_conn(&conns[started], started % sources)) {
                fprintf(stderr, "reloadbench: cannot start connection %d: %s\n", started, strerror(errno));
                conns[started].state = C_DEAD;
            } else {
                pending++;
            }
            started++;
        }
        int dead = 0;
        for (int i = 0; i < started; i++) dead += conns[i].state == C_DEAD;
        if (dead && started == nconns && open_n + dead == nconns) break;
        poll_once(10, NULL);
    }
    return open_n;
}

static int count_over(const double *v, int n, double limit)
{
    int k = 0;
    for (int i = 0; i < n; i++) k += v[i] > limit;
    return k;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p)
{
    if (n == 0) return 0;
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

static int parse_version(const char *msg, size_t len)
{
    if (len < 3 || msg[0] != 'v') return -1;
    return atoi(msg + 1);
}

/* ---- latency ---- */

static int lat_want;
static bool lat_got;

static void lat_msg(conn *c, const char *msg, size_t len, double t)
{
    (void)t;
    c->inflight--;
    c->version = parse_version(msg, len);
    if (c->version == lat_want) lat_got = true;
}

static int cmd_latency(const char *script, int count, bool rename_over)
{
    nconns = 1;
    conns = calloc(1, sizeof *conns);
    if (open_all(1, 1, now_ms() + 5000) != 1) die("%s", "cannot connect");
    conn *c = &conns[0];
    send_text(c, "x");
    while (c->inflight && c->state == C_OPEN) poll_once(1000, lat_msg);
    int base = c->version;
    if (base < 1) die("%s", "the server does not answer with a version");
    double *v = calloc((size_t)count, sizeof *v);
    for (int i = 0; i < count; i++) {
        lat_want = base + 1 + i;
        lat_got = false;
        double t0 = now_ms();
        write_script(script, lat_want, false, rename_over);
        while (!lat_got) {
            if (c->state != C_OPEN) die("%s", "connection lost");
            if (now_ms() - t0 > 5000) die("%s", "no reply from the new version within 5 s");
            if (!c->inflight) send_text(c, "x");
            poll_once(1000, lat_msg);
        }
        v[i] = now_ms() - t0;
        printf("  round %2d: %.2f ms\n", i + 1, v[i]);
        /* let the in-flight one come back before the next write */
        while (c->inflight && c->state == C_OPEN) poll_once(1000, lat_msg);
    }
    qsort(v, (size_t)count, sizeof *v, cmp_double);
    printf("write -> first reply from new code (%s, %d rounds): min %.2f ms, median %.2f ms, p90 %.2f ms, max %.2f ms\n",
           rename_over ? "rename" : "in place", count, v[0], pct(v, count, 0.5), pct(v, count, 0.9), v[count - 1]);
    printf("RESULT mode=latency write=%s rounds=%d min_ms=%.2f median_ms=%.2f p90_ms=%.2f max_ms=%.2f dropped=%d\n",
           rename_over ? "rename" : "inplace", count, v[0], pct(v, count, 0.5), pct(v, count, 0.9), v[count - 1],
           dropped);
    return dropped ? 1 : 0;
}

/* ---- stall ---- */

static double *gaps;       /* global inter-reply gaps in the current phase */
static int ngaps, capgaps;
static double last_any;    /* last reply from any active stream */
static bool measuring;     /* collect per-stream gaps */
static int want_version;
static double first_new, all_new, switch_gap;
static int active_new;
static int nactive;
static long replies;

static void stall_msg(conn *c, const char *msg, size_t len, double t)
{
    c->inflight--;
    int v = parse_version(msg, len);
    if (v == want_version && c->version != want_version && c->active) {
        active_new++;
        if (!first_new) {
            first_new = t;
            switch_gap = last_any > 0 ? t - last_any : 0;
        }
        if (active_new == nactive) all_new = t;
    }
    if (v < c->version) {
        fprintf(stderr, "reloadbench: connection %ld went back from v%d to v%d\n", (long)(c - conns), c->version, v);
        dropped++;
    }
    c->version = v;
    if (!c->active) return;
    replies++;
    if (last_any > 0) {
        if (ngaps == capgaps) {
            capgaps = capgaps ? capgaps * 2 : 65536;
            gaps = realloc(gaps, (size_t)capgaps * sizeof *gaps);
        }
        gaps[ngaps++] = t - last_any;
    }
    last_any = t;
    if (measuring && c->last_reply > 0 && t - c->last_reply > c->max_gap) c->max_gap = t - c->last_reply;
    c->last_reply = t;
    send_text(c, "m");
}

static void run_for(double ms)
{
    double end = now_ms() + ms;
    while (now_ms() < end) poll_once(5, stall_msg);
}

static int cmd_stall(const char *script, int n, int active, int sources, int before_ms, int after_ms, bool on_reload)
{
    nconns = n;
    conns = calloc((size_t)n, sizeof *conns);
    double t0 = now_ms();
    int open_n = open_all(sources, 512, t0 + 60000);
    double t_open = now_ms() - t0;
    printf("opened %d of %d connections in %.0f ms (sources 127.0.0.1-127.0.0.%d)\n", open_n, n, t_open, sources);
    if (open_n != n) {
        printf("RESULT mode=stall conns=%d opened=%d error=open_failed\n", n, open_n);
        return 1;
    }
    /* every connection answers once from v1 */
    for (int i = 0; i < n; i++) send_text(&conns[i], "hello");
    for (double end = now_ms() + 30000; now_ms() < end;) {
        int waiting = 0;
        for (int i = 0; i < n; i++) waiting += conns[i].state == C_OPEN && conns[i].inflight;
        if (!waiting) break;
        poll_once(10, stall_msg);
    }
    /* active streams spread over the connections */
    nactive = active;
    for (int i = 0; i < active; i++) {
        conn *c = &conns[(long)i * n / active];
        c->active = true;
        send_text(c, "m");
    }
    /* baseline */
    run_for(200);              /* warm up */
    ngaps = 0;
    last_any = 0;
    long r0 = replies;
    run_for(before_ms);
    qsort(gaps, (size_t)ngaps, sizeof *gaps, cmp_double);
    double base_max = ngaps ? gaps[ngaps - 1] : 0, base_p99 = pct(gaps, ngaps, 0.99);
    double rate = (double)(replies - r0) / before_ms * 1000.0;
    int base_over = count_over(gaps, ngaps, 5.0);
    /* reload */
    want_version = 2;
    ngaps = 0;
    measuring = true;
    for (int i = 0; i < n; i++) conns[i].max_gap = 0;
    double tw = now_ms();
    write_script(script, 2, on_reload, true);
    while ((active_new < nactive || now_ms() - tw < after_ms) && now_ms() - tw < 30000) poll_once(5, stall_msg);
    measuring = false;
    qsort(gaps, (size_t)ngaps, sizeof *gaps, cmp_double);
    double reload_max = ngaps ? gaps[ngaps - 1] : 0;
    int reload_over = count_over(gaps, ngaps, 5.0);
    double stream_max = 0;
    for (int i = 0; i < n; i++)
        if (conns[i].active && conns[i].max_gap > stream_max) stream_max = conns[i].max_gap;
    /* stop the streams, then ask every connection once */
    for (int i = 0; i < n; i++) conns[i].active = false;
    for (double end = now_ms() + 5000; now_ms() < end;) {
        int waiting = 0;
        for (int i = 0; i < n; i++) waiting += conns[i].state == C_OPEN && conns[i].inflight;
        if (!waiting) break;
        poll_once(10, stall_msg);
    }
    for (int i = 0; i < n; i++)
        if (conns[i].state == C_OPEN) send_text(&conns[i], "check");
    for (double end = now_ms() + 30000; now_ms() < end;) {
        int waiting = 0;
        for (int i = 0; i < n; i++) waiting += conns[i].state == C_OPEN && conns[i].inflight;
        if (!waiting) break;
        poll_once(10, stall_msg);
    }
    int on_new = 0, alive = 0;
    for (int i = 0; i < n; i++) {
        if (conns[i].state != C_OPEN) continue;
        alive++;
        on_new += conns[i].version == 2 && !conns[i].inflight;
    }
    printf("steady stream: %d connections echoing back to back, %.0f replies/s\n", active, rate);
    printf("before the reload (%d ms): largest gap between two replies %.2f ms, p99 %.3f ms, %d gaps > 5 ms\n",
           before_ms, base_max, base_p99, base_over);
    printf("reload window (%.0f ms from the write): largest gap %.2f ms, %d gaps > 5 ms; worst gap of one stream %.2f ms\n",
           now_ms() - tw, reload_max, reload_over, stream_max);
    printf("the switch: gap from the last v1 reply to the first v2 reply %.2f ms\n", switch_gap);
    printf("write -> first v2 reply %.1f ms, -> every stream on v2 %.1f ms\n", first_new ? first_new - tw : -1.0,
           all_new ? all_new - tw : -1.0);
    printf("after: %d of %d connections open, %d answered from v2, %d dropped\n", alive, n, on_new, dropped);
    printf("RESULT mode=stall conns=%d active=%d on_reload=%d rate=%.0f base_max_gap_ms=%.2f base_p99_gap_ms=%.3f "
           "reload_max_gap_ms=%.2f switch_gap_ms=%.2f stream_max_gap_ms=%.2f first_new_ms=%.1f all_new_ms=%.1f alive=%d on_new=%d "
           "dropped=%d\n",
           n, active, on_reload, rate, base_max, base_p99, reload_max, switch_gap, stream_max, first_new ? first_new - tw : -1.0,
           all_new ? all_new - tw : -1.0, alive, on_new, dropped);
    return (dropped || on_new != n) ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[1], "script") == 0) {
        write_script(argv[2], atoi(argv[3]), atoi(argv[4]) != 0, true);
        return 0;
    }
    if (argc >= 6 && strcmp(argv[1], "latency") == 0) {
        port = atoi(argv[2]);
        ep = epoll_create1(0);
        return cmd_latency(argv[3], atoi(argv[4]), strcmp(argv[5], "inplace") != 0);
    }
    if (argc >= 10 && strcmp(argv[1], "stall") == 0) {
        port = atoi(argv[2]);
        ep = epoll_create1(0);
        int sources = atoi(argv[6]);
        if (sources < 1 || sources > 250) die("%s", "SOURCES must be 1-250");
        return cmd_stall(argv[3], atoi(argv[4]), atoi(argv[5]), sources, atoi(argv[7]), atoi(argv[8]),
                         atoi(argv[9]) != 0);
    }
    fprintf(stderr,
            "usage: reloadbench script PATH VERSION ON_RELOAD(0|1)\n"
            "       reloadbench latency PORT SCRIPT COUNT rename|inplace\n"
            "       reloadbench stall PORT SCRIPT CONNS ACTIVE SOURCES BEFORE_MS AFTER_MS ON_RELOAD(0|1)\n");
    return 2;
}
