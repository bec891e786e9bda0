/* lua_api.c — the worker's Lua state: script, handler, request tables,
 * socket and buffer objects, and listener events run in coroutines.
 * See lua_api.h; the Lua half of the module is lua/luaws.lua. */
#include "lua_internal.h"
#include "log.h"
#include "version.h"
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HOOK_EVERY 10000     /* instructions between deadline checks */

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lua_host *h = ud;
    if (!ptr) osize = 0;    /* osize is then a type tag, not a size */
    if (nsize == 0) {
        free(ptr);
        h->mem -= osize;
        return NULL;
    }
    if (h->depth && h->mem_limit && nsize > osize && h->mem + (nsize - osize) > h->mem_limit) return NULL;
    void *p = realloc(ptr, nsize);
    if (p) h->mem += nsize - osize;
    return p;
}

static void l_hook(lua_State *L, lua_Debug *ar)
{
    lua_host *h = lh_host(L);
    if (h->deadline && uv_hrtime() > h->deadline) {
        /* From now on every instruction fails, so a pcall in the runaway
         * code cannot swallow the error: it escapes at the next step. */
        lua_sethook(L, l_hook, LUA_MASKCOUNT, 1);
        luaL_error(L, "script timeout: ran for over %d ms (--script-timeout)",
                   (int)h->srv->cfg->script_timeout_ms);
    }
}

static int l_panic(lua_State *L)
{
    log_error("Lua panic (unprotected error): %s", lua_tostring(L, -1));
    abort();
}

/* Around every entry into Lua code: arms the limits for the outermost one. */
static void enter_lua(lua_host *h)
{
    if (h->depth++ == 0 && h->srv->cfg && h->srv->cfg->script_timeout_ms) {
        h->deadline = uv_hrtime() + (uint64_t)h->srv->cfg->script_timeout_ms * 1000000u;
        lua_sethook(h->L, l_hook, LUA_MASKCOUNT, HOOK_EVERY);   /* after a timeout, back to normal */
    }
}

static void leave_lua(lua_host *h)
{
    if (--h->depth == 0) h->deadline = 0;
}


/* ---- buffers ---- */

static void push_buffer(lua_State *L, const void *data, size_t len)
{
    void *p = lua_newuserdatauv(L, len, 0);
    if (len) memcpy(p, data, len);
    luaL_setmetatable(L, BUFFER_MT);
}

static int l_buffer_new(lua_State *L)
{
    size_t len;
    const char *s;
    if (luaL_testudata(L, 1, BUFFER_MT)) {
        s = lua_touserdata(L, 1);
        len = lua_rawlen(L, 1);
    } else {
        s = luaL_checklstring(L, 1, &len);
    }
    push_buffer(L, s, len);
    return 1;
}

static int l_buffer_string(lua_State *L)
{
    luaL_checkudata(L, 1, BUFFER_MT);
    lua_pushlstring(L, lua_touserdata(L, 1), lua_rawlen(L, 1));
    return 1;
}

static int l_buffer_len(lua_State *L)
{
    luaL_checkudata(L, 1, BUFFER_MT);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 1));
    return 1;
}

static int l_buffer_eq(lua_State *L)
{
    void *a = luaL_checkudata(L, 1, BUFFER_MT), *b = luaL_checkudata(L, 2, BUFFER_MT);
    size_t n = lua_rawlen(L, 1);
    lua_pushboolean(L, n == lua_rawlen(L, 2) && memcmp(a, b, n) == 0);
    return 1;
}

static int l_buffer_tostring(lua_State *L)
{
    luaL_checkudata(L, 1, BUFFER_MT);
    lua_pushfstring(L, "luaws.buffer(%d bytes)", (int)lua_rawlen(L, 1));
    return 1;
}

/* Text for a string, binary for a buffer; anything else is an error. */
static const uint8_t *check_payload(lua_State *L, int idx, size_t *len, uint8_t *opcode)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        *opcode = WS_OP_TEXT;
        return (const uint8_t *)lua_tolstring(L, idx, len);
    }
    if (luaL_testudata(L, idx, BUFFER_MT)) {
        *opcode = WS_OP_BINARY;
        *len = lua_rawlen(L, idx);
        return lua_touserdata(L, idx);
    }
    luaL_typeerror(L, idx, "string or luaws.buffer");
    return NULL;
}

/* ---- tasks (coroutines running events) ---- */

static task **task_slot(lua_State *co) { return (task **)lua_getextraspace(co); }

static task *task_get(lua_host *h)
{
    task *t = h->free_tasks;
    if (t) {
        h->free_tasks = t->next;
        h->nfree--;
    } else {
        t = calloc(1, sizeof *t);
        if (!t) abort();
        t->h = h;
        t->co = lua_newthread(h->L);
        t->ref = luaL_ref(h->L, LUA_REGISTRYINDEX);
        *task_slot(t->co) = t;
    }
    t->next = NULL;
    t->owner = t->waiting_on = NULL;
    t->woke_closed = false;
    return t;
}

/* A coroutine that finished cleanly is kept for the next event. */
static void task_put(task *t, bool reusable)
{
    lua_host *h = t->h;
    if (reusable && h->nfree < TASK_POOL_MAX) {
        lua_settop(t->co, 0);
        t->next = h->free_tasks;
        h->free_tasks = t;
        h->nfree++;
        return;
    }
    luaL_unref(h->L, LUA_REGISTRYINDEX, t->ref);
    free(t);
}

static void push_socket(lua_host *h, conn *c) { lua_rawgeti(h->L, LUA_REGISTRYINDEX, c->socket_ref); }

/* Pushes listener[name] and the socket; false (nothing pushed) if absent. */
static bool push_event(lua_host *h, conn *c, const char *name)
{
    lua_State *L = h->L;
    if (c->socket_ref == LUA_NOREF) return false;
    push_socket(h, c);
    lua_getiuservalue(L, -1, 2);            /* socket, listener */
    if (lua_getfield(L, -1, name) == LUA_TNIL) {
        lua_pop(L, 3);
        return false;
    }
    lua_replace(L, -2);                     /* socket, fn */
    lua_insert(L, -2);                      /* fn, socket */
    return true;
}

static void on_task_error(task *t, lua_State *co, int status);
static void task_finished(task *t);

static void resume(task *t, int nargs)
{
    lua_State *co = t->co;
    int nres;
    enter_lua(t->h);
    int status = lua_resume(co, t->h->L, nargs, &nres);
    leave_lua(t->h);
    if (status == LUA_YIELD) {
        if (t->waiting_on || t->sleeping) {
            if (t->owner && !t->owner->running) {
                t->owner->running = t;
                conn_pause(t->owner);
            }
            return;
        }
        lua_pushliteral(co, "attempt to yield from a listener event");
        status = LUA_ERRRUN;
    }
    if (status != LUA_OK) on_task_error(t, co, status);
    else lua_settop(co, 0);
    bool ok = status == LUA_OK;
    task_finished(t);
    task_put(t, ok);
}

task *lh_current_task(lua_State *L)
{
    task *t = *task_slot(L);
    return t && t->co == L ? t : NULL;
}

void lh_resume(task *t) { resume(t, 0); }

void lh_run_event(lua_host *h, conn *c, const char *event, int nargs)
{
    task *t = task_get(h);
    t->owner = c;
    t->event = event;
    lua_xmove(h->L, t->co, nargs + 1);
    resume(t, nargs);
}

static void task_finished(task *t)
{
    conn *c = t->owner;
    t->owner = NULL;
    if (!c) return;
    if (c->running == t) {
        c->running = NULL;
        if (c->close_deferred) {
            c->close_deferred = false;
            lh_on_close(c);
        }
        if (!c->running) conn_resume(c);
    }
}

static void on_task_error(task *t, lua_State *co, int status)
{
    lua_host *h = t->h;
    lua_State *L = h->L;
    conn *c = t->owner;
    if (status == LUA_ERRMEM) lua_pushliteral(L, "not enough memory (--script-memory)");
    else if (lua_type(co, -1) == LUA_TSTRING) lua_pushstring(L, lua_tostring(co, -1));
    else lua_pushliteral(L, "(error object is not a string)");
    luaL_traceback(L, co, lua_tostring(L, -1), 0);
    log_error("conn %llu: error in %s: %s", c ? (unsigned long long)c->id : 0ULL, t->event, lua_tostring(L, -1));
    h->srv->metrics.script_errors++;
    lua_pop(L, 1);
    /* Drop the dead coroutine's frames now, so that what they held (a
     * runaway allocation, say) can be collected before on_error runs. */
    lua_resetthread(co);
    if (status == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT, 0);
    /* The message, without the traceback, is what on_error sees. */
    bool after_open = c && strcmp(t->event, "on_error") != 0 && strcmp(t->event, "on_close") != 0;
    if (after_open && push_event(h, c, "on_error")) {
        lua_rotate(L, -3, -1);  /* fn, socket, msg */
        lh_run_event(h, c, "on_error", 2);
    } else {
        lua_pop(L, 1);
    }
    static const char internal[] = "internal error";
    if (c) ws_close(c, WS_CLOSE_INTERNAL, internal, sizeof internal - 1);
}

void lh_wake_writers(conn *c)
{
    task *t = c->waiters;
    c->waiters = NULL;
    bool closed = c->state != CONN_WS && c->state != CONN_WS_CLOSING;
    while (t) {
        task *next = t->next;
        t->next = NULL;
        t->waiting_on = NULL;
        t->woke_closed = closed;
        resume(t, 0);
        t = next;
    }
}

/* ---- socket methods ---- */

static lsocket *check_socket(lua_State *L) { return luaL_checkudata(L, 1, SOCKET_MT); }

static int send_k(lua_State *L, int status, lua_KContext ctx)
{
    task *t = *task_slot(L);
    if (t && t->woke_closed) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int closed_result(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
}

static int l_socket_send(lua_State *L)
{
    lsocket *s = check_socket(L);
    size_t len;
    uint8_t opcode;
    const uint8_t *data = check_payload(L, 2, &len, &opcode);
    if (opcode == WS_OP_TEXT && !lh_text_valid(lh_host(L), data, len))
        return luaL_error(L, "send: text message is not valid UTF-8 (send a luaws.buffer for binary)");
    bool async = !lua_isnoneornil(L, 3) || !lua_isnoneornil(L, 4);
    if (async) {
        if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
        if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TFUNCTION);
    }
    conn *c = s->c;
    if (!c || !ws_is_open(c)) {
        if (async && !lua_isnoneornil(L, 4)) {
            lua_pushvalue(L, 4);
            lua_pushliteral(L, "closed");
            lua_call(L, 1, 0);
        }
        return closed_result(L);
    }
    if (async) {
        lua_settop(L, 4);
        int fail_ref = lua_isnil(L, 4) ? LUA_NOREF : luaL_ref(L, LUA_REGISTRYINDEX);
        int ok_ref = lua_isnil(L, 3) ? LUA_NOREF : luaL_ref(L, LUA_REGISTRYINDEX);
        /* Without callbacks there is nothing to tell; with one, conn_write
         * keeps the refs until libuv reports the write. */
        if (ok_ref == LUA_NOREF && fail_ref == LUA_NOREF) ok_ref = LUA_REFNIL;
        if (ws_send(c, opcode, data, len, ok_ref, fail_ref) < 0) {
            lh_send_done(c->srv->lua, ok_ref, fail_ref, "closed");
            return closed_result(L);
        }
        lua_pushboolean(L, 1);
        return 1;
    }
    if (ws_send(c, opcode, data, len, LUA_NOREF, LUA_NOREF) < 0) return closed_result(L);
    task *t = *task_slot(L);
    if (c->cork.len >= c->srv->cfg->write_high_water) conn_uncork(c);
    /* Wait only for bytes libuv holds: their write callbacks wake us. */
    if (c->queued >= c->srv->cfg->write_high_water && t && t->co == L && lua_isyieldable(L)) {
        t->waiting_on = c;
        t->next = c->waiters;
        c->waiters = t;
        return lua_yieldk(L, 0, 0, send_k);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int send_control(lua_State *L, uint8_t opcode)
{
    lsocket *s = check_socket(L);
    size_t len = 0;
    const uint8_t *data = (const uint8_t *)"";
    if (!lua_isnoneornil(L, 2)) {
        uint8_t ignored;
        data = check_payload(L, 2, &len, &ignored);
    }
    if (len > WS_MAX_CONTROL_PAYLOAD) return luaL_argerror(L, 2, "control frame payload over 125 bytes");
    if (!s->c || !ws_is_open(s->c) || ws_send(s->c, opcode, data, len, LUA_NOREF, LUA_NOREF) < 0)
        return closed_result(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_socket_ping(lua_State *L) { return send_control(L, WS_OP_PING); }
static int l_socket_pong(lua_State *L) { return send_control(L, WS_OP_PONG); }

static int l_socket_close(lua_State *L)
{
    lsocket *s = check_socket(L);
    lua_Integer code = luaL_optinteger(L, 2, WS_CLOSE_NORMAL);
    size_t rlen = 0;
    const char *reason = luaL_optlstring(L, 3, "", &rlen);
    if (code < 0 || code > 65535 || !ws_close_code_valid((unsigned)code))
        return luaL_argerror(L, 2, "not a close code an endpoint may send (1000-1003, 1007-1014, 3000-4999)");
    if (rlen > WS_MAX_CONTROL_PAYLOAD - 2) return luaL_argerror(L, 3, "close reason over 123 bytes");
    if (!utf8_valid((const uint8_t *)reason, rlen)) return luaL_argerror(L, 3, "close reason is not valid UTF-8");
    conn *c = s->c;
    if (c && c->is_client && (c->state == CONN_CONNECTING || c->state == CONN_CLIENT_HANDSHAKE)) {
        /* Given up before it opened: no on_open; on_close(code, reason)
         * follows from the loop, once the connection is gone. */
        c->close_code = (uint16_t)code;
        free(c->close_reason);
        c->close_reason = strdup(reason);
        conn_close_now(c);
        lua_pushboolean(L, 1);
        return 1;
    }
    if (!s->c || !ws_is_open(s->c)) return closed_result(L);
    ws_close(s->c, (uint16_t)code, reason, rlen);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_socket_is_open(lua_State *L)
{
    lsocket *s = check_socket(L);
    lua_pushboolean(L, s->c && ws_is_open(s->c));
    return 1;
}

static int l_socket_index(lua_State *L)
{
    check_socket(L);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;   /* a method */
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int l_socket_newindex(lua_State *L)
{
    check_socket(L);
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

static int l_socket_tostring(lua_State *L)
{
    lsocket *s = check_socket(L);
    lua_getiuservalue(L, 1, 1);
    lua_getfield(L, -1, "id");
    lua_pushfstring(L, "luaws.socket(%s%s)", lua_tostring(L, -1), s->c && ws_is_open(s->c) ? "" : ", closed");
    return 1;
}

static int l_log(lua_State *L)
{
    int level = log_level_parse(luaL_checkstring(L, 1));
    if (level < 0) return luaL_argerror(L, 1, "debug, info, warn or error");
    int n = lua_gettop(L);   /* before luaL_buffinit, which may push */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 2; i <= n; i++) {
        if (i > 2) luaL_addchar(&b, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    log_msg((enum log_level)level, "%s", lua_tostring(L, -1));
    return 0;
}

static int l_connect(lua_State *L);
static int l_client_key(lua_State *L);

/* core.scandir(path) -> sorted list of entry names (directory mode). */
static int l_scandir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    uv_fs_t req;
    int n = uv_fs_scandir(NULL, &req, path, 0, NULL);
    if (n < 0) {
        uv_fs_req_cleanup(&req);
        return luaL_error(L, "cannot read directory %s: %s", path, uv_strerror(n));
    }
    lua_createtable(L, n, 0);
    uv_dirent_t ent;
    int i = 0;
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
        lua_pushstring(L, ent.name);
        lua_rawseti(L, -2, ++i);
    }
    uv_fs_req_cleanup(&req);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

static int luaopen_core(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"buffer", l_buffer_new},
        {"log", l_log},
        {"connect", l_connect},
        {"client_key", l_client_key},
        {"scandir", l_scandir},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    lua_pushliteral(L, LUAWS_VERSION);
    lua_setfield(L, -2, "version");
    lt_register(L);
    lp_register(L);
    ls_register(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "luaws.socket_methods");
    lua_setfield(L, -2, "socket_methods");
    return 1;
}

static void create_metatables(lua_State *L)
{
    static const luaL_Reg buffer_methods[] = {
        {"string", l_buffer_string},
        {NULL, NULL},
    };
    luaL_newmetatable(L, BUFFER_MT);
    luaL_newlib(L, buffer_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_buffer_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, l_buffer_eq);
    lua_setfield(L, -2, "__eq");
    lua_pushcfunction(L, l_buffer_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    static const luaL_Reg socket_methods[] = {
        {"send", l_socket_send},
        {"ping", l_socket_ping},
        {"pong", l_socket_pong},
        {"close", l_socket_close},
        {"is_open", l_socket_is_open},
        {NULL, NULL},
    };
    luaL_newmetatable(L, SOCKET_MT);
    luaL_newlib(L, socket_methods);
    luaL_setfuncs(L, lp_socket_methods, 0);
    lua_pushvalue(L, -1);   /* Lua adds methods (send_json) through core.socket_methods */
    lua_setfield(L, LUA_REGISTRYINDEX, "luaws.socket_methods");
    lua_pushcclosure(L, l_socket_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_socket_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, l_socket_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

/* ---- the state and the script ---- */

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = luaL_tolstring(L, 1, NULL);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Lua modules live in lua/ beside the binary (a source tree) or in
 * ../share/luaws/lua (an installed tree). A script's neighbours are found
 * by luaws.loader, which tracks them for hot reload. */
static void set_package_path(lua_State *L)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) n = 0;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/?.lua;%s/../share/luaws/lua/?.lua;%s", exe, exe, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

static char *dup_error(const char *msg)
{
    char *s = strdup(msg ? msg : "unknown error");
    if (!s) abort();
    return s;
}

/* Calls luaws.loader.FN(script) with n results; false (message on the
 * stack) if it raised an error. */
static bool call_loader(lua_host *h, const char *fn, int nresults)
{
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->traceback_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->loader_ref);
    lua_getfield(L, -1, fn);
    lua_replace(L, -2);
    lua_pushstring(L, h->script);
    enter_lua(h);
    int status = lua_pcall(L, 1, nresults, -3);
    leave_lua(h);
    if (status != LUA_OK) {
        lua_remove(L, -2);
        return false;
    }
    lua_remove(L, -nresults - 1);
    return true;
}

/* Loads the script; on success stores its handler, else leaves the old one
 * and returns a malloc'd message. */
static char *load_script(lua_host *h)
{
    lua_State *L = h->L;
    /* Timers the new version starts while loading are marked as its own;
     * those of older versions end once it loaded (else every reload would
     * add another copy of a load-time luaws.every). */
    h->loading = true;
    bool called = call_loader(h, "load", 2);  /* handler | nil, message; or an error */
    h->loading = false;
    bool ok = called && !lua_isnil(L, -2);
    if (ok) h->version++;
    lt_end_load_timers(h, ok);
    if (!ok) {
        char *err = dup_error(lua_tostring(L, -1));
        lua_pop(L, called ? 2 : 1);
        return err;
    }
    lua_pop(L, 1);
    h->listener_only = lua_istable(L, -1);
    if (h->handler_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->handler_ref);
    h->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return NULL;
}

lua_host *lh_new(server *srv, const char *script, char **err)
{
    lua_host *h = calloc(1, sizeof *h);
    if (!h) abort();
    h->srv = srv;
    h->handler_ref = LUA_NOREF;
    h->script = strdup(script);
    h->mem_limit = srv->cfg ? srv->cfg->script_memory : 0;
    lua_State *L = h->L = lua_newstate(l_alloc, h);
    if (!L || !h->script) abort();
    *task_slot(L) = NULL;
    /* Inherited by every coroutine created from here on. */
    lua_sethook(L, l_hook, LUA_MASKCOUNT, HOOK_EVERY);
    lua_atpanic(L, l_panic);
    luaL_openlibs(L);
    create_metatables(L);
    luaL_requiref(L, "luaws.core", luaopen_core, 0);
    lua_pop(L, 1);
    set_package_path(L);

    lua_pushboolean(L, 0);
    h->valid_text_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, traceback);
    h->traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->traceback_ref);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "luaws.loader");
    if (lua_pcall(L, 1, 1, -3) != LUA_OK) {
        *err = dup_error(lua_tostring(L, -1));
        lh_free(h);
        return NULL;
    }
    lua_getfield(L, -1, "setup");
    lua_pushstring(L, script);
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, srv->cfg && srv->cfg->console);
    lua_setfield(L, -2, "console");
    lua_call(L, 2, 0);
    h->loader_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);

    if ((*err = load_script(h))) {
        lh_free(h);
        return NULL;
    }
    return h;
}

char **lh_watched_files(lua_host *h, size_t *n)
{
    lua_State *L = h->L;
    *n = 0;
    if (!call_loader(h, "files", 1)) {
        lua_pop(L, 1);
        return NULL;
    }
    size_t len = lua_rawlen(L, -1);
    char **files = calloc(len + 1, sizeof *files);
    if (!files) abort();
    for (size_t i = 0; i < len; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        files[i] = dup_error(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    *n = len;
    return files;
}

/* Asks the current handler for c's listener, given c's original request.
 * Pushes it and returns true, or logs why and returns false. */
static bool new_listener(lua_host *h, conn *c)
{
    lua_State *L = h->L;
    if (h->listener_only) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->handler_ref);
        return true;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->traceback_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->handler_ref);
    push_socket(h, c);
    lua_getiuservalue(L, -1, 1);
    lua_getfield(L, -1, "request");
    lua_replace(L, -3);
    lua_pop(L, 1);                            /* traceback, handler, request */
    enter_lua(h);
    int status = lua_pcall(L, 1, 1, -3);
    leave_lua(h);
    if (status != LUA_OK) {
        log_warn("conn %llu keeps its old listener: the new handler failed: %s", (unsigned long long)c->id,
                 lua_tostring(L, -1));
        lua_pop(L, 2);
        return false;
    }
    lua_remove(L, -2);
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "listener");
        lua_remove(L, -2);
    }
    if (!lua_istable(L, -1)) {
        log_warn("conn %llu keeps its old listener: the new handler returned no listener",
                 (unsigned long long)c->id);
        lua_pop(L, 1);
        return false;
    }
    return true;
}

int lh_reload(lua_host *h, const char *why, bool quiet_repeat)
{
    uint64_t start = uv_hrtime();
    char *err = load_script(h);
    if (err) {
        /* Retries after a failure (a directory appeared, say) repeat the
         * same error: report it once. */
        bool same = quiet_repeat && h->last_error && strcmp(h->last_error, err) == 0;
        log_msg(same ? LOG_DEBUG : LOG_ERROR, "reload (%s) failed, the old code keeps serving: %s", why, err);
        free(h->last_error);
        h->last_error = err;
        h->srv->metrics.reload_failures++;
        return -1;
    }
    free(h->last_error);
    h->last_error = NULL;
    h->srv->metrics.reloads++;
    lua_State *L = h->L;
    size_t moved = 0, kept = 0;
    /* First give every open socket its new listener, then run on_reload,
     * so that handlers of on_reload see every socket already moved. */
    for (conn *c = h->srv->conns; c; c = c->next) {
        /* Outbound sockets (luaws.connect) keep the listener they were given. */
        if (c->state != CONN_WS || c->socket_ref == LUA_NOREF || c->is_client) continue;
        if (!new_listener(h, c)) {
            kept++;
            continue;
        }
        push_socket(h, c);
        lua_insert(L, -2);
        lua_setiuservalue(L, -2, 2);
        lua_pop(L, 1);
        c->reloaded = true;
        moved++;
    }
    for (conn *c = h->srv->conns, *next; c; c = next) {
        next = c->next;
        if (!c->reloaded) continue;
        c->reloaded = false;
        if (c->state == CONN_WS && push_event(h, c, "on_reload")) lh_run_event(h, c, "on_reload", 1);
    }
    double ms = (double)(uv_hrtime() - start) / 1e6;
    size_t nfiles = 0;
    char **files = lh_watched_files(h, &nfiles);
    char list[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < nfiles; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", files[i]);
        if (w > 0 && (size_t)w < sizeof list - used) used += (size_t)w;
        free(files[i]);
    }
    free(files);
    log_info("reloaded (%s) %s in %.1f ms: %zu connections moved, %zu kept their old listener", why, list, ms,
             moved, kept);
    return 0;
}

void lh_stop(lua_host *h) { lt_free_all(h); }

void lh_free(lua_host *h)
{
    if (!h) return;
    lt_free_all(h);
    lua_close(h->L);
    free(h->script);
    free(h->last_error);
    while (h->free_tasks) {
        task *t = h->free_tasks;
        h->free_tasks = t->next;
        free(t);
    }
    free(h);
}

/* ---- requests ---- */

static void set_str(lua_State *L, const char *k, const char *v, size_t n)
{
    lua_pushlstring(L, v, n);
    lua_setfield(L, -2, k);
}

static void push_request(lua_host *h, conn *c, const http_request *req, bool upgrade)
{
    lua_State *L = h->L;
    lua_createtable(L, 0, 12);
    lua_pushstring(L, req->method);
    lua_setfield(L, -2, "method");
    const char *q = memchr(req->url, '?', req->url_len);
    size_t plen = q ? (size_t)(q - req->url) : req->url_len;
    set_str(L, "uri", req->url, plen);
    if (q) set_str(L, "query_string", q + 1, req->url_len - plen - 1);
    lua_pushfstring(L, "HTTP/%d.%d", req->http_major, req->http_minor);
    lua_setfield(L, -2, "protocol");
    lua_pushstring(L, c->tls ? (upgrade ? "wss" : "https") : (upgrade ? "ws" : "http"));
    lua_setfield(L, -2, "scheme");
    lua_createtable(L, 0, (int)req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        lua_pushstring(L, req->headers[i].value);
        lua_setfield(L, -2, req->headers[i].name);
    }
    lua_setfield(L, -2, "headers");
    /* remote_addr without the port, as Ring has it */
    const char *colon = strrchr(c->peer, ':');
    set_str(L, "remote_addr", c->peer, colon ? (size_t)(colon - c->peer) : strlen(c->peer));
    const char *host = http_header_get(req, "host");
    if (host && *host) {
        const char *end = host[0] == '[' ? strchr(host, ']') : strchr(host, ':');
        size_t n = end ? (size_t)(end - host) + (host[0] == '[') : strlen(host);
        set_str(L, "server_name", host, n);
    } else {
        lua_pushstring(L, c->lst->host);
        lua_setfield(L, -2, "server_name");
    }
    lua_pushinteger(L, c->lst->port);
    lua_setfield(L, -2, "server_port");
    if (req->body) {
        set_str(L, "body", req->body, req->body_len);
    }
}

/* Header lines from a Lua table; returns false (message on stack) on a bad value. */
static bool add_headers(lua_State *L, int idx, luaL_Buffer *b, bool *has_type)
{
    if (lua_isnil(L, idx)) return true;
    if (!lua_istable(L, idx)) {
        lua_pushliteral(L, "response headers must be a table");
        return false;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING || !(lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)) {
            lua_pop(L, 2);
            lua_pushliteral(L, "response header names and values must be strings");
            return false;
        }
        const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
        if (strpbrk(k, "\r\n:") || strpbrk(v, "\r\n") || !*k) {
            lua_pop(L, 2);
            lua_pushfstring(L, "response header %s has a forbidden character", k);
            return false;
        }
        if (strcasecmp(k, "content-length") == 0) {  /* we compute it */
            lua_pop(L, 1);
            continue;
        }
        if (strcasecmp(k, "content-type") == 0) *has_type = true;
        luaL_addstring(b, k);
        luaL_addstring(b, ": ");
        luaL_addstring(b, v);
        luaL_addstring(b, "\r\n");
        lua_pop(L, 1);
    }
    return true;
}

static void respond_500(conn *c, const char *why)
{
    static const char body[] = "500 Internal Server Error\n";
    log_error("conn %llu: handler error: %s", (unsigned long long)c->id, why);
    c->srv->metrics.script_errors++;
    conn_respond(c, 500, "Content-Type: text/plain; charset=utf-8\r\n", 41, body, sizeof body - 1, false);
}

static bool protocol_offered(const http_request *req, const char *proto)
{
    const char *offered = http_header_get(req, "sec-websocket-protocol");
    return offered && http_token_list_has(offered, proto);
}

/* Makes c's Lua socket from the request (below) and listener (top). */
static void attach_socket(lua_host *h, conn *c)
{
    lua_State *L = h->L;                      /* request, listener */
    lsocket *s = lua_newuserdatauv(L, sizeof *s, 2);
    s->c = c;
    luaL_setmetatable(L, SOCKET_MT);
    lua_insert(L, -2);                        /* request, socket, listener */
    lua_setiuservalue(L, -2, 2);
    lua_createtable(L, 0, 3);                 /* request, socket, fields */
    lua_pushinteger(L, (lua_Integer)c->id);
    lua_setfield(L, -2, "id");
    lua_newtable(L);
    lua_setfield(L, -2, "data");
    lua_rotate(L, -3, -1);                    /* socket, fields, request */
    lua_setfield(L, -2, "request");
    lua_setiuservalue(L, -2, 1);
    c->socket_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* socket.protocol: the subprotocol in use, if any. */
static void set_protocol(lua_host *h, conn *c, const char *protocol)
{
    if (!protocol) return;
    push_socket(h, c);
    lua_getiuservalue(h->L, -1, 1);
    lua_pushstring(h->L, protocol);
    lua_setfield(h->L, -2, "protocol");
    lua_pop(h->L, 2);
}

/* Upgrades c with the listener on top of the stack and the request below it. */
static void upgrade(lua_host *h, conn *c, const http_request *req, const char *protocol,
                    const char *head, size_t head_len)
{
    conn_upgrade(c, req, protocol, head, head_len);
    attach_socket(h, c);
    set_protocol(h, c, protocol);
    if (push_event(h, c, "on_open")) lh_run_event(h, c, "on_open", 1);
}

/* luaws.core.connect(host, port, request_text, key, protocols, deflate,
 * listener, request_table) -> socket. lua/luaws.lua builds the request. */
static int l_connect(lua_State *L)
{
    lua_host *h = lh_host(L);
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    size_t len;
    const char *request = luaL_checklstring(L, 3, &len);
    const char *key = luaL_checkstring(L, 4);
    const char *protocols = luaL_optstring(L, 5, NULL);
    bool deflate = lua_toboolean(L, 6);
    luaL_checktype(L, 7, LUA_TTABLE);
    luaL_checktype(L, 8, LUA_TTABLE);
    bool tls = lua_toboolean(L, 9);
    const char *ca = luaL_optstring(L, 10, NULL);
    bool verify = lua_isnoneornil(L, 11) || lua_toboolean(L, 11);
    if (port < 1 || port > 65535) return luaL_argerror(L, 2, "port out of range");
    if (!h->srv->loop) return luaL_error(L, "luaws.connect: the server is not running yet");
    client_request cr = {host, (int)port, request, len, key, protocols, deflate, tls, ca, verify};
    conn *c = client_connect(h->srv, &cr);
    lua_pushvalue(L, 8);
    lua_pushvalue(L, 7);
    lua_xmove(L, h->L, 2);                    /* attach_socket works on the main stack */
    attach_socket(h, c);
    push_socket(h, c);
    lua_xmove(h->L, L, 1);
    client_start(c);
    return 1;
}

static int l_client_key(lua_State *L)
{
    char key[25];
    ws_client_key(key);
    lua_pushstring(L, key);
    return 1;
}

void lh_client_open(conn *c)
{
    lua_host *h = c->srv->lua;
    set_protocol(h, c, c->client_protocol);
    if (push_event(h, c, "on_open")) lh_run_event(h, c, "on_open", 1);
}

void lh_client_failed(conn *c, const char *why)
{
    if (c->closed_event_done || c->socket_ref == LUA_NOREF) return;
    lh_on_error(c, why);
    c->close_code = WS_CLOSE_ABNORMAL;
    free(c->close_reason);
    c->close_reason = strdup(why);
    lh_on_close(c);
}

void lh_request(lua_host *h, conn *c, const http_request *req)
{
    lua_State *L = h->L;
    const char *up = http_header_get(req, "upgrade");
    bool is_ws = up && http_token_list_has(up, "websocket");
    int base = lua_gettop(L);

    if (h->listener_only) {
        if (!is_ws) {
            static const char body[] = "426 Upgrade Required: this endpoint speaks WebSocket\n";
            conn_respond(c, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n", 47,
                         body, sizeof body - 1, req->keep_alive);
            return;
        }
        push_request(h, c, req, true);
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->handler_ref);
        upgrade(h, c, req, NULL, NULL, 0);
        lua_settop(L, base);
        return;
    }

    lua_rawgeti(L, LUA_REGISTRYINDEX, h->traceback_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->handler_ref);
    push_request(h, c, req, is_ws);
    lua_pushvalue(L, -1);
    lua_insert(L, base + 1);                  /* request, traceback, handler, request */
    enter_lua(h);
    int status = lua_pcall(L, 1, 1, base + 2);
    leave_lua(h);
    if (status != LUA_OK) {
        respond_500(c, lua_tostring(L, -1));
        lua_settop(L, base);
        return;
    }
    int resp = lua_gettop(L);
    if (!lua_istable(L, resp)) {
        lua_pushfstring(L, "the handler returned %s, not a response table", luaL_typename(L, resp));
        respond_500(c, lua_tostring(L, -1));
        lua_settop(L, base);
        return;
    }
    luaL_Buffer b;
    bool has_type = false;
    lua_getfield(L, resp, "headers");
    int hidx = lua_gettop(L);
    luaL_buffinit(L, &b);
    if (!add_headers(L, hidx, &b, &has_type)) {
        respond_500(c, lua_tostring(L, -1));
        lua_settop(L, base);
        return;
    }
    if (lua_getfield(L, resp, "listener") != LUA_TNIL) {
        if (!lua_istable(L, -1)) {
            respond_500(c, "listener must be a table of event functions");
        } else if (!is_ws) {
            static const char body[] = "426 Upgrade Required: this endpoint speaks WebSocket\n";
            log_warn("conn %llu: handler returned a listener for a plain HTTP request", (unsigned long long)c->id);
            conn_respond(c, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n", 47,
                         body, sizeof body - 1, req->keep_alive);
        } else {
            int lidx = lua_gettop(L);
            lua_getfield(L, resp, "protocol");
            const char *protocol = lua_tostring(L, -1);
            if (protocol && !protocol_offered(req, protocol)) {
                lua_pushfstring(L, "the handler chose subprotocol '%s', which the client did not offer", protocol);
                respond_500(c, lua_tostring(L, -1));
            } else {
                luaL_pushresult(&b);          /* header block */
                size_t head_len;
                const char *head = lua_tolstring(L, -1, &head_len);
                lua_pushvalue(L, base + 1);   /* request */
                lua_pushvalue(L, lidx);       /* listener */
                upgrade(h, c, req, protocol, head, head_len);
            }
        }
        lua_settop(L, base);
        return;
    }
    lua_pop(L, 1);
    lua_Integer code = 200;
    if (lua_getfield(L, resp, "status") != LUA_TNIL) {
        int isnum;
        code = lua_tointegerx(L, -1, &isnum);
        if (!isnum || code < 100 || code > 999 || code == 101) {
            respond_500(c, "response status must be an integer from 100 to 999 (and not 101)");
            lua_settop(L, base);
            return;
        }
    }
    lua_pop(L, 1);
    size_t body_len = 0;
    const char *body = "";
    lua_getfield(L, resp, "body");
    if (lua_type(L, -1) == LUA_TSTRING) {
        body = lua_tolstring(L, -1, &body_len);
    } else if (luaL_testudata(L, -1, BUFFER_MT)) {
        body = lua_touserdata(L, -1);
        body_len = lua_rawlen(L, -1);
    } else if (!lua_isnil(L, -1)) {
        respond_500(c, "response body must be a string or a luaws.buffer");
        lua_settop(L, base);
        return;
    }
    int body_idx = lua_gettop(L);
    if (!has_type && body_len) luaL_addstring(&b, "Content-Type: text/plain; charset=utf-8\r\n");
    lua_pushvalue(L, body_idx);               /* keep the body reachable */
    luaL_pushresult(&b);
    size_t head_len;
    const char *head = lua_tolstring(L, -1, &head_len);
    conn_respond(c, (int)code, head, head_len, body, body_len, req->keep_alive);
    lua_settop(L, base);
}

/* ---- events ---- */

#define VALID_TEXT_MIN 256

void lh_on_message(conn *c, uint8_t opcode, const uint8_t *data, size_t len)
{
    lua_host *h = c->srv->lua;
    if (!push_event(h, c, "on_message")) return;
    if (opcode == WS_OP_TEXT) {
        lua_pushlstring(h->L, (const char *)data, len);
        /* Short ones cost less to check again than to remember. */
        if (len >= VALID_TEXT_MIN) {
            lua_pushvalue(h->L, -1);
            lua_rawseti(h->L, LUA_REGISTRYINDEX, h->valid_text_ref);
            h->valid_text = lua_tostring(h->L, -1);
        }
    } else {
        push_buffer(h->L, data, len);
    }
    lh_run_event(h, c, "on_message", 2);
}

bool lh_text_valid(lua_host *h, const uint8_t *p, size_t len)
{
    return (h->valid_text && (const char *)p == h->valid_text) || utf8_valid(p, len);
}

static void control_event(conn *c, const char *name, const uint8_t *data, size_t len)
{
    lua_host *h = c->srv->lua;
    if (!push_event(h, c, name)) return;
    push_buffer(h->L, data, len);
    lh_run_event(h, c, name, 2);
}

void lh_on_ping(conn *c, const uint8_t *data, size_t len) { control_event(c, "on_ping", data, len); }
void lh_on_pong(conn *c, const uint8_t *data, size_t len) { control_event(c, "on_pong", data, len); }

void lh_on_error(conn *c, const char *err)
{
    lua_host *h = c->srv->lua;
    if (!push_event(h, c, "on_error")) return;
    lua_pushstring(h->L, err);
    lh_run_event(h, c, "on_error", 2);
}

bool lh_has_ping_handler(conn *c)
{
    lua_host *h = c->srv->lua;
    if (!push_event(h, c, "on_ping")) return false;
    lua_pop(h->L, 2);
    return true;
}

void lh_on_close(conn *c)
{
    if (c->closed_event_done || c->socket_ref == LUA_NOREF) return;
    if (c->running) {
        c->close_deferred = true;
        return;
    }
    c->closed_event_done = true;
    lua_host *h = c->srv->lua;
    /* A closed socket is in no topic any more and its timers have ended,
     * also as on_close sees it (TCP may linger a while yet). */
    lp_conn_gone(h, c);
    lt_conn_gone(h, c);
    if (!push_event(h, c, "on_close")) return;
    lua_pushinteger(h->L, c->close_code);
    lua_pushstring(h->L, c->close_reason ? c->close_reason : "");
    lh_run_event(h, c, "on_close", 3);
}

void lh_conn_gone(conn *c)
{
    lua_host *h = c->srv->lua;
    lh_wake_writers(c);
    lt_conn_gone(h, c);
    lp_conn_gone(h, c);
    if (c->running) {
        c->running->owner = NULL;
        c->running = NULL;
    }
    if (c->socket_ref != LUA_NOREF) {
        if (!c->closed_event_done) {
            c->close_deferred = false;
            if (!c->close_code) c->close_code = WS_CLOSE_ABNORMAL;
            lh_on_close(c);
        }
        push_socket(h, c);
        lsocket *s = lua_touserdata(h->L, -1);
        s->c = NULL;
        lua_pop(h->L, 1);
        luaL_unref(h->L, LUA_REGISTRYINDEX, c->socket_ref);
        c->socket_ref = LUA_NOREF;
    }
}

void lh_send_done(lua_host *h, int ok_ref, int fail_ref, const char *err)
{
    lua_State *L = h->L;
    int ref = err ? fail_ref : ok_ref;
    if (ref >= 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        if (err) lua_pushstring(L, err);
        lh_run_event(h, NULL, err ? "send fail callback" : "send succeed callback", err ? 1 : 0);
    }
    if (ok_ref >= 0) luaL_unref(L, LUA_REGISTRYINDEX, ok_ref);
    if (fail_ref >= 0) luaL_unref(L, LUA_REGISTRYINDEX, fail_ref);
}
