/* lua_api.h — the Lua binding as the core sees it: a host (host.h).
 *
 * The binding owns the worker's lua_State: the loaded script and its
 * handler, the request tables, the socket and buffer objects, and the
 * coroutines in which listener events run (so a synchronous send can wait
 * without a thread). Only main.c names it, to hand it to server_run. */
#ifndef LUAWS_LUA_API_H
#define LUAWS_LUA_API_H

#include "server.h"
#include "host.h"

extern const host_ops lua_host_ops;
/* luaws test: runs busted (argv: its command line) in the host created by
 * server_test; returns the exit status. */
int lua_test_main(void *host, int argc, char **argv);
/* Compiles (never runs) the script at path, if it is a regular file: the
 * main process's check before it binds, so that the script's top level
 * runs only in the workers. False with a malloc'd message (file:line). */
bool lua_compile_check(const char *path, char **err);

/* The host callbacks, by file (for lua_state.c's table). */
void lh_host_request(void *host, conn *c, const http_request *req);
void lh_host_response(void *host, conn *c, const http_request *res);
void lh_host_open(void *host, conn *c);
void lh_host_message(void *host, conn *c, uint8_t opcode, const uint8_t *data, size_t len);
bool lh_host_ping(void *host, conn *c, const uint8_t *data, size_t len);
void lh_host_pong(void *host, conn *c, const uint8_t *data, size_t len);
void lh_host_error(void *host, conn *c, const char *why);
void lh_host_close(void *host, conn *c, uint16_t code, const char *reason);
void lh_host_writable(void *host, conn *c);
void lh_host_gone(void *host, conn *c);
void lh_host_topic_message(void *host, const char *topic, size_t tlen, const uint8_t *payload, size_t len);
void lh_host_topic_deliver(void *host, const char *topic, size_t tlen, uint8_t opcode, uint64_t except,
                           const uint8_t *data, size_t len);
void lh_host_topic_count(void *host, unsigned worker, const char *topic, size_t tlen, uint32_t count);
void lh_host_topic_worker_gone(void *host, unsigned worker);
void lh_host_topic_resync(void *host);

#endif
