/* lua_request.c — request and response translation: the Ring-style
 * request table a handler gets, the response table it returns (a plain
 * answer, or a listener that upgrades the connection), and asking the
 * handler again for a socket's listener after a reload. */
#include "lua_internal.h"
#include "log.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Pushes {name = value} of the request's (or response's) headers. */
static void push_headers(lua_State *L, const http_request *req)
{
    lua_createtable(L, 0, (int)req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        lua_pushstring(L, req->headers[i].value);
        lua_setfield(L, -2, req->headers[i].name);
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

/* ---- typos: unknown keys in listener and response tables ---- */

static const char *const listener_keys[] = {"on_open", "on_message", "on_ping", "on_pong",
                                            "on_error", "on_close", "on_reload", NULL};
static const char *const response_keys[] = {"status", "headers", "body", "listener", "protocol", NULL};

/* Edit distance of two short names, capped (for "did you mean"). */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 31 || lb > 31) return 99;
    size_t d[32][32];
    for (size_t i = 0; i <= la; i++) d[i][0] = i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* Pushes "file:line" of the function under key (on top) in the table at
 * idx, else of the first function in it, else of fn_idx. */
static void push_where(lua_State *L, int idx, int fn_idx)
{
    lua_Debug ar;
    int found = 0;
    lua_pushvalue(L, -1);
    if (lua_rawget(L, idx) == LUA_TFUNCTION) {
        lua_getinfo(L, ">S", &ar);
        lua_pushfstring(L, "%s:%d", ar.short_src, ar.linedefined);
        return;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    while (!found && lua_next(L, idx)) {
        if (lua_isfunction(L, -1)) {
            found = 1;
            lua_insert(L, -2);
            lua_pop(L, 1);            /* the function stays */
            break;
        }
        lua_pop(L, 1);
    }
    if (!found) {
        if (fn_idx && lua_isfunction(L, fn_idx)) lua_pushvalue(L, fn_idx);
        else {
            lua_pushliteral(L, "?");
            return;
        }
    }
    lua_getinfo(L, ">S", &ar);
    if (ar.linedefined > 0) lua_pushfstring(L, "%s:%d", ar.short_src, ar.linedefined);
    else lua_pushstring(L, ar.short_src);
}

/* Checks the keys of the table at idx (what: "listener" or "response").
 * Each table is checked once. An unknown key is logged as a warning with
 * file:line, or with --strict, pushed as an error message (returns false). */
static bool check_keys(lua_State *L, lua_host *h, int idx, bool is_listener, int fn_idx)
{
    idx = lua_absindex(L, idx);
    if (lua_getfield(L, LUA_REGISTRYINDEX, "luaws.checked") == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "luaws.checked");
    }
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) != LUA_TNIL) {
        lua_pop(L, 2);
        return true;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    const char *const *known = is_listener ? listener_keys : response_keys;
    bool strict = h->srv->cfg && h->srv->cfg->strict;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) continue;
        const char *key = lua_tostring(L, -1);
        bool ok = false;
        const char *close = NULL;
        for (size_t i = 0; known[i]; i++) {
            if (strcmp(key, known[i]) == 0) ok = true;
            else if (distance(key, known[i]) <= 2) close = known[i];
        }
        if (ok) continue;
        push_where(L, idx, fn_idx);
        lua_pushfstring(L, "%s: unknown key '%s' in a %s table%s%s%s", lua_tostring(L, -1), key,
                        is_listener ? "listener" : "response", close ? " (did you mean '" : "", close ? close : "",
                        close ? "'?)" : "");
        lua_remove(L, -2);
        if (strict) {
            lua_remove(L, -2);   /* the key */
            return false;
        }
        log_warn("%s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return true;
}

/* core.check_listener(tbl) -> nothing, or raises with --strict (at load). */
static int l_check_listener(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!check_keys(L, lh_host(L), 1, true, 0)) return lua_error(L);
    return 0;
}

/* core.http_reason(status) -> "Unauthorized" (luaws client's refusals). */
static int l_http_reason(lua_State *L)
{
    lua_pushstring(L, http_reason((int)luaL_checkinteger(L, 1)));
    return 1;
}

const luaL_Reg lh_request_fns[] = {
    {"check_listener", l_check_listener},
    {"http_reason", l_http_reason},
    {NULL, NULL},
};

static void respond_500(conn *c, const char *why)
{
    static const char body[] = "500 Internal Server Error\n";
    log_error("conn %llu: handler error: %s", (unsigned long long)c->id, why);
    c->srv->metrics->script_errors++;
    conn_respond(c, 500, "Content-Type: text/plain; charset=utf-8\r\n", 41, body, sizeof body - 1, false);
}

static bool protocol_offered(const http_request *req, const char *proto)
{
    const char *offered = http_header_get(req, "sec-websocket-protocol");
    return offered && http_token_list_has(offered, proto);
}

/* A lua_CFunction: lh_socket_adopt_request(socket (light userdata), request). */
static int adopt_request(lua_State *L)
{
    lh_socket_adopt_request(L, lua_touserdata(L, 1), 2);
    return 0;
}

/* Upgrades c with the listener on top of the stack (popped): its socket
 * first, keeping the packed request and the handler's request table (at
 * request_idx; 0: none, a listener table took it), then the 101, then
 * on_open. */
static void upgrade(lua_host *h, conn *c, const http_request *req, const char *protocol, const char *head,
                    size_t head_len, const uint8_t *packed, size_t packed_len, int request_idx)
{
    lua_State *L = h->L;
    lsocket *ls = lh_socket_new(h, c, packed, packed_len, protocol);
    if (request_idx) {
        /* Seeing whether the handler changed it may run request.query's
         * __index (Lua). Should that fail, the table is kept as it is. */
        lua_pushcfunction(L, adopt_request);
        lua_pushlightuserdata(L, ls);
        lua_pushvalue(L, request_idx);
        lh_enter(h);
        int status = lua_pcall(L, 2, 0, 0);
        lh_leave(h);
        if (status != LUA_OK) {
            lua_pop(L, 1);
            lh_push_socket(h, ls);
            lh_socket_push_fields(L, -1);
            lua_pushvalue(L, request_idx);
            lua_setfield(L, -2, "request");
            lua_pop(L, 2);
            ls->own |= LS_OWN_REQUEST;
        }
    }
    if (conn_upgrade(c, req, protocol, head, head_len) == 0) lh_host_open(h, c);
}

/* Runs the handler for a complete request (packed: its packed form) and
 * answers it, or upgrades it. */
static void handle(lua_host *h, conn *c, const http_request *req, bool is_ws, const uint8_t *packed,
                   size_t packed_len)
{
    lua_State *L = h->L;
    int base = lua_gettop(L);
    int handler_ref = h->handler_ref;
    bool listener_only = h->listener_only;
    if (c->lst && c->lst->host_tag) {   /* luaws test: a fake remote */
        handler_ref = h->remote_handler_ref;
        listener_only = false;
    }

    if (listener_only) {
        if (!is_ws) {
            static const char body[] = "426 Upgrade Required: this endpoint speaks WebSocket\n";
            conn_respond(c, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n", 47,
                         body, sizeof body - 1, req->keep_alive);
            return;
        }
        /* socket.request is built if the listener reads it. */
        lua_rawgeti(L, LUA_REGISTRYINDEX, handler_ref);
        upgrade(h, c, req, NULL, NULL, 0, packed, packed_len, 0);
        lua_settop(L, base);
        return;
    }

    lua_rawgeti(L, LUA_REGISTRYINDEX, h->traceback_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, handler_ref);
    lh_request_push(L, packed, packed_len, false);
    lua_pushvalue(L, -1);
    lua_insert(L, base + 1);                  /* request, traceback, handler, request */
    lh_enter_for(h, "the handler");
    int status = lua_pcall(L, 1, 1, base + 2);
    lh_leave(h);
    if (status != LUA_OK) {
        respond_500(c, lua_tostring(L, -1));
        lua_settop(L, base);
        lh_collect_stopped(h, status == LUA_ERRMEM);
        return;
    }
    int resp = lua_gettop(L);
    if (!lua_istable(L, resp)) {
        lua_pushfstring(L, "the handler returned %s, not a response table", luaL_typename(L, resp));
        respond_500(c, lua_tostring(L, -1));
        lua_settop(L, base);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, handler_ref);
    int handler_idx = lua_gettop(L);
    bool keys_ok = check_keys(L, h, resp, false, handler_idx);
    if (keys_ok && lua_getfield(L, resp, "listener") == LUA_TTABLE) keys_ok = check_keys(L, h, -1, true, handler_idx);
    if (!keys_ok) {
        respond_500(c, lua_tostring(L, -1));
        lua_settop(L, base);
        return;
    }
    lua_settop(L, resp);
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
                lua_pushvalue(L, lidx);       /* listener */
                upgrade(h, c, req, protocol, head, head_len, packed, packed_len, base + 1);
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

/* host_ops.request */
void lh_host_request(void *host, conn *c, const http_request *req)
{
    const char *up = http_header_get(req, "upgrade");
    bool is_ws = up && http_token_list_has(up, "websocket");
    size_t packed_len;
    uint8_t *packed = lh_request_pack(c, req, is_ws, &packed_len);
    handle(host, c, req, is_ws, packed, packed_len);
    free(packed);
    lh_settle(host);
}

/* Builds {status=, headers=, body=} from the response (a light userdata). */
int lh_push_response(lua_State *L)
{
    const http_request *res = lua_touserdata(L, 1);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, res->status);
    lua_setfield(L, -2, "status");
    push_headers(L, res);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, res->body ? res->body : "", res->body_len);
    lua_setfield(L, -2, "body");
    return 1;
}

/* host_ops.response: an outbound socket keeps the server's answer as
 * socket.response ({status, headers, body}), for on_error and on_open. */
void lh_host_response(void *host, conn *c, const http_request *res)
{
    lua_host *h = host;
    lsocket *ls = lh_socket_of(c);
    if (!ls) return;
    lua_State *L = h->L;
    lh_push_socket(h, ls);
    lh_socket_push_fields(L, -1);
    lua_pushcfunction(L, lh_push_response);
    lua_pushlightuserdata(L, (void *)res);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) lua_setfield(L, -2, "response");
    else lua_pop(L, 1);
    lua_pop(L, 2);
}

/* A lua_CFunction: handler(socket.request) for the socket ls (a light
 * userdata), the request kept afterwards as the handshake keeps it (also
 * when the handler fails: it may have changed the request first). */
static int reload_call(lua_State *L)
{
    lsocket *ls = lua_touserdata(L, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->h->traceback_ref);   /* 3 */
    lua_pushvalue(L, 1);
    lh_socket_push_request(L, ls);            /* 5: request */
    lua_pushvalue(L, -1);
    lua_insert(L, 3);                         /* 3: request, 4: traceback */
    int status = lua_pcall(L, 1, 1, 4);
    lh_socket_adopt_request(L, ls, 3);
    if (status != LUA_OK) return lua_error(L);
    return 1;
}

/* Asks the current handler for ls's listener, given its original request.
 * Pushes it and returns true, or logs why and returns false. */
bool lh_new_listener(lua_host *h, lsocket *ls)
{
    lua_State *L = h->L;
    if (h->listener_only) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->handler_ref);
        return true;
    }
    lua_pushcfunction(L, reload_call);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->handler_ref);
    lua_pushlightuserdata(L, ls);
    lh_enter(h);
    int status = lua_pcall(L, 2, 1, 0);
    lh_leave(h);
    if (status != LUA_OK) {
        log_warn("conn %llu keeps its old listener: the new handler failed: %s", (unsigned long long)ls->c->id,
                 lua_tostring(L, -1));
        lua_pop(L, 1);
        return false;
    }
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "listener");
        lua_remove(L, -2);
    }
    if (!lua_istable(L, -1)) {
        log_warn("conn %llu keeps its old listener: the new handler returned no listener",
                 (unsigned long long)ls->c->id);
        lua_pop(L, 1);
        return false;
    }
    return true;
}

