/* bus_wire.h — the messages between workers and the topic broker of the
 * main process (broker.c, local_bus.c). Pure: encoding and decoding only.
 *
 * A stream of frames on a unix socketpair per worker:
 *     u32 length of the body (big-endian) | u8 type | body
 * Types and bodies (integers big-endian):
 *   BUS_PUBLISH  u8 opcode | u64 socket id skipped (0: none) | u16 topic length | topic | message
 *                worker -> broker -> every worker, the sender included: the
 *                broker's order is the one order every worker delivers in.
 *   BUS_COUNT    u16 worker | u16 topic length | topic | u32 subscribers
 *                worker -> broker -> every other worker: how many sockets of
 *                that worker are subscribed now (for luaws.subscribers).
 *   BUS_GONE     u16 worker   broker -> every worker: it died; its counts are 0.
 *   BUS_RESYNC   (empty)      broker -> every worker: a worker (re)started;
 *                send all your counts again. */
#ifndef LUAWS_BUS_WIRE_H
#define LUAWS_BUS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "bytes.h"
#include "xalloc.h"

enum { BUS_PUBLISH = 'P', BUS_COUNT = 'C', BUS_GONE = 'G', BUS_RESYNC = 'R' };
#define BUS_HEADER 5
#define BUS_MAX_BODY (1u << 30)      /* a larger length means a broken peer */
#define BUS_MAX_TOPIC 0xffffu

static inline void bus_put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void bus_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void bus_put64(uint8_t *p, uint64_t v)
{
    bus_put32(p, (uint32_t)(v >> 32));
    bus_put32(p + 4, (uint32_t)v);
}
static inline uint32_t bus_get16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t bus_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t bus_get64(const uint8_t *p) { return (uint64_t)bus_get32(p) << 32 | bus_get32(p + 4); }

/* Appends a frame's header to out; the caller appends body_len bytes. */
static inline void bus_begin(bytes *out, uint8_t type, size_t body_len)
{
    uint8_t h[BUS_HEADER];
    bus_put32(h, (uint32_t)body_len);
    h[4] = type;
    bytes_append(out, h, sizeof h);
}

/* A whole frame at p (len bytes available): its total size, 0 if more
 * bytes are needed, or -1 if the length is impossible. */
static inline long long bus_frame_size(const uint8_t *p, size_t len)
{
    if (len < BUS_HEADER) return 0;
    uint32_t body = bus_get32(p);
    if (body > BUS_MAX_BODY) return -1;
    return len >= BUS_HEADER + (size_t)body ? (long long)(BUS_HEADER + body) : 0;
}

typedef struct bus_msg {
    uint8_t type;
    unsigned worker;          /* BUS_COUNT, BUS_GONE */
    uint8_t opcode;           /* BUS_PUBLISH */
    uint64_t except;          /* BUS_PUBLISH: the socket that does not get it, or 0 */
    const char *topic;        /* BUS_PUBLISH, BUS_COUNT */
    size_t tlen;
    const uint8_t *data;      /* BUS_PUBLISH */
    size_t len;
    uint32_t count;           /* BUS_COUNT */
} bus_msg;

/* Decodes one whole frame (as bus_frame_size measured it); false if its
 * body does not match its type. The message points into the frame. */
static inline bool bus_decode(const uint8_t *f, size_t size, bus_msg *m)
{
    const uint8_t *b = f + BUS_HEADER;
    size_t n = size - BUS_HEADER;
    memset(m, 0, sizeof *m);
    m->type = f[4];
    switch (m->type) {
    case BUS_PUBLISH:
        if (n < 11 || n - 11 < bus_get16(b + 9)) return false;
        m->opcode = b[0];
        m->except = bus_get64(b + 1);
        m->tlen = bus_get16(b + 9);
        m->topic = (const char *)b + 11;
        m->data = b + 11 + m->tlen;
        m->len = n - 11 - m->tlen;
        return true;
    case BUS_COUNT:
        if (n < 8 || n - 8 != bus_get16(b + 2)) return false;
        m->worker = bus_get16(b);
        m->tlen = bus_get16(b + 2);
        m->topic = (const char *)b + 4;
        m->count = bus_get32(b + 4 + m->tlen);
        return true;
    case BUS_GONE:
        if (n != 2) return false;
        m->worker = bus_get16(b);
        return true;
    case BUS_RESYNC:
        return n == 0;
    default:
        return false;
    }
}

static inline void bus_put_publish(bytes *out, uint8_t opcode, uint64_t except, const char *topic, size_t tlen,
                                   const uint8_t *data, size_t len)
{
    uint8_t h[11] = {opcode};
    bus_put64(h + 1, except);
    bus_put16(h + 9, (uint32_t)tlen);
    bus_begin(out, BUS_PUBLISH, 11 + tlen + len);
    bytes_append(out, h, 11);
    bytes_append(out, topic, tlen);
    bytes_append(out, data, len);
}

static inline void bus_put_count(bytes *out, unsigned worker, const char *topic, size_t tlen, uint32_t count)
{
    uint8_t h[4], c[4];
    bus_put16(h, worker);
    bus_put16(h + 2, (uint32_t)tlen);
    bus_put32(c, count);
    bus_begin(out, BUS_COUNT, 8 + tlen);
    bytes_append(out, h, 4);
    bytes_append(out, topic, tlen);
    bytes_append(out, c, 4);
}

static inline void bus_put_gone(bytes *out, unsigned worker)
{
    uint8_t w[2];
    bus_put16(w, worker);
    bus_begin(out, BUS_GONE, 2);
    bytes_append(out, w, 2);
}

#endif
