/* lua_state.c — the worker's Lua state: its limits (memory, time), the
 * luaws.core module, loading and reloading the script, and the host
 * callbacks the core is given (lua_host_ops). The Lua half of the module
 * is lua/luaws.lua. */
#include "lua_internal.h"
#include "xalloc.h"
#include "log.h"
#include "version.h"
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/stat.h>

/* Keeps h->mem, the heap in use (--script-memory and /metrics's
 * luaws_lua_heap_bytes), exact. */
static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lua_host *h = ud;
    if (!ptr) osize = 0;    /* osize is then a type tag, not a size */
    if (nsize == 0) {
        free(ptr);
        h->mem -= osize;
        *h->heap_gauge = h->mem;
        return NULL;
    }
    if (h->depth && h->mem_limit && nsize > osize && h->mem + (nsize - osize) > h->mem_limit) return NULL;
    void *p = realloc(ptr, nsize);
    if (p) h->mem += nsize - osize;
    *h->heap_gauge = h->mem;
    return p;
}

static int l_panic(lua_State *L)
{
    log_error("Lua panic (unprotected error): %s", lua_tostring(L, -1));
    abort();
}

/* ---- luaws.core ---- */

static int l_log(lua_State *L)
{
    int level = log_level_parse(luaL_checkstring(L, 1));
    if (level < 0) return luaL_argerror(L, 1, "debug, info, warn or error");
    int n = lua_gettop(L);   /* before luaL_buffinit, which may push */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 2; i <= n; i++) {
        if (i > 2) luaL_addchar(&b, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    log_msg((enum log_level)level, "%s", lua_tostring(L, -1));
    return 0;
}

/* core.scandir(path) -> sorted list of entry names (directory mode). The
 * request lives in a userdata whose __gc cleans it up, so a Lua allocation
 * that raises half-way (--script-memory) cannot leak it. */
#define SCANDIR_MT "luaws.scandir"

typedef struct scan_box {
    uv_fs_t req;
    bool live;
} scan_box;

static int scan_box_gc(lua_State *L)
{
    scan_box *b = lua_touserdata(L, 1);
    if (b->live) uv_fs_req_cleanup(&b->req);
    b->live = false;
    return 0;
}

static int l_scandir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    scan_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->live = false;
    luaL_setmetatable(L, SCANDIR_MT);
    int n = uv_fs_scandir(NULL, &b->req, path, 0, NULL);
    b->live = true;
    if (n < 0) {
        lua_pushcfunction(L, scan_box_gc);
        lua_pushvalue(L, -2);
        lua_call(L, 1, 0);
        return luaL_error(L, "cannot read directory %s: %s", path, uv_strerror(n));
    }
    lua_createtable(L, n, 0);
    uv_dirent_t ent;
    int i = 0;
    while (uv_fs_scandir_next(&b->req, &ent) != UV_EOF) {
        lua_pushstring(L, ent.name);
        lua_rawseti(L, -2, ++i);
    }
    uv_fs_req_cleanup(&b->req);
    b->live = false;
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

/* core.loading() -> the version being loaded (1, 2, ...), or nothing. */
static int l_loading(lua_State *L)
{
    lua_host *h = lh_host(L);
    if (!h->loading) return 0;
    lua_pushinteger(L, (lua_Integer)h->version + 1);
    return 1;
}

/* core.file_type(path) -> "file", "directory", "other" (a FIFO, a device),
 * or nil: asked without opening, which would block on a FIFO. */
static int l_file_type(lua_State *L)
{
    struct stat st;
    if (stat(luaL_checkstring(L, 1), &st) != 0) return 0;
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : "other");
    return 1;
}

static int l_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* Lua seeds math.random from the time and the state's address. Workers
 * are forked and start in the same second with the same heap, so every
 * worker would draw the same numbers: seed each state from the kernel. */
static void seed_random(lua_State *L)
{
    uint64_t seed[2];
    if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) return;   /* keep Lua's own seed */
    lua_getglobal(L, "math");
    lua_getfield(L, -1, "randomseed");
    lua_pushinteger(L, (lua_Integer)seed[0]);
    lua_pushinteger(L, (lua_Integer)seed[1]);
    lua_call(L, 2, 0);
    lua_pop(L, 1);
}

static int luaopen_core(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"log", l_log},
        {"loading", l_loading},
        {"file_type", l_file_type},
        {"pid", l_pid},
        {"scandir", l_scandir},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, SCANDIR_MT)) {
        lua_pushcfunction(L, scan_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    luaL_setfuncs(L, lh_core_socket_fns, 0);
    luaL_setfuncs(L, lh_request_fns, 0);
    lua_pushliteral(L, LUAWS_VERSION);
    lua_setfield(L, -2, "version");
    lt_register(L);
    lp_register(L);
    luaL_newmetatable(L, REQUEST_MT);   /* request tables' (lua/luaws.lua: query) */
    lua_setfield(L, -2, "request_mt");
    ls_register(L);
    lh_store_register(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "luaws.socket_methods");
    lua_setfield(L, -2, "socket_methods");
    return 1;
}

/* ---- the state and the script ---- */

static void lh_destroy(void *host);

int lh_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = luaL_tolstring(L, 1, NULL);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Lua modules live in lua/ beside the binary (a source tree) or in
 * ../share/luaws/lua (an installed tree). A script's neighbours are found
 * by luaws.loader, which tracks them for hot reload. */
/* The directory of the running binary. */
static void exe_dir(char *exe, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", exe, size - 1);
    if (n < 0) n = 0;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
}

static void set_package_path(lua_State *L)
{
    char exe[PATH_MAX];
    exe_dir(exe, sizeof exe);
    const char *env = getenv("LUAWS_PATH");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s%s%s/lua/?.lua;%s/../share/luaws/lua/?.lua;%s", env ? env : "", env ? "/?.lua;" : "",
                    exe, exe, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

/* The Lua half of luaws is missing: one line saying where it was looked for. */
static char *missing_lua_half(void)
{
    char exe[PATH_MAX];
    exe_dir(exe, sizeof exe);
    const char *env = getenv("LUAWS_PATH");
    char msg[PATH_MAX * 3 + 256];
    snprintf(msg, sizeof msg,
             "the Lua half of luaws (luaws/loader.lua) is not in %s%s%s/lua nor in %s/../share/luaws/lua: "
             "keep the binary beside its lua/ directory, run make install, or set LUAWS_PATH to the directory "
             "holding luaws.lua",
             env ? env : "", env ? " (LUAWS_PATH), " : "", exe, exe);
    return xstrdup(msg);
}

static char *dup_error(const char *msg)
{
    char *s = strdup(msg ? msg : "unknown error");
    if (!s) abort();
    return s;
}

/* Calls luaws.loader.FN(script) with n results; false (message on the
 * stack) if it raised an error. */
static bool call_loader(lua_host *h, const char *fn, int nresults)
{
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->traceback_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->loader_ref);
    lua_getfield(L, -1, fn);
    lua_replace(L, -2);
    lua_pushstring(L, h->script);
    lh_enter_for(h, "loading the script");
    int status = lua_pcall(L, 1, nresults, -3);
    lh_leave(h);
    if (status != LUA_OK) {
        lua_remove(L, -2);
        return false;
    }
    lua_remove(L, -nresults - 1);
    return true;
}

/* Loads the script; on success stores its handler, else leaves the old one
 * and returns a malloc'd message. */
static char *load_script(lua_host *h)
{
    lua_State *L = h->L;
    /* Timers the new version starts while loading are marked as its own;
     * those of older versions end once it loaded (else every reload would
     * add another copy of a load-time luaws.every). */
    h->loading = true;
    bool called = call_loader(h, "load", 2);  /* handler | nil, message; or an error */
    h->loading = false;
    bool ok = called && !lua_isnil(L, -2);
    if (ok) h->version++;
    lt_end_load_timers(h, ok);
    if (!ok) {
        char *err = dup_error(lua_tostring(L, -1));
        lua_pop(L, called ? 2 : 1);
        return err;
    }
    lua_pop(L, 1);
    h->listener_only = lua_istable(L, -1);
    if (h->handler_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->handler_ref);
    h->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return NULL;
}

/* luaws.loader.setup(h->script, options): where the script's modules are. */
void lh_setup_loader(lua_host *h)
{
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->loader_ref);
    lua_getfield(L, -1, "setup");
    lua_pushstring(L, h->script);
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, h->srv->cfg && h->srv->cfg->console);
    lua_setfield(L, -2, "console");
    lua_call(L, 2, 0);
    lua_pop(L, 1);
}

char *lh_use_script(lua_host *h, const char *path)
{
    free(h->script);
    h->script = xstrdup(path);
    lh_setup_loader(h);
    return load_script(h);
}

void lh_use_handler(lua_host *h)
{
    lua_State *L = h->L;
    h->listener_only = lua_istable(L, -1);
    if (h->handler_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, h->handler_ref);
    h->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    h->version++;
}

static void *lh_create(server *srv, const char *script, char **err)
{
    lua_host *h = calloc(1, sizeof *h);
    if (!h) abort();
    h->srv = srv;
    h->handler_ref = LUA_NOREF;
    h->remote_handler_ref = LUA_NOREF;
    h->published_ref = LUA_NOREF;
    h->script = script ? strdup(script) : NULL;
    h->mem_limit = srv->cfg ? srv->cfg->script_memory : 0;
    /* --check's probe server keeps no metrics */
    h->heap_gauge = srv->metrics ? &srv->metrics->lua_heap_bytes : &h->heap_unmetered;
    h->run_socket_event = lh_run_socket_event;
    h->on_socket_idle = lh_socket_idle;
    lua_State *L = h->L = lua_newstate(l_alloc, h);
    if (!L || (script && !h->script)) abort();
    *(task **)lua_getextraspace(L) = NULL;   /* the main thread runs no task */
    /* Inherited by every coroutine created from here on. */
    lua_sethook(L, lh_hook, LUA_MASKCOUNT, LH_HOOK_EVERY);
    lua_atpanic(L, l_panic);
    luaL_openlibs(L);
    seed_random(L);
    lh_guard_coroutines(L);
    lh_socket_metatables(L);
    luaL_requiref(L, "luaws.core", luaopen_core, 0);
    lua_pop(L, 1);
    set_package_path(L);

    lua_pushboolean(L, 0);
    h->valid_text_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, lh_traceback);
    h->traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->traceback_ref);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "luaws.loader");
    if (lua_pcall(L, 1, 1, -3) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        *err = msg && strstr(msg, "module 'luaws.loader' not found") ? missing_lua_half() : dup_error(msg);
        lh_destroy(h);
        return NULL;
    }
    h->loader_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    /* luaws test: nothing to load yet (lh_use_script). */
    if (!script) return h;
    lh_setup_loader(h);
    if ((*err = load_script(h))) {
        lh_destroy(h);
        return NULL;
    }
    return h;
}

static char **lh_watched_files(void *host, size_t *n)
{
    lua_host *h = host;
    lua_State *L = h->L;
    *n = 0;
    if (!call_loader(h, "files", 1)) {
        lua_pop(L, 1);
        return NULL;
    }
    size_t len = lua_rawlen(L, -1);
    char **files = calloc(len + 1, sizeof *files);
    if (!files) abort();
    for (size_t i = 0; i < len; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        files[i] = dup_error(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    *n = len;
    return files;
}

static int lh_reload(void *host, const char *why, bool quiet_repeat)
{
    lua_host *h = host;
    uint64_t start = uv_hrtime();
    char *err = load_script(h);
    if (err) {
        /* Retries after a failure (a directory appeared, say) repeat the
         * same error: report it once. */
        bool same = quiet_repeat && h->last_error && strcmp(h->last_error, err) == 0;
        log_msg(same || h->test ? LOG_DEBUG : LOG_ERROR, "reload (%s) failed, the old code keeps serving: %s", why, err);
        free(h->last_error);
        h->last_error = err;
        h->srv->metrics->reload_failures++;
        return -1;
    }
    free(h->last_error);
    h->last_error = NULL;
    h->srv->metrics->reloads++;
    lua_State *L = h->L;
    size_t moved = 0, kept = 0, outbound = 0;
    /* First give every open socket its new listener, then run on_reload,
     * so that handlers of on_reload see every socket already moved. */
    for (conn *c = h->srv->conns; c; c = c->next) {
        lsocket *ls = lh_socket_of(c);
        /* Outbound sockets (luaws.connect) keep the listener they were given
         * (a reconnecting client's follows its new version: luaws.reconnect). */
        if (ls && ws_is_open(c) && c->is_client && !c->instrument) outbound++;
        /* So do luaws test's fake remotes (not the script's). */
        if (!ls || !ws_is_open(c) || c->is_client || ls->close_queued || (c->lst && c->lst->host_tag)) continue;
        if (!lh_new_listener(h, ls)) {
            kept++;
            continue;
        }
        lh_push_socket(h, ls);
        lua_insert(L, -2);
        lua_setiuservalue(L, -2, 2);
        lua_pop(L, 1);
        ls->reloaded = true;
        moved++;
    }
    for (conn *c = h->srv->conns; c; c = c->next) {
        lsocket *ls = lh_socket_of(c);
        if (!ls || !ls->reloaded) continue;
        ls->reloaded = false;
        /* Queued, not run: an on_reload may close sockets further on the list. */
        lh_socket_defer(ls, lh_event_new(EV_RELOAD, NULL, 0));
    }
    lh_settle(h);
    double ms = (double)(uv_hrtime() - start) / 1e6;
    size_t nfiles = 0;
    char **files = lh_watched_files(h, &nfiles);
    char list[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < nfiles; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", files[i]);
        if (w > 0 && (size_t)w < sizeof list - used) used += (size_t)w;
        free(files[i]);
    }
    free(files);
    log_info("reloaded (%s) %s in %.1f ms: %zu connections moved, %zu kept their old listener, %zu outbound open",
             why, list, ms, moved, kept, outbound);
    return 0;
}

static void lh_stop(void *host)
{
    lh_rstore_stop();
    lh_tasks_abandon(host);
    lt_free_all(host);
}

static void lh_destroy(void *host)
{
    lua_host *h = host;
    if (!h) return;
    lt_free_all(h);
    lh_rstore_stop();
    lh_tasks_free(h);
    lua_close(h->L);
    lh_store_close();
    free(h->script);
    free(h->last_error);
    free(h);
}

/* host_ops.collect: a full collection; Lua is not running (a timer
 * callback of the core), though tasks may be suspended. */
static void lh_collect(void *ud)
{
    lua_host *h = ud;
    if (h->depth == 0) lua_gc(h->L, LUA_GCCOLLECT, 0);
}

const host_ops lua_host_ops = {
    .create = lh_create,
    .destroy = lh_destroy,
    .stop = lh_stop,
    .request = lh_host_request,
    .response = lh_host_response,
    .open = lh_host_open,
    .message = lh_host_message,
    .ping = lh_host_ping,
    .pong = lh_host_pong,
    .error = lh_host_error,
    .close = lh_host_close,
    .writable = lh_host_writable,
    .gone = lh_host_gone,
    .topic_message = lh_host_topic_message,
    .topic_deliver = lh_host_topic_deliver,
    .topic_count = lh_host_topic_count,
    .topic_worker_gone = lh_host_topic_worker_gone,
    .topic_resync = lh_host_topic_resync,
    .reload = lh_reload,
    .watched_files = lh_watched_files,
    .collect = lh_collect,
};

bool lua_compile_check(const char *path, char **err)
{
    struct stat st;
    /* A directory of routes, or a FIFO (read once, by the worker): the
     * worker's load is the check. */
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return true;
    lua_State *L = luaL_newstate();
    if (!L) {
        *err = xstrdup("out of memory");
        return false;
    }
    bool ok = luaL_loadfilex(L, path, "t") == LUA_OK;
    if (!ok) *err = xstrdup(lua_tostring(L, -1));
    lua_close(L);
    return ok;
}
