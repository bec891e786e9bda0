/* lua_internal.h — what the files of the Lua binding share (lua_state.c,
 * lua_task.c, lua_socket.c, lua_request.c, lua_timer.c, lua_topic.c,
 * lua_stdin.c): the host, tasks (coroutines running events), the socket
 * object and the event queue. Nothing below the binding includes it.
 *
 * Ownership rules (README "Ownership"), which make use-after-free of a
 * connection impossible by construction:
 *  - Lua-side state of a connection lives in its socket object (lsocket, a
 *    userdata), never in the conn. A task, a timer or a queued event points
 *    at the lsocket, never at the conn. The conn is reached only through
 *    lsocket.c, which the transport clears (lh_conn_gone) before freeing it.
 *  - The lsocket is kept alive by a registry ref while its conn lives, an
 *    event of it runs or is suspended, or events wait for it.
 *  - Events of one socket run one at a time, in order: an event raised
 *    while another of the same socket is suspended waits in its queue.
 *  - Lua is never entered re-entrantly from the C core: an event raised
 *    while Lua code runs (a send that aborts a slow reader, a publish whose
 *    subscriber is cut, a connect that fails at once) is queued and runs
 *    when the outermost entry returns (lh_settle). */
#ifndef LUAWS_LUA_INTERNAL_H
#define LUAWS_LUA_INTERNAL_H

#include "lua_api.h"
#include <lua.h>
#include <lauxlib.h>

#define SOCKET_MT "luaws.socket"
#define BUFFER_MT "luaws.buffer"
#define TIMER_MT "luaws.timer"
#define REQUEST_MT "luaws.request"
#define TASK_POOL_MAX 64
/* "file:line" of where a timer was started: Lua already shortens a long
 * source name to LUA_IDSIZE ("..." in front), so this never cuts it. */
#define LH_WHERE_MAX (LUA_IDSIZE + 16)

typedef struct ltimer ltimer;
typedef struct lsocket lsocket;
typedef struct lua_event lua_event;

/* A Lua function running in its own coroutine: a listener event, a timer
 * callback or a send callback. While it is suspended in a synchronous
 * send, it sits in the waiters list of the socket it sends to; while in
 * luaws.sleep, a timer holds it. */
struct task {
    lua_State *co;
    int ref;                 /* registry ref keeping co alive */
    lua_host *h;
    lsocket *owner;          /* the socket whose event it is, or NULL */
    lsocket *waiting_on;     /* a synchronous send waits for this socket's queue */
    ltimer *sleeping;        /* luaws.sleep in progress */
    void *awaiting;          /* a luaws.store reply from Redis (lua_store_redis.c) */
    task *next;              /* in waiting_on->waiters, or the free list */
    task *all_prev, *all_next; /* in h->tasks: every task not in the pool */
    const char *event;
    bool woke_closed;        /* the socket it waited on closed */
    /* A timer callback of a socket: its errors go to that socket's on_error
     * (held by blame_ref while the task lives). */
    lsocket *blame;
    int blame_ref;
    char where[LH_WHERE_MAX]; /* a timer's: where it was started (file:line) */
};

enum lua_event_kind { EV_OPEN, EV_MESSAGE, EV_PING, EV_PONG, EV_ERROR, EV_CLOSE, EV_RELOAD, EV_CALLBACK };

/* An event that could not run at once: Lua was running, or another event
 * of the same socket is suspended. Owns a copy of its payload. */
struct lua_event {
    lua_event *next;
    enum lua_event_kind kind;
    uint8_t opcode;          /* EV_MESSAGE: text or binary */
    uint16_t code;           /* EV_CLOSE */
    int fn_ref;              /* EV_CALLBACK: the function (or a table holding it at fn_index), */
    int fn_index;            /* ... run with data as its argument if has_arg */
    bool has_arg;
    const char *name;        /* EV_CALLBACK: what the log calls it */
    size_t len;
    uint8_t data[];          /* payload, error message or close reason; NUL-terminated */
};

/* Which of a socket's own fields its fields table holds (lsocket.own):
 * made on first use (data, request) or set by the script (any of them).
 * Until then socket.id comes from lsocket.id, socket.protocol and
 * socket.request from the packed request, and socket.data does not exist. */
enum {
    LS_OWN_ID = 1,
    LS_OWN_DATA = 2,
    LS_OWN_REQUEST = 4,
    LS_OWN_PROTOCOL = 8,
    LS_QUERY_MADE = 16,      /* the handler's request had request.query made */
};

/* The Lua side of one connection (inbound or luaws.connect). Its user
 * values: 1 its fields table (socket.data, socket.name = ...; nil until
 * something is stored), 2 its listener. */
struct lsocket {
    conn *c;                 /* NULL once the connection is gone */
    lua_host *h;
    int ref;                 /* registry ref to this userdata; LUA_NOREF once released */
    task *running;           /* the suspended event of this socket */
    task *waiters;           /* tasks waiting for c's write queue to fall */
    lua_event *queue;        /* events waiting their turn (a few at most: appended by walking) */
    lsocket *ready_next;     /* in h->ready: has queued events to run */
    bool ready;
    bool close_queued;       /* on_close raised: no event after it */
    bool closed;             /* on_close has started: timers started now belong to nobody */
    bool reload_queued;      /* an on_reload waits in the queue */
    bool paused;             /* we paused c's input */
    bool reloaded;           /* moved by the reload in progress */
    uint8_t own;             /* LS_OWN_*, LS_QUERY_MADE */
    uint64_t id;             /* socket.id */
    size_t packed_len;       /* of packed; 0 for luaws.connect's (their request is a table) */
    uint8_t packed[];        /* the upgrade request and subprotocol (lua_reqpack.c) */
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
    task *tasks;             /* every task not in the pool (freed at shutdown) */
    ltimer *timers;          /* every live timer, for shutdown */
    bool loading;            /* the script is being loaded */
    unsigned version;        /* successful loads so far */
    /* Runaway scripts: memory in use and its cap (enforced only while Lua
     * code runs, where an allocation failure is a catchable error), and the
     * time by which the running event must be done. */
    size_t mem, mem_limit;
    uint64_t *heap_gauge;    /* where mem is published: /metrics's luaws_lua_heap_bytes */
    uint64_t heap_unmetered; /* ... or here, when the server keeps no metrics */
    int depth;               /* nesting of resume/pcall into Lua */
    uint64_t deadline;       /* uv_hrtime() ns; 0: none */
    bool stopped;            /* the running code was stopped by --script-timeout */
    /* Events raised while Lua ran: sockets with queued events, and
     * callbacks of no socket (send callbacks), run by lh_settle. */
    lsocket *ready, *ready_tail;
    lua_event *loose, *loose_tail;
    bool settling;
    /* The socket layer, for the task layer below it (lua_socket.c). */
    void (*run_socket_event)(lsocket *ls, lua_event *ev);
    void (*on_socket_idle)(lsocket *ls);
    /* The last long text message handed to Lua, kept alive in the registry:
     * sending or publishing that very string needs no second UTF-8 pass. */
    int valid_text_ref;
    const char *valid_text;
    /* luaws test (lua_test.c, the top of the binding: reached from below
     * only through these two hooks, NULL when not testing). */
    bool test;
    /* Connects c (outbound, not started) over a socket pair to the server
     * under test (LH_LINK_SERVER) or to a fake remote (LH_LINK_REMOTE). */
    void (*test_link)(lua_host *h, conn *c, int link);
    /* Records a publish (topic, and the message at index value of L). */
    void (*test_published)(lua_State *L, lua_host *h, const char *topic, size_t tlen, int value);
    int published_ref;       /* {topic = {message, ...}} */
    int remote_handler_ref;  /* answers the fake remotes' requests */
    uv_timer_t test_guard;   /* bounds a wait in real time */
};

/* The host of a state: it is the allocator's user data. */
static inline lua_host *lh_host(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

/* lua_state.c: the state, luaws.core, loading */
int lh_traceback(lua_State *L);
/* luaws test: loads path as the script (NULL, or a malloc'd message), or
 * uses the handler on top of the stack (popped). */
char *lh_use_script(lua_host *h, const char *path);
void lh_use_handler(lua_host *h);
void lh_setup_loader(lua_host *h);   /* where h->script's own modules are */

/* lua_task.c: limits, tasks and the event queue */
#define LH_HOOK_EVERY 10000               /* instructions between deadline checks */
void lh_hook(lua_State *L, lua_Debug *ar); /* --script-timeout */
void lh_enter(lua_host *h);           /* around every entry into Lua code */
void lh_enter_for(lua_host *h, const char *what);   /* ... saying what for (the main process logs it) */
void lh_leave(lua_host *h);
/* After an entry failed (its frames gone): a full collection if it ran out
 * of memory or was stopped for time. */
void lh_collect_stopped(lua_host *h, bool out_of_memory);
task *lh_current_task(lua_State *L);
/* Runs fn(args...) from the top of the main stack in a task owned by ls
 * (may be NULL). Call only when lh_can_run(h, ls). */
void lh_run(lua_host *h, lsocket *ls, const char *event, int nargs);
/* The same, errors blamed on blame (on_error, 1011) and logged with where. */
void lh_run_blamed(lua_host *h, lsocket *ls, lsocket *blame, const char *event, const char *where, int nargs);
/* Pushes the readable text of an error value: a string as it is, else its
 * __tostring or a short serialization ("{code = 42}"). */
void lh_push_error_text(lua_State *L, int idx);
/* Lua may be entered now for an event of ls: no Lua code is running and
 * ls (if any) has no event suspended or waiting. */
bool lh_can_run(lua_host *h, const lsocket *ls);
/* Queues an event for ls (or a loose callback when ls is NULL). */
void lh_queue(lua_host *h, lsocket *ls, lua_event *ev);
void lh_mark_ready(lua_host *h, lsocket *ls);   /* ls has queued events and nothing running */
lua_event *lh_event_new(enum lua_event_kind kind, const void *data, size_t len);
void lh_event_free(lua_host *h, lua_event *ev);   /* one that will not run */
/* Runs what was queued, unless Lua is running or this is already being
 * done further up the stack. Every entry from the core ends with it. */
void lh_settle(lua_host *h);
/* Resumes a suspended task with no values (from a libuv callback). */
void lh_resume(task *t);
void lh_tasks_abandon(lua_host *h);
void lh_tasks_free(lua_host *h);
void lh_guard_coroutines(lua_State *L); /* coroutine.resume/close refuse event coroutines */
/* The one way a function reports a failure to Lua, as luv does: nil, a
 * message, a code ("closed", "EPIPE" for a closed socket). Argument errors
 * raise instead. */
int lh_fail(lua_State *L, const char *message, const char *code);
/* UTF-8 check of outgoing text, skipped for the validated message itself. */
bool lh_text_valid(lua_host *h, const uint8_t *p, size_t len);

/* lua_socket.c: socket and buffer objects, events */
void lh_socket_metatables(lua_State *L);
extern const luaL_Reg lh_core_socket_fns[];
/* Makes c's socket from the listener on top of the stack (popped), keeping
 * the packed request (lh_request_pack) and the subprotocol chosen. */
lsocket *lh_socket_new(lua_host *h, conn *c, const uint8_t *packed, size_t len, const char *protocol);
/* The handler's request table (at idx) for ls's socket.request: kept only
 * if the handler changed it, else socket.request is built again when first
 * read (the same table while anything else holds it). A lua_CFunction's
 * helper: may run Lua and raise. */
void lh_socket_adopt_request(lua_State *L, lsocket *ls, int idx);
/* Pushes socket.request of ls, made if need be but not kept (the reload's
 * handler call): may run Lua and raise. */
void lh_socket_push_request(lua_State *L, lsocket *ls);
void lh_socket_attach(lsocket *ls, conn *c);
/* Pushes the fields table of the socket at idx, made if need be. */
void lh_socket_push_fields(lua_State *L, int idx);
static inline void lh_push_socket(lua_host *h, const lsocket *ls) { lua_rawgeti(h->L, LUA_REGISTRYINDEX, ls->ref); }
void lh_set_protocol(lua_host *h, lsocket *ls, const char *protocol);   /* luaws.connect's */
/* Queues an event of ls (dropped after on_close); lh_settle runs it. */
void lh_socket_defer(lsocket *ls, lua_event *ev);
void lh_run_socket_event(lsocket *ls, lua_event *ev);
void lh_socket_idle(lsocket *ls);     /* no event runs or waits: input may flow, the ref may go */
void lh_push_buffer(lua_State *L, const void *data, size_t len);
static inline lsocket *lh_socket_of(const conn *c) { return c->user; }

/* lua_reqpack.c: a request kept packed, and request tables built from it */
/* The packed form of req (malloc'd; *len its size, never 0). */
uint8_t *lh_request_pack(const conn *c, const http_request *req, bool upgrade, size_t *len);
/* Room the subprotocol takes at the end of a packed request, and appending
 * it there (protocol may be NULL: nothing); returns the new length. */
size_t lh_request_protocol_size(const char *protocol);
size_t lh_request_pack_protocol(uint8_t *packed, size_t len, const char *protocol);
/* Pushes the request table (with request.query made if query). Raises on
 * memory; runs Lua only if query. */
void lh_request_push(lua_State *L, const uint8_t *packed, size_t len, bool query);
void lh_request_push_protocol(lua_State *L, const uint8_t *packed, size_t len);  /* or nil */
/* Whether the table at idx is still what lh_request_push builds: the same
 * fields and values, and nothing added, removed or changed (*query: it has
 * request.query, equal to a fresh one). Runs Lua if it has request.query. */
bool lh_request_pristine(lua_State *L, int idx, const uint8_t *packed, size_t len, bool *query);

/* lua_request.c */
extern const luaL_Reg lh_request_fns[];   /* core.check_listener */
/* Asks the current handler for ls's listener, given its original request. */
bool lh_new_listener(lua_host *h, lsocket *ls);
/* A lua_CFunction: {status=, headers=, body=} from the http_request (a
 * response) given as a light userdata. */
int lh_push_response(lua_State *L);

/* lua_timer.c */
void lt_register(lua_State *L);       /* after, every, sleep into the table on top */
void lt_socket_closed(lua_host *h, lsocket *ls);  /* ends the timers a socket owns */
void lt_free_all(lua_host *h);
/* A new version loaded: timers the old versions started at load time end. */
void lt_end_load_timers(lua_host *h, bool loaded);

/* lua_test.c: luaws test (lua_host.test_link) */
enum { LH_LINK_NETWORK, LH_LINK_SERVER, LH_LINK_REMOTE };

/* lua_stdin.c */
void ls_register(lua_State *L);       /* read_stdin, exit */

/* lua_store.c: luaws.store (store.c over LMDB) */
void lh_store_register(lua_State *L); /* store, store_codec into the table on top */
void lh_store_close(void);            /* the host is destroyed: the process's store env closes */
void lh_store_reset(lua_State *L);    /* luaws test, between tests: every store emptied */
#define STORE_CODEC_KEY "luaws.store_codec"   /* registry: {encode, decode} of tables */
/* What both store backends share: a table at idx as JSON text (pushed; argn
 * names the argument in errors), JSON text as a new table (pushed), and a
 * ttl argument in seconds (none or nil: 0) as milliseconds, at least 1. */
void lh_store_push_json(lua_State *L, int idx, int argn);
void lh_store_push_table(lua_State *L, const char *json, size_t len);
uint64_t lh_store_check_ttl(lua_State *L, int idx);

/* lua_store_redis.c: luaws.store on Redis (--store redis://...) */
bool lh_rstore_enabled(const lua_host *h);   /* the config picks Redis */
int lh_rstore_new(lua_State *L, const char *name, size_t len);   /* pushes the store object */
void lh_rstore_stop(void);            /* the server stops: waiting tasks will never resume */
void lh_rstore_close(void);           /* the host is destroyed: the client closes */

/* lua_topic.c */
void lp_register(lua_State *L);       /* publish, subscribers into the table on top */
extern const luaL_Reg lp_socket_methods[];
void lp_conn_gone(lua_host *h, conn *c);

#endif
