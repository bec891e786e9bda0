/*
 * echo_epoll — a bare WebSocket echo server: the ceiling for the benchmarks.
 *
 * One thread, one epoll loop, edge-triggered nonblocking sockets.  A minimal
 * handshake (Sec-WebSocket-Key -> Sec-WebSocket-Accept with OpenSSL SHA-1 and
 * base64), then every frame is echoed as it streams in: the header is written
 * back unmasked and payload bytes are unmasked straight into the output
 * buffer, so a message is never assembled.  No UTF-8 validation, no
 * extensions, no Lua.  Ping gets pong, close gets close.
 *
 * usage: echo_epoll [PORT [HOST]]     (or PORT in the environment; default 9001,
 *                                      host 127.0.0.1)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#define WS_GUID       "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MAX_REQUEST   8192
#define READ_CHUNK    (256 * 1024)
#define OUT_HIGH      (4 * 1024 * 1024)   /* stop reading above this much queued output */

enum state { ST_HTTP, ST_WS, ST_CLOSING };

struct conn {
    int fd;
    enum state state;
    bool read_paused;           /* output above OUT_HIGH: reading waits */

    char *req;                  /* the upgrade request, until it is complete */
    size_t req_len;

    /* frame parser */
    unsigned char hdr[14];
    int hdr_len;
    bool in_payload;
    int opcode;
    uint64_t left;              /* payload bytes of this frame still to come */
    unsigned char mask[4];
    unsigned mask_pos;          /* payload bytes unmasked so far, mod 4 */
    unsigned char ctl[125];     /* control frame payload */
    int ctl_len;

    unsigned char *out;
    size_t out_off, out_len, out_cap;
};

static int epfd;
static unsigned char rbuf[READ_CHUNK];

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void conn_free(struct conn *c)
{
    close(c->fd);
    free(c->req);
    free(c->out);
    free(c);
}

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
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + need)
            cap *= 2;
        unsigned char *p = realloc(c->out, cap);
        if (!p)
            die("realloc");
        c->out = p;
        c->out_cap = cap;
    }
    return c->out + c->out_len;
}

static void put_bytes(struct conn *c, const void *p, size_t n)
{
    memcpy(out_reserve(c, n), p, n);
    c->out_len += n;
}

/* An unmasked server frame header. */
static void put_header(struct conn *c, int fin_opcode, uint64_t len)
{
    unsigned char h[10];
    size_t n = 0;
    h[n++] = (unsigned char)fin_opcode;
    if (len < 126) {
        h[n++] = (unsigned char)len;
    } else if (len <= 0xFFFF) {
        h[n++] = 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    } else {
        h[n++] = 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (unsigned char)(len >> (8 * i));
    }
    put_bytes(c, h, n);
}

/* Unmask n payload bytes from src into dst, continuing at c->mask_pos. */
static void unmask(struct conn *c, unsigned char *dst, const unsigned char *src, size_t n)
{
    unsigned char k[8];
    for (int i = 0; i < 8; i++)
        k[i] = c->mask[(c->mask_pos + (unsigned)i) & 3];
    uint64_t k8;
    memcpy(&k8, k, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k8;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ k[i & 7];
    c->mask_pos = (c->mask_pos + (unsigned)n) & 3;
}

/* Returns false when the connection should be dropped. */
static bool handshake(struct conn *c, const unsigned char *p, size_t n, size_t *used)
{
    if (!c->req) {
        c->req = malloc(MAX_REQUEST + 1);
        if (!c->req)
            die("malloc");
    }
    size_t take = n;
    if (c->req_len + take > MAX_REQUEST)
        take = MAX_REQUEST - c->req_len;
    memcpy(c->req + c->req_len, p, take);
    c->req_len += take;
    c->req[c->req_len] = '\0';

    char *end = strstr(c->req, "\r\n\r\n");
    if (!end) {
        *used = take;
        return c->req_len < MAX_REQUEST;
    }
    /* Bytes after the request belong to the frames. */
    size_t head = (size_t)(end - c->req) + 4;
    *used = take - (c->req_len - head);

    const char *key = NULL;
    size_t key_len = 0;
    for (char *line = strstr(c->req, "\r\n"); line && line < end; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, "Sec-WebSocket-Key:", 18) == 0) {
            key = line + 18;
            while (*key == ' ' || *key == '\t')
                key++;
            const char *eol = strstr(key, "\r\n");
            key_len = (size_t)(eol - key);
            while (key_len > 0 && (key[key_len - 1] == ' ' || key[key_len - 1] == '\t'))
                key_len--;
        }
    }
    if (!key || key_len == 0 || key_len > 64) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";
        put_bytes(c, bad, sizeof bad - 1);
        c->state = ST_CLOSING;
        return true;
    }

    char concat[128];
    unsigned char digest[SHA_DIGEST_LENGTH];
    char accept[64];
    int m = snprintf(concat, sizeof concat, "%.*s%s", (int)key_len, key, WS_GUID);
    SHA1((unsigned char *)concat, (size_t)m, digest);
    EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);

    char resp[256];
    m = snprintf(resp, sizeof resp,
                 "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    put_bytes(c, resp, (size_t)m);
    free(c->req);
    c->req = NULL;
    c->state = ST_WS;
    return true;
}

/* A whole control frame has arrived. */
static bool control(struct conn *c)
{
    switch (c->opcode) {
    case 0x9:                                   /* ping -> pong */
        put_header(c, 0x80 | 0xA, (uint64_t)c->ctl_len);
        put_bytes(c, c->ctl, (size_t)c->ctl_len);
        return true;
    case 0xA:                                   /* pong */
        return true;
    case 0x8:                                   /* close -> close, then hang up */
        put_header(c, 0x80 | 0x8, c->ctl_len >= 2 ? 2 : 0);
        put_bytes(c, c->ctl, c->ctl_len >= 2 ? 2 : 0);
        c->state = ST_CLOSING;
        return true;
    default:
        return false;
    }
}

/* Echo frames as they stream in.  Returns false on a protocol error. */
static bool frames(struct conn *c, const unsigned char *p, size_t n)
{
    while (n > 0 && c->state == ST_WS) {
        if (!c->in_payload) {
            while (c->hdr_len < 2 && n > 0) {
                c->hdr[c->hdr_len++] = *p++;
                n--;
            }
            if (c->hdr_len < 2)
                return true;
            if (!(c->hdr[1] & 0x80))
                return false;                   /* client frames must be masked */
            int len7 = c->hdr[1] & 0x7F;
            int need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
            while (c->hdr_len < need && n > 0) {
                c->hdr[c->hdr_len++] = *p++;
                n--;
            }
            if (c->hdr_len < need)
                return true;

            uint64_t len = (uint64_t)len7;
            if (len7 == 126) {
                len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
            } else if (len7 == 127) {
                len = 0;
                for (int i = 0; i < 8; i++)
                    len = len << 8 | c->hdr[2 + i];
            }
            memcpy(c->mask, c->hdr + need - 4, 4);
            c->mask_pos = 0;
            c->opcode = c->hdr[0] & 0x0F;
            c->left = len;
            c->hdr_len = 0;
            c->in_payload = true;
            if (c->opcode & 0x8) {
                if (len > 125 || !(c->hdr[0] & 0x80))
                    return false;
                c->ctl_len = 0;
            } else {
                /* Data or continuation: echo the header now, payload follows. */
                put_header(c, c->hdr[0] & 0x8F, len);
            }
        }

        size_t m = c->left < n ? (size_t)c->left : n;
        if (c->opcode & 0x8) {
            unmask(c, c->ctl + c->ctl_len, p, m);
            c->ctl_len += (int)m;
        } else {
            unmask(c, out_reserve(c, m), p, m);
            c->out_len += m;
        }
        p += m;
        n -= m;
        c->left -= m;
        if (c->left == 0) {
            c->in_payload = false;
            if ((c->opcode & 0x8) && !control(c))
                return false;
        }
    }
    return true;
}

/* Write what we can.  Returns false if the connection is gone. */
static bool flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0)
            c->out_off += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && errno == EAGAIN)
            return true;
        else
            return false;
    }
    c->out_off = c->out_len = 0;
    return c->state != ST_CLOSING;              /* all sent: a closing conn ends */
}

static void on_readable(struct conn *c);

static void on_event(struct conn *c, uint32_t events)
{
    if (events & (EPOLLERR | EPOLLHUP)) {
        conn_free(c);
        return;
    }
    if (!flush(c)) {
        conn_free(c);
        return;
    }
    bool resume = false;
    if (c->read_paused && c->out_len - c->out_off < OUT_HIGH / 2) {
        c->read_paused = false;
        resume = true;                          /* edge-triggered: read what waits */
    }
    if ((events & (EPOLLIN | EPOLLRDHUP)) || resume)
        on_readable(c);
}

static void on_readable(struct conn *c)
{
    for (;;) {
        if (c->out_len - c->out_off >= OUT_HIGH) {
            c->read_paused = true;              /* backpressure */
            break;
        }
        ssize_t n = read(c->fd, rbuf, sizeof rbuf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            conn_free(c);
            return;
        }
        const unsigned char *p = rbuf;
        size_t len = (size_t)n;
        if (c->state == ST_HTTP) {
            size_t used = 0;
            if (!handshake(c, p, len, &used)) {
                conn_free(c);
                return;
            }
            p += used;
            len -= used;
        }
        if (c->state == ST_WS && !frames(c, p, len)) {
            static const unsigned char close1002[] = { 0x88, 2, 0x03, 0xEA };
            put_bytes(c, close1002, sizeof close1002);
            c->state = ST_CLOSING;
        }
        if (!flush(c)) {
            conn_free(c);
            return;
        }
        if (c->state == ST_CLOSING)
            break;
        if ((size_t)n < sizeof rbuf)
            break;                              /* short read: queue drained, the next
                                                   arrival raises a new edge */
    }
}

static int listen_on(const char *host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "echo_epoll: bad IPv4 address %s\n", host);
        exit(2);
    }
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    if (listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN)
                perror("accept4");             /* EMFILE and friends: try later */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c)
            die("calloc");
        c->fd = fd;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                  .data.ptr = c };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl");
    }
}

int main(int argc, char **argv)
{
    const char *env = getenv("PORT");
    int port = argc > 1 ? atoi(argv[1]) : env ? atoi(env) : 9001;
    const char *host = argc > 2 ? argv[2] : "127.0.0.1";
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: echo_epoll [PORT [HOST]]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    int lfd = listen_on(host, port);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    static int listener_tag;
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = &listener_tag };
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    fprintf(stderr, "echo_epoll: listening on %s:%d\n", host, port);

    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(epfd, evs, 512, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &listener_tag)
                accept_all(lfd);
            else
                on_event(evs[i].data.ptr, evs[i].events);
        }
    }
}
