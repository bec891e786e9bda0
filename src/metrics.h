/* metrics.h — counters of one worker, and their Prometheus text form. */
#ifndef LUAWS_METRICS_H
#define LUAWS_METRICS_H

#include <stdint.h>
#include "bytes.h"
#include "ws_stats.h"

typedef struct metrics {
    uint64_t connections_total;   /* accepted or opened */
    uint64_t websockets_total;    /* upgraded or connected out */
    uint64_t http_requests_total;
    wss_stats ws;                 /* messages and bytes in and out, protocol errors */
    uint64_t reloads, reload_failures;
    uint64_t script_errors;
    uint64_t rate_limited;        /* --rate: pauses, or closes */
    uint64_t ip_refused;          /* --max-conns-per-ip: 503s */
    uint64_t socket_writes;       /* writes offered to the kernel, and writes queued in libuv */
    uint64_t lua_heap_bytes;      /* a gauge: the Lua state's heap now (the allocator keeps it) */
} metrics;

struct server;
/* Appends the Prometheus text exposition of s's metrics to out. */
void metrics_render(const struct server *s, bytes *out);

#endif
