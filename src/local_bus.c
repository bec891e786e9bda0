/* local_bus.c — a worker's link to the topic broker (see local_bus.h). */
#include "local_bus.h"
#include "bus_wire.h"
#include "log.h"
#include "xalloc.h"
#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct local_bus {
    uv_pipe_t pipe;
    uv_check_t check;          /* flushes what this iteration queued ... */
    uv_prepare_t prepare;      /* ... and what timers queued, before the poll */
    uv_write_t wreq;
    local_bus_cbs cbs;
    void *ud;
    unsigned worker;
    bytes out;                 /* queued, not yet handed to libuv */
    bytes writing;             /* handed to libuv (wreq in flight) */
    bytes in;                  /* read, not yet a whole frame */
    bool open, in_write;
    int handles;               /* open libuv handles: freed when 0 after close */
};

bool local_bus_open(const local_bus *b) { return b && b->open; }

static void flush(local_bus *b);

static void on_written(uv_write_t *req, int status)
{
    local_bus *b = req->data;
    b->in_write = false;
    b->writing.len = 0;
    if (status < 0 && b->open) {
        log_error("topic link to the main process: %s; topics are this worker's only from now on",
                  uv_strerror(status));
        local_bus_close(b);
        return;
    }
    if (b->open) flush(b);
}

/* Hands what is queued to libuv: one write for everything published since
 * the last one. */
static void flush(local_bus *b)
{
    if (!b->open || b->in_write || b->out.len == 0) return;
    bytes t = b->writing;
    b->writing = b->out;
    b->out = t;
    b->out.len = 0;
    uv_buf_t buf = uv_buf_init((char *)b->writing.data, (unsigned)b->writing.len);
    b->in_write = true;
    int r = uv_write(&b->wreq, (uv_stream_t *)&b->pipe, &buf, 1, on_written);
    if (r < 0) {
        b->in_write = false;
        log_error("topic link to the main process: %s", uv_strerror(r));
        local_bus_close(b);
    }
}

static void on_check(uv_check_t *h) { flush(h->data); }
static void on_prepare(uv_prepare_t *h) { flush(h->data); }

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    local_bus *b = h->data;
    bytes_reserve(&b->in, 64 * 1024, 64 * 1024);
    *buf = uv_buf_init((char *)b->in.data + b->in.len, (unsigned)(b->in.cap - b->in.len));
}

static void deliver(local_bus *b)
{
    size_t at = 0;
    long long size = 0;
    while (b->open && (size = bus_frame_size(b->in.data + at, b->in.len - at)) > 0) {
        bus_msg m;
        if (!bus_decode(b->in.data + at, (size_t)size, &m)) {
            size = -1;
            break;
        }
        /* The callbacks may publish (appending to out, never to in). */
        switch (m.type) {
        case BUS_PUBLISH: b->cbs.message(b->ud, m.topic, m.tlen, m.opcode, m.except, m.data, m.len); break;
        case BUS_COUNT: b->cbs.count(b->ud, m.worker, m.topic, m.tlen, m.count); break;
        case BUS_GONE: b->cbs.gone(b->ud, m.worker); break;
        case BUS_RESYNC: b->cbs.resync(b->ud); break;
        default: break;
        }
        at += (size_t)size;
    }
    if (size < 0) {
        log_error("topic link to the main process: a malformed message; closing it");
        local_bus_close(b);
        return;
    }
    memmove(b->in.data, b->in.data + at, b->in.len - at);
    b->in.len -= at;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    local_bus *b = st->data;
    if (n > 0) {
        b->in.len += (size_t)n;
        deliver(b);
        return;
    }
    if (n < 0 && b->open) {
        log_error("topic link to the main process closed (%s); topics are this worker's only from now on",
                  uv_strerror((int)n));
        local_bus_close(b);
    }
}

local_bus *local_bus_new(uv_loop_t *loop, int fd, unsigned worker, const local_bus_cbs *cbs, void *ud)
{
    local_bus *b = xcalloc(sizeof *b);
    b->cbs = *cbs;
    b->ud = ud;
    b->worker = worker;
    b->wreq.data = b;
    uv_pipe_init(loop, &b->pipe, 0);
    b->handles = 1;
    b->pipe.data = b;
    if (uv_pipe_open(&b->pipe, fd) != 0 || uv_read_start((uv_stream_t *)&b->pipe, on_alloc, on_read) != 0) {
        log_error("topic link to the main process: cannot use fd %d", fd);
        local_bus_close(b);   /* frees it */
        return NULL;
    }
    uv_check_init(loop, &b->check);
    uv_prepare_init(loop, &b->prepare);
    b->check.data = b->prepare.data = b;
    b->handles = 3;
    /* Both unreferenced: they must not keep a stopping worker's loop alive. */
    uv_check_start(&b->check, on_check);
    uv_prepare_start(&b->prepare, on_prepare);
    uv_unref((uv_handle_t *)&b->check);
    uv_unref((uv_handle_t *)&b->prepare);
    uv_unref((uv_handle_t *)&b->pipe);
    b->open = true;
    return b;
}

bool local_bus_publish(local_bus *b, const char *topic, size_t tlen, uint8_t opcode, uint64_t except,
                       const uint8_t *data, size_t len)
{
    assert(tlen <= BUS_MAX_TOPIC);
    if (!local_bus_open(b) || b->out.len + len > LOCAL_BUS_BACKLOG) return false;
    bus_put_publish(&b->out, opcode, except, topic, tlen, data, len);
    return true;
}

void local_bus_count(local_bus *b, const char *topic, size_t tlen, uint32_t count)
{
    if (!local_bus_open(b) || tlen > BUS_MAX_TOPIC) return;
    bus_put_count(&b->out, b->worker, topic, tlen, count);
}

static void on_closed(uv_handle_t *h)
{
    local_bus *b = h->data;
    if (--b->handles > 0) return;
    free(b->out.data);
    free(b->writing.data);
    free(b->in.data);
    free(b);
}

void local_bus_close(local_bus *b)
{
    if (!b || uv_is_closing((uv_handle_t *)&b->pipe)) return;
    b->open = false;
    uv_close((uv_handle_t *)&b->pipe, on_closed);
    if (b->handles == 3) {
        uv_close((uv_handle_t *)&b->check, on_closed);
        uv_close((uv_handle_t *)&b->prepare, on_closed);
    }
}
