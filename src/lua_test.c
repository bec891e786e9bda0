/* lua_test.c — what `luaws test` adds to the binding.
 *
 * busted runs inside the worker's own Lua state and loop (lua_test_main),
 * on a server with no listening socket and the spec's clock (server_test,
 * clock.h). lua/luaws/test.lua builds the spec API on the luaws.core
 * functions here:
 *  - test_use: the script (or handler) under test;
 *  - test_link: luaws.connect over a socket pair, to the server under test
 *    or to a fake remote: the bytes never touch a network, and both ends run
 *    the real code (HTTP phase, session, deflate, the Lua events);
 *  - test_settle / test_poll: let the loop run until nothing more happens;
 *  - test_advance / test_now: the spec's clock;
 *  - test_published: what luaws.publish sent, per topic;
 *  - test_reload, test_reset (which also empties every luaws.store).
 * These functions may be called only from the spec's own code (the main
 * thread, no event running): they run the loop, which runs events. */
#include "lua_internal.h"
#include "log.h"
#include "xalloc.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Runs the loop without blocking until a pass does nothing: every byte in
 * a socket pair read, every event it raised run. */
static void settle(void *ud)
{
    server *s = ud;
    for (int i = 0; i < 1000000; i++) {
        uint64_t before = s->activity;
        uv_run(s->loop, UV_RUN_NOWAIT);
        if (s->activity == before) break;
    }
}

/* Only from the spec's main code: the loop is about to run events. */
static lua_host *spec_host(lua_State *L, const char *fn)
{
    lua_host *h = lh_host(L);
    if (!h->test) luaL_error(L, "%s works only under `luaws test`", fn);
    if (L != h->L || h->depth) luaL_error(L, "%s: call it from the spec, not from a listener or a coroutine", fn);
    luaL_checkstack(L, 64, NULL);
    return h;
}

static int l_settle(lua_State *L)
{
    lua_host *h = spec_host(L, "settle");
    settle(h->srv);
    return 0;
}

static void on_guard(uv_timer_t *t) { (void)t; }

/* test_poll(ms): waits (real time) at most ms for something to happen. */
static int l_poll(lua_State *L)
{
    lua_host *h = spec_host(L, "poll");
    lua_Integer ms = luaL_checkinteger(L, 1);
    if (ms > 0) {
        uv_timer_start(&h->test_guard, on_guard, (uint64_t)ms, 0);
        uv_run(h->srv->loop, UV_RUN_ONCE);
        uv_timer_stop(&h->test_guard);
    }
    settle(h->srv);
    return 0;
}

static int l_advance(lua_State *L)
{
    lua_host *h = spec_host(L, "clock:advance");
    lua_Number ms = luaL_checknumber(L, 1);
    if (ms < 0) return luaL_argerror(L, 1, "time only moves forward");
    settle(h->srv);
    wclock_advance(&h->srv->clock, (uint64_t)ms, settle, h->srv);
    settle(h->srv);
    return 0;
}

static int l_now(lua_State *L)
{
    lua_host *h = lh_host(L);
    lua_pushinteger(L, (lua_Integer)server_now(h->srv));
    return 1;
}

static int l_monotime(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)(uv_hrtime() / 1000000u));
    return 1;
}

/* test_use(path | handler): what the server under test runs. A path is
 * loaded (again only if it changed, so that the sockets of one spec share
 * the script's state); a function or listener table is used as it is. */
static int l_use(lua_State *L)
{
    lua_host *h = spec_host(L, "connect");
    if (lua_type(L, 1) == LUA_TSTRING) {
        const char *path = lua_tostring(L, 1);
        if (h->script && h->handler_ref != LUA_NOREF && strcmp(h->script, path) == 0) return 0;
        char *err = lh_use_script(h, path);
        if (err) {
            lua_pushstring(L, err);
            free(err);
            return lua_error(L);
        }
        return 0;
    }
    if (!lua_isfunction(L, 1) && !lua_istable(L, 1))
        return luaL_argerror(L, 1, "a script path, a handler function or a listener table");
    lua_settop(L, 1);
    lh_use_handler(h);
    return 0;
}

/* test_reload([path]): a hot reload, of the script or of path instead. */
static int l_reload(lua_State *L)
{
    lua_host *h = spec_host(L, "reload");
    const char *path = luaL_optstring(L, 1, NULL);
    if (path) {
        free(h->script);
        h->script = xstrdup(path);
        lh_setup_loader(h);
    }
    if (!h->script) return luaL_error(L, "reload: no script loaded (t.connect a script first)");
    settle(h->srv);
    if (h->srv->host->reload(h, "luaws test", false) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, h->last_error ? h->last_error : "reload failed");
        return 2;
    }
    settle(h->srv);
    lua_pushboolean(L, 1);
    return 1;
}

/* test_reset(): between specs: every connection dropped, every timer and
 * suspended event ended, nothing loaded, nothing published. */
static int l_reset(lua_State *L)
{
    lua_host *h = spec_host(L, "reset");
    server *s = h->srv;
    settle(s);
    server_drop_all(s);
    settle(s);
    lh_tasks_abandon(h);
    lt_free_all(h);
    settle(s);
    if (h->handler_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->handler_ref);
    h->handler_ref = LUA_NOREF;
    free(h->script);
    h->script = NULL;
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, h->published_ref);
    lh_store_reset(L);
    return 0;
}

/* test_drop(socket): its connection vanishes, with no close frame. */
static int l_drop(lua_State *L)
{
    lua_host *h = spec_host(L, "drop");
    lsocket *ls = luaL_checkudata(L, 1, SOCKET_MT);
    if (ls->c) ws_drop(ls->c);
    settle(h->srv);
    return 0;
}

/* test_http(request_text [, timeout_ms]) -> {status, headers, body}: one plain
 * HTTP exchange with the server under test, over a socket pair. */
static int l_http(lua_State *L)
{
    lua_host *h = spec_host(L, "request");
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    lua_Integer timeout = luaL_optinteger(L, 2, 1000);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
        return luaL_error(L, "request: socketpair: %s", strerror(errno));
    conn_adopt(&h->srv->listeners[0], sv[0], &(net_addr){.family = AF_INET, .port = 39999, .ip = {127, 0, 0, 1}});
    http_reader r;
    http_reader_init_response(&r, 1u << 20, 64u << 20);
    uint64_t deadline = uv_hrtime() / 1000000u + (uint64_t)timeout;
    size_t sent = 0;
    enum http_read_status st = HTTP_NEED_MORE;
    char buf[16384];
    while (st == HTTP_NEED_MORE && uv_hrtime() / 1000000u < deadline) {
        if (sent < len) {
            ssize_t n = write(sv[1], text + sent, len - sent);
            if (n > 0) sent += (size_t)n;
        }
        settle(h->srv);
        ssize_t n;
        while (st == HTTP_NEED_MORE && (n = read(sv[1], buf, sizeof buf)) > 0) {
            size_t used = 0, off = 0;
            while (st == HTTP_NEED_MORE && off < (size_t)n) {
                st = http_reader_feed(&r, buf + off, (size_t)n - off, &used);
                off += used;
                if (used == 0) break;
            }
        }
        if (n == 0 && st == HTTP_NEED_MORE) {   /* EOF: a body read to the end */
            size_t used;
            st = http_reader_feed(&r, NULL, 0, &used);
            if (st == HTTP_NEED_MORE) st = HTTP_FAILED;
        }
        if (st == HTTP_NEED_MORE) {
            uv_timer_start(&h->test_guard, on_guard, 10, 0);
            uv_run(h->srv->loop, UV_RUN_ONCE);
            uv_timer_stop(&h->test_guard);
        }
    }
    close(sv[1]);
    settle(h->srv);
    if (st != HTTP_DONE) {
        http_reader_free(&r);
        return luaL_error(L, "request: %s", st == HTTP_FAILED ? "the answer is not valid HTTP" : "no complete answer in time");
    }
    lua_pushcfunction(L, lh_push_response);
    lua_pushlightuserdata(L, &r.req);
    int status = lua_pcall(L, 1, 1, 0);
    http_reader_free(&r);
    if (status != LUA_OK) return lua_error(L);
    return 1;
}

static void test_published(lua_State *L, lua_host *h, const char *topic, size_t tlen, int value)
{
    value = lua_absindex(L, value);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->published_ref);
    lua_pushlstring(L, topic, tlen);
    if (lua_rawget(L, -2) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlstring(L, topic, tlen);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    lua_pushvalue(L, value);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 2);
}

/* test_published() -> {topic = {message, ...}} since the last reset. */
static int l_published(lua_State *L)
{
    lua_host *h = lh_host(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->published_ref);
    return 1;
}

/* test_remote_handler(fn): the handler of every fake remote's requests. */
static int l_remote_handler(lua_State *L)
{
    lua_host *h = lh_host(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    if (h->remote_handler_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->remote_handler_ref);
    h->remote_handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void test_link(lua_host *h, conn *c, int link)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        client_failed(c, strerror(errno));
        return;
    }
    /* A socket pair has no address: the server's end gets a made-up one. */
    net_addr peer = {.family = AF_INET, .port = (uint16_t)(40000u + c->id % 20000u), .ip = {127, 0, 0, 1}};
    listener *l = &h->srv->listeners[link == LH_LINK_REMOTE ? 1 : 0];
    conn *server_end = conn_adopt(l, sv[0], &peer);
    /* The spec's own ends neither ping nor need to be pinged: only the
     * script's sockets are subject to --ping-interval. */
    if (link == LH_LINK_SERVER) c->instrument = true;
    else if (server_end) server_end->instrument = true;
    client_start_fd(c, sv[1]);
}

static const luaL_Reg test_fns[] = {
    {"test_use", l_use},
    {"test_settle", l_settle},
    {"test_poll", l_poll},
    {"test_advance", l_advance},
    {"test_now", l_now},
    {"test_monotime", l_monotime},
    {"test_reload", l_reload},
    {"test_reset", l_reset},
    {"test_drop", l_drop},
    {"test_http", l_http},
    {"test_published", l_published},
    {"test_remote_handler", l_remote_handler},
    {NULL, NULL},
};

/* os.exit inside busted: unwinds to lua_test_main instead of exiting, so
 * that the server is closed down properly (and sanitizers see no leak). */
static int l_exit_unwind(lua_State *L)
{
    lua_Integer code = lua_isboolean(L, 1) ? !lua_toboolean(L, 1) : luaL_optinteger(L, 1, 0);
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "luaws_test_exit");
    return lua_error(L);
}

/* The message handler around busted: os.exit's unwinding passes as it is. */
static int exit_or_traceback(lua_State *L)
{
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "luaws_test_exit");
        bool is_exit = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (is_exit) return 1;
    }
    return lh_traceback(L);
}

/* Runs busted with argv in the host's state; returns the exit status. */
int lua_test_main(void *host, int argc, char **argv)
{
    lua_host *h = host;
    lua_State *L = h->L;
    h->test = true;
    h->test_link = test_link;
    h->test_published = test_published;
    uv_timer_init(h->srv->loop, &h->test_guard);
    lua_newtable(L);
    h->published_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "luaws.core");
    luaL_setfuncs(L, test_fns, 0);
    lua_pop(L, 2);
    /* busted reads its command line from arg. */
    lua_createtable(L, argc, 1);
    lua_pushliteral(L, "luaws test");
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    lua_getglobal(L, "os");
    lua_pushcfunction(L, l_exit_unwind);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);

    int code = 1;
    lua_pushcfunction(L, exit_or_traceback);
    /* The chunk's name is what busted calls itself in its usage line. */
    static const char run[] = "require('busted.runner')({ standalone = false })";
    if (luaL_loadbuffer(L, run, sizeof run - 1, "@luaws test") != LUA_OK || lua_pcall(L, 0, 0, -2) != LUA_OK) {
        if (lua_istable(L, -1) && lua_getfield(L, -1, "luaws_test_exit") == LUA_TNUMBER) {
            code = (int)lua_tointeger(L, -1);
        } else {
            const char *msg = lua_tostring(L, -1);
            if (msg && strstr(msg, "module 'busted.runner' not found"))
                fprintf(stderr, "luaws test: busted for Lua 5.4 is not installed (Debian: apt-get install lua-busted)\n");
            else
                fprintf(stderr, "luaws test: %s\n", msg ? msg : "(error object is not a string)");
        }
    } else {
        code = 0;
    }
    lua_settop(L, 0);
    uv_close((uv_handle_t *)&h->test_guard, NULL);
    fflush(stdout);
    return code;
}
