/*
 * subload — fan-out benchmark client for bench/topics/run.
 *
 *   subload -n SUBS -d SECONDS [-s SIZE] [-w WINDOW] [--sources K] [--deflate] [--drain S]
 *           [--cpu NAME=PID]... ws://127.0.0.1:PORT
 *
 * Opens SUBS subscriber connections to ws://HOST:PORT/sub (source addresses
 * spread over 127.0.0.1 .. 127.0.0.K, so the ephemeral port ranges of
 * several addresses are used), then one publisher connection to /pub. The
 * server under test must send every text message that arrives on /pub to
 * every /sub connection (bench/topics/room.lua, node_broadcast.js).
 *
 * Warm-up: the publisher sends SIZE-byte "W..." messages (again every 500 ms
 * while no new subscriber got one) until every subscriber has seen one, so
 * the subscriptions are in place everywhere (through Redis too) and any
 * per-socket compression state exists. Then for -d seconds it publishes
 * messages of SIZE bytes, "%010u " + text filler (fill_text), keeping at
 * most WINDOW messages that not every subscriber has received yet. Each subscriber checks that it
 * gets message 1, 2, 3, ... each exactly once and in order.
 *
 * Every message is checked for its length (SIZE) too. With --deflate every
 * connection offers permessage-deflate with server_no_context_takeover and
 * client_no_context_takeover (and the server must accept both); the
 * publisher sends uncompressed, and subscribers inflate what arrives
 * compressed. Since a server without context takeover turns the same message
 * into the same bytes for every subscriber, the last inflated payload is kept
 * and reused when the next one is byte-for-byte the same, so the client
 * inflates about once per message, not once per delivery. The count of
 * compressed deliveries is reported (a message under the server's threshold
 * goes out uncompressed).
 *
 * One nonblocking epoll loop, level-triggered, one thread. Only loopback
 * targets are accepted. A guard alarm ends the run if it hangs.
 *
 * Output: a summary on stderr and one line on stdout:
 *   RESULT subs=10000 size=32 window=8 secs=5.000 published=... completed=...
 *     deliveries=... deliveries_per_s=... msgs_per_s=... p50_ms=... p99_ms=...
 *     errors=0 lost=0 deflate=0|1 compressed=... cpu_NAME_s=... client_cpu_s=...
 *     other_cpu_pct=...
 * (other_cpu_pct: CPU that the rest of the machine used during the window, in
 * % of one core; results with much of it are noisy.)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
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
#include <zlib.h>

#define LOADTOOL_NAME "subload"
#include "../loadtool.h"

#define READ_CHUNK (256 * 1024)
#define MAX_CONNECTING 256
#define SEQ_DIGITS 10

enum cstate { CS_CONNECTING, CS_HANDSHAKE, CS_OPEN, CS_DEAD };

struct conn {
    int fd;
    enum cstate state;
    bool is_pub;
    /* handshake response */
    char resp[1024];
    size_t resp_len;
    /* frame parser */
    uint8_t hdr[14];
    size_t hlen, hneed;
    bool in_payload;
    uint64_t left;
    uint8_t opcode;            /* of the current frame */
    uint8_t msg_opcode;        /* of the message it belongs to */
    bool fin;
    uint8_t prefix[128];       /* first bytes of a message, or a control payload */
    size_t plen;
    bool msg_started;
    bool msg_compressed;       /* RSV1 on its first frame */
    uint64_t msg_len;          /* payload bytes of the message so far */
    uint8_t *z;                /* a compressed message's payload */
    size_t z_len, z_cap;
    /* delivery check */
    uint32_t next_seq;         /* the one we expect */
    bool warm;
    /* output (the publisher, pongs) */
    bool want_out;             /* EPOLLOUT registered */
    uint8_t *out;
    size_t out_len, out_cap;
};

static struct {
    int subs, secs, size, window, sources, drain;
    double rate;                 /* messages per second; 0: as fast as the window allows */
    bool deflate;
    char host[64];
    int port;
    struct watched_cpu cpu[MAX_CPU];
    int ncpu;
} opt = { .subs = 10000, .secs = 5, .size = 32, .window = 8, .sources = -1, .drain = 10 };

static int epfd;
static struct sockaddr_in dst;
static struct conn *conns;      /* subs + 1 (the publisher last) */
static struct conn *pubc;
static int n_open, n_connecting, n_started, n_warm, n_dead;
static uint64_t errors, deliveries, deliveries_at_end, compressed, compressed_at_end;
/* window bookkeeping */
static uint32_t published, completed;
static uint32_t *ring_count;
static double *ring_sent;
static uint32_t ring_size;
static double *lat;             /* completion latency per message, ms */
static size_t nlat, lat_cap;
static bool measuring, publishing;
static double t_start, t_end;

/* ---- output ---- */

static void out_append(struct conn *c, const void *p, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
        while (cap < c->out_len + n) cap *= 2;
        c->out = realloc(c->out, cap);
        if (!c->out) die("out of memory");
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void conn_dead(struct conn *c, const char *why);

static void set_events(struct conn *c)
{
    bool want = c->out_len > 0;
    if (want == c->want_out) return;
    c->want_out = want;
    struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c };
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

static void flush(struct conn *c)
{
    while (c->out_len) {
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            conn_dead(c, strerror(errno));
            return;
        }
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }
    if (c->state == CS_OPEN || c->state == CS_HANDSHAKE) set_events(c);
}

/* A masked client frame. */
static void send_frame(struct conn *c, uint8_t opcode, const void *payload, size_t len)
{
    uint32_t r = (uint32_t)random();
    uint8_t h[14], k[4];
    memcpy(k, &r, 4);
    out_append(c, h, client_frame_head(h, opcode, len, k));
    size_t base = c->out_len;
    out_append(c, payload, len);
    mask_bytes((uint8_t *)c->out + base, len, k);
}

/* ---- publishing and the window ---- */

static char *msgbuf;

/* The filler: words of English-like text from a fixed seed, so a compressed
 * message is about a third of its size (like chat or JSON), not the few bytes
 * a run of one letter would give. */
static void fill_text(char *p, size_t n)
{
    static const char *const words[] = { "the", "room", "message", "from", "alice", "to", "everyone", "in",
                                         "channel", "price", "update", "42", "ok", "player", "moved", "north",
                                         "and", "scored", "status", "online", "typing", "hello", "world", "x" };
    uint32_t r = 12345;
    size_t i = 0;
    while (i < n) {
        r = r * 1103515245u + 12345u;
        const char *w = words[(r >> 16) % (sizeof words / sizeof words[0])];
        for (size_t k = 0; w[k] && i < n; k++) p[i++] = w[k];
        if (i < n) p[i++] = ' ';
    }
}

static void publish_one(void)
{
    uint32_t seq = ++published;
    char head[SEQ_DIGITS + 2];
    snprintf(head, sizeof head, "%0*u ", SEQ_DIGITS, seq);
    memcpy(msgbuf, head, (size_t)opt.size < sizeof head - 1 ? (size_t)opt.size : sizeof head - 1);
    ring_count[seq % ring_size] = 0;
    ring_sent[seq % ring_size] = now_s();
    send_frame(pubc, 0x1, msgbuf, (size_t)opt.size);
}

/* Publishes what the window allows; with --rate, no more than are due
 * since the window opened (one at once, then one every 1/rate s). */
static uint32_t published_at_start;
static void pump(void)
{
    if (!publishing) return;
    while (published - completed < (uint32_t)opt.window) {
        if (opt.rate > 0 && published - published_at_start >= (uint32_t)((now_s() - t_start) * opt.rate) + 1) break;
        publish_one();
    }
    flush(pubc);
}

static void delivered(uint32_t seq)
{
    deliveries++;
    uint32_t *cnt = &ring_count[seq % ring_size];
    if (++*cnt < (uint32_t)(opt.subs - n_dead)) return;
    /* every subscriber has it; advance over completed messages in order */
    while (completed < published && ring_count[(completed + 1) % ring_size] >= (uint32_t)(opt.subs - n_dead)) {
        completed++;
        if (measuring) {
            if (nlat == lat_cap) {
                lat_cap = lat_cap ? lat_cap * 2 : 65536;
                lat = realloc(lat, lat_cap * sizeof *lat);
                if (!lat) die("out of memory");
            }
            lat[nlat++] = (now_s() - ring_sent[completed % ring_size]) * 1000.0;
        }
    }
    pump();
}

/* A whole message arrived on a subscriber; prefix holds its first bytes. */
static void on_message(struct conn *c)
{
    if (c->plen >= 1 && c->prefix[0] == 'W') {
        if (!c->warm) { c->warm = true; n_warm++; }
        return;
    }
    if (c->plen < SEQ_DIGITS || c->msg_len != (uint64_t)opt.size) {
        static int bad_len;
        if (bad_len++ < 5)
            fprintf(stderr, "subload: connection %ld got a message of %llu bytes, expected %d\n",
                    (long)(c - conns), (unsigned long long)c->msg_len, opt.size);
        errors++;
        return;
    }
    uint32_t seq = 0;
    for (int i = 0; i < SEQ_DIGITS; i++) {
        if (!isdigit(c->prefix[i])) { errors++; return; }
        seq = seq * 10 + (uint32_t)(c->prefix[i] - '0');
    }
    if (seq != c->next_seq) {
        static int reported;
        if (reported++ < 5)
            fprintf(stderr, "subload: connection %ld got message %u, expected %u\n",
                    (long)(c - conns), seq, c->next_seq);
        errors++;
        if (seq < c->next_seq) return;   /* a repeat: do not count it again */
    }
    c->next_seq = seq + 1;
    delivered(seq);
}

/* ---- permessage-deflate (server_no_context_takeover: every message on its own) ---- */

static z_stream inflater;
static uint8_t *zcache;            /* the last compressed payload inflated */
static size_t zcache_len, zcache_cap;
static uint8_t zcache_prefix[128];
static size_t zcache_plen;
static uint64_t zcache_total;      /* its inflated length */
static bool zcache_ok;

/* Inflates c->z into c->prefix / c->plen / c->msg_len; false if it is not
 * valid deflate data. */
static bool inflate_message(struct conn *c)
{
    if (!(zcache_len == c->z_len && memcmp(zcache, c->z, c->z_len) == 0)) {
        static uint8_t out[64 * 1024];
        static const uint8_t tail[4] = { 0x00, 0x00, 0xff, 0xff };
        inflateReset(&inflater);
        zcache_total = 0;
        zcache_plen = 0;
        zcache_ok = true;
        for (int part = 0; part < 2 && zcache_ok; part++) {
            inflater.next_in = part ? (Bytef *)tail : c->z;
            inflater.avail_in = part ? 4 : (uInt)c->z_len;
            do {
                inflater.next_out = out;
                inflater.avail_out = sizeof out;
                int rc = inflate(&inflater, Z_SYNC_FLUSH);
                if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) { zcache_ok = false; break; }
                size_t got = sizeof out - inflater.avail_out;
                if (zcache_plen < sizeof zcache_prefix) {
                    size_t take = sizeof zcache_prefix - zcache_plen;
                    if (take > got) take = got;
                    memcpy(zcache_prefix + zcache_plen, out, take);
                    zcache_plen += take;
                }
                zcache_total += got;
                if (got == 0) break;
            } while (inflater.avail_in > 0 || inflater.avail_out == 0);
        }
        if (c->z_len > zcache_cap) {
            zcache_cap = c->z_len * 2;
            zcache = realloc(zcache, zcache_cap);
            if (!zcache) die("out of memory");
        }
        memcpy(zcache, c->z, c->z_len);
        zcache_len = c->z_len;
    }
    memcpy(c->prefix, zcache_prefix, zcache_plen);
    c->plen = zcache_plen;
    c->msg_len = zcache_total;
    return zcache_ok;
}

/* ---- reading frames ---- */

static void frame_done(struct conn *c)
{
    uint8_t op = c->opcode;
    if (op >= 8) {
        if (op == 0x8) { conn_dead(c, "close frame"); return; }
        if (op == 0x9) { send_frame(c, 0xA, c->prefix, c->plen); flush(c); }
        c->plen = 0;
        return;
    }
    if (c->fin) {
        if (c->msg_compressed) {
            compressed++;
            if (!inflate_message(c)) {
                errors++;
                c->msg_started = c->msg_compressed = false;
                c->plen = c->z_len = 0;
                return;
            }
        }
        if (!c->is_pub) on_message(c);
        c->msg_started = c->msg_compressed = false;
        c->plen = c->z_len = 0;
        c->msg_len = 0;
    }
}

static void parse(struct conn *c, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && c->state == CS_OPEN) {
        if (!c->in_payload) {
            c->hdr[c->hlen++] = p[i++];
            if (c->hlen == 2) {
                uint8_t l7 = c->hdr[1] & 0x7f;
                c->hneed = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((c->hdr[1] & 0x80) ? 4 : 0);
            }
            if (c->hlen >= 2 && c->hlen == c->hneed) {
                uint8_t l7 = c->hdr[1] & 0x7f;
                uint64_t len = l7;
                if (l7 == 126) len = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
                else if (l7 == 127) { len = 0; for (int k = 2; k < 10; k++) len = (len << 8) | c->hdr[k]; }
                c->opcode = c->hdr[0] & 0x0f;
                c->fin = (c->hdr[0] & 0x80) != 0;
                bool rsv1 = (c->hdr[0] & 0x40) != 0;
                if ((c->hdr[0] & 0x30) || (rsv1 && (!opt.deflate || c->opcode >= 8 || c->msg_started))) {
                    conn_dead(c, "RSV bits the negotiation does not allow");
                    return;
                }
                if (c->opcode >= 8) c->plen = 0;
                else if (!c->msg_started) {
                    c->msg_started = true;
                    c->plen = 0;
                    c->msg_len = 0;
                    c->z_len = 0;
                    c->msg_opcode = c->opcode;
                    c->msg_compressed = rsv1;
                }
                c->left = len;
                c->hlen = 0;
                c->in_payload = true;
                if (len == 0) { c->in_payload = false; frame_done(c); }
            }
            continue;
        }
        size_t k = n - i;
        if (k > c->left) k = (size_t)c->left;
        if (c->opcode < 8) c->msg_len += k;
        if (c->opcode < 8 && c->msg_compressed) {
            if (c->z_len + k > c->z_cap) {
                size_t cap = c->z_cap ? c->z_cap * 2 : 256;
                while (cap < c->z_len + k) cap *= 2;
                c->z = realloc(c->z, cap);
                if (!c->z) die("out of memory");
                c->z_cap = cap;
            }
            memcpy(c->z + c->z_len, p + i, k);
            c->z_len += k;
        } else if (c->plen < sizeof c->prefix) {
            size_t take = sizeof c->prefix - c->plen;
            if (take > k) take = k;
            memcpy(c->prefix + c->plen, p + i, take);
            c->plen += take;
        }
        i += k;
        c->left -= k;
        if (c->left == 0) { c->in_payload = false; frame_done(c); }
    }
}

/* ---- connections ---- */

static void conn_dead(struct conn *c, const char *why)
{
    if (c->state == CS_DEAD) return;
    static int reported;
    if (reported++ < 5) fprintf(stderr, "subload: connection %ld lost: %s\n", (long)(c - conns), why);
    if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE) n_connecting--;
    else if (c->state == CS_OPEN) n_open--;
    c->state = CS_DEAD;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c == pubc) die("the publisher connection was lost: %s", why);
    n_dead++;
    errors++;
}

static int source_count(void)
{
    if (opt.sources >= 0) return opt.sources;
    return opt.subs / 5000 + 1;
}

static void conn_start(struct conn *c, long idx)
{
    memset(c, 0, sizeof *c);
    c->is_pub = c == pubc;
    c->next_seq = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s (raise ulimit -n)", strerror(errno));
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int ns = source_count();
    if (ns > 0) {
        struct sockaddr_in src = { .sin_family = AF_INET };
        src.sin_addr.s_addr = htonl(0x7F000001u + (uint32_t)(idx % ns));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind: %s", strerror(errno));
    }
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->state = CS_CONNECTING;
    n_connecting++;
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)
        conn_dead(c, strerror(errno));
}

static void on_connected(struct conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) { conn_dead(c, strerror(err)); return; }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     c->is_pub ? "/pub" : "/sub", opt.host, opt.port,
                     opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                                   "client_no_context_takeover\r\n" : "");
    out_append(c, req, (size_t)n);
    c->state = CS_HANDSHAKE;
    c->want_out = true;   /* registered for EPOLLOUT while connecting */
    flush(c);
}

static void on_readable(struct conn *c)
{
    static uint8_t buf[READ_CHUNK];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        conn_dead(c, strerror(errno));
        return;
    }
    if (n == 0) { conn_dead(c, "EOF"); return; }
    if (c->state == CS_HANDSHAKE) {
        size_t room = sizeof c->resp - 1 - c->resp_len;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(c->resp + c->resp_len, buf, take);
        c->resp_len += take;
        c->resp[c->resp_len] = '\0';
        char *end = strstr(c->resp, "\r\n\r\n");
        if (!end) {
            if (c->resp_len == sizeof c->resp - 1) conn_dead(c, "handshake response too long");
            return;
        }
        if (strncmp(c->resp, "HTTP/1.1 101", 12) != 0) {
            char line[80];
            snprintf(line, sizeof line, "%.*s", (int)strcspn(c->resp, "\r\n"), c->resp);
            conn_dead(c, line);
            return;
        }
        if (opt.deflate) {
            /* both parameters must come back: without server_no_context_takeover
             * every subscriber would need an inflate stream of its own */
            char *ext = strcasestr(c->resp, "\r\nSec-WebSocket-Extensions:");
            if (!ext || ext > end) { conn_dead(c, "the server declined permessage-deflate"); return; }
            char *eol = strstr(ext + 2, "\r\n");
            *eol = '\0';
            bool ok = strcasestr(ext, "permessage-deflate") && strcasestr(ext, "server_no_context_takeover");
            *eol = '\r';
            if (!ok) { conn_dead(c, "the server kept its deflate context (server_no_context_takeover refused)"); return; }
        }
        size_t hdr_len = (size_t)(end + 4 - c->resp);
        size_t rest = c->resp_len - hdr_len;   /* bytes of frames after the response */
        c->state = CS_OPEN;
        n_connecting--;
        n_open++;
        if (rest) parse(c, (const uint8_t *)c->resp + hdr_len, rest);
        if (take < (size_t)n) parse(c, buf + take, (size_t)n - take);
        return;
    }
    parse(c, buf, (size_t)n);
}

static void loop_once(int timeout_ms)
{
    struct epoll_event evs[1024];
    int n = epoll_wait(epfd, evs, 1024, timeout_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        struct conn *c = evs[i].data.ptr;
        if (c->state == CS_DEAD) continue;
        if (c->state == CS_CONNECTING) {
            if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
            continue;
        }
        if (evs[i].events & EPOLLOUT) flush(c);
        if (c->state != CS_DEAD && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(c);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: subload -n SUBS -d SECONDS [-s SIZE] [-w WINDOW] [--sources K] [--deflate]\n"
            "               [--cpu NAME=PID]... ws://127.0.0.1:PORT\n"
            "  -n SUBS        subscriber connections to /sub (default 10000)\n"
            "  -d SECONDS     measured time, after warm-up (1..600)\n"
            "  -s SIZE        message size in bytes, at least 11 (default 32)\n"
            "  -w WINDOW      messages not yet received by every subscriber (default 8)\n"
            "  --sources K    spread subscribers over 127.0.0.1..127.0.0.K (default SUBS/5000+1)\n"
            "  --deflate      offer permessage-deflate (no context takeover either way)\n"
            "  --drain SECS   after the window, wait this long for messages in flight (10)\n"
            "  --rate R       publish R messages per second at most (still at most WINDOW in\n"
            "                 flight): a fixed load, where the server's CPU says what it costs\n"
            "  --cpu NAME=PID report the CPU seconds of PID and its descendants in the window\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "sources", required_argument, NULL, 'S' },
        { "cpu", required_argument, NULL, 'C' },
        { "deflate", no_argument, NULL, 'Z' },
        { "drain", required_argument, NULL, 'D' },
        { "rate", required_argument, NULL, 'R' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "n:d:s:w:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'n': opt.subs = atoi(optarg); break;
        case 'd': opt.secs = atoi(optarg); break;
        case 's': opt.size = atoi(optarg); break;
        case 'w': opt.window = atoi(optarg); break;
        case 'S': opt.sources = atoi(optarg); break;
        case 'Z': opt.deflate = true; break;
        case 'D': opt.drain = atoi(optarg); break;
        case 'R': opt.rate = atof(optarg); break;
        case 'C':
            if (!add_cpu_opt(optarg, opt.cpu, &opt.ncpu)) usage();
            break;
        default: usage();
        }
    }
    if (optind != argc - 1 || opt.subs < 1 || opt.secs < 1 || opt.secs > 600 || opt.size < SEQ_DIGITS + 1 ||
        opt.window < 1 || opt.sources > 254 || opt.drain < 1 || opt.drain > 600)
        usage();
    if (sscanf(argv[optind], "ws://%63[^:/]:%d", opt.host, &opt.port) != 2) usage();
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &dst.sin_addr) != 1) die("host must be an IPv4 address: %s", opt.host);
    if ((ntohl(dst.sin_addr.s_addr) >> 24) != 127) die("only loopback targets (127.0.0.0/8)");

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)opt.subs + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < want) die("need %lu open files, the hard limit is %lu", (unsigned long)want,
                                    (unsigned long)rl.rlim_max);
    }
    if (opt.deflate && inflateInit2(&inflater, -15) != Z_OK) die("inflateInit2 failed");
    signal(SIGALRM, on_alarm);
    alarm((unsigned)(opt.secs + opt.drain) + 120);
    srandom((unsigned)getpid());

    epfd = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc((size_t)opt.subs + 1, sizeof *conns);
    ring_size = (uint32_t)opt.window * 2 + 2;
    ring_count = calloc(ring_size, sizeof *ring_count);
    ring_sent = calloc(ring_size, sizeof *ring_sent);
    msgbuf = malloc((size_t)opt.size);
    if (!conns || !ring_count || !ring_sent || !msgbuf) die("out of memory");
    fill_text(msgbuf, (size_t)opt.size);
    pubc = &conns[opt.subs];

    /* connect the subscribers, MAX_CONNECTING at a time */
    double t0 = now_s();
    while (n_open + n_dead < opt.subs) {
        while (n_started < opt.subs && n_connecting < MAX_CONNECTING) {
            conn_start(&conns[n_started], n_started);
            n_started++;
        }
        loop_once(100);
        if (now_s() - t0 > 60) die("only %d of %d subscribers connected in 60 s", n_open, opt.subs);
    }
    if (n_dead) die("%d subscribers failed to connect", n_dead);
    conn_start(pubc, opt.subs);
    while (pubc->state != CS_OPEN) loop_once(100);
    fprintf(stderr, "subload: %d subscribers open in %.2f s\n", n_open, now_s() - t0);

    /* warm-up: until every subscriber has seen a "W" message. It is SIZE
     * bytes, so a server that keeps per-socket compression state (node ws)
     * has built it before the window; it is sent again every 500 ms while
     * no new subscriber has seen one (through Redis, a subscription may miss
     * the first), and the run gives up after 20 s without progress. */
    double tw = now_s(), last = 0, t_progress = now_s();
    int tries = 0, seen_warm = 0;
    while (n_warm < opt.subs) {
        if (n_warm != seen_warm) { seen_warm = n_warm; t_progress = now_s(); }
        if (now_s() - t_progress > 20)
            die("warm-up: only %d of %d subscribers got a message, none more in 20 s", n_warm, opt.subs);
        if (now_s() - last > 0.5 && now_s() - t_progress > 0.5) {
            tries++;
            char head[SEQ_DIGITS + 2];
            snprintf(head, sizeof head, "W%0*d", SEQ_DIGITS - 1, tries);
            memcpy(msgbuf, head, SEQ_DIGITS);
            send_frame(pubc, 0x1, msgbuf, (size_t)opt.size);
            flush(pubc);
            last = now_s();
        }
        loop_once(20);
    }
    fprintf(stderr, "subload: warm-up done in %.3f s (%d tries)\n", now_s() - tw, tries);

    /* the measured window */
    double cpu0[MAX_CPU];
    for (int i = 0; i < opt.ncpu; i++) cpu0[i] = tree_cpu(opt.cpu[i].pid);
    double self0 = self_cpu(), busy0 = machine_busy();
    measuring = publishing = true;
    compressed = 0;     /* the warm-up's do not count */
    t_start = now_s();
    published_at_start = published;
    pump();
    while ((t_end = now_s()) < t_start + opt.secs) {
        loop_once(opt.rate > 0 ? 1 : 10);
        pump();
    }
    publishing = false;
    measuring = false;
    deliveries_at_end = deliveries;
    compressed_at_end = compressed;
    uint32_t completed_at_end = completed, published_at_end = published;
    double cpu1[MAX_CPU];
    for (int i = 0; i < opt.ncpu; i++) cpu1[i] = tree_cpu(opt.cpu[i].pid);
    double self1 = self_cpu(), busy1 = machine_busy();
    double secs = t_end - t_start;

    /* drain what is in flight (bounded) */
    double td = now_s();
    while (completed < published && now_s() - td < opt.drain) loop_once(10);
    uint64_t lost = (uint64_t)(published - completed) * (uint64_t)(opt.subs - n_dead);
    if (completed < published)
        fprintf(stderr, "subload: %u messages not received by every subscriber after %d s\n", published - completed,
                opt.drain);

    qsort(lat, nlat, sizeof *lat, cmp_double);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)((double)nlat * 0.99)] : 0;
    fprintf(stderr, "subload: %u messages published, %u reached all %d subscribers in %.3f s: "
                    "%.0f deliveries/s, %.1f messages/s, fan-out p50 %.2f ms p99 %.2f ms, %lu errors\n",
            published_at_end, completed_at_end, opt.subs - n_dead, secs, (double)deliveries_at_end / secs,
            (double)completed_at_end / secs, p50, p99, (unsigned long)errors);
    printf("RESULT subs=%d size=%d window=%d secs=%.3f published=%u completed=%u deliveries=%lu "
           "deliveries_per_s=%.0f msgs_per_s=%.1f p50_ms=%.3f p99_ms=%.3f errors=%lu lost=%lu",
           opt.subs, opt.size, opt.window, secs, published_at_end, completed_at_end,
           (unsigned long)deliveries_at_end, (double)deliveries_at_end / secs, (double)completed_at_end / secs, p50,
           p99, (unsigned long)errors, (unsigned long)lost);
    printf(" deflate=%d compressed=%lu", opt.deflate, (unsigned long)compressed_at_end);
    for (int i = 0; i < opt.ncpu; i++) printf(" cpu_%s_s=%.2f", opt.cpu[i].name, cpu1[i] - cpu0[i]);
    double others = (busy1 - busy0) - (self1 - self0);
    for (int i = 0; i < opt.ncpu; i++) others -= cpu1[i] - cpu0[i];
    printf(" client_cpu_s=%.2f other_cpu_pct=%.0f\n", self1 - self0, others > 0 ? others / secs * 100 : 0);
    fflush(stdout);
    return errors || lost ? 1 : 0;
}
