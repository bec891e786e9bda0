/* lua_timer.c — luaws.after, luaws.every and luaws.sleep on the worker's
 * clock (clock.h: libuv's, or the spec's under `luaws test`).
 *
 * A timer started inside a socket's event belongs to that socket and ends
 * when its on_close starts; one started elsewhere (at load time, in a
 * timer callback, or in on_close itself) belongs to nobody and lives until
 * it fires, is cancelled or the server stops. The Lua handle only points
 * at the timer; the timer keeps its handle and callback alive while it
 * runs. A timer points at its owner's lsocket, never at a connection. */
#include "lua_internal.h"
#include "xalloc.h"
#include "log.h"
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

struct ltimer {
    wtimer handle;
    lua_host *h;
    lsocket *owner;          /* the socket it belongs to, or NULL */
    int handle_ref;          /* the Lua handle (holding the callback), kept while
                                the timer lives; LUA_NOREF for sleep */
    task *sleeper;           /* luaws.sleep: the task to resume */
    bool repeat;
    bool at_load;            /* started while its version loaded: ends with it */
    unsigned version;        /* ... that version (h->version + 1 while loading) */
    char where[LH_WHERE_MAX]; /* file:line of the after/every call, for error logs */
    ltimer *prev, *next;     /* in h->timers */
};

typedef struct timer_handle {
    ltimer *t;               /* NULL once the timer ended */
} timer_handle;

static void on_timer_closed(wtimer *handle) { free(handle->data); }

/* Stops a timer for good: unhooks it from Lua, then frees it. */
static void timer_end(ltimer *t)
{
    lua_host *h = t->h;
    lua_State *L = h->L;
    if (t->prev) t->prev->next = t->next;
    else h->timers = t->next;
    if (t->next) t->next->prev = t->prev;
    if (t->handle_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->handle_ref);
        timer_handle *th = lua_touserdata(L, -1);
        if (th) th->t = NULL;
        lua_pop(L, 1);
        luaL_unref(L, LUA_REGISTRYINDEX, t->handle_ref);
    }
    if (t->sleeper) t->sleeper->sleeping = NULL;
    t->handle.data = t;
    wtimer_close(&t->handle, on_timer_closed);
}

static void on_timer(wtimer *handle)
{
    ltimer *t = handle->data;
    lua_host *h = t->h;
    if (t->sleeper) {
        task *sleeper = t->sleeper;
        t->sleeper = NULL;
        sleeper->sleeping = NULL;
        timer_end(t);
        lh_resume(sleeper);
        return;
    }
    /* The callback runs as a task of no socket: it does not hold up the
     * socket's input (but the timer ends with the socket). */
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, t->handle_ref);
    lua_getiuservalue(h->L, -1, 1);
    lua_remove(h->L, -2);
    /* Its errors are its socket's (on_error, 1011), as an event's are. */
    lsocket *owner = t->owner;
    char where[sizeof t->where];
    memcpy(where, t->where, sizeof where);
    if (!t->repeat) timer_end(t);
    lh_run_blamed(h, NULL, owner, t->repeat ? "luaws.every callback" : "luaws.after callback", where, 0);
    lh_settle(h);
}

/* C only: cannot raise. */
static ltimer *timer_new(lua_State *L, lua_host *h, lua_Integer ms, bool repeat)
{
    ltimer *t = xmalloc(sizeof *t);
    memset(t, 0, sizeof *t);
    t->h = h;
    t->handle_ref = LUA_NOREF;
    t->repeat = repeat;
    task *cur = lh_current_task(L);
    /* From on_close on, a socket owns nothing: such a timer fires. */
    t->owner = cur && cur->owner && !cur->owner->closed ? cur->owner : NULL;
    t->at_load = h->loading;
    t->version = h->version + 1;
    wtimer_init(&h->srv->clock, &t->handle);
    t->handle.data = t;
    t->next = h->timers;
    if (h->timers) h->timers->prev = t;
    h->timers = t;
    wtimer_start(&t->handle, on_timer, (uint64_t)ms, repeat ? (uint64_t)ms : 0);
    return t;
}

static int start(lua_State *L, bool repeat)
{
    lua_Integer ms = luaL_checkinteger(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (ms < 0 || (repeat && ms == 0)) return luaL_argerror(L, 1, repeat ? "must be > 0" : "must be >= 0");
    lua_host *h = lh_host(L);
    /* The handle holds the callback (its user value) and the timer holds
     * the handle: one ref, taken before the timer starts. */
    timer_handle *th = lua_newuserdatauv(L, sizeof *th, 1);
    th->t = NULL;
    luaL_setmetatable(L, TIMER_MT);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    /* While only checking a script (no loop yet), timers do not run. */
    if (!h->srv->loop) return 1;
    /* The refs first: they may raise (--script-memory), and a timer
     * already running would then be one nobody can cancel. */
    lua_pushvalue(L, -1);
    int handle_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ltimer *t = timer_new(L, h, ms, repeat);
    th->t = t;
    t->handle_ref = handle_ref;
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
        snprintf(t->where, sizeof t->where, "%s:%d", ar.short_src, ar.currentline);
    return 1;
}

static int l_after(lua_State *L) { return start(L, false); }
static int l_every(lua_State *L) { return start(L, true); }

static int sleep_k(lua_State *L, int status, lua_KContext ctx) { return 0; }

static int l_sleep(lua_State *L)
{
    lua_Integer ms = luaL_checkinteger(L, 1);
    if (ms < 0) return luaL_argerror(L, 1, "must be >= 0");
    task *cur = lh_current_task(L);
    if (!cur || !lua_isyieldable(L))
        return luaL_error(L, "luaws.sleep works only inside a listener event or a timer callback");
    lua_host *h = lh_host(L);
    ltimer *t = timer_new(L, h, ms, false);
    t->owner = NULL;   /* the sleep ends on time even if the socket closed */
    t->sleeper = cur;
    cur->sleeping = t;
    return lua_yieldk(L, 0, 0, sleep_k);
}

static int l_cancel(lua_State *L)
{
    timer_handle *th = luaL_checkudata(L, 1, TIMER_MT);
    bool was = th->t != NULL;
    if (th->t) timer_end(th->t);
    lua_pushboolean(L, was);
    return 1;
}

static int l_active(lua_State *L)
{
    timer_handle *th = luaL_checkudata(L, 1, TIMER_MT);
    lua_pushboolean(L, th->t != NULL);
    return 1;
}

void lt_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"cancel", l_cancel},
        {"is_active", l_active},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, TIMER_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"after", l_after},
        {"every", l_every},
        {"sleep", l_sleep},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}

void lt_socket_closed(lua_host *h, lsocket *ls)
{
    for (ltimer *t = h->timers, *next; t; t = next) {
        next = t->next;
        if (t->owner == ls) timer_end(t);
    }
}

void lt_end_load_timers(lua_host *h, bool loaded)
{
    /* Loaded: h->version is the new one, older load-time timers end.
     * Failed: the timers the broken version started end. */
    for (ltimer *t = h->timers, *next; t; t = next) {
        next = t->next;
        if (t->at_load && (loaded ? t->version != h->version : t->version == h->version + 1)) timer_end(t);
    }
}

void lt_free_all(lua_host *h)
{
    while (h->timers) timer_end(h->timers);
}
