/* lua_internal.h — what the Lua-facing files (lua_api.c, lua_timer.c,
 * lua_topic.c) share: the host, tasks (coroutines running events) and
 * the socket object. Not for the C core: it talks to lua_api.h. */
#ifndef LUAWS_LUA_INTERNAL_H
#define LUAWS_LUA_INTERNAL_H

#include "lua_api.h"
#include <lua.h>
#include <lauxlib.h>

#define SOCKET_MT "luaws.socket"
#define BUFFER_MT "luaws.buffer"
#define TIMER_MT "luaws.timer"
#define TASK_POOL_MAX 64

typedef struct ltimer ltimer;

/* A listener event running in its own coroutine. While it is suspended in
 * a synchronous send, it sits in the waiters list of the connection it
 * sends to; while in luaws.sleep, a timer holds it. Meanwhile its owner
 * (the connection whose event it is) reads no input. */
struct task {
    lua_State *co;
    int ref;                 /* registry ref keeping co alive */
    lua_host *h;
    conn *owner;
    conn *waiting_on;
    ltimer *sleeping;        /* luaws.sleep in progress */
    task *next;              /* in waiting_on->waiters, or the free list */
    const char *event;
    bool woke_closed;        /* the socket it waited on closed */
};

struct lua_host {
    lua_State *L;
    server *srv;
    int handler_ref;
    bool listener_only;      /* the script returned a listener table */
    int traceback_ref;
    int loader_ref;          /* the luaws.loader module */
    char *script;
    char *last_error;        /* of the last failed reload */
    task *free_tasks;
    int nfree;
    ltimer *timers;          /* every live timer, for shutdown */
    bool loading;            /* the script is being loaded */
    unsigned version;        /* successful loads so far */
    /* Runaway scripts: memory in use and its cap (enforced only while Lua
     * code runs, where an allocation failure is a catchable error), and the
     * time by which the running event must be done. */
    size_t mem, mem_limit;
    int depth;               /* nesting of resume/pcall into Lua */
    uint64_t deadline;       /* uv_hrtime() ns; 0: none */
    /* The last long text message handed to Lua, kept alive in the registry:
     * sending or publishing that very string needs no second UTF-8 pass. */
    int valid_text_ref;
    const char *valid_text;
};

typedef struct lsocket {
    conn *c;                 /* NULL once the connection is gone */
} lsocket;

/* The host of a state: it is the allocator's user data. */
static inline lua_host *lh_host(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

/* lua_api.c */
task *lh_current_task(lua_State *L);
/* UTF-8 check of outgoing text, skipped for the validated message itself. */
bool lh_text_valid(lua_host *h, const uint8_t *p, size_t len);
/* Runs fn(args...) from the top of the main stack as an event of c (may be NULL). */
void lh_run_event(lua_host *h, conn *c, const char *event, int nargs);
/* Resumes a suspended task with no values. */
void lh_resume(task *t);

/* lua_timer.c */
void lt_register(lua_State *L);       /* after, every, sleep into the table on top */
void lt_conn_gone(lua_host *h, conn *c);  /* ends the timers a socket owns */
void lt_free_all(lua_host *h);
/* A new version loaded: timers the old versions started at load time end. */
void lt_end_load_timers(lua_host *h, bool loaded);

/* lua_stdin.c */
void ls_register(lua_State *L);       /* read_stdin, exit */

/* lua_topic.c */
void lp_register(lua_State *L);       /* publish, subscribers into the table on top */
extern const luaL_Reg lp_socket_methods[];
void lp_conn_gone(lua_host *h, conn *c);
/* A message for a topic came back from Redis: deliver it here. */
void lp_deliver(lua_host *h, const char *topic, size_t tlen, const uint8_t *payload, size_t len);

#endif
