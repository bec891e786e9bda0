/* broker.c — relays topic messages between the workers of one machine
 * (see broker.h for why, and bus_wire.h for the format). */
#include "broker.h"
#include "bus_wire.h"
#include "log.h"
#include "xalloc.h"
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* A worker's queue is a list of blocks, each freed once written: what it
 * holds is what waits, never more (a single growing buffer would keep the
 * written part resident too). */
typedef struct block {
    struct block *next;
    size_t len, off, cap;    /* written up to off */
    uint8_t data[];
} block;
#define BLOCK_MIN (256u << 10)

typedef struct slot {
    int fd;                 /* our end; -1: no worker */
    bytes in;               /* read, not yet a whole frame */
    block *head, *tail;     /* to write */
    size_t queued;          /* bytes in the blocks, not yet written */
    bool dropping;          /* over BROKER_BACKLOG: warned once */
} slot;

struct broker {
    int n;
    slot *slots;
};

static bool slot_live(const slot *s) { return s->fd >= 0; }

broker *broker_new(int nworkers)
{
    broker *b = xcalloc(sizeof *b);
    b->n = nworkers;
    b->slots = xcalloc((size_t)nworkers * sizeof *b->slots);
    for (int i = 0; i < nworkers; i++) b->slots[i].fd = -1;
    return b;
}

static void slot_clear(slot *s)
{
    if (s->fd >= 0) close(s->fd);
    free(s->in.data);
    while (s->head) {
        block *b = s->head;
        s->head = b->next;
        free(b);
    }
    *s = (slot){.fd = -1};
}

/* Queues frame f (size bytes) for worker s, unless it is too far behind. */
static void enqueue(broker *b, slot *s, const uint8_t *f, size_t size)
{
    if (!slot_live(s)) return;
    if (s->queued + size > BROKER_BACKLOG) {
        if (!s->dropping)
            log_warn("worker %d is not reading topic messages (%zu bytes queued): dropping its messages",
                     (int)(s - b->slots) + 1, s->queued);
        s->dropping = true;
        return;
    }
    s->dropping = false;
    block *t = s->tail;
    if (!t || t->cap - t->len < size) {
        size_t cap = size > BLOCK_MIN ? size : BLOCK_MIN;
        t = xmalloc(sizeof *t + cap);
        *t = (block){.cap = cap};
        if (s->tail) s->tail->next = t;
        else s->head = t;
        s->tail = t;
    }
    memcpy(t->data + t->len, f, size);
    t->len += size;
    s->queued += size;
}

static void to_others(broker *b, int except, const uint8_t *f, size_t size)
{
    for (int i = 0; i < b->n; i++)
        if (i != except) enqueue(b, &b->slots[i], f, size);
}

int broker_attach(broker *b, int i)
{
    assert(i >= 0 && i < b->n);
    slot_clear(&b->slots[i]);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        log_error("worker %d: no topic link to the other workers: socketpair: %s", i + 1, strerror(errno));
        return -1;
    }
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    b->slots[i].fd = sv[0];
    bytes resync = {0};
    bus_begin(&resync, BUS_RESYNC, 0);
    to_others(b, i, resync.data, resync.len);
    free(resync.data);
    return sv[1];
}


void broker_detach(broker *b, int i)
{
    if (!slot_live(&b->slots[i])) return;
    slot_clear(&b->slots[i]);
    bytes gone = {0};
    bus_put_gone(&gone, (unsigned)i);
    to_others(b, i, gone.data, gone.len);
    free(gone.data);
}

int broker_pollfds(const broker *b, struct pollfd *p)
{
    int np = 0;
    for (int i = 0; i < b->n; i++) {
        const slot *s = &b->slots[i];
        if (!slot_live(s)) continue;
        p[np++] = (struct pollfd){.fd = s->fd, .events = (short)(POLLIN | (s->queued ? POLLOUT : 0))};
    }
    return np;
}

/* Relays every whole frame worker i sent; false if it sent garbage. */
static bool relay(broker *b, int i)
{
    slot *s = &b->slots[i];
    size_t at = 0;
    long long size;
    while ((size = bus_frame_size(s->in.data + at, s->in.len - at)) > 0) {
        const uint8_t *f = s->in.data + at;
        bus_msg m;
        if (!bus_decode(f, (size_t)size, &m)) return false;
        if (m.type == BUS_PUBLISH) {
            /* The sender too: its own subscribers get it in this order. */
            for (int j = 0; j < b->n; j++) enqueue(b, &b->slots[j], f, (size_t)size);
        } else if (m.type == BUS_COUNT && m.worker == (unsigned)i) {
            to_others(b, i, f, (size_t)size);
        } else {
            return false;
        }
        at += (size_t)size;
    }
    if (size < 0) return false;
    memmove(s->in.data, s->in.data + at, s->in.len - at);
    s->in.len -= at;
    return true;
}

/* Reads what worker i sent (at most 1 MiB a round, to stay fair to the
 * others); false at EOF or on an error (the worker is going away). */
static bool read_some(slot *s)
{
    for (size_t total = 0; total < (1u << 20);) {
        bytes_reserve(&s->in, 64 * 1024, 64 * 1024);
        ssize_t n = read(s->fd, s->in.data + s->in.len, s->in.cap - s->in.len);
        if (n > 0) {
            s->in.len += (size_t)n;
            total += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        if (n < 0 && errno == EINTR) continue;
        return false;
    }
    return true;
}

static void write_some(slot *s)
{
    while (s->queued) {
        struct iovec iov[64];
        int n = 0;
        for (block *b = s->head; b && n < 64; b = b->next)
            iov[n++] = (struct iovec){.iov_base = b->data + b->off, .iov_len = b->len - b->off};
        ssize_t w = writev(s->fd, iov, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;   /* EAGAIN: POLLOUT next time; an error: POLLHUP/EOF detaches it */
        s->queued -= (size_t)w;
        while (w > 0) {
            block *b = s->head;
            size_t left = b->len - b->off;
            if ((size_t)w < left) {
                b->off += (size_t)w;
                break;
            }
            w -= (ssize_t)left;
            s->head = b->next;
            if (!s->head) s->tail = NULL;
            free(b);
        }
    }
}

void broker_service(broker *b, const struct pollfd *p, int np)
{
    for (int k = 0; k < np; k++) {
        if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        int i;
        for (i = 0; i < b->n && b->slots[i].fd != p[k].fd; i++) {}
        if (i == b->n) continue;
        slot *s = &b->slots[i];
        bool open = read_some(s);
        if (!relay(b, i)) {
            log_error("worker %d sent a malformed topic message: dropping its link", i + 1);
            open = false;
        }
        if (!open) broker_detach(b, i);
    }
    for (int i = 0; i < b->n; i++)
        if (slot_live(&b->slots[i])) write_some(&b->slots[i]);
}

void broker_free(broker *b)
{
    if (!b) return;
    for (int i = 0; i < b->n; i++) slot_clear(&b->slots[i]);
    free(b->slots);
    free(b);
}
