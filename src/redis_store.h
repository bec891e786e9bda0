/* redis_store.h — the Redis client behind `--store redis://...`: one
 * connection, commands with replies, each bounded by a timeout (transport:
 * libuv + hiredis; no Lua). lua_store.c builds the commands and turns the
 * replies into Lua values.
 *
 * Connection: rstore_new() never blocks. Like redis_bus, a lost or refused
 * connection is retried after 100 ms, doubling up to 2 s; the /db of the URL
 * is SELECTed. Log lines:
 *   redis store: connected to HOST:PORT
 *   redis store: connection lost (why), reconnecting in N ms
 *   redis store: cannot connect to HOST:PORT (why), retrying in N ms
 *
 * Commands: rstore_command() sends at once when connected, or queues until
 * the connection is up while a connect attempt is in progress. It refuses
 * (NULL) only while the client is known to be down (waiting to retry after
 * a failure). Every accepted command gets exactly one callback, a reply or
 * an error, within timeout_ms, unless cancelled first. A command that times
 * out after being sent drops the connection (Redis is stalled or gone;
 * replies still in flight would come too late anyway): the others sent on
 * it fail at once with the same reason, and a reconnect starts.
 *
 * Use from the loop's thread only, after fork; ignore SIGPIPE. */
#ifndef LUAWS_REDIS_STORE_H
#define LUAWS_REDIS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#define RSTORE_DEFAULT_TIMEOUT_MS 1000

typedef struct rstore rstore;
typedef struct rstore_req rstore_req;

/* reply: Redis's answer (an error reply too), valid during the call only;
 * NULL on failure, with err saying why (timed out, connection lost). Never
 * called from inside rstore_command or rstore_cancel; it may call any
 * rstore function except rstore_close. */
typedef void (*rstore_cb)(void *ud, const redisReply *reply, const char *err);

/* url: redis://host[:port][/db]. NULL with a message in err only for a
 * malformed URL. */
rstore *rstore_new(uv_loop_t *loop, const char *url, unsigned timeout_ms, char *err, size_t errlen);

/* Sends (or queues) the command; the handle is valid until its callback
 * runs or it is cancelled. NULL with err when the client is down. */
rstore_req *rstore_command(rstore *rs, int argc, const char **argv, const size_t *argvlen, rstore_cb cb,
                           void *ud, char *err, size_t errlen);
/* The callback will not run; a reply already on its way is dropped. */
void rstore_cancel(rstore_req *r);

/* Drops the connection and frees the client once its handles have closed
 * (keep running the loop). Callbacks of commands still pending do not run:
 * cancel or forget them first. NULL is ignored. */
void rstore_close(rstore *rs);

#endif
