/*
 * wsload — a WebSocket load generator for the luaws benchmarks.
 *
 * One nonblocking epoll loop per thread; client frames are masked as RFC 6455
 * requires.  Three modes:
 *
 *   echo (default)  -c connections each keep -k messages of -s bytes in flight
 *                   for -d seconds.  Every echo is checked: opcode, length and
 *                   every byte.  Reports messages/s and latency percentiles.
 *   --hold N        open N connections, echo one message on each, then keep them
 *                   idle for -d seconds (to measure the server's RSS per
 *                   connection; with --lua-heap also luaws's Lua heap, read
 *                   from its /metrics).  Source addresses are spread over
 *                   127.0.0.x so that more than ~28k connections fit.  SIGUSR1
 *                   ends the hold early; with --final-check every connection
 *                   then answers a ping and echoes one more message, each checked.
 *   --churn         -c slots, each repeating: connect, handshake, one message,
 *                   close handshake.  Reports connections/s.
 *
 * Every mode ends with one machine-readable line:
 *   RESULT mode=echo msgs=... secs=... msgs_per_s=... p50_us=... p99_us=... errors=...
 *
 * Only loopback targets (127.0.0.0/8, ::1) are accepted: this tool is for
 * benchmarking servers on the same machine.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
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
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <zlib.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#define OP_CONT   0x0
#define OP_TEXT   0x1
#define OP_BINARY 0x2
#define OP_CLOSE  0x8
#define OP_PING   0x9
#define OP_PONG   0xA

/* Message n carries pattern bytes starting at offset n % g_offsets, so a
 * reordered, repeated or truncated echo does not match.  A prime count keeps
 * neighbouring messages distinct for any pipeline depth. */
#define PATTERN_OFFSETS 251
#define DEFLATE_CACHE_BYTES (16u << 20)   /* uncompressed bytes compressed up front */

#define READ_CHUNK      (256 * 1024)
#define MAX_HANDSHAKE   (16 * 1024)
#define PER_SOURCE_CONNS 20000          /* connections per 127.0.0.x source address */

enum mode { MODE_ECHO, MODE_HOLD, MODE_CHURN };

/* ------------------------------------------------------------------------ */
/* Options                                                                   */

struct options {
    char host[300];
    char port[16];
    char path[1024];
    enum mode mode;
    int conns;              /* -c, or --hold N */
    int inflight;           /* -k */
    size_t size;            /* -s */
    bool binary;
    double duration;        /* -d, required */
    int threads;
    bool deflate;
    bool skip_greeting;
    int sources;            /* -1 = automatic */
    uint32_t source_base;   /* first source address (host order); 0 = 127.0.0.1 */
    bool final_check;       /* hold: a ping and an echo on every connection at the end */
    int warmup;             /* hold: connections opened, echoed once and closed before the baseline */
    int server_pid;         /* 0 = none */
    bool lua_heap;          /* --lua-heap: read luaws_lua_heap_bytes from GET /metrics */
    double connect_timeout;
    double drain_timeout;
    int max_pending;        /* connections in handshake at once, all threads */
};

static struct options opt;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double secs(uint64_t ns) { return (double)ns / 1e9; }

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "wsload: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* xorshift64*: fast, good enough for masking keys and handshake keys. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t rng_seed(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
        seed = now_ns() ^ (uint64_t)getpid();
    return seed | 1;
}

/* ------------------------------------------------------------------------ */
/* Latency histogram: log-linear buckets, about 3% precision, in ns.         */

#define HIST_SUB     32
#define HIST_BUCKETS (2 * HIST_SUB + 58 * HIST_SUB)

static int hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);          /* >= 6 here */
    int shift = msb - 5;                         /* v >> shift is in [32, 63] */
    return 2 * HIST_SUB + (shift - 1) * HIST_SUB + (int)((v >> shift) - HIST_SUB);
}

/* The middle of bucket i. */
static uint64_t hist_value(int i)
{
    if (i < 2 * HIST_SUB)
        return (uint64_t)i;
    int j = i - 2 * HIST_SUB;
    int shift = j / HIST_SUB + 1;
    uint64_t low = (uint64_t)(j % HIST_SUB + HIST_SUB) << shift;
    return low + ((uint64_t)1 << shift) / 2;
}

static uint64_t hist_percentile(const uint64_t *hist, double p)
{
    uint64_t total = 0;
    for (int i = 0; i < HIST_BUCKETS; i++)
        total += hist[i];
    if (total == 0)
        return 0;
    uint64_t want = (uint64_t)(p * (double)total);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= want)
            return hist_value(i);
    }
    return hist_value(HIST_BUCKETS - 1);
}

static uint64_t hist_max(const uint64_t *hist)
{
    for (int i = HIST_BUCKETS - 1; i >= 0; i--)
        if (hist[i])
            return hist_value(i);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Payload pattern                                                           */

static unsigned char *pattern;          /* opt.size + PATTERN_OFFSETS bytes */
static unsigned g_offsets = PATTERN_OFFSETS;

static void make_pattern(void)
{
    static const char alphabet[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .";
    size_t n = opt.size + PATTERN_OFFSETS;
    uint64_t state = 0x9E3779B97F4A7C15ULL;   /* fixed: runs are comparable */
    pattern = malloc(n ? n : 1);
    if (!pattern)
        die("out of memory");
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rng_next(&state);
        /* Text stays ASCII (valid UTF-8); binary uses every byte value. */
        pattern[i] = opt.binary ? (unsigned char)(r >> 56)
                                : (unsigned char)alphabet[(r >> 58) & 63];
    }
}

static const unsigned char *payload_for(uint64_t seq)
{
    return pattern + seq % g_offsets;
}

/* ------------------------------------------------------------------------ */
/* Connections and threads                                                   */

enum conn_state {
    CS_IDLE,            /* no socket (not started yet, or a churn slot between cycles) */
    CS_CONNECTING,      /* nonblocking connect() under way */
    CS_HANDSHAKE,       /* upgrade request sent, waiting for the 101 */
    CS_GREETING,        /* open, waiting for the server's unsolicited greeting */
    CS_OPEN,
    CS_CLOSING,         /* our close frame is sent, waiting for the server's */
    CS_DONE,            /* finished for good (failed, or closed at the end) */
};

struct worker;

struct conn {
    struct worker *w;
    int fd;
    int gid;                    /* global index, picks the source address */
    enum conn_state state;
    bool ready;                 /* counted as ready in the connect phase */
    uint64_t started;           /* when connect() was called */

    /* handshake */
    char *hs;                   /* response bytes so far */
    size_t hs_len;
    char accept[32];            /* expected Sec-WebSocket-Accept */

    /* output */
    unsigned char *out;
    size_t out_off, out_len, out_cap;

    /* frame parser */
    unsigned char hdr[14];
    int hdr_len;                /* bytes of the current header collected */
    bool in_payload;            /* header parsed, payload bytes follow */
    int frame_op;
    bool frame_fin;
    uint64_t frame_left;        /* payload bytes of this frame still to come */
    unsigned char ctl[125];
    int ctl_len;

    /* current message */
    bool in_msg;
    int msg_op;
    bool msg_compressed;
    bool msg_skip;              /* the greeting: not checked */
    bool msg_bad;
    uint64_t msg_pos;           /* payload bytes (decompressed) of the message so far */

    /* traffic */
    uint64_t sent_seq, recv_seq;
    int inflight;
    uint64_t *sent_at;          /* ring of opt.inflight send times */
    bool greeting_pending;
    bool final_sent;            /* --final-check: the last ping and echo are out */
    bool ping_pending;          /* --final-check: our ping is not answered yet */

    /* permessage-deflate, if the server accepted it */
    bool deflate;
    bool server_no_ctx;
    z_stream *inflater;
};

struct stats {
    uint64_t msgs;              /* echoes completed inside the window */
    uint64_t msgs_late;         /* echoes completed while draining */
    uint64_t cycles;            /* churn: cycles completed inside the window */
    uint64_t opened;            /* handshakes completed */
    uint64_t deflate_conns;     /* connections that negotiated permessage-deflate */
    uint64_t still_open;        /* hold: connections open at the end of the hold */
    uint64_t final_checked;     /* --final-check: connections sent a ping and an echo */
    uint64_t final_pongs;       /* ... whose ping was answered (same payload) */
    uint64_t final_echoes;      /* ... whose echo came back (checked) */
    uint64_t err_pong;          /* --final-check: pings never answered */
    uint64_t err_verify, err_protocol, err_closed, err_connect, err_lost;
    uint64_t close_timeouts;
    uint64_t hist[HIST_BUCKETS];
};

struct worker {
    int id;
    pthread_t thread;
    int epfd;
    struct conn *conns;
    int nconns;
    int next_connect;           /* connect phase: next conn to start */
    int pending;                /* connections in connect/handshake now */
    int max_pending;
    int unresolved;             /* connect phase: neither ready nor failed */
    bool reported_ready;
    bool running;               /* the run phase has begun (worker-local copy of g_go) */
    uint64_t deadline;          /* end of the measured window */
    uint64_t now;
    uint64_t rng;
    struct stats st;
    unsigned char rbuf[READ_CHUNK];
    unsigned char zbuf[READ_CHUNK];
};

/* Shared between the main thread and the workers. */
static atomic_int g_ready_workers;
static atomic_int g_go;                 /* 0 wait, 1 run */
static atomic_int g_acks;               /* workers that have started their run phase */
static atomic_int g_open_at_go;         /* connections open when the run began */
static atomic_int g_stop;               /* hold: SIGUSR1 came, the hold ends now */
static volatile sig_atomic_t g_sigusr1;
static _Atomic uint64_t g_t0;
static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static char g_host_header[300];

static void conn_close_socket(struct conn *c);
static void conn_start(struct conn *c);
static void conn_flush(struct conn *c);

/* ------------------------------------------------------------------------ */
/* Output buffer and frames                                                  */

static unsigned char *out_reserve(struct conn *c, size_t need)
{
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
    } else if (c->out_off > 0 && c->out_len + need > c->out_cap) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + need > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 256;
        while (cap < c->out_len + need)
            cap *= 2;
        unsigned char *p = realloc(c->out, cap);
        if (!p)
            die("out of memory");
        c->out = p;
        c->out_cap = cap;
    }
    return c->out + c->out_len;
}

/* dst = src XOR key, 8 bytes at a time where possible. */
static void mask_copy(unsigned char *dst, const unsigned char *src, size_t n,
                      const unsigned char key[4])
{
    uint64_t k8;
    unsigned char kb[8] = { key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3] };
    memcpy(&k8, kb, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k8;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[i & 3];
}

/* Append one masked frame to c's output. */
static void put_frame(struct conn *c, int opcode, bool rsv1,
                      const unsigned char *payload, size_t len)
{
    unsigned char *p = out_reserve(c, len + 14);
    size_t h = 0;
    p[h++] = (unsigned char)(0x80 | (rsv1 ? 0x40 : 0) | opcode);
    if (len < 126) {
        p[h++] = (unsigned char)(0x80 | len);
    } else if (len <= 0xFFFF) {
        p[h++] = 0x80 | 126;
        p[h++] = (unsigned char)(len >> 8);
        p[h++] = (unsigned char)len;
    } else {
        p[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            p[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    uint32_t r = (uint32_t)rng_next(&c->w->rng);
    unsigned char key[4] = { (unsigned char)r, (unsigned char)(r >> 8),
                             (unsigned char)(r >> 16), (unsigned char)(r >> 24) };
    memcpy(p + h, key, 4);
    h += 4;
    mask_copy(p + h, payload, len, key);
    c->out_len += h + len;
}

/* Compressed payloads, one per pattern offset, made before the run so that
 * wsload spends no CPU in deflate() while it measures. */
static unsigned char *zcache[PATTERN_OFFSETS];
static size_t zcache_len[PATTERN_OFFSETS];

/* Each message is compressed with a fresh context (a sender may always drop
 * its context, so this is valid whatever the server said about takeover).
 * RFC 7692 7.2.1: deflate, sync flush, strip the trailing 00 00 ff ff. */
static void make_deflate_cache(void)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        die("deflateInit2 failed");
    for (unsigned i = 0; i < g_offsets; i++) {
        deflateReset(&z);
        size_t cap = deflateBound(&z, (uLong)opt.size) + 16;
        zcache[i] = malloc(cap);
        if (!zcache[i])
            die("out of memory");
        z.next_in = pattern + i;
        z.avail_in = (uInt)opt.size;
        z.next_out = zcache[i];
        z.avail_out = (uInt)cap;
        deflate(&z, Z_SYNC_FLUSH);
        size_t n = cap - z.avail_out;
        if (n >= 4 && memcmp(zcache[i] + n - 4, "\x00\x00\xff\xff", 4) == 0)
            n -= 4;
        zcache_len[i] = n;
    }
    deflateEnd(&z);
}

/* Queue the next message of c's sequence and note when it was sent. */
static void send_message(struct conn *c)
{
    struct worker *w = c->w;
    uint64_t seq = c->sent_seq++;
    int op = opt.binary ? OP_BINARY : OP_TEXT;
    const unsigned char *payload = payload_for(seq);

    if (c->deflate) {
        unsigned slot = (unsigned)(seq % g_offsets);
        put_frame(c, op, true, zcache[slot], zcache_len[slot]);
    } else {
        put_frame(c, op, false, payload, opt.size);
    }
    c->sent_at[seq % (uint64_t)opt.inflight] = w->now;
    c->inflight++;
}

static void send_close(struct conn *c, int code)
{
    unsigned char body[2] = { (unsigned char)(code >> 8), (unsigned char)code };
    put_frame(c, OP_CLOSE, false, body, 2);
    c->state = CS_CLOSING;
}

/* ------------------------------------------------------------------------ */
/* Connection life cycle                                                     */

/* Connect phase bookkeeping: the connection is ready, or has failed. */
static void conn_resolve(struct conn *c)
{
    if (!c->ready && !c->w->running && opt.mode != MODE_CHURN) {
        c->ready = true;
        c->w->unresolved--;
        c->w->pending--;
    }
}

/* A connection failed before it became ready, or broke afterwards.  A churn
 * slot goes idle; the worker loop starts its next cycle (not from here, which
 * may be deep inside the old connection's input handling). */
static void conn_fail(struct conn *c, uint64_t *counter)
{
    struct worker *w = c->w;
    (*counter)++;
    conn_resolve(c);
    if (c->inflight > 0 && c->state != CS_CLOSING)
        w->st.err_lost += (uint64_t)c->inflight;
    c->inflight = 0;
    conn_close_socket(c);
    c->state = opt.mode == MODE_CHURN && w->running && w->now < w->deadline ? CS_IDLE
                                                                            : CS_DONE;
}

static void conn_close_socket(struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);               /* also removes it from the epoll set */
        c->fd = -1;
    }
    free(c->hs);
    c->hs = NULL;
    c->hs_len = 0;
    c->out_off = c->out_len = 0;
    c->hdr_len = 0;
    c->in_payload = false;
    c->in_msg = false;
    c->ctl_len = 0;
}

static void make_key(struct conn *c, char key_b64[32])
{
    unsigned char raw[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next(&c->w->rng);
        memcpy(raw + i, &r, 8);
    }
    EVP_EncodeBlock((unsigned char *)key_b64, raw, 16);

    char concat[96];
    unsigned char digest[SHA_DIGEST_LENGTH];
    snprintf(concat, sizeof concat, "%s%s", key_b64, WS_GUID);
    SHA1((unsigned char *)concat, strlen(concat), digest);
    EVP_EncodeBlock((unsigned char *)c->accept, digest, SHA_DIGEST_LENGTH);
}

static int source_count(void)
{
    if (opt.sources >= 0)
        return opt.sources;
    if (g_addr.ss_family != AF_INET)
        return 0;
    if (opt.source_base)        /* --source: always bind, from that address on */
        return (opt.conns + PER_SOURCE_CONNS - 1) / PER_SOURCE_CONNS;
    if (opt.mode == MODE_ECHO)
        return 0;
    return (opt.conns + PER_SOURCE_CONNS - 1) / PER_SOURCE_CONNS > 1
        ? (opt.conns + PER_SOURCE_CONNS - 1) / PER_SOURCE_CONNS : 0;
}

/* Begin a connection (or a new churn cycle) on slot c. */
static void conn_start(struct conn *c)
{
    struct worker *w = c->w;
    c->state = CS_CONNECTING;
    c->started = w->now;
    c->sent_seq = c->recv_seq = 0;
    c->inflight = 0;
    c->greeting_pending = opt.skip_greeting;
    c->deflate = c->server_no_ctx = false;
    if (c->inflater)
        inflateReset(c->inflater);

    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        static atomic_int reported;
        if (atomic_fetch_add(&reported, 1) < 3)
            fprintf(stderr, "wsload: socket: %s\n", strerror(errno));
        conn_fail(c, &w->st.err_connect);
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    int nsrc = source_count();
    if (nsrc > 0) {
        /* Spread over 127.0.0.1 .. 127.0.0.nsrc (or from --source on); let
         * connect() pick the port so each source address gets its own
         * ephemeral port range. */
        struct sockaddr_in src = { .sin_family = AF_INET };
        uint32_t base = opt.source_base ? opt.source_base : 0x7F000001u;
        src.sin_addr.s_addr = htonl(base + (uint32_t)(c->gid % nsrc));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            fprintf(stderr, "wsload: bind: %s\n", strerror(errno));
            conn_fail(c, &w->st.err_connect);
            return;
        }
    }

    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                              .data.ptr = c };
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) < 0 && errno != EINPROGRESS) {
        static atomic_int reported;
        if (atomic_fetch_add(&reported, 1) < 3)
            fprintf(stderr, "wsload: connect: %s\n", strerror(errno));
        conn_fail(c, &w->st.err_connect);
    }
}

/* The TCP connection is up: send the upgrade request. */
static void conn_connected(struct conn *c)
{
    char key[32];
    make_key(c, key);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s"
                     "\r\n",
                     opt.path, g_host_header, key,
                     opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                   "client_no_context_takeover\r\n" : "");
    memcpy(out_reserve(c, (size_t)n), req, (size_t)n);
    c->out_len += (size_t)n;
    c->state = CS_HANDSHAKE;
    conn_flush(c);
}

/* The WebSocket is open (greeting, if any, consumed). */
static void conn_open(struct conn *c)
{
    c->state = CS_OPEN;
    switch (opt.mode) {
    case MODE_ECHO:
        conn_resolve(c);            /* messages start when the run begins */
        break;
    case MODE_HOLD:
    case MODE_CHURN:
        send_message(c);            /* one echo; ready when it comes back */
        break;
    }
}

/* Find header `name` in a response; copies its value into val. */
static bool find_header(const char *resp, const char *name, char *val, size_t cap)
{
    size_t nlen = strlen(name);
    const char *line = strstr(resp, "\r\n");
    while (line && line[2] != '\r') {
        line += 2;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *end = strstr(v, "\r\n");
            size_t n = end ? (size_t)(end - v) : strlen(v);
            while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                n--;
            if (n >= cap)
                n = cap - 1;
            memcpy(val, v, n);
            val[n] = '\0';
            return true;
        }
        line = strstr(line, "\r\n");
    }
    return false;
}

static void frames_input(struct conn *c, const unsigned char *p, size_t n);

/* Handshake response bytes.  Returns false if the connection was dropped. */
static bool handshake_input(struct conn *c, const unsigned char *p, size_t n)
{
    struct worker *w = c->w;
    if (c->hs_len + n > MAX_HANDSHAKE) {
        conn_fail(c, &w->st.err_protocol);
        return false;
    }
    if (!c->hs) {
        c->hs = malloc(MAX_HANDSHAKE + 1);
        if (!c->hs)
            die("out of memory");
    }
    memcpy(c->hs + c->hs_len, p, n);
    c->hs_len += n;
    c->hs[c->hs_len] = '\0';

    char *end = strstr(c->hs, "\r\n\r\n");
    if (!end)
        return true;
    size_t head = (size_t)(end - c->hs) + 4;

    char val[256];
    if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
        static atomic_int reported;
        if (atomic_fetch_add(&reported, 1) < 3) {
            char *eol = strstr(c->hs, "\r\n");
            fprintf(stderr, "wsload: handshake refused: %.*s\n",
                    (int)(eol - c->hs), c->hs);
        }
        conn_fail(c, &w->st.err_connect);
        return false;
    }
    if (!find_header(c->hs, "Sec-WebSocket-Accept", val, sizeof val) ||
            strcmp(val, c->accept) != 0) {
        static atomic_int reported;
        if (atomic_fetch_add(&reported, 1) < 3)
            fprintf(stderr, "wsload: bad Sec-WebSocket-Accept\n");
        conn_fail(c, &w->st.err_protocol);
        return false;
    }
    if (find_header(c->hs, "Sec-WebSocket-Extensions", val, sizeof val)) {
        if (!opt.deflate || !strstr(val, "permessage-deflate")) {
            fprintf(stderr, "wsload: server chose an extension we did not offer: %s\n", val);
            conn_fail(c, &w->st.err_protocol);
            return false;
        }
        c->deflate = true;
        c->server_no_ctx = strstr(val, "server_no_context_takeover") != NULL;
        w->st.deflate_conns++;
    }

    w->st.opened++;
    size_t rest = c->hs_len - head;
    unsigned char tail[MAX_HANDSHAKE];
    memcpy(tail, c->hs + head, rest);
    free(c->hs);
    c->hs = NULL;
    c->hs_len = 0;

    if (c->greeting_pending)
        c->state = CS_GREETING;
    else
        conn_open(c);
    if (rest > 0 && c->fd >= 0)
        frames_input(c, tail, rest);
    return c->fd >= 0;
}

/* ------------------------------------------------------------------------ */
/* Checking echoes                                                           */

/* Compare (decompressed) message bytes against the expected pattern. */
static void check_bytes(struct conn *c, const unsigned char *p, size_t n)
{
    if (c->msg_skip || c->msg_bad)
        goto done;
    if (c->msg_pos + n > opt.size ||
            memcmp(p, payload_for(c->recv_seq) + c->msg_pos, n) != 0)
        c->msg_bad = true;
done:
    c->msg_pos += n;
}

static bool inflate_bytes(struct conn *c, const unsigned char *p, size_t n)
{
    struct worker *w = c->w;
    if (!c->inflater) {
        c->inflater = calloc(1, sizeof *c->inflater);
        if (!c->inflater || inflateInit2(c->inflater, -15) != Z_OK)
            die("inflateInit2 failed");
    }
    z_stream *z = c->inflater;
    z->next_in = (unsigned char *)p;
    z->avail_in = (uInt)n;
    do {
        z->next_out = w->zbuf;
        z->avail_out = sizeof w->zbuf;
        int rc = inflate(z, Z_SYNC_FLUSH);
        if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END)
            return false;
        check_bytes(c, w->zbuf, sizeof w->zbuf - z->avail_out);
        if (rc == Z_STREAM_END)     /* a final block (BFINAL): start afresh */
            inflateReset(z);
        if (rc == Z_BUF_ERROR)
            break;
    } while (z->avail_in > 0 || z->avail_out == 0);
    return true;
}

/* The whole echo (or greeting) has arrived. */
static void message_done(struct conn *c)
{
    struct worker *w = c->w;
    int want_op = opt.binary ? OP_BINARY : OP_TEXT;

    if (c->msg_skip) {
        c->greeting_pending = false;
        if (c->state == CS_GREETING)
            conn_open(c);
        return;
    }
    if (c->inflight == 0) {         /* nothing was sent: not an echo */
        w->st.err_protocol++;
        return;
    }
    if (c->msg_bad || c->msg_pos != opt.size || c->msg_op != want_op)
        w->st.err_verify++;

    uint64_t seq = c->recv_seq++;
    c->inflight--;
    uint64_t latency = w->now - c->sent_at[seq % (uint64_t)opt.inflight];
    bool in_window = w->running && w->now < w->deadline;

    switch (opt.mode) {
    case MODE_ECHO:
        if (in_window) {
            w->st.msgs++;
            w->st.hist[hist_index(latency)]++;
            send_message(c);
        } else {
            w->st.msgs_late++;
        }
        break;
    case MODE_HOLD:
        conn_resolve(c);
        if (c->final_sent)
            w->st.final_echoes++;
        break;
    case MODE_CHURN:
        send_close(c, 1000);
        break;
    }
}

static void control_frame(struct conn *c)
{
    struct worker *w = c->w;
    switch (c->frame_op) {
    case OP_PING:
        put_frame(c, OP_PONG, false, c->ctl, (size_t)c->ctl_len);
        break;
    case OP_PONG:
        /* Our --final-check ping carries the connection's index. */
        if (c->ping_pending && c->ctl_len == (int)sizeof c->gid &&
                memcmp(c->ctl, &c->gid, sizeof c->gid) == 0) {
            c->ping_pending = false;
            w->st.final_pongs++;
        }
        break;
    case OP_CLOSE:
        if (c->state == CS_CLOSING) {
            /* Our close was answered: the handshake is complete. */
            bool again = opt.mode == MODE_CHURN && w->running && w->now < w->deadline;
            if (again) {
                w->st.cycles++;
                w->st.hist[hist_index(w->now - c->started)]++;
            }
            conn_close_socket(c);
            c->state = again ? CS_IDLE : CS_DONE;   /* the worker loop restarts it */
        } else {
            static atomic_int reported;
            if (atomic_fetch_add(&reported, 1) < 3)
                fprintf(stderr, "wsload: server closed a connection (code %d)\n",
                        c->ctl_len >= 2 ? c->ctl[0] << 8 | c->ctl[1] : 1005);
            put_frame(c, OP_CLOSE, false, c->ctl, c->ctl_len >= 2 ? 2 : 0);
            conn_flush(c);
            conn_fail(c, &w->st.err_closed);
        }
        break;
    default:
        conn_fail(c, &w->st.err_protocol);
    }
}

/* Parse server frames, checking payload bytes as they stream in. */
static void frames_input(struct conn *c, const unsigned char *p, size_t n)
{
    struct worker *w = c->w;
    while (c->fd >= 0 && (n > 0 || (c->in_payload && c->frame_left == 0))) {
        if (!c->in_payload) {
            /* Collect the header: 2 bytes, then 0, 2 or 8 length bytes. */
            int need = 2;
            if (c->hdr_len >= 2) {
                int len7 = c->hdr[1] & 0x7F;
                need += len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
                if (c->hdr[1] & 0x80)
                    need += 4;
            }
            while (c->hdr_len < need && n > 0) {
                c->hdr[c->hdr_len++] = *p++;
                n--;
                if (c->hdr_len == 2) {
                    int len7 = c->hdr[1] & 0x7F;
                    need += len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
                    if (c->hdr[1] & 0x80)
                        need += 4;
                }
            }
            if (c->hdr_len < need)
                return;

            bool fin = c->hdr[0] & 0x80;
            bool rsv1 = c->hdr[0] & 0x40;
            int op = c->hdr[0] & 0x0F;
            uint64_t len = c->hdr[1] & 0x7F;
            if (len == 126)
                len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
            else if (len == 127)
                for (int i = 0; i < 8; i++)
                    len = (i ? len << 8 : 0) | c->hdr[2 + i];
            c->hdr_len = 0;

            if ((c->hdr[1] & 0x80) || (c->hdr[0] & 0x30) ||
                    (rsv1 && (!c->deflate || op == OP_CONT || (op & 0x8)))) {
                conn_fail(c, &w->st.err_protocol);       /* masked, or bad RSV bits */
                return;
            }
            if (op & 0x8) {
                if (!fin || len > 125) {
                    conn_fail(c, &w->st.err_protocol);
                    return;
                }
                c->ctl_len = 0;
            } else if (op == OP_CONT) {
                if (!c->in_msg) {
                    conn_fail(c, &w->st.err_protocol);
                    return;
                }
            } else if (op == OP_TEXT || op == OP_BINARY) {
                if (c->in_msg) {
                    conn_fail(c, &w->st.err_protocol);
                    return;
                }
                c->in_msg = true;
                c->msg_op = op;
                c->msg_compressed = rsv1;
                c->msg_pos = 0;
                c->msg_bad = false;
                c->msg_skip = c->greeting_pending && op == OP_TEXT;
            } else {
                conn_fail(c, &w->st.err_protocol);
                return;
            }
            c->frame_op = op;
            c->frame_fin = fin;
            c->frame_left = len;
            c->in_payload = true;
        }

        size_t m = c->frame_left < n ? (size_t)c->frame_left : n;
        if (c->frame_op & 0x8) {
            memcpy(c->ctl + c->ctl_len, p, m);
            c->ctl_len += (int)m;
        } else if (c->msg_compressed) {
            if (!inflate_bytes(c, p, m)) {
                conn_fail(c, &w->st.err_protocol);
                return;
            }
        } else {
            check_bytes(c, p, m);
        }
        p += m;
        n -= m;
        c->frame_left -= m;
        if (c->frame_left > 0)
            return;

        c->in_payload = false;
        if (c->frame_op & 0x8) {
            control_frame(c);
        } else if (c->frame_fin) {
            if (c->msg_compressed) {
                static const unsigned char tail[4] = { 0, 0, 0xff, 0xff };
                if (!inflate_bytes(c, tail, 4)) {
                    conn_fail(c, &w->st.err_protocol);
                    return;
                }
                if (c->server_no_ctx)
                    inflateReset(c->inflater);
            }
            c->in_msg = false;
            message_done(c);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Socket events                                                             */

static void conn_flush(struct conn *c)
{
    while (c->fd >= 0 && c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return;                 /* EPOLLOUT (edge-triggered) will call again */
        } else {
            conn_fail(c, c->state == CS_CLOSING ? &c->w->st.close_timeouts
                                                 : &c->w->st.err_closed);
            return;
        }
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
}

static void conn_readable(struct conn *c)
{
    struct worker *w = c->w;
    while (c->fd >= 0) {
        ssize_t n = read(c->fd, w->rbuf, sizeof w->rbuf);
        if (n > 0) {
            if (c->state == CS_HANDSHAKE) {
                if (!handshake_input(c, w->rbuf, (size_t)n))
                    return;
            } else {
                frames_input(c, w->rbuf, (size_t)n);
            }
            /* A short read drained the socket; with edge-triggered epoll any
             * later data raises a new event, so skip the read that would
             * only say EAGAIN. */
            if ((size_t)n < sizeof w->rbuf)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        /* EOF or error */
        if (c->state == CS_CLOSING && opt.mode != MODE_CHURN) {
            conn_close_socket(c);
            c->state = CS_DONE;
        } else {
            if (n < 0 || c->state != CS_CLOSING) {
                static atomic_int reported;
                if (atomic_fetch_add(&reported, 1) < 3)
                    fprintf(stderr, "wsload: connection dropped (%s) in state %d\n",
                            n < 0 ? strerror(errno) : "EOF", (int)c->state);
            }
            conn_fail(c, c->state == CS_CONNECTING || c->state == CS_HANDSHAKE
                             ? &w->st.err_connect : &w->st.err_closed);
        }
        return;
    }
}

static void conn_event(struct conn *c, uint32_t events)
{
    struct worker *w = c->w;
    if (c->state == CS_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            static atomic_int reported;
            if (atomic_fetch_add(&reported, 1) < 3)
                fprintf(stderr, "wsload: connect: %s\n", strerror(err));
            conn_fail(c, &w->st.err_connect);
            return;
        }
        conn_connected(c);
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        conn_readable(c);
    if (c->fd >= 0)
        conn_flush(c);
}

/* ------------------------------------------------------------------------ */
/* The worker loop                                                           */

static void poll_once(struct worker *w, int timeout_ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(w->epfd, evs, 256, timeout_ms);
    w->now = now_ns();
    for (int i = 0; i < n; i++)
        conn_event(evs[i].data.ptr, evs[i].events);
}

static int open_count(struct worker *w)
{
    int open = 0;
    for (int i = 0; i < w->nconns; i++)
        if (w->conns[i].state == CS_OPEN && w->conns[i].fd >= 0)
            open++;
    return open;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    w->now = now_ns();

    /* Connect phase: churn has none; the others open their connections a
     * few at a time, so the server's accept backlog never overflows. */
    if (opt.mode == MODE_CHURN) {
        w->unresolved = 0;
    } else {
        w->unresolved = w->nconns;
    }
    while (!atomic_load(&g_go)) {
        while (opt.mode != MODE_CHURN && w->next_connect < w->nconns &&
               w->pending < w->max_pending) {
            w->pending++;
            conn_start(&w->conns[w->next_connect++]);
        }
        if (w->unresolved == 0 && !w->reported_ready) {
            w->reported_ready = true;
            atomic_fetch_add(&g_ready_workers, 1);
        }
        poll_once(w, 5);
    }

    /* Run phase. */
    for (int i = 0; i < w->nconns; i++)
        if (!w->conns[i].ready && opt.mode != MODE_CHURN)
            conn_fail(&w->conns[i], &w->st.err_connect);     /* too slow to connect */
    atomic_fetch_add(&g_open_at_go, open_count(w));
    w->running = true;
    w->deadline = atomic_load(&g_t0) + (uint64_t)(opt.duration * 1e9);
    w->now = now_ns();
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (opt.mode == MODE_CHURN) {
            conn_start(c);
        } else if (opt.mode == MODE_ECHO && c->state == CS_OPEN) {
            for (int k = 0; k < opt.inflight; k++)
                send_message(c);
            conn_flush(c);
        }
    }
    atomic_fetch_add(&g_acks, 1);
    while (w->now < w->deadline && !atomic_load(&g_stop)) {
        uint64_t left_ms = (w->deadline - w->now) / 1000000 + 1;
        poll_once(w, left_ms > 20 ? 20 : (int)left_ms);
        if (opt.mode == MODE_CHURN)
            for (int i = 0; i < w->nconns && w->now < w->deadline; i++)
                if (w->conns[i].state == CS_IDLE)
                    conn_start(&w->conns[i]);
    }
    uint64_t deadline = w->deadline < w->now ? w->deadline : w->now;

    /* --final-check: every connection still open must answer a ping (with
     * its own payload) and echo one more message. */
    if (opt.mode == MODE_HOLD && opt.final_check) {
        for (int i = 0; i < w->nconns; i++) {
            struct conn *c = &w->conns[i];
            if (c->fd < 0 || c->state != CS_OPEN)
                continue;
            put_frame(c, OP_PING, false, (const unsigned char *)&c->gid, sizeof c->gid);
            c->ping_pending = c->final_sent = true;
            send_message(c);
            w->st.final_checked++;
            conn_flush(c);
        }
    }

    /* Drain: wait for the echoes still in flight (and churn cycles). */
    uint64_t drain_end = deadline + (uint64_t)(opt.drain_timeout * 1e9);
    if (opt.mode == MODE_HOLD && opt.final_check)
        drain_end = w->now + (uint64_t)(opt.drain_timeout * 1e9);
    for (;;) {
        bool busy = false;
        for (int i = 0; i < w->nconns && !busy; i++) {
            struct conn *c = &w->conns[i];
            if (c->fd >= 0 && (c->inflight > 0 || c->ping_pending ||
                    (opt.mode == MODE_CHURN && c->state != CS_DONE)))
                busy = true;
        }
        if (!busy || w->now >= drain_end)
            break;
        poll_once(w, 10);
    }
    if (opt.mode == MODE_HOLD)
        w->st.still_open = (uint64_t)open_count(w);

    /* Close: send close frames, wait for the answers for a while. */
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->ping_pending) {
            w->st.err_pong++;
            c->ping_pending = false;
        }
        if (c->fd < 0)
            continue;
        if (c->inflight > 0) {
            w->st.err_lost += (uint64_t)c->inflight;
            c->inflight = 0;
        }
        if (c->state == CS_OPEN || c->state == CS_GREETING) {
            send_close(c, 1000);
            conn_flush(c);
        } else if (c->state != CS_CLOSING) {
            if (opt.mode == MODE_CHURN && c->state != CS_IDLE)
                w->st.err_lost++;   /* a cycle that never finished */
            conn_close_socket(c);
            c->state = CS_DONE;
        }
    }
    uint64_t close_end = w->now + (uint64_t)(opt.mode == MODE_HOLD ? 10e9 : 2e9);
    for (;;) {
        int left = 0;
        for (int i = 0; i < w->nconns; i++)
            if (w->conns[i].fd >= 0)
                left++;
        if (left == 0)
            break;
        if (w->now >= close_end) {
            w->st.close_timeouts += (uint64_t)left;
            for (int i = 0; i < w->nconns; i++) {
                conn_close_socket(&w->conns[i]);
                w->conns[i].state = CS_DONE;
            }
            break;
        }
        poll_once(w, 10);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The server's CPU time and RSS, from /proc (the process and its children). */

struct proc_sample { double cpu_s; long rss_kb, anon_kb; int procs; };

static bool read_stat(int pid, int *ppid, double *cpu_s)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');            /* comm may hold spaces */
    if (!p)
        return false;
    char state;
    unsigned long utime, stime;
    /* fields after comm: state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime */
    if (sscanf(p + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &state, ppid, &utime, &stime) != 4)
        return false;
    *cpu_s = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
    return true;
}

/* pid's resident memory, and of it the anonymous (private) part: code
 * pages of shared libraries touched for the first time (OpenSSL's SHA-1 on
 * the first handshake) count in RSS but are not the connections' memory. */
static long read_rss_kb(int pid, long *anon_kb)
{
    char path[64], line[256];
    long kb = 0;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "RssAnon:", 8) == 0)
            *anon_kb += strtol(line + 8, NULL, 10);
    }
    fclose(f);
    return kb;
}

/* Sum over pid and all its descendants (nginx workers, luaws workers). */
static struct proc_sample sample_server(int root)
{
    struct proc_sample s = { 0, 0, 0, 0 };
    enum { MAXP = 4096 };
    static int pids[MAXP], ppids[MAXP];
    static double cpu[MAXP];
    int np = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return s;
    struct dirent *e;
    while ((e = readdir(d)) && np < MAXP) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        int pid = atoi(e->d_name);
        if (read_stat(pid, &ppids[np], &cpu[np]))
            pids[np++] = pid;
    }
    closedir(d);

    static bool in_tree[MAXP];
    for (int i = 0; i < np; i++)
        in_tree[i] = pids[i] == root;
    bool grew = true;
    while (grew) {
        grew = false;
        for (int i = 0; i < np; i++) {
            if (in_tree[i])
                continue;
            for (int j = 0; j < np; j++)
                if (in_tree[j] && pids[j] == ppids[i]) {
                    in_tree[i] = grew = true;
                    break;
                }
        }
    }
    for (int i = 0; i < np; i++)
        if (in_tree[i]) {
            s.cpu_s += cpu[i];
            s.rss_kb += read_rss_kb(pids[i], &s.anon_kb);
            s.procs++;
        }
    return s;
}

/* A luaws gauge (the sum over workers) from GET /metrics on the target, or
 * -1: one blocking request on a connection of its own (luaws answers
 * /metrics in C, so asking costs its Lua heap nothing). */
static long long read_gauge(const char *name)
{
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    static char buf[1 << 16];
    size_t n = 0;
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) == 0) {
        int len = snprintf(buf, sizeof buf, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                           g_host_header);
        if (write(fd, buf, (size_t)len) == len) {
            ssize_t r;
            while (n < sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
                n += (size_t)r;
        }
    }
    close(fd);
    buf[n] = '\0';
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *at = strstr(buf, key);
    return at ? strtoll(at + strlen(key), NULL, 10) : -1;
}

/* The whole machine's busy time (user, nice, system) and steal, in seconds,
 * from /proc/stat: what the server and wsload did not use was used by
 * something else, which makes the figures noisy. */
struct machine_sample { double busy_s, steal_s; };

static struct machine_sample sample_machine(void)
{
    struct machine_sample m = { 0, 0 };
    unsigned long long user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0,
                       softirq = 0, steal = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return m;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys, &idle,
               &iowait, &irq, &softirq, &steal) >= 3) {
        double hz = (double)sysconf(_SC_CLK_TCK);
        m.busy_s = (double)(user + nice + sys) / hz;
        m.steal_s = (double)steal / hz;
    }
    fclose(f);
    return m;
}

static double cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------------------ */
/* Options and main                                                          */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: wsload [options] -d SECONDS ws://HOST:PORT/PATH\n"
        "\n"
        "  -d, --duration S      run (or hold) for S seconds (required, at most 3600)\n"
        "  -c, --conns N         connections (echo mode) or churn slots (default 1)\n"
        "  -k, --inflight N      messages in flight per connection, pipelined (default 1)\n"
        "  -s, --size N          message size in bytes; suffix k or m allowed (default 32)\n"
        "      --binary          binary messages (default text)\n"
        "  -t, --threads N       threads (default: CPUs this process may run on)\n"
        "      --deflate         offer permessage-deflate (client_no_context_takeover)\n"
        "      --hold N          open N connections, echo once on each, hold them idle\n"
        "      --churn           connect, handshake, 1 message, close; repeat\n"
        "      --skip-greeting   wait for and ignore one text message after the handshake\n"
        "      --sources N       spread connections over 127.0.0.1..N (default: automatic,\n"
        "                        one address per %d connections in hold/churn mode)\n"
        "      --source ADDR     bind to ADDR (127.x.y.z) and the next addresses, one per\n"
        "                        %d connections (or --sources N of them), not 127.0.0.1..\n"
        "      --final-check     hold: when the hold ends (-d, or SIGUSR1 earlier) send a\n"
        "                        ping and one message on every connection; both must come\n"
        "                        back (pong with the same payload, checked echo)\n"
        "      --warmup N        hold: first open N connections one by one, echo once and\n"
        "                        close each, then take the server's baseline: what the\n"
        "                        first connections cost once (library code paged in, a\n"
        "                        JIT warming up) is then not counted per connection\n"
        "      --server-pid PID  sample the server's CPU time and RSS (PID + children)\n"
        "      --lua-heap        hold mode against luaws --metrics: also read its Lua heap\n"
        "                        (luaws_lua_heap_bytes from GET /metrics) before and after\n"
        "      --connect-timeout S  give up on connections not open after S s (default 30)\n"
        "      --drain S         after the run, wait S s for echoes in flight (default 5)\n"
        "      --max-pending N   handshakes under way at once (default 128)\n"
        "  -h, --help\n"
        "\n"
        "Prints a human summary and one line: RESULT key=value ...\n",
        PER_SOURCE_CONNS, PER_SOURCE_CONNS);
}

static long parse_num(const char *s, const char *what, long min, long max)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s)
        die("bad number for %s: %s", what, s);
    if (*end == 'k' || *end == 'K') {
        v *= 1024;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1024 * 1024;
        end++;
    }
    if (*end != '\0' || v < (double)min || v > (double)max)
        die("%s out of range", what);
    return (long)v;
}

static void parse_url(const char *url)
{
    if (strncmp(url, "ws://", 5) != 0)
        die("only ws:// URLs are supported: %s", url);
    const char *h = url + 5;
    const char *slash = strchr(h, '/');
    size_t hostport_len = slash ? (size_t)(slash - h) : strlen(h);
    if (hostport_len == 0 || hostport_len >= sizeof g_host_header)
        die("bad URL: %s", url);
    memcpy(g_host_header, h, hostport_len);
    g_host_header[hostport_len] = '\0';
    snprintf(opt.path, sizeof opt.path, "%s", slash ? slash : "/");

    char hp[300];
    snprintf(hp, sizeof hp, "%s", g_host_header);
    char *port = NULL;
    if (hp[0] == '[') {                 /* [::1]:port */
        char *close = strchr(hp, ']');
        if (!close)
            die("bad URL: %s", url);
        *close = '\0';
        snprintf(opt.host, sizeof opt.host, "%s", hp + 1);
        if (close[1] == ':')
            port = close + 2;
    } else {
        port = strrchr(hp, ':');
        if (port)
            *port++ = '\0';
        snprintf(opt.host, sizeof opt.host, "%s", hp);
    }
    snprintf(opt.port, sizeof opt.port, "%s", port && *port ? port : "80");

    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
    int rc = getaddrinfo(opt.host, opt.port, &hints, &res);
    if (rc != 0)
        die("cannot resolve host: %s", gai_strerror(rc));
    memcpy(&g_addr, res->ai_addr, res->ai_addrlen);
    g_addrlen = res->ai_addrlen;
    freeaddrinfo(res);

    /* Safety: this tool only ever talks to the local machine. */
    bool loopback = false;
    if (g_addr.ss_family == AF_INET) {
        uint32_t a = ntohl(((struct sockaddr_in *)&g_addr)->sin_addr.s_addr);
        loopback = (a >> 24) == 127;
    } else if (g_addr.ss_family == AF_INET6) {
        loopback = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&g_addr)->sin6_addr);
    }
    if (!loopback)
        die("refusing a non-loopback target: %s", opt.host);
}

static void parse_options(int argc, char **argv)
{
    enum { O_BINARY = 256, O_DEFLATE, O_HOLD, O_CHURN, O_SKIP, O_SOURCES, O_PID,
           O_CTIMEOUT, O_DRAIN, O_PENDING, O_SOURCE, O_FINAL, O_LUA_HEAP, O_WARMUP };
    static const struct option longs[] = {
        { "duration", required_argument, NULL, 'd' },
        { "conns", required_argument, NULL, 'c' },
        { "inflight", required_argument, NULL, 'k' },
        { "size", required_argument, NULL, 's' },
        { "threads", required_argument, NULL, 't' },
        { "binary", no_argument, NULL, O_BINARY },
        { "deflate", no_argument, NULL, O_DEFLATE },
        { "hold", required_argument, NULL, O_HOLD },
        { "churn", no_argument, NULL, O_CHURN },
        { "skip-greeting", no_argument, NULL, O_SKIP },
        { "sources", required_argument, NULL, O_SOURCES },
        { "source", required_argument, NULL, O_SOURCE },
        { "final-check", no_argument, NULL, O_FINAL },
        { "warmup", required_argument, NULL, O_WARMUP },
        { "server-pid", required_argument, NULL, O_PID },
        { "lua-heap", no_argument, NULL, O_LUA_HEAP },
        { "connect-timeout", required_argument, NULL, O_CTIMEOUT },
        { "drain", required_argument, NULL, O_DRAIN },
        { "max-pending", required_argument, NULL, O_PENDING },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };

    opt.conns = 1;
    opt.inflight = 1;
    opt.size = 32;
    opt.duration = 0;
    opt.sources = -1;
    opt.connect_timeout = 30;
    opt.drain_timeout = 5;
    opt.max_pending = 128;
    cpu_set_t set;
    opt.threads = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;

    int ch;
    while ((ch = getopt_long(argc, argv, "d:c:k:s:t:h", longs, NULL)) != -1) {
        switch (ch) {
        case 'd': opt.duration = strtod(optarg, NULL); break;
        case 'c': opt.conns = (int)parse_num(optarg, "-c", 1, 1000000); break;
        case 'k': opt.inflight = (int)parse_num(optarg, "-k", 1, 100000); break;
        case 's': opt.size = (size_t)parse_num(optarg, "-s", 0, 256L << 20); break;
        case 't': opt.threads = (int)parse_num(optarg, "-t", 1, 256); break;
        case O_BINARY: opt.binary = true; break;
        case O_DEFLATE: opt.deflate = true; break;
        case O_HOLD:
            opt.mode = MODE_HOLD;
            opt.conns = (int)parse_num(optarg, "--hold", 1, 1000000);
            break;
        case O_CHURN: opt.mode = MODE_CHURN; break;
        case O_SKIP: opt.skip_greeting = true; break;
        case O_SOURCES: opt.sources = (int)parse_num(optarg, "--sources", 0, 254); break;
        case O_SOURCE: {
            struct in_addr a;
            if (inet_pton(AF_INET, optarg, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127)
                die("--source must be an address in 127.0.0.0/8: %s", optarg);
            opt.source_base = ntohl(a.s_addr);
            break;
        }
        case O_FINAL: opt.final_check = true; break;
        case O_WARMUP: opt.warmup = (int)parse_num(optarg, "--warmup", 0, 1000); break;
        case O_PID: opt.server_pid = (int)parse_num(optarg, "--server-pid", 1, 1L << 30); break;
        case O_LUA_HEAP: opt.lua_heap = true; break;
        case O_CTIMEOUT: opt.connect_timeout = strtod(optarg, NULL); break;
        case O_DRAIN: opt.drain_timeout = strtod(optarg, NULL); break;
        case O_PENDING: opt.max_pending = (int)parse_num(optarg, "--max-pending", 1, 100000); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        exit(2);
    }
    if (!(opt.duration > 0 && opt.duration <= 3600))
        die("-d SECONDS is required (0 < d <= 3600)");
    if (opt.connect_timeout <= 0 || opt.connect_timeout > 600)
        die("--connect-timeout out of range");
    if (opt.drain_timeout < 0 || opt.drain_timeout > 600)
        die("--drain out of range");
    if (opt.mode != MODE_ECHO)
        opt.inflight = 1;
    if (opt.final_check && opt.mode != MODE_HOLD)
        die("--final-check goes with --hold");
    if (opt.source_base) {
        int n = opt.sources > 0 ? opt.sources
                                : (opt.conns + PER_SOURCE_CONNS - 1) / PER_SOURCE_CONNS;
        if ((opt.source_base & 0xFFFFFFu) == 0 || (opt.source_base & 0xFFu) + (uint32_t)n > 255)
            die("--source: the addresses from it must stay in 127.x.y.1..254");
    }
    if (opt.threads > opt.conns)
        opt.threads = opt.conns;
    parse_url(argv[optind]);
}

static void on_sigusr1(int sig)
{
    (void)sig;
    g_sigusr1 = 1;
}

static void raise_fd_limit(int need)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)need) {
        rl.rlim_cur = rl.rlim_max;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (rlim_t)need) {
            struct rlimit more = { (rlim_t)need, (rlim_t)need };
            if (setrlimit(RLIMIT_NOFILE, &more) == 0)
                return;
        }
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)need)
            fprintf(stderr, "wsload: warning: open files limit %lu < %d needed\n",
                    (unsigned long)rl.rlim_cur, need);
    }
}

/* --warmup: one connection at a time, blocking: handshake, one masked text
 * frame, whatever comes back within a second (the echo, a greeting), a
 * close frame. Returns how many got their 101. */
static int warm_up(int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) break;
        struct timeval tv = { 1, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[4096];
        int len = snprintf(buf, sizeof buf,
                           "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                           opt.path, g_host_header);
        if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) == 0 && write(fd, buf, (size_t)len) == len) {
            ssize_t r = read(fd, buf, sizeof buf - 1);
            if (r > 12 && memcmp(buf, "HTTP/1.1 101", 12) == 0) {
                ok++;
                /* "warm", masked with a zero key; then a close frame (1000) */
                static const unsigned char msg[] = { 0x81, 0x84, 0, 0, 0, 0, 'w', 'a', 'r', 'm' };
                static const unsigned char bye[] = { 0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8 };
                if (write(fd, msg, sizeof msg) == (ssize_t)sizeof msg && read(fd, buf, sizeof buf) > 0 &&
                    write(fd, bye, sizeof bye) == (ssize_t)sizeof bye)
                    while (read(fd, buf, sizeof buf) > 0) {}
            }
        }
        close(fd);
    }
    return ok;
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (opt.mode == MODE_HOLD) {
        /* No SA_RESTART: the main thread's sleep ends at once.  Workers keep
         * it blocked, so the main thread is the one woken. */
        struct sigaction sa = { .sa_handler = on_sigusr1 };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGUSR1, &sa, NULL);
    }
    raise_fd_limit(opt.conns + 64);
    make_pattern();
    if (opt.deflate) {
        if (opt.size > DEFLATE_CACHE_BYTES / PATTERN_OFFSETS) {
            /* Big messages: fewer distinct payloads keep the set-up short. */
            g_offsets = (unsigned)(DEFLATE_CACHE_BYTES / opt.size);
            if (g_offsets < 7)
                g_offsets = 7;
        }
        make_deflate_cache();
    }

    static const char *mode_names[] = { "echo", "hold", "churn" };
    printf("wsload: ws://%s%s mode=%s conns=%d k=%d size=%zu %s%s threads=%d duration=%gs\n",
           g_host_header, opt.path, mode_names[opt.mode], opt.conns, opt.inflight, opt.size,
           opt.binary ? "binary" : "text", opt.deflate ? " deflate" : "", opt.threads,
           opt.duration);
    fflush(stdout);

    struct proc_sample srv_before = { 0, 0, 0, 0 }, srv_t0 = { 0, 0, 0, 0 }, srv_end = { 0, 0, 0, 0 };
    double window = opt.duration;       /* shorter if SIGUSR1 ends a hold */
    if (opt.warmup && opt.mode == MODE_HOLD) {
        int w = warm_up(opt.warmup);
        printf("  warm-up: %d of %d connections opened, echoed and closed before the baseline\n", w, opt.warmup);
        usleep(200 * 1000);   /* the server frees them */
    }
    if (opt.server_pid) {
        srv_before = sample_server(opt.server_pid);
        if (srv_before.procs == 0)
            die("no such server process: %d", opt.server_pid);
    }
    long long heap_before = -1, heap_end = -1;
    if (opt.lua_heap && opt.mode == MODE_HOLD && (heap_before = read_gauge("luaws_lua_heap_bytes")) < 0)
        fprintf(stderr, "wsload: --lua-heap: no luaws_lua_heap_bytes at /metrics (luaws --metrics?)\n");

    /* Workers and their share of the connections. */
    struct worker **ws = calloc((size_t)opt.threads, sizeof *ws);
    struct conn *conns = calloc((size_t)opt.conns, sizeof *conns);
    uint64_t *sent_at = calloc((size_t)opt.conns * (size_t)opt.inflight, sizeof *sent_at);
    if (!ws || !conns || !sent_at)
        die("out of memory");
    uint64_t seed = rng_seed();
    int per_thread_pending = opt.max_pending / opt.threads > 0 ? opt.max_pending / opt.threads : 1;
    for (int t = 0, next = 0; t < opt.threads; t++) {
        struct worker *w = calloc(1, sizeof *w);
        if (!w)
            die("out of memory");
        w->id = t;
        w->rng = seed + 0x9E3779B97F4A7C15ULL * (uint64_t)(t + 1);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->max_pending = per_thread_pending;
        w->nconns = opt.conns / opt.threads + (t < opt.conns % opt.threads);
        w->conns = conns + next;
        for (int i = 0; i < w->nconns; i++) {
            struct conn *c = &w->conns[i];
            c->w = w;
            c->fd = -1;
            c->gid = next + i;
            c->sent_at = sent_at + (size_t)(next + i) * (size_t)opt.inflight;
        }
        next += w->nconns;
        ws[t] = w;
    }

    uint64_t start = now_ns();
    sigset_t usr1, old_mask;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
    for (int t = 0; t < opt.threads; t++)
        pthread_create(&ws[t]->thread, NULL, worker_main, ws[t]);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);

    /* Wait for the connect phase (bounded). */
    uint64_t connect_end = start + (uint64_t)(opt.connect_timeout * 1e9);
    while (atomic_load(&g_ready_workers) < opt.threads && now_ns() < connect_end) {
        struct timespec ts = { 0, 2000000 };
        nanosleep(&ts, NULL);
    }
    uint64_t t0 = now_ns();
    double connect_secs = secs(t0 - start);
    if (opt.server_pid)
        srv_t0 = sample_server(opt.server_pid);
    double cpu0 = cpu_self();
    struct machine_sample mach0 = sample_machine();
    atomic_store(&g_t0, t0);
    atomic_store(&g_go, 1);

    /* Wait (briefly) for every worker to count its open connections. */
    while (atomic_load(&g_acks) < opt.threads && now_ns() < t0 + 2000000000u) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    int ready = atomic_load(&g_open_at_go);
    if (opt.mode != MODE_CHURN) {
        printf("  connected %d/%d in %.2f s\n", ready, opt.conns, connect_secs);
        if (opt.mode == MODE_HOLD) {
            printf("READY open=%d\n", ready);
        }
        fflush(stdout);
    }

    /* Sleep to the end of the window, then sample CPU (the server's too).
     * A hold also ends at SIGUSR1 (the RSS is then sampled at once). */
    uint64_t deadline = t0 + (uint64_t)(opt.duration * 1e9);
    if (opt.mode == MODE_HOLD && opt.server_pid && opt.duration > 0.5) {
        /* RSS a little before the hold ends, with every connection still up. */
        uint64_t at = deadline - 250000000u;
        struct timespec ts = { (time_t)(at / 1000000000u), (long)(at % 1000000000u) };
        while (!g_sigusr1 && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        srv_end = sample_server(opt.server_pid);
        if (heap_before >= 0)
            heap_end = read_gauge("luaws_lua_heap_bytes");
    }
    struct timespec ts = { (time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u) };
    while (!g_sigusr1 && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
    if (g_sigusr1) {
        window = secs(now_ns() - t0);
        atomic_store(&g_stop, 1);
    }
    double cpu1 = cpu_self();
    struct machine_sample mach1 = sample_machine();
    if (opt.server_pid) {
        struct proc_sample s = sample_server(opt.server_pid);
        if (opt.mode != MODE_HOLD || srv_end.procs == 0)
            srv_end = s;
        else
            srv_end.cpu_s = s.cpu_s;
    }

    for (int t = 0; t < opt.threads; t++)
        pthread_join(ws[t]->thread, NULL);

    /* Merge. */
    struct stats st;
    memset(&st, 0, sizeof st);
    for (int t = 0; t < opt.threads; t++) {
        struct stats *s = &ws[t]->st;
        st.msgs += s->msgs;
        st.msgs_late += s->msgs_late;
        st.cycles += s->cycles;
        st.opened += s->opened;
        st.deflate_conns += s->deflate_conns;
        st.still_open += s->still_open;
        st.final_checked += s->final_checked;
        st.final_pongs += s->final_pongs;
        st.final_echoes += s->final_echoes;
        st.err_pong += s->err_pong;
        st.err_verify += s->err_verify;
        st.err_protocol += s->err_protocol;
        st.err_closed += s->err_closed;
        st.err_connect += s->err_connect;
        st.err_lost += s->err_lost;
        st.close_timeouts += s->close_timeouts;
        for (int i = 0; i < HIST_BUCKETS; i++)
            st.hist[i] += s->hist[i];
    }
    uint64_t errors = st.err_verify + st.err_protocol + st.err_closed + st.err_connect +
                      st.err_lost + st.err_pong;

    double my_cpu = cpu1 - cpu0;
    double srv_cpu = srv_end.cpu_s - srv_t0.cpu_s;
    double other_cpu = (mach1.busy_s - mach0.busy_s) - my_cpu - srv_cpu;
    if (other_cpu < 0)
        other_cpu = 0;
    double steal = mach1.steal_s - mach0.steal_s;
    uint64_t p50 = hist_percentile(st.hist, 0.50) / 1000;
    uint64_t p90 = hist_percentile(st.hist, 0.90) / 1000;
    uint64_t p99 = hist_percentile(st.hist, 0.99) / 1000;
    uint64_t pmax = hist_max(st.hist) / 1000;

    char extra[512] = "";
    if (opt.server_pid)
        snprintf(extra, sizeof extra, " server_cpu_s=%.2f server_rss_kb=%ld", srv_cpu,
                 srv_end.rss_kb);

    switch (opt.mode) {
    case MODE_ECHO: {
        double rate = (double)st.msgs / window;
        printf("  %llu echoes in %.2f s = %.0f msg/s, %.1f MiB/s each way\n",
               (unsigned long long)st.msgs, window, rate,
               rate * (double)opt.size / (1024.0 * 1024.0));
        printf("  latency p50 %llu us, p90 %llu us, p99 %llu us, max %llu us\n",
               (unsigned long long)p50, (unsigned long long)p90, (unsigned long long)p99,
               (unsigned long long)pmax);
        if (opt.server_pid && srv_cpu > 0)
            printf("  server: %.2f CPU s in the window = %.0f msg per server CPU-second\n",
                   srv_cpu, (double)st.msgs / srv_cpu);
        if (opt.deflate)
            printf("  permessage-deflate negotiated on %llu of %llu connections\n",
                   (unsigned long long)st.deflate_conns, (unsigned long long)st.opened);
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                 " msgs_per_server_cpu_s=%.0f",
                 opt.server_pid && srv_cpu > 0 ? (double)st.msgs / srv_cpu : 0.0);
        break;
    }
    case MODE_HOLD: {
        double per_conn = ready > 0 ? (double)(srv_end.rss_kb - srv_before.rss_kb) / ready : 0;
        double anon_per_conn = ready > 0 ? (double)(srv_end.anon_kb - srv_before.anon_kb) / ready : 0;
        printf("  held %d connections for %.1f s; %llu still open at the end\n", ready,
               window, (unsigned long long)st.still_open);
        if (opt.server_pid)
            printf("  server RSS %ld kB -> %ld kB = %.2f kB per connection (private: %ld kB -> %ld kB = "
                   "%.2f kB)\n", srv_before.rss_kb, srv_end.rss_kb, per_conn, srv_before.anon_kb,
                   srv_end.anon_kb, anon_per_conn);
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                 " open=%d still_open=%llu rss_before_kb=%ld kb_per_conn=%.2f anon_kb_per_conn=%.2f"
                 " connect_s=%.2f",
                 ready, (unsigned long long)st.still_open, srv_before.rss_kb, per_conn, anon_per_conn,
                 connect_secs);
        if (opt.final_check) {
            printf("  final check: %llu connections sent a ping and a message: %llu pongs, "
                   "%llu echoes back\n", (unsigned long long)st.final_checked,
                   (unsigned long long)st.final_pongs, (unsigned long long)st.final_echoes);
            snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                     " final_checked=%llu final_pongs=%llu final_echoes=%llu",
                     (unsigned long long)st.final_checked, (unsigned long long)st.final_pongs,
                     (unsigned long long)st.final_echoes);
        }
        if (heap_before >= 0 && heap_end >= 0 && ready > 0) {
            /* As the incremental collector left it: garbage of the
             * handshakes not yet collected counts too, as it does in RSS. */
            double heap_per_conn = (double)(heap_end - heap_before) / ready;
            printf("  Lua heap %lld B -> %lld B = %.0f B per connection\n", heap_before, heap_end,
                   heap_per_conn);
            snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                     " lua_heap_before=%lld lua_heap_bytes_per_conn=%.0f", heap_before, heap_per_conn);
        }
        break;
    }
    case MODE_CHURN: {
        double rate = (double)st.cycles / window;
        printf("  %llu connect+message+close cycles in %.2f s = %.0f conn/s\n",
               (unsigned long long)st.cycles, window, rate);
        printf("  cycle time p50 %llu us, p99 %llu us\n", (unsigned long long)p50,
               (unsigned long long)p99);
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                 " conns_per_s=%.0f conns_per_server_cpu_s=%.0f", rate,
                 opt.server_pid && srv_cpu > 0 ? (double)st.cycles / srv_cpu : 0.0);
        break;
    }
    }
    printf("  errors %llu (verify %llu, protocol %llu, closed %llu, connect %llu, lost %llu, "
           "unanswered pings %llu); unanswered closes %llu\n",
           (unsigned long long)errors, (unsigned long long)st.err_verify,
           (unsigned long long)st.err_protocol, (unsigned long long)st.err_closed,
           (unsigned long long)st.err_connect, (unsigned long long)st.err_lost,
           (unsigned long long)st.err_pong, (unsigned long long)st.close_timeouts);
    printf("  wsload CPU: %.2f s over %.2f s = %.0f%% of one core (%d thread%s)\n",
           my_cpu, window, 100.0 * my_cpu / window, opt.threads, opt.threads > 1 ? "s" : "");
    printf("  other processes: %.0f%% of one core%s; steal %.0f%%\n", 100.0 * other_cpu / window,
           opt.server_pid ? "" : " (includes the server: no --server-pid)", 100.0 * steal / window);
    printf("RESULT mode=%s conns=%d k=%d size=%zu msgs=%llu secs=%.3f msgs_per_s=%.0f "
           "p50_us=%llu p99_us=%llu errors=%llu wsload_cpu_pct=%.0f other_cpu_pct=%.0f "
           "steal_pct=%.0f%s\n",
           mode_names[opt.mode], opt.conns, opt.inflight, opt.size,
           (unsigned long long)(opt.mode == MODE_CHURN ? st.cycles : st.msgs), window,
           (double)st.msgs / window, (unsigned long long)p50, (unsigned long long)p99,
           (unsigned long long)errors, 100.0 * my_cpu / window, 100.0 * other_cpu / window,
           100.0 * steal / window, extra);
    return errors ? 1 : 0;
}
