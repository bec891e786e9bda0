/* server.h — the loop, the listener, and the connections it owns.
 *
 * A connection goes through: HTTP (reading requests, answering plain ones),
 * then, after an upgrade, WebSocket (ws.c speaks the protocol), then a
 * lingering close (our FIN first, then wait for the peer's), then it is freed
 * in exactly one place: the close callback of its handle. */
#ifndef LUAWS_SERVER_H
#define LUAWS_SERVER_H

#include <uv.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "frame.h"
#include "http.h"
#include "utf8.h"
#include "deflate.h"
#include "tls.h"
#include "metrics.h"

#define MAX_LISTENERS 8

typedef struct listen_spec {
    char host[64];
    int port;                 /* 0: the kernel picks; resolved before workers start */
    bool tls;                 /* wss:// */
    tls_server *tls_ctx;      /* made before any fork: workers share ticket keys */
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
    const char **origins;          /* allowed Origin values; NULL: any */
    size_t norigins;
    bool console;             /* GET / shows the browser console */
    bool metrics;             /* GET /metrics answers Prometheus text */
    const char *static_dir;   /* plain GET/HEAD served from files here first */
    const char *redis_url;
    enum deflate_mode deflate;
    int deflate_level;
    size_t deflate_min;       /* messages shorter than this go uncompressed */
} config;

typedef struct conn conn;
typedef struct lua_host lua_host;
typedef struct task task;

typedef struct listener {
    uv_tcp_t tcp;
    struct server *srv;
    tls_server *tls;          /* NULL: plain ws:// */
    char host[64];
    int port;
} listener;

typedef struct server {
    uv_loop_t *loop;
    listener listeners[MAX_LISTENERS];
    int nlisteners;
    uv_signal_t sig_term, sig_int;
    uv_timer_t housekeeping;  /* timeouts and pings, for every connection */
    uv_timer_t shutdown_timer;
    const config *cfg;
    lua_host *lua;
    conn *conns;              /* every live connection, for shutdown */
    size_t nconns;
    uint64_t next_id;
    uint64_t id_base, id_step; /* socket ids: unique across workers */
    bool stopping;
    pmd_worker pmd;
    struct reloader *reloader;
    struct redis_bus *bus;    /* --redis: topics across workers and machines */
    metrics metrics;
    /* One read buffer serves every connection: libuv calls alloc and read
     * back to back, and a connection that cannot consume all it read keeps
     * the rest in its own pending buffer. Idle connections own no buffer. */
    char readbuf[64 * 1024];
    char plainbuf[32 * 1024]; /* decrypted TLS records */
} server;

enum conn_state {
    CONN_HTTP,        /* reading HTTP requests (0: a new connection) */
    CONN_CONNECTING,  /* luaws.connect: resolving, connecting */
    CONN_CLIENT_HANDSHAKE, /* luaws.connect: waiting for the 101 */
    CONN_WS,          /* WebSocket open */
    CONN_WS_CLOSING,  /* we sent a close frame, waiting for the peer's */
    CONN_LINGER,      /* closed at the WebSocket level; shutting TCP down */
    CONN_DEAD,        /* uv_close called */
};

struct conn {
    uv_tcp_t tcp;
    server *srv;
    listener *lst;            /* the listener it came from; NULL for luaws.connect */
    struct client *client;    /* luaws.connect: the handshake in progress */
    bool is_client;           /* we opened it: frames we send are masked */
    char *client_protocol;    /* the subprotocol the server chose */
    tls_conn *tls;            /* NULL on ws:// */
    bool tls_logged;
    conn *prev, *next;
    uint64_t id;
    enum conn_state state;
    char peer[64];
    uint64_t deadline;        /* HTTP: the request must be complete by then (loop ms) */
    uint64_t last_seen;       /* WebSocket: when the peer last sent anything */
    bool ping_sent;           /* an automatic ping is out since last_seen */
    uint64_t ping_at;         /* ... sent then */

    /* Input that could not be consumed yet (an event is suspended). */
    uint8_t *pending;
    size_t pending_len, pending_off;
    bool paused;              /* input stopped while an event is suspended */
    bool processing;          /* inside conn_process: no reentry */

    /* HTTP phase. */
    http_reader *http;
    bool close_after_write;   /* plain response with Connection: close */

    /* WebSocket phase. */
    ws_parser parser;
    uint8_t msg_opcode;       /* text or binary of the message being read */
    bool msg_compressed;      /* RSV1 on its first frame */
    bool msg_delivered;       /* handed to Lua straight from the read buffer */
    bytes msg;                /* the current message (inflated) */
    pmd_conn *pmd;            /* permessage-deflate, when negotiated */
    utf8_state utf8;
    uint8_t ctl[WS_MAX_CONTROL_PAYLOAD];
    size_t ctl_len;
    bool close_sent, close_received, closed_event_done, open_event_done;
    uint16_t close_code;      /* what on_close reports */
    char *close_reason;
    uv_timer_t *timer;        /* close / linger timeout, only while closing */

    /* Writing. While a batch of input is processed, small frames collect in
     * the cork and go out in one write when the batch is done. */
    bytes cork;
    bool corked;
    size_t queued;            /* bytes handed to libuv, not yet written */
    task *waiters;            /* suspended events waiting for queued to fall */

    /* Topics this socket is subscribed to (lua_topic.c). */
    struct topic **topics;
    size_t ntopics;

    /* Lua. */
    int socket_ref;           /* registry ref to the Lua socket object */
    task *running;            /* this connection's suspended event, if any */
    bool close_deferred;      /* on_close waits for the running event */
    bool reloaded;            /* moved by the reload in progress */
};

int listen_socket(const char *host, int port, bool reuseport, bool do_listen, int *bound_port,
                  char *err, size_t errlen);
/* Runs one worker on a bound socket until it is told to stop; writes a
 * byte to ready_fd (if >= 0) once it serves. Returns the exit code. */
int server_run(const config *cfg, const int *fds, int worker, int nworkers, bool watch, int ready_fd);
/* SIGHUP: certificates and keys are read again. */
void server_reload_tls(server *s);
void server_stop(server *s);
void log_startup(const config *cfg, int workers);

/* A frame built once and written to many sockets (luaws.publish). */
typedef struct shared_frame {
    int refs;
    size_t len;
    uint8_t data[];
} shared_frame;

/* conn.c: transport and lifetime */
shared_frame *shared_frame_new(const uint8_t *hdr, size_t hlen, const uint8_t *payload, size_t len);
void shared_frame_unref(shared_frame *f);
int conn_write_shared(conn *c, shared_frame *f);
void conn_accept(listener *l);
/* A connection struct on the server's list, its TCP handle initialised. */
conn *conn_new(server *s, listener *l);
void conn_start_reading(conn *c);
void conn_housekeeping_start(server *s);
void conn_process(conn *c);
void conn_pause(conn *c);
void conn_resume(conn *c);
/* Queues bytes for writing; the data is copied. ok/fail refs are Lua
 * registry refs of async send callbacks, or LUA_NOREF (-2). */
int conn_write(conn *c, const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t len,
               int ok_ref, int fail_ref);
void conn_linger(conn *c);
void conn_set_timer(conn *c, unsigned ms);
void conn_close_now(conn *c);
/* Writes what the cork collected. */
void conn_uncork(conn *c);
/* Sends what the TLS engine has for the socket. */
void conn_tls_flush(conn *c);
/* Bytes waiting to be written: queued in libuv or in the cork. */
static inline size_t conn_backlog(const conn *c) { return c->queued + c->cork.len; }

/* client.c: outbound connections (luaws.connect) */
typedef struct client_request {
    const char *host;
    int port;
    const char *request;      /* the whole upgrade request */
    size_t request_len;
    const char *key;          /* its Sec-WebSocket-Key */
    const char *protocols;    /* offered subprotocols, comma-separated, or NULL */
    bool deflate;             /* offered permessage-deflate */
    bool tls;                 /* wss:// */
    const char *ca;           /* CA file to verify the server with; NULL: the system's */
    bool verify;              /* check the server's certificate and name */
} client_request;
conn *client_connect(server *s, const client_request *req);
/* Starts resolving and connecting, once Lua has its socket object. */
void client_start(conn *c);
void client_on_response(conn *c);
void client_free(conn *c);
/* Sends the upgrade request once the connection (and TLS) is up. */
void client_send_request(conn *c);

/* ws.c: the WebSocket protocol over a connection */
void ws_start(conn *c, const pmd_params *deflate);
size_t ws_consume(conn *c, uint8_t *buf, size_t len);
/* Where the next plain-TCP read may go instead of the shared read buffer:
 * the free end of the message being assembled, while a large uncompressed
 * data frame is arriving (NULL otherwise). Saves copying it there afterwards. */
uint8_t *ws_read_target(conn *c, size_t *room);
int ws_send(conn *c, uint8_t opcode, const uint8_t *data, size_t len, int ok_ref, int fail_ref);
void ws_close(conn *c, uint16_t code, const char *reason, size_t reason_len);
void ws_fail(conn *c, uint16_t code, const char *why);
void ws_on_disconnect(conn *c);
/* Closes a connection that broke a limit: on_error(why), on_close(code), TCP closed now. */
void ws_abort(conn *c, uint16_t code, const char *why);
bool ws_is_open(const conn *c);
/* Sends a published message: plain and (for shared-deflate sockets)
 * compressed frames built once; falls back to ws_send where a socket
 * needs its own (context takeover, client masking). */
int ws_send_shared(conn *c, uint8_t opcode, const uint8_t *payload, size_t len, shared_frame *plain,
                   shared_frame *compressed);

#endif
