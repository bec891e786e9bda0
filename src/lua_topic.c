/* lua_topic.c — topics: socket:subscribe/unsubscribe/topics, luaws.publish
 * and luaws.subscribers.
 *
 * Subscribers live in C arrays so that a publish builds its frame once
 * (and its compressed form once, for sockets on the shared compressor)
 * and hands the same bytes to every subscriber's write queue. Topics are
 * per worker unless the server runs with --redis, where every publish goes
 * through Redis and comes back to each worker that has subscribers. */
#include "lua_internal.h"
#include "log.h"
#include "xalloc.h"
#include "redis_bus.h"
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define TOPICS_KEY "luaws.topics"   /* registry: name -> topic userdata */
#define TOPIC_MT "luaws.topic"

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
static void push_topics(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, TOPICS_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, TOPICS_KEY);
    }
}

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
    if (t->n == 0) {
        if (h->srv->bus) redis_bus_unsubscribe(h->srv->bus, t->name, t->len);
        free(t->subs);
        t->subs = NULL;
        t->cap = 0;
    }
    return true;
}

/* Writes one message to every local subscriber; returns how many got it. */
static size_t fan_out(lua_host *h, struct topic *t, uint8_t opcode, const uint8_t *data, size_t len)
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
        if (ws_send_shared(t->subs[i], opcode, data, len, plain, compressed) == 0) sent++;
    t->walking--;
    shared_frame_unref(plain);
    shared_frame_unref(compressed);
    return sent;
}

void lh_host_topic_message(void *host, const char *topic, size_t tlen, const uint8_t *payload, size_t len)
{
    lua_host *h = host;
    /* Ours carry their kind in the first byte; a message another Redis
     * client published on luaws:TOPIC is taken whole, as text. */
    uint8_t opcode = WS_OP_TEXT;
    if (len >= 1 && (payload[0] == 'b' || payload[0] == 't')) {
        opcode = payload[0] == 'b' ? WS_OP_BINARY : WS_OP_TEXT;
        payload++;
        len--;
    }
    if (opcode == WS_OP_TEXT && !utf8_valid(payload, len)) {
        log_warn("redis: dropped a message for topic %.*s: text that is not UTF-8", (int)tlen, topic);
        return;
    }
    struct topic *t = find(h->L, topic, tlen);
    /* As if Lua ran: what the fan-out raises (on_close of a subscriber cut
     * for backpressure) is queued until it is over. */
    h->depth++;
    fan_out(h, t, opcode, payload, len);
    h->depth--;
    lh_settle(h);
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
    if (h->test_published) h->test_published(L, h, name, tlen, 2);
    if (h->srv->bus && redis_bus_connected(h->srv->bus)) {
        /* Every worker, this one included, delivers it when Redis echoes it. */
        uint8_t *msg = malloc(len + 1);
        if (!msg) return luaL_error(L, "out of memory");
        msg[0] = opcode == WS_OP_BINARY ? 'b' : 't';
        memcpy(msg + 1, data, len);
        bool ok = redis_bus_publish(h->srv->bus, name, tlen, msg, len + 1);
        free(msg);
        if (ok) {
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushinteger(L, (lua_Integer)fan_out(h, find(L, name, tlen), opcode, data, len));
    return 1;
}

static int l_subscribers(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    struct topic *t = find(L, name, len);
    /* Sockets closing (the handshake begun, on_close queued) get nothing
     * more: they do not count. */
    lua_Integer n = 0;
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
