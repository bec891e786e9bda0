/* conn.h — a connection: its transport (conn.c: reading, the batch and
 * the write queue, the lingering close, freeing), the layer under it (conn_io:
 * plain TCP or conn_tls.c), the layer above it (conn_phase: http_conn.c,
 * client.c, ws.c), and the HTTP phase (http_conn.c).
 *
 * A connection goes through: HTTP (reading requests, answering plain ones),
 * then, after an upgrade, WebSocket (ws.c over ws_session.c), then a
 * lingering close (our FIN first, then wait for the peer's), then it is
 * freed in exactly one place: the close callback of its handle. */
#ifndef LUAWS_CONN_H
#define LUAWS_CONN_H

#include <uv.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "bytes.h"
#include "http.h"
#include "tls.h"
#include "host.h"
#include "addr.h"
#include "ws_session.h"

typedef struct listener listener;
typedef struct static_read static_read;
typedef struct conn_out conn_out;

enum conn_state {
    CONN_HTTP,        /* reading HTTP requests (0: a new connection) */
    CONN_CONNECTING,  /* luaws.connect: resolving, connecting */
    CONN_CLIENT_HANDSHAKE, /* luaws.connect: waiting for the 101 */
    CONN_WS,          /* speaking WebSocket (c->ws says whether open or closing) */
    CONN_LINGER,      /* closed at the WebSocket level; shutting TCP down */
    CONN_DEAD,        /* uv_close called */
};

/* What a connection speaks now (HTTP, an outbound handshake, WebSocket):
 * the layer its input goes to. conn.c reaches the layers above it only
 * through this table, which each of them sets (http_conn.c, client.c,
 * ws.c), so the transport depends on none of them. */
typedef struct conn_phase {
    const char *name;
    /* Consumes input; returns how many bytes were used (fewer only when
     * paused, or when the phase changed half-way). */
    size_t (*feed)(conn *c, uint8_t *buf, size_t len);
    /* The peer is gone (EOF, reset, write or TLS failure) or the close
     * timer fired; the connection is closed right after. */
    void (*lost)(conn *c, const char *why);
    /* Optional: where the next plain read may go instead of the shared buffer. */
    uint8_t *(*read_target)(conn *c, size_t *room);
    /* Optional: the TLS handshake is done (an outbound connection sends its request). */
    void (*secured)(conn *c);
    /* Optional: the connection is freed in this phase. */
    void (*release)(conn *c);
    /* Optional: everything queued has been written. */
    void (*drained)(conn *c);
} conn_phase;

/* The layer under a connection: plain TCP (conn.c) or TLS (conn_tls.c). */
typedef struct conn_io {
    /* Bytes read from the socket. */
    void (*input)(conn *c, uint8_t *data, size_t n);
    /* Writes bufs in order; done as for conn_write. */
    int (*writev)(conn *c, const uv_buf_t *bufs, unsigned nbufs, write_done_fn done, void *ud);
    /* Optional: input may flow again; what the layer holds is processed. */
    void (*resume)(conn *c);
    /* Optional: before our FIN (TLS close_notify). */
    void (*shutdown)(conn *c);
    /* Optional: the connection is freed. */
    void (*release)(conn *c);
    /* The socket carries the protocol's own bytes: reads may land in
     * place, published frames go out by reference. */
    bool raw;
} conn_io;

/* What only the HTTP phase (or an outbound handshake, luaws.connect)
 * needs: one allocation, made when that phase starts (http_conn.c begin,
 * client.c client_connect) and freed by conn_drop_http once the connection
 * speaks WebSocket or is done with HTTP, so that an idle WebSocket carries
 * none of it. */
typedef struct conn_http {
    http_reader reader;       /* the request (or, outbound, the 101) being read */
    uint64_t deadline;        /* it must be complete by then (loop ms) */
    struct proxy_wait *proxy; /* a PROXY header being read (only until it is) */
    struct client *client;    /* luaws.connect: the handshake in progress */
    struct static_read *static_read; /* --static: a file being read for it (input paused) */
    net_addr forwarder;       /* --trust-proxy: the peer that forwarded peer's requests (family 0: none) */
} conn_http;

/* Input that could not be consumed yet (an event is suspended). */
typedef struct conn_pending {
    size_t len, off;          /* bytes in data; the first off of them are used */
    uint8_t data[];
} conn_pending;

/* What an idle ws:// connection owns (x86-64, glibc: malloc adds an
 * 8-byte header and rounds up to 16; libuv's handle size is Debian's):
 *   conn                          568 B, 576 from malloc, of which:
 *     uv_tcp_t (libuv's handle)   248
 *     ws_session                  128 (its frame parser 48)
 *     the rest                    192: links, ids, peer (net_addr, 20),
 *                                 flags (2), the write queue's fields (the
 *                                 batch: a pointer, NULL while nothing waits)
 *   Lua: its socket (lsocket)      64 B in a userdata with 2 user values:
 *                                 136 B, 144 from malloc (lua_socket.c),
 *                                 plus what Lua keeps for it (socket.data,
 *                                 the request table, its registry slot).
 * Nothing else while idle: the HTTP phase's state (conn_http: 248 B, and
 * the request's strings) is freed at the upgrade; a control frame's
 * payload is used where it lies (a buffer of its size only while one split
 * over reads is assembled); a message buffer exists while a message is
 * assembled (kept up to 16 KiB, ws_session.c); the close reason and the
 * close timer only once closing; the rate bucket only with --rate; the
 * input kept while an event is suspended only then. The _Static_asserts
 * below keep the figures true. */
struct conn {
    uv_tcp_t tcp;
    server *srv;
    const conn_phase *phase;
    const conn_io *io;
    listener *lst;            /* the listener it came from; NULL for luaws.connect */
    conn_http *http;          /* HTTP phase, outbound handshake: see conn_http; NULL after */
    char *protocol;           /* the subprotocol in use, or NULL */
    tls_conn *tls;            /* NULL on ws:// */
    conn *prev, *next;
    uint64_t id;
    void *user;               /* the host's object for this connection */
    /* WebSocket: when the peer last sent anything (or took what we sent);
     * while ping_sent, when the automatic ping went out. */
    uint64_t last_seen;
    conn_pending *pending;    /* input that could not be consumed yet (an event is suspended) */
    net_addr peer;            /* its address (a PROXY header's, a forwarded client's); outbound: once connected */
    uint32_t ip_slot;         /* --max-conns-per-ip: its address's bucket + 1; 0: not counted */
    /* Flags, packed. */
    enum conn_state state : 3;
    bool is_client : 1;       /* we opened it: frames we send are masked */
    bool tls_logged : 1;
    bool host_knows : 1;      /* the host has an object for it: it gets close once */
    bool host_closed : 1;     /* ... and has been told */
    bool ping_sent : 1;       /* an automatic ping is out since last_seen */
    bool paused : 1;          /* input stopped: some hold below is on */
    uint8_t holds : 2;        /* CONN_HOLD_*: who stopped the input */
    bool close_after_write : 1; /* HTTP: a plain response with Connection: close */
    bool output_paused : 1;   /* HTTP: reading stopped until the answers queued drain */
    bool instrument : 1;      /* luaws test: a spec's own end (its client, a fake remote): no automatic pings */
    bool corked : 1;          /* a batch of its input is processed: its own replies wait for its end */
    uint32_t ntopics;         /* in topics, below */

    /* WebSocket phase: the protocol, pure (ws_session.h). */
    ws_session ws;
    struct wtimer *timer;     /* close / linger timeout, only while closing */

    /* Writing: what is not with libuv yet waits in the batch (conn.c):
     * until the end of a batch of the connection's own input, or of the
     * loop iteration. */
    struct conn_out *out;     /* NULL: nothing waits */
    size_t queued;            /* bytes handed to libuv, not yet written, plus WREQ_COST per write */
    uint8_t *pong;            /* a pong held back while the queue drains: [0] length, then payload */

    /* --rate / socket:set_rate: the messages it may send (NULL: no limit),
     * and the timer that lets it read again after a pause (only then). */
    struct rate_bucket *rate;
    struct wtimer *rate_timer;

    /* Topics this socket is subscribed to (lua_topic.c), ntopics of them. */
    struct topic **topics;
};
#if defined(__x86_64__) && defined(__linux__)
_Static_assert(sizeof(conn) - sizeof(uv_tcp_t) == 320, "struct conn changed size: update the figures above and README's Performance section");
_Static_assert(sizeof(conn) == 568, "libuv's uv_tcp_t is no longer 248 bytes: update the figures above and README's Performance section");
#endif

/* A frame built once and written to many sockets (luaws.publish). */
typedef struct shared_frame {
    int refs;
    size_t len;
    uint8_t data[];
} shared_frame;

/* conn.c: transport and lifetime */
shared_frame *shared_frame_new(const uint8_t *hdr, size_t hlen, const uint8_t *payload, size_t len);
void shared_frame_unref(shared_frame *f);
/* Queues f for c by reference (it goes in c's next writev, in order with
 * what else c sends). 0, or UV_EPIPE if c is gone. */
int conn_write_shared(conn *c, shared_frame *f);
void conn_accept(listener *l);
/* The same for a connected socket we were handed (luaws test: one end of a
 * socket pair); takes fd. NULL if it cannot be used. */
conn *conn_adopt(listener *l, int fd, const net_addr *peer);
/* A connection struct on the server's list, its TCP handle initialised. */
conn *conn_new(server *s, listener *l, uint64_t id, const conn_phase *phase);
void conn_start_reading(conn *c);
/* Fills c->peer from the socket (not IP, or unknown: family 0). */
void conn_read_peer(conn *c);
/* The peer as "ADDR:PORT" for a log line (in buf; returns it). */
static inline const char *conn_peer_text(const conn *c, char buf[ADDR_TEXT_MAX])
{
    return addr_text(&c->peer, buf);
}
/* The HTTP phase's state, made empty (reader not started) for the phase
 * to fill; and freed once nothing refers to it any more (no --static
 * read, no outbound handshake). */
conn_http *conn_new_http(conn *c);
void conn_drop_http(conn *c);
/* Stops and restarts reading. Two holders may stop it independently: the
 * script (an event is suspended, a --static read, an HTTP backlog) and the
 * rate limit; input flows again only once both let go. */
enum { CONN_HOLD_SCRIPT = 1, CONN_HOLD_RATE = 2 };
void conn_hold(conn *c, uint8_t who);
void conn_release(conn *c, uint8_t who);
/* The rate limit's hold: released after ms (one timer per connection,
 * made on first use). */
void conn_hold_for(conn *c, uint8_t who, uint64_t ms);
static inline void conn_pause(conn *c) { conn_hold(c, CONN_HOLD_SCRIPT); }
static inline void conn_resume(conn *c) { conn_release(c, CONN_HOLD_SCRIPT); }
/* Queues bytes for writing; the data is copied. done (may be NULL) is
 * called exactly once, with 0 once the kernel took the bytes, or with an
 * error; possibly before conn_write returns. */
int conn_write(conn *c, const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t len,
               write_done_fn done, void *ud);
void conn_linger(conn *c);
void conn_set_timer(conn *c, unsigned ms);
void conn_close_now(conn *c);
/* Writes c's batch now (what it sent from its own input, or from
 * elsewhere in this loop iteration). */
void conn_uncork(conn *c);
/* End of a loop iteration (server.c's check and prepare handles): writes
 * the batches waiting, one writev per connection, up to a pass's worth (see
 * FLUSH_PASS). True when more wait: the caller keeps the next poll from
 * blocking, and the next pass goes on where this one stopped. */
bool conn_flush_pass(server *s);
/* The worker stops: the last batches go, and what batching kept is freed. */
void conn_flush_end(server *s);
/* Plain TCP's conn_io: the bytes read go to the phase (kept while paused),
 * bytes written go to the kernel (copied only if it does not take them). */
void conn_feed_input(conn *c, uint8_t *data, size_t n);
int conn_raw_writev(conn *c, const uv_buf_t *bufs, unsigned nbufs, write_done_fn done, void *ud);
int conn_raw_write(conn *c, const uint8_t *p, size_t n, write_done_fn done, void *ud);
/* conn_tls.c: TLS under c from now on; sends what the engine has. */
void conn_tls_attach(conn *c, tls_conn *t);
void conn_tls_flush(conn *c);
/* What waits to be written, queued in libuv or in the batch, with what
 * holding it costs (--max-backpressure counts it). */
size_t conn_backlog(const conn *c);
/* Bytes in the batch, not yet handed to libuv. */
size_t conn_unsent(const conn *c);
/* Gone past the point of no return: uv_close was called. */
static inline bool conn_is_dead(const conn *c) { return c->state == CONN_DEAD; }
/* Reading and writing WebSocket frames (open or closing). */
static inline bool conn_is_websocket(const conn *c) { return c->state == CONN_WS; }
/* Done with the protocol: lingering or dead; input is discarded. */
static inline bool conn_is_finished(const conn *c) { return c->state >= CONN_LINGER; }
/* What on_close reports: the close code and reason ("" if none). */
static inline uint16_t conn_close_code(const conn *c)
{
    return c->ws.close_code ? c->ws.close_code : WS_CLOSE_ABNORMAL;
}
static inline const char *conn_close_reason(const conn *c)
{
    return c->ws.close_reason ? c->ws.close_reason : "";
}
/* The subprotocol in use (NULL: none). */
static inline const char *conn_protocol(const conn *c) { return c->protocol; }
/* Tells the host the connection closed, once (see host_ops.close). */
void conn_tell_close(conn *c);
/* http_conn.c: a whole request was read; answers or upgrades it. */
void http_conn_request(conn *c);
/* A request was answered (now or later, --static): the next may be read. */
void http_conn_answered(conn *c);
/* The host answers a request (HTTP phase). */
void conn_respond(conn *c, int status, const char *head, size_t head_len,
                  const char *body, size_t body_len, bool keep_alive);
/* The host accepts an upgrade: the 101 (with extra header lines head) goes
 * out and the connection speaks WebSocket. 0, or -1 if it cannot. */
int conn_upgrade(conn *c, const http_request *req, const char *protocol, const char *head, size_t head_len);

#endif
