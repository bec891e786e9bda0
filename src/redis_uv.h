/* redis_uv.h — what luaws's two Redis clients share (redis_bus.c: topics
 * across machines; redis_store.c: luaws.store on Redis): hiredis driven by a
 * libuv loop, and the redis://HOST[:PORT][/DB] URL. Transport: libuv and
 * hiredis, no Lua. Use from the loop's thread only. */
#ifndef LUAWS_REDIS_UV_H
#define LUAWS_REDIS_UV_H

#include <stdbool.h>
#include <stddef.h>
#include <hiredis/async.h>
#include <uv.h>

typedef struct redis_url {
    char host[256];           /* a name or an address, IPv6 without brackets */
    char port_str[8];
    int port, db;             /* 6379 and 0 by default */
    char label[272];          /* "HOST:PORT" ("[HOST]:PORT" for IPv6), for logs */
} redis_url;

/* Reads redis://HOST[:PORT][/DB] (IPv6 in brackets; no user or password).
 * On a bad URL returns false with a message starting with what (the
 * option's name, for the user) in err. */
bool redis_url_parse(const char *url, const char *what, redis_url *out, char *err, size_t errlen);

/* Drives ac from loop: a uv_poll on its socket, freed once hiredis lets go
 * of the context (after its handle closes). Call right after
 * redisAsyncConnect; -1 if libuv cannot poll the socket (free ac then). */
int redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
