/* lua_api.h — the only part of luaws that touches the Lua stack.
 *
 * It owns the worker's lua_State: the loaded script and its handler, the
 * request tables, the socket and buffer objects, and the coroutines in which
 * listener events run (so a synchronous send can wait without a thread). */
#ifndef LUAWS_LUA_API_H
#define LUAWS_LUA_API_H

#include "server.h"

/* Creates the state and loads the script. On failure returns NULL and sets
 * *err to a malloc'd message naming file:line. */
lua_host *lh_new(server *s, const char *script, char **err);
void lh_free(lua_host *h);
/* The server is stopping: end every timer so the loop can finish. */
void lh_stop(lua_host *h);

/* Loads the script again; open sockets move to the listener the new
 * handler returns for their original request. Returns -1 (and logs
 * file:line) if the new code fails to load: the old code keeps serving.
 * quiet_repeat: an error identical to the last one is logged at debug only. */
int lh_reload(lua_host *h, const char *why, bool quiet_repeat);
/* The script and the modules it required from its directory (malloc'd). */
char **lh_watched_files(lua_host *h, size_t *n);

/* Runs the handler for a complete request and answers it: a plain response
 * through conn_respond, or an upgrade through conn_upgrade then on_open. */
void lh_request(lua_host *h, conn *c, const http_request *req);

/* Listener events. Each runs in a coroutine; if it suspends, the connection
 * is paused until it finishes. */
void lh_on_message(conn *c, uint8_t opcode, const uint8_t *data, size_t len);
void lh_on_ping(conn *c, const uint8_t *data, size_t len);
void lh_on_pong(conn *c, const uint8_t *data, size_t len);
void lh_on_error(conn *c, const char *err);
/* Calls on_close once, when no event of this socket is suspended. */
void lh_on_close(conn *c);
/* Before a connection is freed: wakes what waits on it, detaches its socket. */
void lh_conn_gone(conn *c);
/* The write queue fell under the high-water mark: resume waiting events. */
void lh_wake_writers(conn *c);
/* An async send finished: runs succeed() or fail(err) and frees the refs. */
void lh_send_done(lua_host *h, int ok_ref, int fail_ref, const char *err);

bool lh_has_ping_handler(conn *c);
/* luaws.connect: the server accepted (on_open runs), or it never will
 * (on_error(why), then on_close(1006, why)). */
void lh_client_open(conn *c);
void lh_client_failed(conn *c, const char *why);

/* conn.c side, called from lh_request */
void conn_respond(conn *c, int status, const char *head, size_t head_len,
                  const char *body, size_t body_len, bool keep_alive);
void conn_upgrade(conn *c, const http_request *req, const char *protocol,
                  const char *head, size_t head_len);

#endif
