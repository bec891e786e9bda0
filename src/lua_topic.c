/* lua_topic.c — topics: socket:subscribe/unsubscribe/topics, luaws.publish
 * and luaws.subscribers.
 *
 * Subscribers live in C arrays so that a publish builds its frame once
 * (and its compressed form once, for sockets on the shared compressor)
 * and hands the same bytes to every subscriber's write queue.
 *
 * Where a publish goes:
 *  - --redis (while connected): through Redis, back to every worker of
 *    every machine with subscribers, this one included;
 *  - else, with --workers N: through the main process's broker
 *    (local_bus.h), back to every worker of the machine, this one included;
 *  - else (one worker, or either link down): straight to this worker's
 *    subscribers.
 * In the first two cases the publisher's own subscribers get it when it
 * comes back, so every worker delivers in the same order.
 *
 * luaws.subscribers counts the machine: this worker's sockets, plus what
 * the other workers last said they have (a count travels on the broker
 * link whenever a topic gains or loses a subscriber). */
#include "lua_internal.h"
#include "log.h"
#include "xalloc.h"
#include "redis_bus.h"
#include "local_bus.h"
#include "bus_wire.h"
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define TOPICS_KEY "luaws.topics"   /* registry: name -> topic userdata */
#define TOPIC_MT "luaws.topic"
#define REMOTE_KEY "luaws.remote_counts"   /* registry: name -> remote_count userdata */

/* The other workers' subscriber counts of one topic (--workers N). */
typedef struct remote_count {
    uint64_t sum;
    uint32_t of[];           /* per worker */
} remote_count;

/* A topic is a userdata in the registry's topic table, so that nothing is
 * lost if an allocation raises half-way through (--script-memory). Its
 * subscriber array is C memory, freed when the last one leaves. */
struct topic {
    conn **subs;
    size_t n, cap;
    int walking;             /* fan_out in progress: subs must not change */
    size_t len;
    char name[];
};

/* Pushes the registry's topic table. */
static void push_topics(lua_State *L) { luaL_getsubtable(L, LUA_REGISTRYINDEX, TOPICS_KEY); }

static struct topic *find(lua_State *L, const char *name, size_t len)
{
    push_topics(L);
    lua_pushlstring(L, name, len);
    lua_rawget(L, -2);
    struct topic *t = lua_touserdata(L, -1);
    lua_pop(L, 2);
    return t;
}

static int topic_gc(lua_State *L)
{
    struct topic *t = lua_touserdata(L, 1);
    free(t->subs);
    t->subs = NULL;
    return 0;
}

/* Every Lua allocation comes first (any may raise), then the C arrays. */
static bool subscribe(lua_State *L, lua_host *h, conn *c, const char *name, size_t len)
{
    struct topic *t = find(L, name, len);
    for (size_t i = 0; t && i < c->ntopics; i++)
        if (c->topics[i] == t) return false;
    if (!t) {
        push_topics(L);
        lua_pushlstring(L, name, len);
        t = lua_newuserdatauv(L, sizeof *t + len + 1, 0);
        memset(t, 0, sizeof *t);
        memcpy(t->name, name, len);
        t->name[len] = '\0';
        t->len = len;
        luaL_setmetatable(L, TOPIC_MT);
        lua_rawset(L, -3);
        lua_pop(L, 1);
        if (h->srv->bus) redis_bus_subscribe(h->srv->bus, name, len);
    }
    assert(!t->walking);
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->subs = xrealloc(t->subs, t->cap * sizeof *t->subs);
    }
    t->subs[t->n++] = c;
    c->topics = xrealloc(c->topics, (c->ntopics + 1) * sizeof *c->topics);
    c->topics[c->ntopics++] = t;
    local_bus_count(h->srv->lbus, t->name, t->len, (uint32_t)t->n);
    return true;
}

static bool unsubscribe(lua_State *L, lua_host *h, conn *c, struct topic *t)
{
    size_t i;
    for (i = 0; i < c->ntopics && c->topics[i] != t; i++) {}
    if (!t || i == c->ntopics) return false;
    assert(!t->walking);
    if (t->n == 1) {
        /* The last subscriber: out of the table first (may raise). */
        push_topics(L);
        lua_pushlstring(L, t->name, t->len);
        lua_pushnil(L);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    c->topics[i] = c->topics[--c->ntopics];
    if (c->ntopics == 0) {
        free(c->topics);
        c->topics = NULL;
    }
    /* Keep the subscribers in order: a later publish reaches them in the
     * same order, which is what fairness under load looks like. */
    for (i = 0; i < t->n && t->subs[i] != c; i++) {}
    if (i < t->n) memmove(t->subs + i, t->subs + i + 1, (t->n - i - 1) * sizeof *t->subs);
    t->n--;
    local_bus_count(h->srv->lbus, t->name, t->len, (uint32_t)t->n);
    if (t->n == 0) {
        if (h->srv->bus) redis_bus_unsubscribe(h->srv->bus, t->name, t->len);
        free(t->subs);
        t->subs = NULL;
        t->cap = 0;
    }
    return true;
}

/* Writes one message to every local subscriber but the socket with id
 * except (0: none); returns how many got it. */
static size_t fan_out(lua_host *h, struct topic *t, uint8_t opcode, uint64_t except, const uint8_t *data,
                      size_t len)
{
    server *s = h->srv;
    if (!t || t->n == 0) return 0;
    uint8_t hdr[WS_MAX_HEADER];
    size_t hlen = frame_write_header(hdr, true, false, opcode, len, NULL);
    shared_frame *plain = shared_frame_new(hdr, hlen, data, len);
    shared_frame *compressed = NULL;
    if (s->cfg->deflate == DEFLATE_SHARED && len >= s->cfg->deflate_min) {
        pmd_conn one = {.params = {.server_no_context_takeover = true, .server_max_window_bits = 15}};
        if (pmd_compress(&s->pmd, &one, data, len)) {
            hlen = frame_write_header(hdr, true, true, opcode, s->pmd.out.len, NULL);
            compressed = shared_frame_new(hdr, hlen, s->pmd.out.data, s->pmd.out.len);
        }
        pmd_conn_free(&s->pmd, &one);
    }
    /* A send may cut a slow subscriber; its on_close (which leaves the
     * topic) is queued until Lua is free, so the array stays as it is. */
    size_t sent = 0;
    t->walking++;
    for (size_t i = 0; i < t->n; i++)
        if (t->subs[i]->id != except && ws_send_shared(t->subs[i], opcode, data, len, plain, compressed) == 0)
            sent++;
    t->walking--;
    shared_frame_unref(plain);
    shared_frame_unref(compressed);
    return sent;
}

void lh_host_topic_deliver(void *host, const char *topic, size_t tlen, uint8_t opcode, uint64_t except,
                           const uint8_t *data, size_t len)
{
    lua_host *h = host;
    struct topic *t = find(h->L, topic, tlen);
    if (!t) return;
    /* As if Lua ran: what the fan-out raises (on_close of a subscriber cut
     * for backpressure) is queued until it is over. */
    h->depth++;
    fan_out(h, t, opcode, except, data, len);
    h->depth--;
    lh_settle(h);
}

/* Redis payloads: ours start with their kind, t or b, or T or B followed
 * by the 8-byte id of the socket that must not get it; a message another
 * Redis client published on luaws:TOPIC is taken whole, as text. */
void lh_host_topic_message(void *host, const char *topic, size_t tlen, const uint8_t *payload, size_t len)
{
    uint8_t opcode = WS_OP_TEXT;
    uint64_t except = 0;
    if (len >= 1 && (payload[0] == 'b' || payload[0] == 't')) {
        opcode = payload[0] == 'b' ? WS_OP_BINARY : WS_OP_TEXT;
        payload++;
        len--;
    } else if (len >= 9 && (payload[0] == 'B' || payload[0] == 'T')) {
        opcode = payload[0] == 'B' ? WS_OP_BINARY : WS_OP_TEXT;
        except = bus_get64(payload + 1);
        payload += 9;
        len -= 9;
    }
    if (opcode == WS_OP_TEXT && !utf8_valid(payload, len)) {
        log_warn("redis: dropped a message for topic %.*s: text that is not UTF-8", (int)tlen, topic);
        return;
    }
    lh_host_topic_deliver(host, topic, tlen, opcode, except, payload, len);
}

/* Pushes the registry's table of other workers' counts. */
static void push_remote(lua_State *L) { luaL_getsubtable(L, LUA_REGISTRYINDEX, REMOTE_KEY); }

static uint64_t remote_sum(lua_State *L, const char *name, size_t len)
{
    push_remote(L);
    lua_pushlstring(L, name, len);
    lua_rawget(L, -2);
    const remote_count *r = lua_touserdata(L, -1);
    uint64_t sum = r ? r->sum : 0;
    lua_pop(L, 2);
    return sum;
}

/* Called from the loop, not from Lua: a Lua allocation error here would
 * have no one to catch it, so it runs protected. */
static int set_remote_count(lua_State *L)
{
    lua_host *h = lh_host(L);
    unsigned worker = (unsigned)lua_tointeger(L, 1);
    uint32_t count = (uint32_t)lua_tointeger(L, 3);
    push_remote(L);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    remote_count *r = lua_touserdata(L, -1);
    if (!r) {
        if (count == 0) return 0;
        lua_pop(L, 1);
        size_t size = sizeof *r + (size_t)h->srv->nslots * sizeof r->of[0];
        r = lua_newuserdatauv(L, size, 0);
        memset(r, 0, size);
        lua_pushvalue(L, 2);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    r->sum = r->sum - r->of[worker] + count;
    r->of[worker] = count;
    if (r->sum == 0) {
        lua_pushvalue(L, 2);
        lua_pushnil(L);
        lua_rawset(L, -4);
    }
    return 0;
}

void lh_host_topic_count(void *host, unsigned worker, const char *topic, size_t tlen, uint32_t count)
{
    lua_host *h = host;
    if (worker >= (unsigned)h->srv->nslots) return;
    lua_State *L = h->L;
    lua_pushcfunction(L, set_remote_count);
    lua_pushinteger(L, worker);
    lua_pushlstring(L, topic, tlen);
    lua_pushinteger(L, count);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
        log_warn("topic %.*s: cannot keep another worker's count: %s", (int)tlen, topic, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

static int forget_worker(lua_State *L)
{
    unsigned worker = (unsigned)lua_tointeger(L, 1);
    push_remote(L);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        remote_count *r = lua_touserdata(L, -1);
        r->sum -= r->of[worker];
        r->of[worker] = 0;
        lua_pop(L, 1);
        if (r->sum == 0) {
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, -4);   /* clearing a field during lua_next is allowed */
        }
    }
    return 0;
}

void lh_host_topic_worker_gone(void *host, unsigned worker)
{
    lua_host *h = host;
    if (worker >= (unsigned)h->srv->nslots) return;
    lua_pushcfunction(h->L, forget_worker);
    lua_pushinteger(h->L, worker);
    if (lua_pcall(h->L, 1, 0, 0) != LUA_OK) lua_pop(h->L, 1);
}

void lh_host_topic_resync(void *host)
{
    lua_host *h = host;
    lua_State *L = h->L;
    push_topics(L);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const struct topic *t = lua_touserdata(L, -1);
        local_bus_count(h->srv->lbus, t->name, t->len, (uint32_t)t->n);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static conn *check_open_socket(lua_State *L)
{
    lsocket *ls = luaL_checkudata(L, 1, SOCKET_MT);
    return ls->c && ws_is_open(ls->c) ? ls->c : NULL;
}

static int l_subscribe(lua_State *L)
{
    conn *c = check_open_socket(L);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    if (!c) {
        return lh_fail(L, "closed", "EPIPE");
    }
    lua_pushboolean(L, subscribe(L, lh_host(L), c, name, len));
    return 1;
}

static int l_unsubscribe(lua_State *L)
{
    lsocket *s = luaL_checkudata(L, 1, SOCKET_MT);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    bool done = s->c && unsubscribe(L, lh_host(L), s->c, find(L, name, len));
    lua_pushboolean(L, done);
    return 1;
}

static int l_topics(lua_State *L)
{
    lsocket *s = luaL_checkudata(L, 1, SOCKET_MT);
    size_t n = s->c ? s->c->ntopics : 0;
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushlstring(L, s->c->topics[i]->name, s->c->topics[i]->len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int l_publish(lua_State *L)
{
    lua_host *h = lh_host(L);
    size_t tlen, len;
    const char *name = luaL_checklstring(L, 1, &tlen);
    const uint8_t *data;
    uint8_t opcode;
    if (lua_type(L, 2) == LUA_TSTRING) {
        data = (const uint8_t *)lua_tolstring(L, 2, &len);
        opcode = WS_OP_TEXT;
        if (!lh_text_valid(h, data, len))
            return luaL_error(L, "publish: text message is not valid UTF-8 (publish a luaws.buffer for binary)");
    } else {
        data = luaL_checkudata(L, 2, BUFFER_MT);
        len = lua_rawlen(L, 2);
        opcode = WS_OP_BINARY;
    }
    uint64_t except = 0;
    if (!lua_isnoneornil(L, 3)) {
        /* {except = socket}: everyone subscribed but that socket. */
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "except") != 0)
                return luaL_error(L, "publish: unknown option %s (the options are: except)",
                                  luaL_tolstring(L, -2, NULL));
            lsocket *ex = luaL_testudata(L, -1, SOCKET_MT);
            if (!ex) return luaL_error(L, "publish: except must be a socket");
            except = ex->c ? ex->c->id : 0;
            lua_pop(L, 1);
        }
    }
    if (h->test_published) h->test_published(L, h, name, tlen, 2);
    if (h->srv->lbus && tlen > LOCAL_BUS_TOPIC_MAX)
        return luaL_error(L, "publish: topic name longer than %d bytes", LOCAL_BUS_TOPIC_MAX);
    if (h->srv->bus && redis_bus_connected(h->srv->bus)) {
        /* Every worker, this one included, delivers it when Redis echoes it. */
        size_t head = except ? 9 : 1;
        uint8_t *msg = malloc(len + head);
        if (!msg) return luaL_error(L, "out of memory");
        msg[0] = opcode == WS_OP_BINARY ? (except ? 'B' : 'b') : (except ? 'T' : 't');
        if (except) {
            bus_put64(msg + 1, except);
        }
        memcpy(msg + head, data, len);
        bool ok = redis_bus_publish(h->srv->bus, name, tlen, msg, len + head);
        free(msg);
        if (ok) {
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    if (local_bus_open(h->srv->lbus)) {
        /* Every worker, this one included, delivers it when the broker
         * relays it. */
        if (!local_bus_publish(h->srv->lbus, name, tlen, opcode, except, data, len))
            return lh_fail(L, "publish: more than 64 MiB of messages wait for the other workers", "ENOBUFS");
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)fan_out(h, find(L, name, tlen), opcode, except, data, len));
    return 1;
}

static int l_subscribers(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    struct topic *t = find(L, name, len);
    /* Sockets closing (the handshake begun, on_close queued) get nothing
     * more: they do not count. */
    lua_Integer n = (lua_Integer)remote_sum(L, name, len);
    for (size_t i = 0; t && i < t->n; i++) {
        lsocket *ls = lh_socket_of(t->subs[i]);
        if (ws_is_open(t->subs[i]) && (!ls || !ls->close_queued)) n++;
    }
    lua_pushinteger(L, n);
    return 1;
}

void lp_register(lua_State *L)
{
    if (luaL_newmetatable(L, TOPIC_MT)) {
        lua_pushcfunction(L, topic_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"publish", l_publish},
        {"subscribers", l_subscribers},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}

const luaL_Reg lp_socket_methods[] = {
    {"subscribe", l_subscribe},
    {"unsubscribe", l_unsubscribe},
    {"topics", l_topics},
    {NULL, NULL},
};

void lp_conn_gone(lua_host *h, conn *c)
{
    while (c->ntopics) unsubscribe(h->L, h, c, c->topics[c->ntopics - 1]);
}
