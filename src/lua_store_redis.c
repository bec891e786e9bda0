/* lua_store_redis.c — luaws.store(name) on Redis (--store redis://...): the
 * same methods as lua_store.c's LMDB stores, over redis_store.c.
 *
 * Layout: a value lives at "luaws:store:" NAME ":" KEY, NAME with '%' and
 * ':' percent-escaped (so one store's keys never look like another's), KEY
 * as given (binary-safe). Encoding: an integer is its decimal text, as
 * Redis's INCRBY reads and writes it; every other value is a tag byte and
 * its text: "s" string, "f" float (%.17g), "b1"/"b0" boolean, "j" JSON (a
 * table, through the codec of lua/luaws.lua). A value written by someone
 * else that has no tag reads back as a plain string.
 *
 * Waiting: every method sends its command and suspends the calling task
 * (lua_yieldk; task.awaiting holds the wait) until the reply or the error
 * comes back; redis_store.c's callback pushes (status, value) onto the
 * task's coroutine and resumes it, and the method's continuation carries
 * on. Where the task cannot yield (the script's top level, an update
 * function, a plain coroutine) a method raises instead. If the task's
 * socket closes meanwhile, the task still gets its reply (as a sleep still
 * ends); if the server stops, lh_rstore_stop cancels the wait and the task
 * never resumes. A failure raises "luaws.store NAME: Redis unavailable (...)".
 *
 * Ownership: a wait (rwait) is malloc'd by the method and owned by the
 * `waits` list until its callback runs or lh_rstore_stop cancels it; the
 * client is this process's, created on the first luaws.store call and
 * closed by lh_rstore_close. */
#include "lua_internal.h"
#include "redis_store.h"
#include "xalloc.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RSTORE_MT "luaws.store.redis"
#define KEY_PREFIX "luaws:store:"
#define UPDATE_TRIES 50

/* The store object: its name, then its key prefix. */
typedef struct rlstore {
    size_t plen;
    char *prefix;            /* points into data */
    char data[];             /* name NUL prefix */
} rlstore;

typedef struct rwait {
    struct rwait *prev, *next;   /* in waits */
    task *t;
    rstore_req *req;         /* a command's, or NULL */
    uv_timer_t *delay;       /* a pause's (update's backoff), or NULL; freed when closed */
} rwait;

static void delay_closed(uv_handle_t *h) { free(h); }

static rstore *client;
static bool client_tried;
static char client_error[256];
static rwait *waits;
static const rlstore *updating;   /* whose update function runs */

static const char INCR_SCRIPT[] =
    "local k, d, init, ints = KEYS[1], ARGV[1], ARGV[2], ARGV[3] == '1'\n"
    "local v = redis.call('GET', k)\n"
    "if not v then\n"
    "  if ints then redis.call('SET', k, init) return {'i', redis.call('INCRBY', k, d)} end\n"
    "  v = init\n"
    "else\n"
    "  local c = string.byte(v, 1)\n"
    "  if c == 102 then v = string.sub(v, 2)\n"
    "  elseif c == 45 or (c >= 48 and c <= 57) then\n"
    "    if ints then return {'i', redis.call('INCRBY', k, d)} end\n"
    "  else return {'e'} end\n"
    "end\n"
    "local s = string.format('%.17g', tonumber(v) + tonumber(d))\n"
    "redis.call('SET', k, 'f' .. s, 'KEEPTTL')\n"
    "return {'f', s}\n";

/* Sets KEYS[1] to ARGV[4] (or deletes it if ARGV[3] is '0') only if it
 * still holds ARGV[2] (or is still absent if ARGV[1] is '0'); keeps the TTL. */
static const char CAS_SCRIPT[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if ARGV[1] == '1' then if v ~= ARGV[2] then return 0 end elseif v then return 0 end\n"
    "if ARGV[3] == '1' then redis.call('SET', KEYS[1], ARGV[4], 'KEEPTTL') else redis.call('DEL', KEYS[1]) end\n"
    "return 1\n";

bool lh_rstore_enabled(const lua_host *h)
{
    const config *cfg = h->srv ? h->srv->cfg : NULL;
    return !h->test && cfg && cfg->store_path && strncmp(cfg->store_path, "redis://", 8) == 0;
}

/* ---- values ---- */

/* Pushes the encoding of the value at idx (argn: for argument errors). */
static void encode(lua_State *L, int idx, int argn)
{
    idx = lua_absindex(L, idx);
    char num[48];
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
        else snprintf(num, sizeof num, "f%.17g", (double)lua_tonumber(L, idx));
        lua_pushstring(L, num);
        return;
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, idx) ? "b1" : "b0");
        return;
    case LUA_TSTRING:
        lua_pushliteral(L, "s");
        lua_pushvalue(L, idx);
        lua_concat(L, 2);
        return;
    case LUA_TTABLE:
        lh_store_push_json(L, idx, argn);
        lua_pushliteral(L, "j");
        lua_insert(L, -2);
        lua_concat(L, 2);
        return;
    default:
        luaL_argerror(L, argn, lua_pushfstring(L, "a string, number, boolean or table, not a %s", luaL_typename(L, idx)));
    }
}

/* Pushes the value an encoding at idx (a string, or nil: absent) stands for. */
static void decode(lua_State *L, int idx)
{
    size_t len;
    const char *p = lua_tolstring(L, idx, &len);
    if (!p || len == 0) {
        if (p) lua_pushliteral(L, "");
        else lua_pushnil(L);
        return;
    }
    char *end;
    switch (p[0]) {
    case 's': lua_pushlstring(L, p + 1, len - 1); return;
    case 'b': lua_pushboolean(L, len == 2 && p[1] == '1'); return;
    case 'f': lua_pushnumber(L, strtod(p + 1, NULL)); return;
    case 'j': lh_store_push_table(L, p + 1, len - 1); return;
    default:
        if (p[0] == '-' || (p[0] >= '0' && p[0] <= '9')) {
            long long n = strtoll(p, &end, 10);
            if (end == p + len) {
                lua_pushinteger(L, (lua_Integer)n);
                return;
            }
        }
        lua_pushlstring(L, p, len);   /* not ours: a plain string */
    }
}

/* ---- the store object ---- */

static rlstore *check_store(lua_State *L)
{
    rlstore *s = luaL_checkudata(L, 1, RSTORE_MT);
    if (updating)
        luaL_error(L, "luaws.store %s: cannot be used inside the update function of luaws.store %s", s->data,
                   updating->data);
    if (!lh_current_task(L) || !lua_isyieldable(L))
        luaL_error(L, "luaws.store %s: luaws.store on Redis works only inside a listener event or a timer callback "
                   "(it waits for Redis)", s->data);
    return s;
}

/* Pushes the full Redis key of the key argument at idx. */
static void push_key(lua_State *L, const rlstore *s, int idx)
{
    size_t len;
    const char *k = luaL_checklstring(L, idx, &len);
    if (len == 0) luaL_argerror(L, idx, "the key is empty");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, s->prefix, s->plen);
    luaL_addlstring(&b, k, len);
    luaL_pushresult(&b);
}

static void on_reply(void *ud, const redisReply *reply, const char *err);

/* Links w (a reply or a delay awaited by t) into waits and yields t until
 * it comes; k continues. */
static int suspend(lua_State *L, task *t, rwait *w, lua_KContext ctx, lua_KFunction k)
{
    w->t = t;
    w->prev = NULL;
    w->next = waits;
    if (waits) waits->prev = w;
    waits = w;
    t->awaiting = w;
    return lua_yieldk(L, 0, ctx, k);
}

/* Sends argv (strings of L, copied by redis_store.c) and suspends the task
 * until on_reply resumes it in k with (status, value) on top: status 1 and
 * the reply, 0 and Redis's error message, or -1 and why Redis is unavailable. */
static int await(lua_State *L, const rlstore *s, int argc, const char **argv, const size_t *lens, lua_KContext ctx,
                 lua_KFunction k)
{
    char err[256];
    if (!client) return luaL_error(L, "luaws.store %s: Redis unavailable (%s)", s->data, client_error);
    task *t = lh_current_task(L);
    rwait *w = xmalloc(sizeof *w);
    w->req = rstore_command(client, argc, argv, lens, on_reply, w, err, sizeof err);
    if (!w->req) {
        free(w);
        return luaL_error(L, "luaws.store %s: Redis unavailable (%s)", s->data, err);
    }
    w->delay = NULL;
    return suspend(L, t, w, ctx, k);
}

static void unlink_wait(rwait *w)
{
    if (w->prev) w->prev->next = w->next;
    else waits = w->next;
    if (w->next) w->next->prev = w->prev;
}

static void push_reply(lua_State *co, const redisReply *r, int depth)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(co, r->str, r->len);
        return;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(co, (lua_Integer)r->integer);
        return;
    case REDIS_REPLY_ARRAY:
        if (depth < 2) {
            lua_createtable(co, (int)r->elements, 0);
            for (size_t i = 0; i < r->elements; i++) {
                push_reply(co, r->element[i], depth + 1);
                lua_rawseti(co, -2, (lua_Integer)i + 1);
            }
            return;
        }
        /* fall through */
    default:
        lua_pushnil(co);
    }
}

/* redis_store.c's callback, from the loop (Lua is not running). */
static void on_reply(void *ud, const redisReply *reply, const char *err)
{
    rwait *w = ud;
    task *t = w->t;
    unlink_wait(w);
    free(w);
    t->awaiting = NULL;
    lua_State *co = t->co;
    lua_checkstack(co, 8);
    if (!reply) {
        lua_pushinteger(co, -1);
        lua_pushstring(co, err);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        lua_pushinteger(co, 0);
        lua_pushlstring(co, reply->str, reply->len);
    } else {
        lua_pushinteger(co, 1);
        push_reply(co, reply, 0);
    }
    lh_resume(t);
}

static void on_delay(uv_timer_t *timer)
{
    rwait *w = timer->data;
    task *t = w->t;
    unlink_wait(w);
    uv_close((uv_handle_t *)timer, delay_closed);
    free(w);
    t->awaiting = NULL;
    lua_checkstack(t->co, 4);
    lua_pushinteger(t->co, 1);
    lua_pushnil(t->co);
    lh_resume(t);
}

/* Suspends the task for ms, then resumes k with (1, nil) on top. */
static int pause_for(lua_State *L, unsigned ms, lua_KContext ctx, lua_KFunction k)
{
    lua_host *h = lh_host(L);
    task *t = lh_current_task(L);
    rwait *w = xmalloc(sizeof *w);
    w->req = NULL;
    w->delay = xmalloc(sizeof *w->delay);
    uv_timer_init(h->srv->loop, w->delay);
    w->delay->data = w;
    uv_timer_start(w->delay, on_delay, ms, 0);
    return suspend(L, t, w, ctx, k);
}

/* In a continuation: raises unless the reply is good; pops the status and
 * leaves the value on top. */
static void check_reply(lua_State *L, const rlstore *s)
{
    lua_Integer st = lua_tointeger(L, -2);
    if (st == 1) {
        lua_remove(L, -2);
        return;
    }
    const char *msg = lua_tostring(L, -1);
    if (st == 0) luaL_error(L, "luaws.store %s: Redis error: %s", s->data, msg);
    luaL_error(L, "luaws.store %s: Redis unavailable (%s)", s->data, msg);
}

/* ---- get, set, add, delete ---- */

static int k_get(lua_State *L, int status, lua_KContext ctx)
{
    const rlstore *s = lua_touserdata(L, 1);
    check_reply(L, s);
    decode(L, -1);
    return 1;
}

static int s_get(lua_State *L)
{
    rlstore *s = check_store(L);
    push_key(L, s, 2);
    size_t klen;
    const char *key = lua_tolstring(L, -1, &klen);
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, klen};
    return await(L, s, 2, argv, lens, 0, k_get);
}

/* set/add: the reply of SET (NX: nil when present) -> a boolean. */
static int k_put(lua_State *L, int status, lua_KContext ctx)
{
    const rlstore *s = lua_touserdata(L, 1);
    check_reply(L, s);
    lua_pushboolean(L, !lua_isnil(L, -1));
    return 1;
}

static int put(lua_State *L, bool add)
{
    rlstore *s = check_store(L);
    lua_settop(L, 4);
    push_key(L, s, 2);                    /* 5 */
    long long ttl = (long long)lh_store_check_ttl(L, 4);
    size_t klen, vlen;
    const char *key = lua_tolstring(L, 5, &klen);
    if (lua_isnil(L, 3)) {
        if (add) return luaL_argerror(L, 3, "add needs a value");
        const char *argv[] = {"DEL", key};
        size_t lens[] = {3, klen};
        return await(L, s, 2, argv, lens, 0, k_put);
    }
    encode(L, 3, 3);                      /* 6 */
    const char *val = lua_tolstring(L, 6, &vlen);
    char ms[32];
    snprintf(ms, sizeof ms, "%lld", ttl);
    const char *argv[6] = {"SET", key, val};
    size_t lens[6] = {3, klen, vlen};
    int argc = 3;
    if (add) argv[argc] = "NX", lens[argc++] = 2;
    if (ttl) {
        argv[argc] = "PX", lens[argc++] = 2;
        argv[argc] = ms, lens[argc++] = strlen(ms);
    }
    return await(L, s, argc, argv, lens, 0, k_put);
}

static int s_set(lua_State *L) { return put(L, false); }
static int s_add(lua_State *L) { return put(L, true); }
static int s_delete(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushnil(L);
    return put(L, false);
}

/* ---- incr: INCRBY when it can (integers, init 0), else INCR_SCRIPT ---- */

static int incr_script(lua_State *L, const rlstore *s);

static int k_incr(lua_State *L, int status, lua_KContext ctx)
{
    const rlstore *s = lua_touserdata(L, 1);
    if (ctx == 0 && lua_tointeger(L, -2) == 0) {
        /* INCRBY refused: a float or a tagged value, which the script sorts out. */
        lua_settop(L, 7);
        return incr_script(L, s);
    }
    check_reply(L, s);
    if (lua_type(L, -1) == LUA_TNUMBER) return 1;   /* INCRBY's */
    if (lua_type(L, -1) != LUA_TTABLE) return luaL_error(L, "luaws.store %s: incr: bad reply from Redis", s->data);
    lua_rawgeti(L, -1, 1);
    const char *kind = lua_tostring(L, -1);
    lua_rawgeti(L, -2, 2);
    if (kind && kind[0] == 'e') return luaL_error(L, "luaws.store %s: incr: the value is not a number", s->data);
    if (kind && kind[0] == 'f') lua_pushnumber(L, strtod(lua_tostring(L, -1), NULL));
    else lua_pushinteger(L, lua_tointeger(L, -1));
    return 1;
}

/* Stack: 1 store, 2 key, 3 delta, 4 init, 5 full key, 6 delta text, 7 init text. */
static int incr_script(lua_State *L, const rlstore *s)
{
    size_t klen, dlen, ilen;
    const char *key = lua_tolstring(L, 5, &klen);
    const char *d = lua_tolstring(L, 6, &dlen);
    const char *init = lua_tolstring(L, 7, &ilen);
    bool ints = lua_isinteger(L, 3) && lua_isinteger(L, 4);
    const char *argv[] = {"EVAL", INCR_SCRIPT, "1", key, d, init, ints ? "1" : "0"};
    size_t lens[] = {4, sizeof INCR_SCRIPT - 1, 1, klen, dlen, ilen, 1};
    return await(L, s, 7, argv, lens, 1, k_incr);
}

static void push_number_text(lua_State *L, int idx)
{
    char num[48];
    if (lua_isinteger(L, idx)) snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
    else snprintf(num, sizeof num, "%.17g", (double)lua_tonumber(L, idx));
    lua_pushstring(L, num);
}

static int s_incr(lua_State *L)
{
    rlstore *s = check_store(L);
    lua_settop(L, 4);
    if (lua_isnil(L, 3)) lua_pushinteger(L, 1), lua_replace(L, 3);
    if (lua_isnil(L, 4)) lua_pushinteger(L, 0), lua_replace(L, 4);
    luaL_checknumber(L, 3);
    luaL_checknumber(L, 4);
    push_key(L, s, 2);        /* 5 */
    push_number_text(L, 3);   /* 6 */
    push_number_text(L, 4);   /* 7 */
    if (lua_isinteger(L, 3) && lua_isinteger(L, 4) && lua_tointeger(L, 4) == 0) {
        size_t klen, dlen;
        const char *key = lua_tolstring(L, 5, &klen);
        const char *d = lua_tolstring(L, 6, &dlen);
        const char *argv[] = {"INCRBY", key, d};
        size_t lens[] = {6, klen, dlen};
        return await(L, s, 3, argv, lens, 0, k_incr);
    }
    return incr_script(L, s);
}

/* ---- keys: SCAN MATCH, never KEYS ---- */

typedef struct kref { const char *p; size_t len; } kref;

static int kref_cmp(const void *a, const void *b)
{
    const kref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int scan_next(lua_State *L, const rlstore *s);

/* Stack: 1 store, 2 prefix, 3 pattern, 4 set {key = true}, 5 cursor. */
static int k_keys(lua_State *L, int status, lua_KContext ctx)
{
    const rlstore *s = lua_touserdata(L, 1);
    check_reply(L, s);
    if (lua_type(L, -1) != LUA_TTABLE) return luaL_error(L, "luaws.store %s: keys: bad reply from Redis", s->data);
    int reply = lua_gettop(L);
    lua_rawgeti(L, reply, 2);
    int list = lua_gettop(L);
    for (lua_Integer i = 1; lua_rawgeti(L, list, i) == LUA_TSTRING; i++) {
        size_t len;
        const char *k = lua_tolstring(L, -1, &len);
        if (len > s->plen) {   /* SCAN may repeat a key: the set keeps one */
            lua_pushlstring(L, k + s->plen, len - s->plen);
            lua_pushboolean(L, 1);
            lua_rawset(L, 4);
        }
        lua_pop(L, 1);
    }
    lua_rawgeti(L, reply, 1);
    lua_replace(L, 5);
    lua_settop(L, 5);
    if (strcmp(lua_tostring(L, 5) ? lua_tostring(L, 5) : "0", "0") != 0) return scan_next(L, s);
    /* Done: sorted bytewise, as LMDB lists them. */
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, 4)) n++, lua_pop(L, 1);
    kref *refs = lua_newuserdatauv(L, (n ? n : 1) * sizeof *refs, 0);   /* freed by the GC */
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, 4)) {
        lua_pop(L, 1);
        refs[i].p = lua_tolstring(L, -1, &refs[i].len);   /* strings held by the set */
        i++;
    }
    qsort(refs, n, sizeof *refs, kref_cmp);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        lua_pushlstring(L, refs[i].p, refs[i].len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int scan_next(lua_State *L, const rlstore *s)
{
    size_t clen, plen;
    const char *cursor = lua_tolstring(L, 5, &clen);
    const char *pat = lua_tolstring(L, 3, &plen);
    const char *argv[] = {"SCAN", cursor, "MATCH", pat, "COUNT", "1000"};
    size_t lens[] = {4, clen, 5, plen, 5, 4};
    return await(L, s, 6, argv, lens, 0, k_keys);
}

static int s_keys(lua_State *L)
{
    rlstore *s = check_store(L);
    size_t plen;
    lua_settop(L, 2);
    const char *prefix = luaL_optlstring(L, 2, "", &plen);
    /* The pattern: store prefix and key prefix with glob characters escaped. */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int part = 0; part < 2; part++) {
        const char *p = part ? prefix : s->prefix;
        size_t n = part ? plen : s->plen;
        for (size_t i = 0; i < n; i++) {
            if (strchr("*?[]\\^", p[i]) && p[i]) luaL_addchar(&b, '\\');
            luaL_addchar(&b, p[i]);
        }
    }
    luaL_addchar(&b, '*');
    luaL_pushresult(&b);       /* 3 */
    lua_newtable(L);           /* 4 */
    lua_pushliteral(L, "0");   /* 5 */
    return scan_next(L, s);
}

/* ---- update: GET, fn(old), compare-and-set, retried on conflict ---- */

/* Stack: 1 store, 2 key, 3 fn, 4 full key; per attempt 5 old encoding (or
 * nil), 6 the new value, 7 its encoding (or nil). ctx: stage (0 GET, 1 CAS, 2
 * backoff) + 3 * attempt. */
static int update_get(lua_State *L, const rlstore *s, lua_KContext attempt);

static int call_fn(lua_State *L)
{
    lua_call(L, 1, 1);
    return 1;
}

static int k_update(lua_State *L, int status, lua_KContext ctx)
{
    const rlstore *s = lua_touserdata(L, 1);
    lua_KContext attempt = ctx / 3;
    check_reply(L, s);
    if (ctx % 3 == 2) {   /* the pause after a conflict is over */
        lua_settop(L, 4);
        return update_get(L, s, attempt);
    }
    if (ctx % 3 == 1) {   /* the compare-and-set's answer */
        if (lua_tointeger(L, -1) == 1) {
            lua_pushvalue(L, 6);
            return 1;
        }
        if (attempt + 1 >= UPDATE_TRIES)
            return luaL_error(L, "luaws.store %s: update: the value kept changing under %d attempts; try again",
                              s->data, UPDATE_TRIES);
        /* Lost the race: wait a random 0..2^attempt ms (at most 50) so the
         * writers that keep colliding spread out, then read again. */
        lua_settop(L, 4);
        unsigned cap = attempt < 6 ? 1u << attempt : 50;
        return pause_for(L, (unsigned)rand() % (cap + 1), (attempt + 1) * 3 + 2, k_update);
    }
    /* The old value came: fn(old), run where it cannot wait. */
    lua_settop(L, 5);   /* the old encoding, from check_reply */
    lua_pushcfunction(L, call_fn);
    lua_pushvalue(L, 3);
    decode(L, 5);
    updating = s;
    int rc = lua_pcall(L, 2, 1, 0);
    updating = NULL;
    if (rc != LUA_OK) {
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *msg = lua_tostring(L, -1);
            if (strstr(msg, "yield") || strstr(msg, "works only"))
                lua_pushfstring(L, "luaws.store %s: update: the function cannot wait (luaws.sleep, a store call or "
                                "another yield): %s", s->data, msg);
        }
        return lua_error(L);
    }
    int t = lua_type(L, 6);
    if (t == LUA_TFUNCTION || t == LUA_TUSERDATA || t == LUA_TLIGHTUSERDATA || t == LUA_TTHREAD)
        return luaL_error(L, "luaws.store %s: update: the function returned a %s (not storable)", s->data,
                          luaL_typename(L, 6));
    if (t == LUA_TNIL) lua_pushnil(L);
    else encode(L, 6, 3);      /* 7 */
    size_t klen, olen = 0, nlen = 0;
    const char *key = lua_tolstring(L, 4, &klen);
    const char *old = lua_isnil(L, 5) ? "" : lua_tolstring(L, 5, &olen);
    const char *nv = lua_isnil(L, 7) ? "" : lua_tolstring(L, 7, &nlen);
    const char *argv[] = {"EVAL", CAS_SCRIPT, "1", key, lua_isnil(L, 5) ? "0" : "1", old,
                          lua_isnil(L, 7) ? "0" : "1", nv};
    size_t lens[] = {4, sizeof CAS_SCRIPT - 1, 1, klen, 1, olen, 1, nlen};
    return await(L, s, 8, argv, lens, attempt * 3 + 1, k_update);
}

static int update_get(lua_State *L, const rlstore *s, lua_KContext attempt)
{
    size_t klen;
    const char *key = lua_tolstring(L, 4, &klen);
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, klen};
    return await(L, s, 2, argv, lens, attempt * 3, k_update);
}

static int s_update(lua_State *L)
{
    rlstore *s = check_store(L);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_settop(L, 3);
    push_key(L, s, 2);   /* 4 */
    return update_get(L, s, 0);
}

static int s_tostring(lua_State *L)
{
    lua_pushfstring(L, "luaws.store %s (Redis)", ((rlstore *)luaL_checkudata(L, 1, RSTORE_MT))->data);
    return 1;
}

/* ---- the binding's entry points ---- */

int lh_rstore_new(lua_State *L, const char *name, size_t len)
{
    static const luaL_Reg methods[] = {
        {"get", s_get}, {"set", s_set}, {"add", s_add}, {"incr", s_incr},
        {"delete", s_delete}, {"keys", s_keys}, {"update", s_update}, {NULL, NULL},
    };
    lua_host *h = lh_host(L);
    if (updating)
        return luaL_error(L, "luaws.store: cannot open a store inside the update function of luaws.store %s",
                          updating->data);
    /* The client is made once per process, when the loop runs (not while
     * only checking a script); its errors show on each call. */
    if (!client_tried && h->srv && h->srv->loop) {
        client_tried = true;
        srand((unsigned)uv_os_getpid());   /* update's backoff differs between processes */
        client = rstore_new(h->srv->loop, h->srv->cfg->store_path, h->srv->cfg->store_timeout_ms, client_error,
                            sizeof client_error);
    }
    if (!client && !client_error[0]) snprintf(client_error, sizeof client_error, "no event loop");
    /* name, with '%' and ':' escaped, in the prefix */
    size_t esc = 0;
    for (size_t i = 0; i < len; i++) esc += (name[i] == '%' || name[i] == ':') ? 3 : 1;
    size_t plen = sizeof KEY_PREFIX - 1 + esc + 1;
    rlstore *s = lua_newuserdatauv(L, sizeof *s + len + 1 + plen + 1, 0);
    memcpy(s->data, name, len + 1);
    s->prefix = s->data + len + 1;
    char *p = s->prefix;
    memcpy(p, KEY_PREFIX, sizeof KEY_PREFIX - 1);
    p += sizeof KEY_PREFIX - 1;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '%') memcpy(p, "%25", 3), p += 3;
        else if (name[i] == ':') memcpy(p, "%3A", 3), p += 3;
        else *p++ = name[i];
    }
    *p++ = ':';
    *p = '\0';
    s->plen = plen;
    if (luaL_newmetatable(L, RSTORE_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, s_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    return 1;
}

/* The server stops (and, again, the host is destroyed): waiting tasks are
 * abandoned (they never resume, their replies are dropped) and the client
 * closes, so the loop can end; store calls from now on raise. */
void lh_rstore_stop(void)
{
    while (waits) {
        rwait *w = waits;
        unlink_wait(w);
        if (w->req) rstore_cancel(w->req);
        w->t->awaiting = NULL;
        if (w->delay) uv_close((uv_handle_t *)w->delay, delay_closed);
        free(w);
    }
    if (client_tried) {
        rstore_close(client);
        client = NULL;
        snprintf(client_error, sizeof client_error, "the server is stopping");
    }
}

void lh_rstore_close(void) { lh_rstore_stop(); }
