/* ws_session.h — one WebSocket connection's protocol, pure (RFC 6455 and
 * RFC 7692): no sockets, no libuv, no Lua.
 *
 * A session is fed the bytes that arrived and reports what they mean
 * through a table of callbacks: a message, a ping, a pong, the peer's
 * close, a protocol error; and it hands the bytes it wants sent (frames:
 * pongs, close frames, messages) to the write callback. It owns the frame
 * parser, message assembly, the UTF-8 state, the permessage-deflate state,
 * a control frame's payload and the close state. What it holds between
 * messages is the struct alone (128 bytes on 64-bit): a message buffer
 * exists while a message is assembled (and is kept up to 16 KiB), a
 * control payload is used where it lies in the input (copied only when it
 * is split over reads, into a buffer of its size, freed at the frame's
 * end), the close reason once closing. It works in both roles: a
 * server expects masked frames and sends plain ones, a client the reverse.
 *
 * Model: uWebSockets' WebSocketProtocol<isServer, Impl>, in C with a
 * callbacks struct and a void *user. The transport (ws.c over conn.c) and
 * the fuzzer (fuzz/fuzz_session.c) are its two hosts.
 *
 * Re-entrancy: callbacks may call wss_send, wss_close and wss_abort on the
 * same session, and set s->paused; after a callback the session re-reads
 * its own state. After wss_close the peer's messages are still delivered
 * until its close frame (RFC 6455 5.5.1); wss_abort (or pausing) stops
 * delivery at once. */
#ifndef LUAWS_WS_SESSION_H
#define LUAWS_WS_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "bytes.h"
#include "deflate.h"
#include "frame.h"
#include "host.h"
#include "utf8.h"
#include "ws_stats.h"

/* The close state: one word. */
enum wss_state {
    WSS_OPEN,          /* messages flow both ways */
    WSS_CLOSE_SENT,    /* we sent a close frame; the peer's is awaited (its messages still count) */
    WSS_CLOSED,        /* both closes exchanged, or a protocol error: nothing more in or out */
};

typedef struct wss_callbacks {
    /* A complete message; data is valid only during the call. */
    void (*message)(void *user, uint8_t opcode, const uint8_t *data, size_t len);
    /* A ping; return false to have the session answer it with a pong. */
    bool (*ping)(void *user, const uint8_t *data, size_t len);
    void (*pong)(void *user, const uint8_t *data, size_t len);
    /* The peer's close frame arrived and was answered (if we had not sent
     * ours): the WebSocket is closed with code and reason (1005: none). */
    void (*closed)(void *user, uint16_t code, const char *reason, size_t reason_len);
    /* A protocol violation: a close frame with code has been sent (unless
     * one was already) and the session is closed. Called once. */
    void (*error)(void *user, uint16_t code, const char *why);
    /* Bytes for the peer: a frame header and its payload (never NULL, even
     * when empty). done (may be NULL) follows write_done_fn's rule. Returns
     * 0, or < 0 if it could not be queued; a host that gives up on the
     * connection there calls wss_abort from inside the callback. */
    int (*write)(void *user, const uint8_t *hdr, size_t hlen, const uint8_t *payload, size_t len,
                 write_done_fn done, void *done_ud);
} wss_callbacks;

/* Settings shared by the sessions of a worker. */
typedef struct wss_config {
    size_t max_message;      /* bytes (inflated); 1009 beyond */
    size_t deflate_min;      /* messages shorter than this go uncompressed */
    pmd_worker *pmd;         /* deflate streams and scratch of the worker */
    wss_stats *stats;        /* may be NULL */
    size_t *buffered;        /* may be NULL: every session's message buffers, in bytes */
} wss_config;

typedef struct ws_session {
    frame_parser parser;
    bytes msg;                /* the current message (inflated); msg.cap is counted in cfg->buffered */
    pmd_conn *pmd;            /* permessage-deflate, when negotiated */
    uint8_t *ctl;             /* a control frame's payload split over reads, while it is assembled */
    char *close_reason;
    const wss_callbacks *cb;
    void *user;
    const wss_config *cfg;
    utf8_state utf8;
    uint8_t ctl_len;          /* bytes of the control frame's payload so far */
    uint16_t close_code;      /* what closed it (ours or the peer's), 0 while open */
    /* Flags, packed. */
    enum wss_state state : 2;
    uint8_t msg_opcode : 4;   /* text or binary of the message being read */
    bool client : 1;          /* we are the client: our frames are masked */
    bool paused : 1;          /* set by the host: wss_feed stops before the next frame event */
    bool peer_closed : 1;     /* the peer's close frame arrived */
    bool msg_compressed : 1;  /* RSV1 on its first frame */
    bool msg_delivered : 1;   /* handed over straight from the input buffer */
} ws_session;

/* deflate: the negotiated parameters (from our point of view), or NULL. */
void wss_init(ws_session *s, enum ws_role role, const pmd_params *deflate, const wss_config *cfg,
              const wss_callbacks *cb, void *user);
/* Frees what the session holds (message buffer, inflate/deflate state). */
void wss_free(ws_session *s);

/* Consumes input; returns how many bytes were used: all of them unless
 * the session was paused or closed meanwhile. buf is unmasked in place. */
size_t wss_feed(ws_session *s, uint8_t *buf, size_t len);
/* Where the next input may be read instead of a shared buffer: the free
 * end of a large uncompressed message being assembled (NULL otherwise).
 * Bytes read there must then be passed to wss_feed at that address. */
uint8_t *wss_read_target(ws_session *s, size_t *room);

/* Sends a message (text/binary) or a ping/pong; data may be NULL only
 * when len is 0. Fails with negative errno codes: -EPIPE once a close frame
 * was sent. done: see write. */
int wss_send(ws_session *s, uint8_t opcode, const uint8_t *data, size_t len, write_done_fn done, void *ud);
/* Starts the close handshake: sends a close frame (code 1005 sends an
 * empty one; a reason is cut to 123 bytes at a character boundary). A
 * no-op unless open. */
void wss_close(ws_session *s, uint16_t code, const char *reason, size_t reason_len);
/* The connection is gone or cut without a close handshake: closed with
 * code and why, unless the peer's close frame already arrived. Nothing is
 * sent, no callback runs. */
void wss_abort(ws_session *s, uint16_t code, const char *why);
/* Notes what closed the connection (code, reason) without any protocol
 * step: an outbound connection that never opened keeps its reason here. */
void wss_record_close(ws_session *s, uint16_t code, const char *reason, size_t reason_len);
/* The connection is done with the protocol: frees the message buffer and
 * the compression state, keeps what closed it. */
void wss_trim(ws_session *s);

static inline bool wss_is_open(const ws_session *s) { return s->state == WSS_OPEN; }
static inline bool wss_is_closed(const ws_session *s) { return s->state == WSS_CLOSED; }
/* The payload of a published frame can be sent by reference to this
 * session when it needs neither masking nor its own compressor. */
bool wss_can_share(const ws_session *s, size_t len, bool *compressed);

#endif
