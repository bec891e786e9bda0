/* config.h — what the command line sets (main.c fills it, every layer reads it). */
#ifndef LUAWS_CONFIG_H
#define LUAWS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include "deflate.h"
#include "tls.h"
#include "proxy_proto.h"   /* PROXY_V1, PROXY_V2 */

struct cidr_list;

#define MAX_LISTENERS 8
#define DRAIN_DELAY_UNSET ((unsigned)-1)

typedef struct listen_spec {
    char host[64];
    int port;                 /* 0: the kernel picks; resolved before workers start */
    bool tls;                 /* wss:// */
    tls_server *tls_ctx;      /* made before any fork: workers share ticket keys */
    unsigned proxy;           /* PROXY protocol versions expected first (bits); 0: none */
} listen_spec;

typedef struct config {
    const char *host;
    int port;
    listen_spec listens[MAX_LISTENERS];
    int nlistens;
    const char *tls_cert, *tls_key, *tls_ciphers;
    const char *script;
    size_t max_message;       /* bytes; 1009 beyond */
    size_t max_header;        /* request line + headers; 431 beyond */
    size_t max_body;          /* plain HTTP request body; 413 beyond */
    size_t write_high_water;  /* sync send yields while more is queued */
    unsigned close_timeout_ms;
    int log_level;
    unsigned handshake_timeout_ms; /* a whole request must arrive within this; 408 */
    unsigned ping_interval_ms;     /* 0: no automatic pings */
    unsigned shutdown_timeout_ms;  /* SIGTERM: drain at most this long */
    unsigned script_timeout_ms;    /* one event may run this long; 0: no limit */
    size_t script_memory;          /* bytes the Lua state may use; 0: no limit */
    size_t max_connections;        /* 503 beyond */
    size_t max_backpressure;       /* queued bytes; 1008 beyond */
    size_t max_buffered_total;     /* per worker, bytes in incomplete messages; the largest holder gets 1009 beyond */
    const char **origins;          /* allowed Origin values; NULL: any */
    size_t norigins;
    bool console;             /* GET / shows the browser console */
    bool strict;              /* unknown keys in listener/response tables are errors, not warnings */
    bool metrics;             /* GET /metrics answers Prometheus text */
    const char *metrics_token;/* ... only with "Authorization: Bearer TOKEN" (implies metrics) */
    const char *static_dir;   /* plain GET/HEAD served from files here first */
    bool static_dotfiles;     /* ... including hidden files (.git, .env) */
    bool static_symlinks;     /* ... and links leading out of it */
    const char *redis_url;
    const char *health_path;  /* GET/HEAD answers 200 while serving, 503 draining or full; NULL: off */
    unsigned drain_delay_ms;  /* SIGTERM: keep serving (health 503) this long before closing */
    size_t max_conns_per_ip;  /* 0: no limit; more from one address get 503 */
    double rate, rate_burst;  /* messages per second per socket (token bucket); 0: no limit */
    bool rate_close;          /* at the rate limit: close 1008 (else pause reading) */
    unsigned proxy_protocol;  /* PROXY_V1|PROXY_V2 bits expected on every listener; 0: none */
    struct cidr_list *trusted_proxies; /* --trust-proxy: X-Forwarded-For/Forwarded honoured from these; NULL: none */
    enum deflate_mode deflate;
    int deflate_level;
    size_t deflate_min;       /* messages shorter than this go uncompressed */
    const char *store_path;   /* luaws.store's file, kept across restarts; NULL: in the run dir, removed at exit */
    size_t store_size;        /* its LMDB map size in bytes */
    unsigned store_timeout_ms; /* --store redis://: each command's timeout; 0: the default */
} config;

#endif
