/* metrics.c — Prometheus text for GET /metrics (--metrics). Each worker
 * answers for itself, labelled with its number: sum over workers. */
#include "metrics.h"
#include "xalloc.h"
#include "server.h"
#include <stdarg.h>
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

static void metric(bytes *out, const char *name, const char *type, const char *help, unsigned worker,
                   unsigned long long value)
{
    put(out, "# HELP luaws_%s %s\n# TYPE luaws_%s %s\nluaws_%s{worker=\"%u\"} %llu\n", name, help, name, type,
        name, worker, value);
}

void metrics_render(const struct server *s, bytes *out)
{
    const metrics *m = &s->metrics;
    unsigned w = (unsigned)s->id_base + 1;
    metric(out, "connections", "gauge", "Open connections.", w, s->nconns);
    metric(out, "connections_total", "counter", "Connections accepted or opened.", w, m->connections_total);
    metric(out, "websockets_total", "counter", "WebSockets opened.", w, m->websockets_total);
    metric(out, "http_requests_total", "counter", "Plain HTTP requests answered.", w, m->http_requests_total);
    metric(out, "messages_received_total", "counter", "WebSocket messages received.", w, m->ws.messages_in);
    metric(out, "received_bytes_total", "counter", "Payload bytes of messages received.", w, m->ws.bytes_in);
    metric(out, "messages_sent_total", "counter", "WebSocket messages sent.", w, m->ws.messages_out);
    metric(out, "sent_bytes_total", "counter", "Payload bytes of messages sent.", w, m->ws.bytes_out);
    metric(out, "reloads_total", "counter", "Successful hot reloads.", w, m->reloads);
    metric(out, "reload_failures_total", "counter", "Hot reloads that failed to load.", w, m->reload_failures);
    metric(out, "script_errors_total", "counter", "Errors raised by Lua events and handlers.", w, m->script_errors);
    metric(out, "protocol_errors_total", "counter", "Connections failed for protocol violations.", w,
           m->ws.protocol_errors);
}
