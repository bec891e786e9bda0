/* server.h — a worker: the loop, the listeners, the connections it owns,
 * housekeeping (timeouts, pings), and stopping on a signal. */
#ifndef LUAWS_SERVER_H
#define LUAWS_SERVER_H

#include <uv.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "config.h"
#include "conn.h"
#include "client.h"
#include "ws.h"
#include "metrics.h"
#include "host.h"
#include "ws_session.h"
#include "clock.h"

typedef struct lua_host lua_host;

/* A worker's heartbeat, in memory shared with the main process of
 * --workers N: when the worker entered Lua (0: it is not in Lua), and
 * what for. The main process replaces a worker stuck past a hard limit,
 * in a C call --script-timeout cannot interrupt (workers.c). */
typedef struct worker_beat {
    uint64_t busy_since_ms;   /* uv_hrtime() in ms; written with __atomic */
    char what[48];
} worker_beat;

/* What each worker of --workers N shows the main process and the other
 * workers, in one shared mapping made by the main process (workers.c).
 * A worker alone writes its own slot; anyone may read any slot, so a
 * reader may see a counter a moment old (64-bit aligned stores: never
 * torn on the machines we build for). The main process zeroes beat and
 * connections when it starts a worker; the counters carry on, so they
 * stay monotonic when a worker is replaced. */
typedef struct worker_slot {
    worker_beat beat;
    metrics metrics;          /* this worker's counters */
    uint64_t connections;     /* open now */
} worker_slot;
typedef struct task task;

typedef struct listener {
    uv_tcp_t tcp;
    struct server *srv;
    tls_server *tls;          /* NULL: plain ws:// */
    unsigned proxy;           /* PROXY protocol versions expected first; 0: none */
    char host[64];
    int port;
    int host_tag;             /* 0: the script's; else the host's own (luaws test's fake remotes) */
} listener;

typedef struct server {
    uv_loop_t *loop;
    listener listeners[MAX_LISTENERS];
    int nlisteners;
    uv_signal_t sig_term, sig_int;
    wclock clock;             /* time and timers (clock.h) */
    wtimer housekeeping;      /* timeouts and pings, for every connection */
    uv_timer_t shutdown_timer;
    const config *cfg;
    const host_ops *host;     /* whatever drives the core (host.h) */
    void *host_ud;
    conn *conns;              /* every live connection, for shutdown */
    size_t nconns;
    size_t conns_peak;        /* the most connections since memory was last given back ... */
    size_t conns_settled;     /* ... and how many there were then */
    uint64_t shrink_activity; /* activity at the last housekeeping tick (quiet: unchanged) */
    uint64_t next_id;
    uint64_t id_base, id_step; /* socket ids: unique across workers */
    bool stopping;
    bool draining;            /* SIGTERM seen, --drain-delay running: serving, /health 503 */
    int drain_signal;
    uv_timer_t drain_timer;
    pmd_worker pmd;
    wss_config wss_cfg;       /* what every WebSocket session of the worker shares */
    struct reloader *reloader;
    struct redis_bus *bus;    /* --redis: topics across workers and machines */
    metrics *metrics;         /* this worker's counters: in its slot, or own_metrics */
    metrics own_metrics;
    worker_slot *slots;       /* every worker's (--workers N), or NULL */
    int nslots;
    worker_slot *slot;        /* this worker's, or NULL */
    struct local_bus *lbus;   /* --workers N: topics across the machine's workers */
    /* --max-conns-per-ip: connections per hash bucket of the client address,
     * one column of IP_BUCKETS per worker (shared with the other workers
     * under --workers N, written only by the column's worker). */
    uint32_t *ip_counts;
    int ip_cols, ip_col;
    worker_beat *beat;        /* NULL: no main process watches (--workers 1) */
    size_t buffered_total;    /* bytes held in message buffers of every session (--max-buffered-total) */
    uint64_t activity;        /* reads, writes and closes done: luaws test waits until it stops */
    /* Connections with a batch to send at the end of this loop iteration
     * (conn.c; NULL: taken off; sent from dirty_head on, a pass at a time),
     * written by these two handles: prepare for what timers sent, before
     * the poll; check for what I/O sent, after it. flush_idle is active
     * while a pass left some: the poll then does not block. */
    conn **dirty;
    uint32_t dirty_head, ndirty, dirty_cap;
    struct conn_out *spare_out;  /* a batch kept for the next connection that sends */
    uv_prepare_t flush_prepare;
    uv_check_t flush_check;
    uv_idle_t flush_idle;
    void (*on_empty)(struct server *s);  /* the last connection was freed */
    /* One read buffer serves every connection: libuv calls alloc and read
     * back to back, and a connection that cannot consume all it read keeps
     * the rest in its own pending buffer. Idle connections own no buffer. */
    char readbuf[64 * 1024];
    char plainbuf[32 * 1024]; /* decrypted TLS records */
} server;

int listen_socket(const char *host, int port, bool reuseport, bool do_listen, int *bound_port,
                  char *err, size_t errlen);
/* Runs one worker on a bound socket until it is told to stop; writes a
 * byte to ready_fd (if >= 0) once it serves. Returns the exit code. */
int server_run(const config *cfg, const host_ops *host, const int *fds, int worker, int nworkers, bool watch,
               int ready_fd);
/* luaws test: a worker with no listening socket and the spec's clock. The
 * host is created with no script (NULL) and run(host, argc, argv) runs the
 * specs; then whatever is still open is closed. Returns run's result. */
int server_test(const config *cfg, const host_ops *host, int (*run)(void *host_ud, int argc, char **argv),
                int argc, char **argv);
/* The id of the next connection (unique across workers). */
static inline uint64_t server_take_id(server *s) { return s->id_base + 1 + s->id_step * s->next_id++; }
/* The worker's time in ms (the spec's under luaws test). */
static inline uint64_t server_now(const server *s) { return wclock_now(&s->clock); }
/* SIGHUP: certificates and keys are read again. */
void server_reload_tls(server *s);
void server_stop(server *s);
/* Drops every connection now, with no close frame (on_close 1006). */
void server_drop_all(server *s);
/* The worker entered Lua for what (a static string) / left it. */
static inline void server_busy(server *s, const char *what, uint64_t now_ms)
{
    if (!s->beat) return;
    size_t n = strlen(what);
    if (n >= sizeof s->beat->what) n = sizeof s->beat->what - 1;
    memcpy(s->beat->what, what, n);
    s->beat->what[n] = '\0';
    __atomic_store_n(&s->beat->busy_since_ms, now_ms ? now_ms : 1, __ATOMIC_RELEASE);
}
static inline void server_idle(server *s)
{
    if (s->beat) __atomic_store_n(&s->beat->busy_since_ms, 0, __ATOMIC_RELEASE);
}
/* workers.c sets these in a worker before server_run: every worker's
 * slot, how many, and the worker's end of its link to the broker. */
extern worker_slot *server_slots;
extern int server_nslots;
extern int server_broker_fd;
extern uint32_t *server_ip_counts;   /* NULL: --max-conns-per-ip off, or one worker */

/* --max-conns-per-ip counts connections per bucket of a hash of the
 * address: two addresses rarely share one of 65,536 buckets, and then
 * share the limit (documented). */
#define IP_BUCKETS (1u << 16)
/* The bucket of an address (the port is not part of it). */
static inline uint32_t ip_bucket(const net_addr *peer) { return addr_hash(peer) & (IP_BUCKETS - 1); }
/* Connections from the addresses of bucket b, on every worker. */
static inline uint32_t server_ip_count(const server *s, uint32_t b)
{
    uint32_t n = 0;
    for (int i = 0; i < s->ip_cols; i++) n += __atomic_load_n(&s->ip_counts[(size_t)i * IP_BUCKETS + b], __ATOMIC_RELAXED);
    return n;
}
static inline void server_ip_add(server *s, uint32_t b, int delta)
{
    __atomic_add_fetch(&s->ip_counts[(size_t)s->ip_col * IP_BUCKETS + b], (uint32_t)delta, __ATOMIC_RELAXED);
}
/* Open connections: of the machine with --workers N, else of this worker. */
static inline size_t server_connections(const server *s)
{
    if (!s->slots) return s->nconns;
    uint64_t n = 0;
    for (int i = 0; i < s->nslots; i++) n += __atomic_load_n(&s->slots[i].connections, __ATOMIC_RELAXED);
    return (size_t)n;
}
/* A connection opened or closed: keeps the worker's slot true. */
static inline void server_count_conn(server *s, int delta)
{
    s->nconns += (size_t)(ptrdiff_t)delta;
    if (s->nconns > s->conns_peak) s->conns_peak = s->nconns;
    if (s->slot) __atomic_store_n(&s->slot->connections, (uint64_t)s->nconns, __ATOMIC_RELAXED);
}
void log_startup(const config *cfg, int workers);

#endif
