/* lua_store.c — luaws.store(name): the Lua binding of store.c.
 *
 * core.store(name) returns a store object (a userdata holding the LMDB
 * handle and the name); lua/luaws.lua exposes it as luaws.store. The
 * process's LMDB environment is opened on the first call (so in the worker,
 * after fork) from --store / --store-size, and closed by lh_store_close when
 * the host is destroyed.
 *
 * Values: strings, numbers (integers stay integers), booleans, and tables,
 * encoded as JSON by the functions lua/luaws.lua hands to core.store_codec.
 * Failures: argument errors and a full store raise; an environment that
 * cannot be opened or an LMDB failure is reported with lh_fail (nil,
 * message, "ESTORE").
 *
 * With --store redis://..., core.store hands over to lua_store_redis.c
 * (lh_rstore_new): the backend is picked once per process from the config. */
#include "lua_internal.h"
#include "store.h"
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define STORE_MT "luaws.store"
#define CODEC_KEY STORE_CODEC_KEY

typedef struct lstore {
    unsigned dbi;
    char name[];
} lstore;

/* Wall clock ms; under luaws test the spec's clock (t.clock:advance moves
 * expiry along), counted from the wall clock at the first use. */
static uint64_t now_ms(lua_host *h)
{
    static uint64_t test_base;
    if (h->test) {
        if (!test_base) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            test_base = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        }
        return test_base + server_now(h->srv);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}


static const char *check_key(lua_State *L, int idx, size_t *len)
{
    const char *k = luaL_checklstring(L, idx, len);
    if (*len == 0) luaL_argerror(L, idx, "the key is empty");
    size_t max = store_max_key();
    if (*len > max) luaL_argerror(L, idx, lua_pushfstring(L, "the key is %d bytes; at most %d", (int)*len, (int)max));
    return k;
}

/* Raises the error of a failed store call (full: naming the store and
 * --store-size), or returns lh_fail's three values. */
static int store_error(lua_State *L, const lstore *s, int rc, const char *err)
{
    if (rc == STORE_EFULL)
        return luaL_error(L, "luaws.store %s: full (%d bytes): delete keys, or restart with a larger --store-size",
                          s->name, (int)store_map_size());
    if (rc == STORE_ENOTNUM) return luaL_error(L, "luaws.store %s: incr: the value is not a number", s->name);
    lua_pushfstring(L, "luaws.store %s: %s", s->name, err);
    return lh_fail(L, lua_tostring(L, -1), "ESTORE");
}

/* The same, always raised (inside update, where the pcall ends the txn). */
static int raise_error(lua_State *L, const lstore *s, int rc, const char *err)
{
    store_error(L, s, rc, err);
    return luaL_error(L, "luaws.store %s: %s", s->name, err);
}

/* The store whose update function is running: LMDB's writer lock is not
 * recursive, so any store call from inside it would deadlock the worker. */
static const lstore *updating;

static lstore *check_store(lua_State *L)
{
    lstore *s = luaL_checkudata(L, 1, STORE_MT);
    if (updating)
        luaL_error(L, "luaws.store %s: cannot be used inside the update function of luaws.store %s", s->name,
                   updating->name);
    return s;
}

/* Lua value at idx -> store_value. Strings point into L (idx must stay on
 * the stack); a table is encoded with the codec and left on the stack in
 * place of... nothing: its JSON text is pushed (one more slot). */
void lh_store_push_json(lua_State *L, int idx, int argn)
{
    idx = lua_absindex(L, idx);
    if (lua_getfield(L, LUA_REGISTRYINDEX, CODEC_KEY) != LUA_TTABLE)
        luaL_argerror(L, argn, "tables need luaws.store (lua/luaws.lua), not luaws.core.store");
    lua_rawgeti(L, -1, 1);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);       /* a JSON encoding error (a function inside) raises */
    lua_remove(L, -2);
}

void lh_store_push_table(lua_State *L, const char *json, size_t len)
{
    lua_getfield(L, LUA_REGISTRYINDEX, CODEC_KEY);
    lua_rawgeti(L, -1, 2);
    lua_remove(L, -2);
    lua_pushlstring(L, json, len);
    lua_call(L, 1, 1);
}

uint64_t lh_store_check_ttl(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx)) return 0;
    lua_Number ttl = luaL_checknumber(L, idx);
    if (!(ttl > 0) || ttl > 1e10) luaL_argerror(L, idx, "the ttl must be > 0 seconds");
    uint64_t ms = (uint64_t)(ttl * 1000.0 + 0.5);
    return ms ? ms : 1;
}

static void to_value(lua_State *L, int idx, store_value *v, int argn)
{
    memset(v, 0, sizeof *v);
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        v->type = ST_STRING;
        v->data = lua_tolstring(L, idx, &v->len);
        return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) v->type = ST_INT, v->i = lua_tointeger(L, idx);
        else v->type = ST_FLOAT, v->f = lua_tonumber(L, idx);
        return;
    case LUA_TBOOLEAN:
        v->type = ST_BOOL;
        v->b = lua_toboolean(L, idx);
        return;
    case LUA_TTABLE:
        lh_store_push_json(L, idx, argn);
        v->type = ST_JSON;
        v->data = lua_tolstring(L, -1, &v->len);
        return;
    default:
        luaL_argerror(L, argn, lua_pushfstring(L, "a string, number, boolean or table, not a %s", luaL_typename(L, idx)));
    }
}

static void push_value(lua_State *L, const store_value *v)
{
    switch (v->type) {
    case ST_STRING: lua_pushlstring(L, v->data, v->len); return;
    case ST_INT: lua_pushinteger(L, (lua_Integer)v->i); return;
    case ST_FLOAT: lua_pushnumber(L, v->f); return;
    case ST_BOOL: lua_pushboolean(L, v->b); return;
    case ST_JSON: lh_store_push_table(L, v->data, v->len); return;
    }
    lua_pushnil(L);
}

/* ttl in seconds at idx (none or nil: never) -> expiry in ms. */
static uint64_t check_expiry(lua_State *L, int idx)
{
    uint64_t ms = lh_store_check_ttl(L, idx);
    return ms ? now_ms(lh_host(L)) + ms : 0;
}

/* core.store(name) -> store object; or nil, message, "ESTORE". */
static int l_store(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    if (len == 0 || len > 200 || memchr(name, '\0', len)) luaL_argerror(L, 1, "a store name is 1-200 bytes, no NUL");
    if (updating) return luaL_error(L, "luaws.store: cannot open a store inside the update function of luaws.store %s",
                                    updating->name);
    lua_host *h = lh_host(L);
    if (lh_rstore_enabled(h)) return lh_rstore_new(L, name, len);
    char err[STORE_ERR_MAX];
    if (!store_is_open()) {
        const config *cfg = h->srv ? h->srv->cfg : NULL;
        size_t size = cfg && cfg->store_size ? cfg->store_size : STORE_DEFAULT_SIZE;
        const char *path = cfg ? cfg->store_path : NULL;
        bool keep = path != NULL;
        char def[4096];
        const char *rundir = getenv("LUAWS_RUNDIR");
        /* The default file is in the run directory every worker shares;
         * luaws test (and a process without one) gets a private one. */
        if (!path && rundir && !h->test) {
            snprintf(def, sizeof def, "%s/store.mdb", rundir);
            path = def;
        }
        int rc = store_open(path, keep, size, err);
        if (rc) return lh_fail(L, err, "ESTORE");
    }
    unsigned dbi;
    int rc = store_db(name, &dbi, err);
    if (rc) {
        lua_pushfstring(L, "luaws.store %s: %s", name, err);
        return lh_fail(L, lua_tostring(L, -1), "ESTORE");
    }
    lstore *s = lua_newuserdatauv(L, sizeof *s + len + 1, 0);
    s->dbi = dbi;
    memcpy(s->name, name, len + 1);
    luaL_setmetatable(L, STORE_MT);
    return 1;
}

static int s_get(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen;
    const char *k = check_key(L, 2, &klen);
    store_value v;
    char err[STORE_ERR_MAX];
    int rc = store_get(s->dbi, k, klen, now_ms(lh_host(L)), &v, err);
    if (rc < 0) return store_error(L, s, rc, err);
    if (rc == 0) lua_pushnil(L);
    else push_value(L, &v);   /* v.data is in store.c's scratch: nothing to free if this raises */
    return 1;
}

static int put(lua_State *L, enum store_put_mode mode)
{
    lstore *s = check_store(L);
    size_t klen;
    const char *k = check_key(L, 2, &klen);
    lua_settop(L, 4);
    uint64_t expires = check_expiry(L, 4);
    store_value v, *vp = NULL;
    if (!lua_isnil(L, 3)) {
        to_value(L, 3, &v, 3);
        v.expires = expires;
        vp = &v;
    } else if (mode == STORE_ADD) {
        return luaL_argerror(L, 3, "add needs a value");
    }
    char err[STORE_ERR_MAX];
    int rc = store_put(s->dbi, k, klen, vp, mode, now_ms(lh_host(L)), err);
    if (rc < 0) return store_error(L, s, rc, err);
    lua_pushboolean(L, rc == 1);
    return 1;
}

/* s:set(k, v [, ttl]) -> true (v nil deletes) */
static int s_set(lua_State *L) { return put(L, STORE_SET); }
/* s:add(k, v [, ttl]) -> true, or false if a live value is there */
static int s_add(lua_State *L) { return put(L, STORE_ADD); }

/* s:delete(k) */
static int s_delete(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushnil(L);
    return put(L, STORE_SET);
}

static void check_number(lua_State *L, int idx, store_value *v)
{
    memset(v, 0, sizeof *v);
    luaL_checknumber(L, idx);
    if (lua_isinteger(L, idx)) v->type = ST_INT, v->i = lua_tointeger(L, idx);
    else v->type = ST_FLOAT, v->f = lua_tonumber(L, idx);
}

/* s:incr(k [, n [, init]]) -> the new number */
static int s_incr(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen;
    const char *k = check_key(L, 2, &klen);
    store_value delta, init, out;
    if (lua_isnoneornil(L, 3)) memset(&delta, 0, sizeof delta), delta.type = ST_INT, delta.i = 1;
    else check_number(L, 3, &delta);
    if (lua_isnoneornil(L, 4)) memset(&init, 0, sizeof init), init.type = ST_INT;
    else check_number(L, 4, &init);
    char err[STORE_ERR_MAX];
    int rc = store_incr(s->dbi, k, klen, &delta, &init, now_ms(lh_host(L)), &out, err);
    if (rc < 0) return store_error(L, s, rc, err);
    push_value(L, &out);
    return 1;
}

/* s:keys([prefix]) -> {key, ...} (sorted, live ones) */
static int s_keys(lua_State *L)
{
    lstore *s = check_store(L);
    size_t plen = 0;
    const char *prefix = luaL_optlstring(L, 2, "", &plen);
    const uint8_t *p;
    size_t n;
    char err[STORE_ERR_MAX];
    int rc = store_keys(s->dbi, prefix, plen, now_ms(lh_host(L)), &p, &n, err);
    if (rc < 0) return store_error(L, s, rc, err);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        uint32_t len;
        memcpy(&len, p, 4);
        lua_pushlstring(L, (const char *)p + 4, len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        p += 4 + len;
    }
    return 1;
}

/* The body of s:update, run protected by s_update while the write
 * transaction (light userdata 1) is open: decode the old value, call fn,
 * encode and write what it returned. Arguments: txn, store, key, fn. */
static int update_body(lua_State *L)
{
    store_txn *txn = lua_touserdata(L, 1);
    lstore *s = lua_touserdata(L, 2);
    size_t klen;
    const char *k = lua_tolstring(L, 3, &klen);
    char err[STORE_ERR_MAX];
    uint64_t now = now_ms(lh_host(L));
    store_value old;
    int rc = store_txn_get(txn, s->dbi, k, klen, now, &old, err);
    if (rc < 0) return raise_error(L, s, rc, err);
    lua_pushvalue(L, 4);
    if (rc == 1) push_value(L, &old);
    else lua_pushnil(L);
    lua_call(L, 1, 1);       /* fn(old): an error ends here, in s_update's pcall */
    int res = lua_gettop(L);
    store_value v, *vp = NULL;
    if (!lua_isnil(L, res)) {
        if (lua_type(L, res) == LUA_TFUNCTION || lua_type(L, res) == LUA_TUSERDATA ||
            lua_type(L, res) == LUA_TLIGHTUSERDATA || lua_type(L, res) == LUA_TTHREAD)
            return luaL_error(L, "luaws.store %s: update: the function returned a %s (not storable)", s->name,
                              luaL_typename(L, res));
        to_value(L, res, &v, 3);
        v.expires = rc == 1 ? old.expires : 0;   /* an update keeps the ttl */
        vp = &v;
    }
    if ((rc = store_txn_put(txn, s->dbi, k, klen, vp, err))) return raise_error(L, s, rc, err);
    lua_pushvalue(L, res);
    return 1;
}

/* s:update(k, fn) -> the new value: fn(old) runs inside a write transaction
 * that holds every worker's writer lock; its result (nil deletes) is written
 * and committed. If fn raises (or is stopped by --script-timeout), nothing
 * is written and the error is raised again. fn cannot yield. */
static int s_update(lua_State *L)
{
    lstore *s = check_store(L);
    size_t klen;
    check_key(L, 2, &klen);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_settop(L, 3);
    store_txn *txn;
    char err[STORE_ERR_MAX];
    int rc = store_txn_begin(&txn, err);
    if (rc) return store_error(L, s, rc, err);
    lua_pushcfunction(L, update_body);
    lua_pushlightuserdata(L, txn);
    lua_pushlightuserdata(L, s);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    /* Not yieldable: a yield inside fn (luaws.sleep) is an error here, not
     * a suspended task holding the writer lock. */
    updating = s;
    int status = lua_pcall(L, 4, 1, 0);
    updating = NULL;
    if (status != LUA_OK) {
        store_txn_abort(txn);
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *msg = lua_tostring(L, -1);
            if (strstr(msg, "yield") || strstr(msg, "luaws.sleep works only"))
                lua_pushfstring(L, "luaws.store %s: update: the function cannot wait (luaws.sleep or another yield): %s",
                                s->name, msg);
        }
        return lua_error(L);
    }
    if ((rc = store_txn_commit(txn, err))) return store_error(L, s, rc, err);
    return 1;
}

static int s_tostring(lua_State *L)
{
    lua_pushfstring(L, "luaws.store %s", ((lstore *)luaL_checkudata(L, 1, STORE_MT))->name);
    return 1;
}

/* core.store_codec(encode, decode): how tables are stored (lua/luaws.lua). */
static int l_store_codec(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 2);
    lua_setfield(L, LUA_REGISTRYINDEX, CODEC_KEY);
    return 0;
}

void lh_store_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"get", s_get}, {"set", s_set}, {"add", s_add}, {"incr", s_incr},
        {"delete", s_delete}, {"keys", s_keys}, {"update", s_update}, {NULL, NULL},
    };
    if (luaL_newmetatable(L, STORE_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, s_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_store);
    lua_setfield(L, -2, "store");
    lua_pushcfunction(L, l_store_codec);
    lua_setfield(L, -2, "store_codec");
}

void lh_store_close(void)
{
    store_close();
    lh_rstore_close();
}

/* luaws test, between tests: every store emptied. */
void lh_store_reset(lua_State *L)
{
    char err[STORE_ERR_MAX];
    if (store_clear_all(err)) luaL_error(L, "luaws.store: cannot empty the stores between tests: %s", err);
}
