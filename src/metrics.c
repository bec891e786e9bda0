/* metrics.c — Prometheus text for GET /metrics (--metrics).
 *
 * With --workers N every worker keeps its counters in its slot of the
 * memory the main process shares (server.h: worker_slot), so whichever
 * worker the kernel hands the scrape answers for the whole machine: each
 * metric once without labels (the sum over workers) and once per worker
 * with a worker="N" label. Sum one or the other, never both. */
#include "metrics.h"
#include "xalloc.h"
#include "server.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

static void put(bytes *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char line[512];
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    bytes_append(out, line, (size_t)n);
}

typedef struct metric_def {
    const char *name, *type, *help;
    size_t offset;            /* of the uint64_t in metrics; SIZE_MAX: open connections */
} metric_def;

#define M(field) offsetof(metrics, field)
static const metric_def defs[] = {
    {"connections", "gauge", "Open connections.", SIZE_MAX},
    {"connections_total", "counter", "Connections accepted or opened.", M(connections_total)},
    {"websockets_total", "counter", "WebSockets opened.", M(websockets_total)},
    {"http_requests_total", "counter", "Plain HTTP requests answered.", M(http_requests_total)},
    {"messages_received_total", "counter", "WebSocket messages received.", M(ws.messages_in)},
    {"received_bytes_total", "counter", "Payload bytes of messages received.", M(ws.bytes_in)},
    {"messages_sent_total", "counter", "WebSocket messages sent.", M(ws.messages_out)},
    {"sent_bytes_total", "counter", "Payload bytes of messages sent.", M(ws.bytes_out)},
    {"reloads_total", "counter", "Successful hot reloads.", M(reloads)},
    {"reload_failures_total", "counter", "Hot reloads that failed to load.", M(reload_failures)},
    {"script_errors_total", "counter", "Errors raised by Lua events and handlers.", M(script_errors)},
    {"protocol_errors_total", "counter", "Connections failed for protocol violations.", M(ws.protocol_errors)},
    {"rate_limited_total", "counter", "Times a socket hit --rate (paused or closed).", M(rate_limited)},
    {"ip_refused_total", "counter", "Connections refused by --max-conns-per-ip.", M(ip_refused)},
    {"socket_writes_total", "counter", "Writes to sockets: offered to the kernel, or queued (batched per loop iteration).", M(socket_writes)},
    {"lua_heap_bytes", "gauge", "Bytes in the Lua heap: live objects and garbage not yet collected.",
     M(lua_heap_bytes)},
};

/* Worker i's value of d (this worker's own when there are no slots). */
static unsigned long long value(const struct server *s, int i, const metric_def *d)
{
    if (!s->slots) {
        if (d->offset == SIZE_MAX) return s->nconns;
        return *(const uint64_t *)((const char *)s->metrics + d->offset);
    }
    const worker_slot *w = &s->slots[i];
    if (d->offset == SIZE_MAX) return __atomic_load_n(&w->connections, __ATOMIC_RELAXED);
    return __atomic_load_n((const uint64_t *)((const char *)&w->metrics + d->offset), __ATOMIC_RELAXED);
}

void metrics_render(const struct server *s, bytes *out)
{
    int n = s->slots ? s->nslots : 1;
    for (size_t k = 0; k < sizeof defs / sizeof *defs; k++) {
        const metric_def *d = &defs[k];
        put(out, "# HELP luaws_%s %s\n# TYPE luaws_%s %s\n", d->name, d->help, d->name, d->type);
        unsigned long long sum = 0;
        for (int i = 0; i < n; i++) sum += value(s, i, d);
        put(out, "luaws_%s %llu\n", d->name, sum);
        for (int i = 0; i < n; i++) {
            unsigned w = s->slots ? (unsigned)i + 1 : (unsigned)s->id_base + 1;
            put(out, "luaws_%s{worker=\"%u\"} %llu\n", d->name, w, value(s, i, d));
        }
    }
}
