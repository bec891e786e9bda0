/* lua_task.c — tasks (the coroutines events run in), the event queue, and
 * the limits (--script-timeout) every entry into Lua runs under.
 *
 * Every Lua function luaws calls on its own (a listener event, a timer or
 * send callback) runs in a task, so that it may suspend (a synchronous send
 * waiting for the write queue, luaws.sleep) without blocking the worker.
 * Lua is entered from here only when no Lua code is running (h->depth is
 * 0): what the core raises meanwhile is queued and run by lh_settle when
 * the outermost entry returns. See the ownership rules in lua_internal.h. */
#include "lua_internal.h"
#include "xalloc.h"
#include "log.h"
#include <assert.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* ---- limits: every entry into Lua runs under them ---- */

void lh_hook(lua_State *L, lua_Debug *ar)
{
    lua_host *h = lh_host(L);
    if (h->deadline && uv_hrtime() > h->deadline) {
        /* From now on every instruction fails, so a pcall in the runaway
         * code cannot swallow the error: it escapes at the next step. */
        lua_sethook(L, lh_hook, LUA_MASKCOUNT, 1);
        h->stopped = true;
        luaL_error(L, "script timeout: ran for over %d ms (--script-timeout)",
                   (int)h->srv->cfg->script_timeout_ms);
    }
}

/* Around every entry into Lua code: arms the limits for the outermost one,
 * and tells the main process what the worker is busy with. */
void lh_enter_for(lua_host *h, const char *what)
{
    if (h->depth++ == 0 && h->srv->cfg && h->srv->cfg->script_timeout_ms) {
        uint64_t now = uv_hrtime();
        h->deadline = now + (uint64_t)h->srv->cfg->script_timeout_ms * 1000000u;
        lua_sethook(h->L, lh_hook, LUA_MASKCOUNT, LH_HOOK_EVERY);   /* after a timeout, back to normal */
        server_busy(h->srv, what, now / 1000000u);
    }
}

void lh_enter(lua_host *h) { lh_enter_for(h, "Lua code"); }

void lh_leave(lua_host *h)
{
    if (--h->depth == 0) {
        h->deadline = 0;
        server_idle(h->srv);
    }
}

void lh_collect_stopped(lua_host *h, bool out_of_memory)
{
    /* What a runaway allocated is garbage now that its frames are gone:
     * collect it before anything else runs under --script-memory. */
    if (out_of_memory || h->stopped) lua_gc(h->L, LUA_GCCOLLECT, 0);
    h->stopped = false;
}


int lh_fail(lua_State *L, const char *message, const char *code)
{
    lua_pushnil(L);
    lua_pushstring(L, message);
    lua_pushstring(L, code);
    return 3;
}

bool lh_text_valid(lua_host *h, const uint8_t *p, size_t len)
{
    return (h->valid_text && (const char *)p == h->valid_text) || utf8_valid(p, len);
}

/* ---- error values ---- */

/* Pushes the pieces of a short readable form of the value at idx (one
 * level of a table); returns how many (lua_concat joins them). */
static int describe(lua_State *L, int idx, int depth)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING && depth > 0) {
        lua_pushfstring(L, "\"%s\"", lua_tostring(L, idx));
        return 1;
    }
    if (lua_type(L, idx) != LUA_TTABLE || luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
        if (lua_type(L, idx) == LUA_TTABLE) lua_pop(L, 1);   /* the __tostring found */
        luaL_tolstring(L, idx, NULL);
        return 1;
    }
    if (depth > 0) {
        lua_pushliteral(L, "{...}");
        return 1;
    }
    int pieces = 1, n = 0;
    lua_pushliteral(L, "{");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        /* key and value sit on top of the pieces: keep them there */
        int k = lua_gettop(L) - 1;
        if (n++ == 8) {
            lua_pop(L, 2);
            lua_pushliteral(L, ", ...");
            pieces++;
            break;
        }
        int before = lua_gettop(L);
        if (n > 1) lua_pushliteral(L, ", ");
        if (lua_type(L, k) == LUA_TSTRING) {
            lua_pushvalue(L, k);
        } else {
            lua_pushliteral(L, "[");
            describe(L, k, 1);
            lua_pushliteral(L, "]");
            lua_concat(L, 3);
        }
        lua_pushliteral(L, " = ");
        describe(L, k + 1, 1);
        lua_concat(L, lua_gettop(L) - before);
        /* move the piece below key and value */
        lua_insert(L, k);
        pieces++;
        lua_pop(L, 1);   /* the value; the key stays for lua_next */
    }
    lua_pushliteral(L, "}");
    return pieces + 1;
}

/* A lua_CFunction: the readable text of an error value (its __tostring,
 * or a short serialization of a table: "{code = 42}"). */
static int describe_error(lua_State *L)
{
    lua_settop(L, 1);
    luaL_checkstack(L, 64, NULL);
    lua_concat(L, describe(L, 1, 0));
    return 1;
}

void lh_push_error_text(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING) {
        lua_pushvalue(L, idx);
        return;
    }
    lua_pushcfunction(L, describe_error);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pop(L, 1);
        lua_pushfstring(L, "(error object: a %s)", luaL_typename(L, idx));
    }
}

/* ---- tasks ---- */

static task **task_slot(lua_State *co) { return (task **)lua_getextraspace(co); }

/* Only at depth 0: lua_newthread allocates on the main thread. */
static task *task_get(lua_host *h)
{
    assert(h->depth == 0);
    task *t = h->free_tasks;
    if (t) {
        h->free_tasks = t->next;
        h->nfree--;
    } else {
        t = xmalloc(sizeof *t);
        memset(t, 0, sizeof *t);
        t->h = h;
        t->co = lua_newthread(h->L);
        t->ref = luaL_ref(h->L, LUA_REGISTRYINDEX);
        *task_slot(t->co) = t;
    }
    t->next = NULL;
    t->owner = t->waiting_on = NULL;
    t->sleeping = NULL;
    t->awaiting = NULL;
    t->woke_closed = false;
    t->blame = NULL;
    t->blame_ref = LUA_NOREF;
    t->where[0] = '\0';
    t->all_prev = NULL;
    t->all_next = h->tasks;
    if (h->tasks) h->tasks->all_prev = t;
    h->tasks = t;
    return t;
}

static void task_destroy(task *t)
{
    luaL_unref(t->h->L, LUA_REGISTRYINDEX, t->ref);
    free(t);
}

/* A task that finished: a clean coroutine is kept for the next event. */
static void task_put(task *t, bool reusable)
{
    lua_host *h = t->h;
    assert(!t->owner && !t->waiting_on && !t->sleeping && !t->awaiting);
    if (t->all_prev) t->all_prev->all_next = t->all_next;
    else h->tasks = t->all_next;
    if (t->all_next) t->all_next->all_prev = t->all_prev;
    if (reusable && h->nfree < TASK_POOL_MAX) {
        lua_settop(t->co, 0);
        t->next = h->free_tasks;
        h->free_tasks = t;
        h->nfree++;
        return;
    }
    task_destroy(t);
}

task *lh_current_task(lua_State *L)
{
    task *t = *task_slot(L);
    return t && t->co == L ? t : NULL;
}

bool lh_can_run(lua_host *h, const lsocket *ls)
{
    return h->depth == 0 && (!ls || (!ls->running && !ls->queue));
}

static void on_task_error(task *t, lua_State *co, int status);

/* The task's event is over: its socket may run the next one. */
static void task_finished(task *t)
{
    lsocket *ls = t->owner;
    t->owner = NULL;
    if (t->blame_ref != LUA_NOREF) luaL_unref(t->h->L, LUA_REGISTRYINDEX, t->blame_ref);
    t->blame_ref = LUA_NOREF;
    t->blame = NULL;
    if (ls && ls->running == t) {
        ls->running = NULL;
        t->h->on_socket_idle(ls);
    }
}

/* Resumes t at depth 0; on return t is suspended again or finished. */
static void resume(task *t, int nargs)
{
    lua_host *h = t->h;
    lua_State *co = t->co;
    int nres;
    assert(h->depth == 0);
    lh_enter_for(h, t->event);
    int status = lua_resume(co, h->L, nargs, &nres);
    lh_leave(h);
    if (status == LUA_YIELD) {
        if (t->waiting_on || t->sleeping || t->awaiting) {
            lsocket *ls = t->owner;
            if (ls && !ls->running) {
                /* The socket reads nothing more until this event is done. */
                ls->running = t;
                if (ls->c && !ls->paused) {
                    ls->paused = true;
                    conn_pause(ls->c);
                }
            }
            assert(!ls || ls->running == t);
            return;
        }
        lua_pushliteral(co, "attempt to yield from a listener event");
        status = LUA_ERRRUN;
    }
    if (status != LUA_OK) on_task_error(t, co, status);
    else lua_settop(co, 0);
    task_finished(t);
    task_put(t, status == LUA_OK);
}

void lh_resume(task *t)
{
    lua_host *h = t->h;   /* t may be freed by the time resume returns */
    resume(t, 0);
    lh_settle(h);
}

void lh_run(lua_host *h, lsocket *ls, const char *event, int nargs)
{
    lh_run_blamed(h, ls, NULL, event, NULL, nargs);
}

void lh_run_blamed(lua_host *h, lsocket *ls, lsocket *blame, const char *event, const char *where, int nargs)
{
    assert(h->depth == 0 && (!ls || !ls->running));
    task *t = task_get(h);
    t->owner = ls;
    t->event = event;
    if (blame) {
        /* Held while the task lives: its error may come after a close. */
        lh_push_socket(h, blame);
        t->blame_ref = luaL_ref(h->L, LUA_REGISTRYINDEX);
        t->blame = blame;
    }
    if (where) snprintf(t->where, sizeof t->where, "%s", where);
    lua_xmove(h->L, t->co, nargs + 1);
    resume(t, nargs);
}

/* An error ended t: log it with a traceback, tell on_error (unless the
 * failing event was on_error or on_close), and close the socket with 1011. */
static void on_task_error(task *t, lua_State *co, int status)
{
    lua_host *h = t->h;
    lua_State *L = h->L;
    /* A timer callback is no event of its socket, but its errors are. */
    lsocket *ls = t->owner ? t->owner : t->blame;
    conn *c = ls ? ls->c : NULL;
    /* The error value as raised (on_error gets it), and its text. */
    if (status == LUA_ERRMEM) lua_pushliteral(L, "not enough memory (--script-memory)");
    else lua_xmove(co, L, 1);
    int value = lua_gettop(L);
    lh_push_error_text(L, value);
    luaL_traceback(L, co, lua_tostring(L, -1), 0);
    char who[48] = "";
    if (c) snprintf(who, sizeof who, "conn %llu: ", (unsigned long long)c->id);
    else if (ls) snprintf(who, sizeof who, "a closed socket: ");
    log_error("%serror in %s%s%s: %s", who, t->event, t->where[0] ? " started at " : "", t->where,
              lua_tostring(L, -1));
    h->srv->metrics->script_errors++;
    lua_pop(L, 1);
    /* Drop the dead coroutine's frames now, so that what they held (a
     * runaway allocation, say) can be collected before on_error runs. */
    lua_resetthread(co);
    lh_collect_stopped(h, status == LUA_ERRMEM);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    /* The error value itself (or the message, without the traceback) is
     * what on_error sees; it runs after this event (the socket's queue
     * keeps the order). */
    bool after_open = ls && c && strcmp(t->event, "on_error") != 0 && strcmp(t->event, "on_close") != 0;
    if (after_open) {
        lua_event *ev = lh_event_new(EV_ERROR, msg, len);
        if (lua_type(L, value) != LUA_TSTRING) {
            lua_pushvalue(L, value);
            ev->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        lh_queue(h, ls, ev);
    }
    lua_settop(L, value - 1);
    static const char internal[] = "internal error";
    if (c) ws_close(c, WS_CLOSE_INTERNAL, internal, sizeof internal - 1);
}

/* ---- the queue ---- */

lua_event *lh_event_new(enum lua_event_kind kind, const void *data, size_t len)
{
    lua_event *ev = xmalloc(sizeof *ev + len + 1);
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    ev->fn_ref = LUA_NOREF;
    ev->fn_index = 0;
    ev->len = len;
    if (len) memcpy(ev->data, data, len);
    ev->data[len] = '\0';
    return ev;
}

void lh_event_free(lua_host *h, lua_event *ev)
{
    if (ev->fn_ref != LUA_NOREF) luaL_unref(h->L, LUA_REGISTRYINDEX, ev->fn_ref);
    free(ev);
}

void lh_mark_ready(lua_host *h, lsocket *ls)
{
    if (ls->ready) return;
    ls->ready = true;
    ls->ready_next = NULL;
    if (h->ready_tail) h->ready_tail->ready_next = ls;
    else h->ready = ls;
    h->ready_tail = ls;
}

void lh_queue(lua_host *h, lsocket *ls, lua_event *ev)
{
    ev->next = NULL;
    if (!ls) {
        if (h->loose_tail) h->loose_tail->next = ev;
        else h->loose = ev;
        h->loose_tail = ev;
        return;
    }
    lua_event **end = &ls->queue;
    while (*end) end = &(*end)->next;
    *end = ev;
    if (!ls->running) lh_mark_ready(h, ls);
}

static void run_loose(lua_host *h, lua_event *ev)
{
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ev->fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ev->fn_ref);
    if (ev->fn_index) {
        lua_rawgeti(L, -1, ev->fn_index);
        lua_remove(L, -2);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    if (ev->has_arg) lua_pushlstring(h->L, (const char *)ev->data, ev->len);
    lh_run(h, NULL, ev->name, ev->has_arg ? 1 : 0);
}

/* Runs ls's queued events until one suspends or none is left. */
static void pump(lua_host *h, lsocket *ls)
{
    while (ls->queue && !ls->running && h->depth == 0) {
        lua_event *ev = ls->queue;
        ls->queue = ev->next;
        h->run_socket_event(ls, ev);
        free(ev);
    }
    if (!ls->running && !ls->queue) h->on_socket_idle(ls);
}

void lh_settle(lua_host *h)
{
    if (h->depth || h->settling) return;
    h->settling = true;
    for (;;) {
        if (h->loose) {
            lua_event *ev = h->loose;
            h->loose = ev->next;
            if (!h->loose) h->loose_tail = NULL;
            run_loose(h, ev);
            free(ev);
            continue;
        }
        lsocket *ls = h->ready;
        if (!ls) break;
        h->ready = ls->ready_next;
        if (!h->ready) h->ready_tail = NULL;
        ls->ready = false;
        pump(h, ls);
    }
    h->settling = false;
}

/* The server stops: an event still suspended (asleep, say) is abandoned,
 * it will never resume; what its socket queued behind it (on_close) runs
 * now. Called before the timers end. */
void lh_tasks_abandon(lua_host *h)
{
    for (task *t = h->tasks; t; t = t->all_next) {
        lsocket *ls = t->owner;
        if (!ls || ls->running != t) continue;
        ls->running = NULL;
        t->owner = NULL;
        h->on_socket_idle(ls);
    }
    lh_settle(h);
}

/* Shutdown: tasks still suspended (sleeping, waiting) are freed with the state. */
void lh_tasks_free(lua_host *h)
{
    while (h->tasks) {
        task *t = h->tasks;
        h->tasks = t->all_next;
        /* Events its socket queued behind it will not run either. */
        for (lsocket *ls = t->owner; ls && ls->queue;) {
            lua_event *ev = ls->queue;
            ls->queue = ev->next;
            free(ev);
        }
        free(t);   /* its coroutine goes with lua_close */
    }
    while (h->free_tasks) {
        task *t = h->free_tasks;
        h->free_tasks = t->next;
        free(t);
    }
    while (h->loose) {
        lua_event *ev = h->loose;
        h->loose = ev->next;
        free(ev);
    }
}

/* ---- event coroutines belong to luaws ---- */

static bool is_event_coroutine(lua_State *co)
{
    task *t = *task_slot(co);
    return t && t->co == co;
}

static int guarded(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    if (co && is_event_coroutine(co))
        return luaL_error(L, "coroutine.%s: this coroutine runs a luaws event; only luaws may resume or close it",
                          lua_tostring(L, lua_upvalueindex(2)));
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

void lh_guard_coroutines(lua_State *L)
{
    static const char *const names[] = {"resume", "close"};
    lua_getglobal(L, "coroutine");
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        lua_getfield(L, -1, names[i]);
        lua_pushstring(L, names[i]);
        lua_pushcclosure(L, guarded, 2);
        lua_setfield(L, -2, names[i]);
    }
    lua_pop(L, 1);
}
