/* lua_socket.c — the socket and buffer objects, the events a socket gets,
 * and luaws.connect.
 *
 * The core reports a connection's events through the host callbacks at the
 * bottom of this file. Each runs its listener function at once when it can
 * (no Lua code running, no other event of the socket suspended or waiting)
 * and queues a copy otherwise (lua_task.c). */
#include "lua_internal.h"
#include "xalloc.h"
#include "log.h"
#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers ---- */

void lh_push_buffer(lua_State *L, const void *data, size_t len)
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
    lh_push_buffer(L, s, len);
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

#define VALID_TEXT_MIN 256


/* ---- socket methods ---- */

static lsocket *check_socket(lua_State *L) { return luaL_checkudata(L, 1, SOCKET_MT); }

/* The connection of an open socket, or NULL. */
static conn *open_conn(const lsocket *ls) { return ls->c && ws_is_open(ls->c) ? ls->c : NULL; }

static int closed_result(lua_State *L) { return lh_fail(L, "closed", "EPIPE"); }

/* An async send's callbacks: a registry ref to {succeed, fail}, owned by
 * the write until it completes. */
typedef struct send_cb {
    lua_host *h;
    int ref;
} send_cb;

/* write_done_fn: runs succeed() or fail(err) as a task of no socket. */
static void send_done(void *ud, int status)
{
    send_cb *cb = ud;
    lua_host *h = cb->h;
    const char *err = status ? (status == UV_EPIPE ? "closed" : uv_strerror(status)) : NULL;
    lua_event *ev = lh_event_new(EV_CALLBACK, err, err ? strlen(err) : 0);
    ev->fn_ref = cb->ref;
    ev->fn_index = err ? 2 : 1;
    ev->has_arg = err != NULL;
    ev->name = err ? "send fail callback" : "send succeed callback";
    free(cb);
    lh_queue(h, NULL, ev);
    lh_settle(h);
}

static int send_k(lua_State *L, int status, lua_KContext ctx)
{
    task *t = lh_current_task(L);
    if (t && t->woke_closed) return closed_result(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_socket_send(lua_State *L)
{
    lsocket *ls = check_socket(L);
    lua_host *h = lh_host(L);
    size_t len;
    uint8_t opcode;
    const uint8_t *data = check_payload(L, 2, &len, &opcode);
    if (opcode == WS_OP_TEXT && !lh_text_valid(h, data, len))
        return luaL_error(L, "send: text message is not valid UTF-8 (send a luaws.buffer for binary)");
    bool async = !lua_isnoneornil(L, 3) || !lua_isnoneornil(L, 4);
    if (async) {
        if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
        if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TFUNCTION);
    }
    conn *c = open_conn(ls);
    if (!c) {
        if (async && !lua_isnoneornil(L, 4)) {
            lua_pushvalue(L, 4);
            lua_pushliteral(L, "closed");
            lua_call(L, 1, 0);
        }
        return closed_result(L);
    }
    if (async) {
        /* The callbacks are held by one ref, taken before anything is
         * sent: a failing allocation (--script-memory) leaves nothing behind. */
        lua_createtable(L, 2, 0);
        lua_pushvalue(L, 3);
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, 4);
        lua_rawseti(L, -2, 2);
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        send_cb *cb = xmalloc(sizeof *cb);
        *cb = (send_cb){h, ref};
        /* From here the write owns cb: send_done runs exactly once. */
        if (ws_send(c, opcode, data, len, send_done, cb) < 0) return closed_result(L);
        lua_pushboolean(L, 1);
        return 1;
    }
    if (ws_send(c, opcode, data, len, NULL, NULL) < 0) return closed_result(L);
    const config *cfg = h->srv->cfg;
    if (conn_unsent(c) >= cfg->write_high_water) conn_uncork(c);
    /* Wait only for bytes libuv holds: their write callbacks wake us. */
    task *t = lh_current_task(L);
    if (c->queued >= cfg->write_high_water && t && lua_isyieldable(L)) {
        t->waiting_on = ls;
        t->next = ls->waiters;
        ls->waiters = t;
        return lua_yieldk(L, 0, 0, send_k);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int send_control(lua_State *L, uint8_t opcode)
{
    lsocket *ls = check_socket(L);
    size_t len = 0;
    const uint8_t *data = (const uint8_t *)"";
    if (!lua_isnoneornil(L, 2)) {
        uint8_t ignored;
        data = check_payload(L, 2, &len, &ignored);
    }
    if (len > WS_MAX_CONTROL_PAYLOAD) return luaL_argerror(L, 2, "control frame payload over 125 bytes");
    conn *c = open_conn(ls);
    if (!c || ws_send(c, opcode, data, len, NULL, NULL) < 0) return closed_result(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_socket_ping(lua_State *L) { return send_control(L, WS_OP_PING); }
static int l_socket_pong(lua_State *L) { return send_control(L, WS_OP_PONG); }

static int l_socket_close(lua_State *L)
{
    lsocket *ls = check_socket(L);
    lua_Integer code = luaL_optinteger(L, 2, WS_CLOSE_NORMAL);
    size_t rlen = 0;
    const char *reason = luaL_optlstring(L, 3, "", &rlen);
    if (code < 0 || code > 65535 || !frame_close_code_valid((unsigned)code))
        return luaL_argerror(L, 2, "not a close code an endpoint may send (1000-1003, 1007-1014, 3000-4999)");
    if (rlen > WS_MAX_CONTROL_PAYLOAD - 2) return luaL_argerror(L, 3, "close reason over 123 bytes");
    if (!utf8_valid((const uint8_t *)reason, rlen)) return luaL_argerror(L, 3, "close reason is not valid UTF-8");
    conn *c = ls->c;
    if (c && client_is_connecting(c)) {
        /* Given up before it opened: no on_open; on_close(code, reason)
         * follows once the connection is gone. */
        client_abandon(c, (uint16_t)code, reason);
        lua_pushboolean(L, 1);
        return 1;
    }
    if (!open_conn(ls)) return closed_result(L);
    ws_close(c, (uint16_t)code, reason, rlen);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_socket_is_open(lua_State *L)
{
    lua_pushboolean(L, open_conn(check_socket(L)) != NULL);
    return 1;
}

/* socket:set_rate(msgs_per_second [, burst]): this socket's message rate
 * (replacing --rate's); nil or 0 lifts it. Returns true, or nil, "closed". */
static int l_socket_set_rate(lua_State *L)
{
    conn *c = open_conn(check_socket(L));
    double rate = luaL_optnumber(L, 2, 0);
    double burst = luaL_optnumber(L, 3, rate);
    luaL_argcheck(L, rate >= 0 && rate <= 1e9, 2, "a rate from 0 (no limit) to 1e9 messages per second");
    luaL_argcheck(L, rate == 0 || (burst >= 1 && burst <= 1e9), 3, "a burst from 1 to 1e9 messages");
    if (!c) return lh_fail(L, "closed", "EPIPE");
    ws_set_rate(c, rate, burst);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- the socket's fields: its own ones made on first use ---- */

/* Registry: the request each socket's handler was given, while something
 * else holds it (socket -> request, both weak), and what keeps it alive
 * when only its headers or query table is held (ephemeron: part -> request). */
#define REQUESTS_KEY "luaws.requests"
#define REQUEST_PARTS_KEY "luaws.request_parts"

/* LS_OWN_* of key (at kidx): socket.id, .data, .request, .protocol; else 0. */
static int own_bit(lua_State *L, int kidx)
{
    static const char *const names[] = {"id", "data", "request", "protocol"};
    static const int bits[] = {LS_OWN_ID, LS_OWN_DATA, LS_OWN_REQUEST, LS_OWN_PROTOCOL};
    if (lua_type(L, kidx) != LUA_TSTRING) return 0;
    size_t n;
    const char *k = lua_tolstring(L, kidx, &n);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (n == strlen(names[i]) && memcmp(k, names[i], n) == 0) return bits[i];
    return 0;
}

void lh_socket_push_fields(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (lua_getiuservalue(L, idx, 1) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, 1);
}

/* socket.request not kept yet: the table the handler was given, if
 * anything still holds it, else a new one from the packed request. */
static void make_request(lua_State *L, lsocket *ls, int idx)
{
    lua_getfield(L, LUA_REGISTRYINDEX, REQUESTS_KEY);
    lua_pushvalue(L, idx);
    int held = lua_rawget(L, -2);
    lua_remove(L, -2);
    if (held != LUA_TNIL) return;
    lua_pop(L, 1);
    assert(ls->packed_len);   /* luaws.connect's sockets own their request */
    lh_request_push(L, ls->packed, ls->packed_len, ls->own & LS_QUERY_MADE);
}

/* Pushes field key (at kidx) of the socket ls (at idx): what the fields
 * table holds, else its own field made now, and kept if keep. A
 * lua_CFunction's helper: making socket.request may raise and run Lua. */
static void push_field(lua_State *L, lsocket *ls, int idx, int kidx, bool keep)
{
    if (lua_getiuservalue(L, idx, 1) == LUA_TTABLE) {
        lua_pushvalue(L, kidx);
        if (lua_rawget(L, -2) != LUA_TNIL) {
            lua_remove(L, -2);
            return;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    int bit = own_bit(L, kidx);
    if (!bit || (ls->own & bit)) {   /* none, or set to nil by the script */
        lua_pushnil(L);
        return;
    }
    switch (bit) {
    case LS_OWN_ID:
        lua_pushinteger(L, (lua_Integer)ls->id);
        return;
    case LS_OWN_PROTOCOL:
        if (ls->packed_len) lh_request_push_protocol(L, ls->packed, ls->packed_len);
        else lua_pushnil(L);
        return;
    case LS_OWN_DATA:
        lua_newtable(L);
        break;
    default:
        make_request(L, ls, idx);
        break;
    }
    if (!keep) return;
    /* Made: the same table from now on. */
    lh_socket_push_fields(L, idx);
    lua_pushvalue(L, kidx);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    ls->own |= (uint8_t)bit;
}

/* Pushes ls onto L (the main thread or an event's): it must be referenced. */
static void push_socket_on(lua_State *L, const lsocket *ls)
{
    assert(ls->ref != LUA_NOREF);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->ref);
}

void lh_socket_push_request(lua_State *L, lsocket *ls)
{
    push_socket_on(L, ls);
    lua_pushliteral(L, "request");
    push_field(L, ls, lua_gettop(L) - 1, lua_gettop(L), false);
    lua_replace(L, -3);
    lua_pop(L, 1);
}

void lh_socket_adopt_request(lua_State *L, lsocket *ls, int idx)
{
    idx = lua_absindex(L, idx);
    if (ls->own & LS_OWN_REQUEST) return;   /* kept already, or set by the script */
    assert(ls->packed_len);                 /* only luaws.connect's have none, and own theirs */
    luaL_checkstack(L, 24, "adopting the request");
    push_socket_on(L, ls);
    int sock = lua_gettop(L);
    bool query;
    if (lh_request_pristine(L, idx, ls->packed, ls->packed_len, &query)) {
        /* As built: dropped, and built again when socket.request is read,
         * unless something else still holds it (or its headers or query). */
        ls->own = (uint8_t)((ls->own & ~LS_QUERY_MADE) | (query ? LS_QUERY_MADE : 0));
        lua_getfield(L, LUA_REGISTRYINDEX, REQUESTS_KEY);
        lua_pushvalue(L, sock);
        lua_pushvalue(L, idx);
        lua_rawset(L, -3);
        lua_getfield(L, LUA_REGISTRYINDEX, REQUEST_PARTS_KEY);
        static const char *const parts[] = {"headers", "query"};
        for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
            lua_pushstring(L, parts[i]);
            if (lua_rawget(L, idx) == LUA_TTABLE) {
                lua_pushvalue(L, idx);
                lua_rawset(L, -3);
            } else {
                lua_pop(L, 1);
            }
        }
    } else {
        /* The handler changed it: socket.request is this very table. */
        lh_socket_push_fields(L, sock);
        lua_pushvalue(L, idx);
        lua_setfield(L, -2, "request");
        ls->own |= LS_OWN_REQUEST;
    }
    lua_settop(L, sock - 1);
}

static int l_socket_index(lua_State *L)
{
    lsocket *ls = check_socket(L);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;   /* a method */
    push_field(L, ls, 1, 2, true);
    return 1;
}

static int l_socket_newindex(lua_State *L)
{
    lsocket *ls = check_socket(L);
    lh_socket_push_fields(L, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    ls->own |= (uint8_t)own_bit(L, 2);
    return 0;
}

static int l_socket_tostring(lua_State *L)
{
    lsocket *ls = check_socket(L);
    lua_pushliteral(L, "id");
    push_field(L, ls, 1, lua_gettop(L), true);
    lua_pushfstring(L, "luaws.socket(%s%s)", lua_tostring(L, -1), open_conn(ls) ? "" : ", closed");
    return 1;
}

/* A weak table in the registry under key. */
static void weak_table(lua_State *L, const char *key, const char *mode)
{
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, key);
}

void lh_socket_metatables(lua_State *L)
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
        {"set_rate", l_socket_set_rate},
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
    weak_table(L, REQUESTS_KEY, "kv");
    weak_table(L, REQUEST_PARTS_KEY, "k");
}

/* ---- the socket object ---- */

/* Makes a socket from the listener on top of the stack (popped) and leaves
 * it there, not yet referenced. May raise (memory): call it before
 * anything that would need undoing. */
static lsocket *socket_new(lua_State *L, lua_host *h, uint64_t id, const uint8_t *packed, size_t len,
                           const char *protocol)
{
    size_t room = len ? len + lh_request_protocol_size(protocol) : 0;
    lsocket *ls = lua_newuserdatauv(L, sizeof *ls + room, 2);
    memset(ls, 0, sizeof *ls);
    ls->h = h;
    ls->ref = LUA_NOREF;
    ls->id = id;
    if (len) {
        memcpy(ls->packed, packed, len);
        ls->packed_len = lh_request_pack_protocol(ls->packed, len, protocol);
        assert(ls->packed_len == room);
    }
    luaL_setmetatable(L, SOCKET_MT);
    lua_insert(L, -2);                        /* socket, listener */
    lua_setiuservalue(L, -2, 2);
    return ls;
}

void lh_socket_attach(lsocket *ls, conn *c)
{
    assert(!c->user && !ls->c);
    ls->c = c;
    c->user = ls;
}

lsocket *lh_socket_new(lua_host *h, conn *c, const uint8_t *packed, size_t len, const char *protocol)
{
    assert(len);
    lsocket *ls = socket_new(h->L, h, c->id, packed, len, protocol);
    ls->ref = luaL_ref(h->L, LUA_REGISTRYINDEX);
    lh_socket_attach(ls, c);
    return ls;
}

/* socket.protocol of a luaws.connect socket: the subprotocol the server
 * chose, if any (an inbound socket's is in its packed request). */
void lh_set_protocol(lua_host *h, lsocket *ls, const char *protocol)
{
    if (!protocol) return;
    lh_push_socket(h, ls);
    lh_socket_push_fields(h->L, -1);
    lua_pushstring(h->L, protocol);
    lua_setfield(h->L, -2, "protocol");
    lua_pop(h->L, 2);
    ls->own |= LS_OWN_PROTOCOL;
}

/* ls has no event running: events it queued meanwhile get their turn,
 * its input flows again, and a socket whose connection is gone lets go. */
void lh_socket_idle(lsocket *ls)
{
    lua_host *h = ls->h;
    if (ls->running || ls->ready) return;
    if (ls->queue) {
        lh_mark_ready(h, ls);
        return;
    }
    if (ls->c) {
        if (ls->paused) {
            ls->paused = false;
            conn_resume(ls->c);
        }
        return;
    }
    if (ls->ref != LUA_NOREF) {
        int ref = ls->ref;
        ls->ref = LUA_NOREF;
        luaL_unref(h->L, LUA_REGISTRYINDEX, ref);   /* ls may be collected from here on */
    }
}

/* Pushes listener[name] and the socket; false (nothing pushed) if absent. */
static bool push_handler(lua_host *h, lsocket *ls, const char *name)
{
    lua_State *L = h->L;
    lh_push_socket(h, ls);
    lua_getiuservalue(L, -1, 2);            /* socket, listener */
    if (lua_getfield(L, -1, name) == LUA_TNIL) {
        lua_pop(L, 3);
        return false;
    }
    lua_replace(L, -2);                     /* socket, fn */
    lua_insert(L, -2);                      /* fn, socket */
    return true;
}

static const char *const event_names[] = {
    [EV_OPEN] = "on_open", [EV_MESSAGE] = "on_message", [EV_PING] = "on_ping", [EV_PONG] = "on_pong",
    [EV_ERROR] = "on_error", [EV_CLOSE] = "on_close", [EV_RELOAD] = "on_reload",
};

/* Runs an event of ls now: only when lh_can_run(h, ls), or from its queue. */
static void run_event(lsocket *ls, enum lua_event_kind kind, uint8_t opcode, uint16_t code,
                      const uint8_t *data, size_t len)
{
    lua_host *h = ls->h;
    lua_State *L = h->L;
    if (kind == EV_CLOSE) {
        /* A closed socket is in no topic any more and its timers have ended,
         * also as on_close sees it (TCP may linger a while yet). */
        ls->closed = true;
        if (ls->c) lp_conn_gone(h, ls->c);
        lt_socket_closed(h, ls);
    }
    if (kind == EV_RELOAD) ls->reload_queued = false;
    const char *name = event_names[kind];
    if (!push_handler(h, ls, name)) return;
    int nargs = 1;
    switch (kind) {
    case EV_MESSAGE:
        nargs++;
        if (opcode == WS_OP_TEXT) {
            lua_pushlstring(L, (const char *)data, len);
            /* Short ones cost less to check again than to remember. */
            if (len >= VALID_TEXT_MIN) {
                lua_pushvalue(L, -1);
                lua_rawseti(L, LUA_REGISTRYINDEX, h->valid_text_ref);
                h->valid_text = lua_tostring(L, -1);
            }
        } else {
            lh_push_buffer(L, data, len);
        }
        break;
    case EV_PING:
    case EV_PONG:
        nargs++;
        lh_push_buffer(L, data, len);
        break;
    case EV_ERROR:
        nargs++;
        lua_pushlstring(L, (const char *)data, len);
        break;
    case EV_CLOSE:
        nargs += 2;
        lua_pushinteger(L, code);
        lua_pushlstring(L, (const char *)data, len);
        break;
    default:
        break;
    }
    lh_run(h, ls, name, nargs);
}

void lh_run_socket_event(lsocket *ls, lua_event *ev)
{
    if (ev->kind == EV_ERROR && ev->fn_ref != LUA_NOREF) {
        /* on_error gets the error value as it was raised (a table, say). */
        lua_State *L = ls->h->L;
        int ref = ev->fn_ref;
        ev->fn_ref = LUA_NOREF;
        if (!push_handler(ls->h, ls, "on_error")) {
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
            return;
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        lh_run(ls->h, ls, "on_error", 2);
        return;
    }
    run_event(ls, ev->kind, ev->opcode, ev->code, ev->data, ev->len);
}

/* Whether an event raised now is taken at all: nothing after on_close. */
static bool accept_event(lsocket *ls, enum lua_event_kind kind)
{
    if (!ls || ls->close_queued) return false;
    if (kind == EV_CLOSE) ls->close_queued = true;
    if (kind == EV_RELOAD) {
        if (ls->reload_queued) return false;
        ls->reload_queued = true;
    }
    return true;
}

/* Runs the event now if Lua is free for ls, else queues a copy. */
static void raise_event(lsocket *ls, enum lua_event_kind kind, uint8_t opcode, uint16_t code,
                        const uint8_t *data, size_t len)
{
    lua_host *h = ls->h;
    if (!accept_event(ls, kind)) return;
    if (lh_can_run(h, ls)) {
        run_event(ls, kind, opcode, code, data, len);
    } else {
        lua_event *ev = lh_event_new(kind, data, len);
        ev->opcode = opcode;
        ev->code = code;
        lh_queue(h, ls, ev);
    }
    lh_settle(h);
}

void lh_socket_defer(lsocket *ls, lua_event *ev)
{
    if (accept_event(ls, ev->kind)) lh_queue(ls->h, ls, ev);
    else lh_event_free(ls->h, ev);
}

/* ---- host callbacks: a connection's events ---- */

void lh_host_open(void *host, conn *c)
{
    lsocket *ls = lh_socket_of(c);
    if (!ls) return;
    if (!ls->packed_len) lh_set_protocol(host, ls, conn_protocol(c));
    raise_event(ls, EV_OPEN, 0, 0, NULL, 0);
}

void lh_host_message(void *host, conn *c, uint8_t opcode, const uint8_t *data, size_t len)
{
    lsocket *ls = lh_socket_of(c);
    if (ls) raise_event(ls, EV_MESSAGE, opcode, 0, data, len);
}

static bool has_handler(lua_host *h, lsocket *ls, const char *name)
{
    if (!push_handler(h, ls, name)) return false;
    lua_pop(h->L, 2);
    return true;
}

bool lh_host_ping(void *host, conn *c, const uint8_t *data, size_t len)
{
    lsocket *ls = lh_socket_of(c);
    if (!ls || ls->close_queued || !has_handler(host, ls, "on_ping")) return false;
    raise_event(ls, EV_PING, 0, 0, data, len);
    return true;
}

void lh_host_pong(void *host, conn *c, const uint8_t *data, size_t len)
{
    lsocket *ls = lh_socket_of(c);
    if (ls) raise_event(ls, EV_PONG, 0, 0, data, len);
}

void lh_host_error(void *host, conn *c, const char *why)
{
    lsocket *ls = lh_socket_of(c);
    if (ls) raise_event(ls, EV_ERROR, 0, 0, (const uint8_t *)why, strlen(why));
}

void lh_host_close(void *host, conn *c, uint16_t code, const char *reason)
{
    lsocket *ls = lh_socket_of(c);
    if (ls) raise_event(ls, EV_CLOSE, 0, code, (const uint8_t *)reason, strlen(reason));
}

/* Wakes the tasks waiting for ls's write queue; closed: it will not drain. */
static void wake_writers(lsocket *ls, bool closed)
{
    task *t = ls->waiters;
    ls->waiters = NULL;
    while (t) {
        task *next = t->next;
        t->next = NULL;
        t->waiting_on = NULL;
        t->woke_closed = closed;
        lh_resume(t);
        t = next;
    }
}

void lh_host_writable(void *host, conn *c)
{
    lsocket *ls = lh_socket_of(c);
    if (ls && ls->waiters) wake_writers(ls, false);
}

void lh_host_gone(void *host, conn *c)
{
    lua_host *h = host;
    lsocket *ls = lh_socket_of(c);
    if (!ls) return;
    wake_writers(ls, true);
    raise_event(ls, EV_CLOSE, 0, conn_close_code(c), (const uint8_t *)conn_close_reason(c),
                strlen(conn_close_reason(c)));
    lp_conn_gone(h, c);   /* on_close waits for a suspended event: leave the topics now */
    ls->c = NULL;
    c->user = NULL;
    lh_socket_idle(ls);
    lh_settle(h);
}

/* ---- luaws.connect ---- */

/* luaws.core.connect(host, port, request_text, key, protocols, deflate,
 * listener, request_table, tls, ca, verify) -> socket. lua/luaws.lua
 * builds the request. */
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
    /* luaws test: to the server under test or a fake remote, in memory. */
    int link = h->test_link ? (int)luaL_optinteger(L, 12, LH_LINK_NETWORK) : LH_LINK_NETWORK;
    if (port < 1 || port > 65535) return luaL_argerror(L, 2, "port out of range");
    if (!h->srv->loop) return luaL_error(L, "luaws.connect: the server is not running yet");
    /* Every Lua allocation first (they may raise under --script-memory),
     * then the connection, which cannot fail half-way. */
    lua_pushvalue(L, 7);
    uint64_t id = server_take_id(h->srv);
    lsocket *ls = socket_new(L, h, id, NULL, 0, NULL);
    lh_socket_push_fields(L, -1);
    lua_pushvalue(L, 8);
    lua_setfield(L, -2, "request");
    lua_pop(L, 1);
    ls->own |= LS_OWN_REQUEST;
    lua_pushvalue(L, -1);
    ls->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    client_request cr = {host, (int)port, request, len, key, protocols, deflate, tls, ca, verify};
    conn *c = client_connect(h->srv, &cr, id);
    lh_socket_attach(ls, c);
    if (link != LH_LINK_NETWORK) h->test_link(h, c, link);
    else client_start(c);
    return 1;
}

static int l_client_key(lua_State *L)
{
    char key[25];
    http_ws_client_key(key);
    lua_pushstring(L, key);
    return 1;
}

const luaL_Reg lh_core_socket_fns[] = {
    {"buffer", l_buffer_new},
    {"connect", l_connect},
    {"client_key", l_client_key},
    {NULL, NULL},
};
