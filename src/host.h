/* host.h — how the core reaches whatever drives it: the Lua binding today,
 * a test harness or an embedding tomorrow.
 *
 * The core (transport and protocol) never calls the binding by name: it
 * calls these function pointers, registered once when a worker starts
 * (server_run). Each is called from a libuv callback or from a core
 * function the host itself called; a host must therefore expect to be
 * re-entered (an event raised while it is busy) and may defer the work
 * (the Lua binding queues it, see lua_internal.h). */
#ifndef LUAWS_HOST_H
#define LUAWS_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct conn conn;
typedef struct server server;
typedef struct http_request http_request;

typedef struct host_ops {
    /* Creates the host for a worker (loads the script). NULL and a
     * malloc'd *err naming file:line on failure. */
    void *(*create)(server *s, const char *script, char **err);
    void (*destroy)(void *host);
    /* The server is stopping: end every timer so the loop can finish. */
    void (*stop)(void *host);

    /* A complete, checked HTTP request on c. The host answers it with
     * conn_respond, or upgrades it with conn_upgrade (then open follows). */
    void (*request)(void *host, conn *c, const http_request *req);
    /* Optional: the whole answer to an outbound upgrade request (any
     * status), before it is checked; on a refusal, error and close follow. */
    void (*response)(void *host, conn *c, const http_request *res);
    /* The WebSocket is open: after conn_upgrade, or a luaws.connect's 101. */
    void (*open)(void *host, conn *c);
    void (*message)(void *host, conn *c, uint8_t opcode, const uint8_t *data, size_t len);
    /* Returns false when the host does not handle pings: the core answers. */
    bool (*ping)(void *host, conn *c, const uint8_t *data, size_t len);
    void (*pong)(void *host, conn *c, const uint8_t *data, size_t len);
    void (*error)(void *host, conn *c, const char *why);
    /* Once per connection that reached the host (upgraded or luaws.connect). */
    void (*close)(void *host, conn *c, uint16_t code, const char *reason);
    /* The write queue fell under the high-water mark. */
    void (*writable)(void *host, conn *c);
    /* c is about to be freed: drop every pointer to it. */
    void (*gone)(void *host, conn *c);

    /* A message for a topic came through Redis (payload: kind byte first). */
    void (*topic_message)(void *host, const char *topic, size_t tlen, const uint8_t *payload, size_t len);
    /* --workers N: a publish relayed by the main process, from any worker
     * (this one too), in the one order every worker sees. */
    void (*topic_deliver)(void *host, const char *topic, size_t tlen, uint8_t opcode, uint64_t except,
                          const uint8_t *data, size_t len);
    /* --workers N: another worker's subscriber count of a topic changed;
     * worker gone: all its counts are 0 (count is then ignored). */
    void (*topic_count)(void *host, unsigned worker, const char *topic, size_t tlen, uint32_t count);
    void (*topic_worker_gone)(void *host, unsigned worker);
    /* --workers N: a worker (re)started: tell it every count again. */
    void (*topic_resync)(void *host);
    /* Loads the script again; -1 if the new code fails (the old keeps serving). */
    int (*reload)(void *host, const char *why, bool quiet_repeat);
    /* The files to watch for hot reload (malloc'd array of malloc'd paths). */
    char **(*watched_files)(void *host, size_t *n);
    /* Optional: many connections have gone; collect what the host keeps as
     * garbage now (a full Lua collection). Called from the housekeeping
     * timer: no host code is running, though events may be suspended. */
    void (*collect)(void *host);
} host_ops;

/* Completion of an asynchronous write: status 0 or a libuv error code.
 * Whoever is handed one calls it exactly once. */
typedef void (*write_done_fn)(void *ud, int status);

#endif
