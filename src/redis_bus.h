/* redis_bus.h — topics across workers and machines through Redis pub/sub.
 *
 * A bus holds two connections to one Redis: one publishes, the other sits in
 * subscribe mode. A topic T travels on the channel "luaws:" T, so other users
 * of the same Redis do not collide with us, and anything that can PUBLISH to
 * "luaws:T" (redis-cli, a backend) reaches T's subscribers. Topics and
 * payloads are binary-safe.
 *
 * Delivery: every message on a subscribed topic comes back through the
 * callback, including the ones this bus published itself. So when
 * redis_bus_publish() returns true the caller does not deliver locally: the
 * echo from Redis does it, in the same order every other process sees.
 * When it returns false (not connected, or too much unacknowledged publish
 * data) nothing went out and the caller delivers locally only; nothing is
 * buffered for later. Redis pub/sub is at most once: a message in flight
 * when the connection breaks is lost.
 *
 * A message published within one round trip of the first subscription to
 * its topic may not come back (Redis can see the PUBLISH before the
 * SUBSCRIBE, which travels on the other connection).
 *
 * Connection: redis_bus_new() never blocks (names are resolved on libuv's
 * thread pool). When Redis is unreachable, or either connection breaks, both
 * connections are dropped and retried after 100 ms, doubling to 5 s; once
 * back, every topic currently subscribed is subscribed again. Log lines:
 *   redis: connected to HOST:PORT
 *   redis: connection lost (why), reconnecting in N ms
 *   redis: cannot connect to HOST:PORT (why), retrying in N ms
 *
 * Redis pub/sub ignores database numbers: the /db of the URL is SELECTed
 * (a bad number shows as a connection error) but does not separate the
 * topics of two deployments sharing one Redis.
 *
 * Create buses after fork (each owns its sockets), use them from their
 * loop's thread only, and ignore SIGPIPE in the process: hiredis writes with
 * write(2), so a write to a dead Redis would raise it. */
#ifndef LUAWS_REDIS_BUS_H
#define LUAWS_REDIS_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct redis_bus redis_bus;

/* A message on a subscribed topic. topic and payload are only valid during
 * the call. The callback may call any redis_bus function, including
 * redis_bus_close(). */
typedef void (*redis_bus_message_cb)(void *ud, const char *topic, size_t topic_len,
                                     const uint8_t *payload, size_t len);

/* url: redis://host[:port][/db], port 6379 and db 0 by default; an IPv6
 * host goes in brackets. Starts connecting in the background. Returns NULL
 * with a message in err only for a malformed URL (or no memory). */
redis_bus *redis_bus_new(uv_loop_t *loop, const char *url, redis_bus_message_cb cb, void *ud,
                         char *err, size_t errlen);

/* The bus keeps the set of subscribed topics and subscribes them again after
 * each reconnect. Counting local subscribers is the caller's job: subscribe
 * on the first, unsubscribe when the last leaves. Both work while
 * disconnected; subscribing twice, or unsubscribing a topic that is not
 * subscribed, does nothing. Once unsubscribe returns, the callback no longer
 * sees that topic, even for messages Redis had already sent. */
void redis_bus_subscribe(redis_bus *b, const char *topic, size_t len);
void redis_bus_unsubscribe(redis_bus *b, const char *topic, size_t len);

/* Hands the message to Redis: true if it went out (see Delivery above). */
bool redis_bus_publish(redis_bus *b, const char *topic, size_t tlen, const uint8_t *payload, size_t len);

/* Both connections are up and answered their first command. */
bool redis_bus_connected(const redis_bus *b);

/* Drops both connections (commands still pending are abandoned), stops
 * retrying and frees the bus once its libuv handles have closed: keep
 * running the loop until it ends. NULL is ignored. */
void redis_bus_close(redis_bus *b);

#endif
