/* ws.h — a WebSocket over a connection (ws.c): the transport's side of
 * the session (ws_session.h). */
#ifndef LUAWS_WS_H
#define LUAWS_WS_H

#include "conn.h"

void ws_start(conn *c, const pmd_params *deflate);
/* Sends one frame; done (may be NULL) as for conn_write: called exactly once. */
int ws_send(conn *c, uint8_t opcode, const uint8_t *data, size_t len, write_done_fn done, void *ud);
void ws_close(conn *c, uint16_t code, const char *reason, size_t reason_len);
void ws_on_disconnect(conn *c);
/* Drops c now, with no close frame: as if the peer vanished (on_close 1006). */
void ws_drop(conn *c);
/* Closes a connection that broke a limit: on_error(why), on_close(code), TCP closed now. */
void ws_abort(conn *c, uint16_t code, const char *why);
bool ws_is_open(const conn *c);
/* The messages c may send: rate per second, burst at once (--rate, or
 * socket:set_rate); rate <= 0 lifts the limit (and a pause it caused). */
void ws_set_rate(conn *c, double rate, double burst);
/* Sends a published message: plain and (for shared-deflate sockets)
 * compressed frames built once; falls back to ws_send where a socket
 * needs its own (context takeover, client masking). */
int ws_send_shared(conn *c, uint8_t opcode, const uint8_t *payload, size_t len, shared_frame *plain,
                   shared_frame *compressed);

#endif
