/* lua_stdin.c — core.read_stdin(fn) and core.exit(code), for `luaws client`:
 * lines typed (or piped) reach Lua one by one; nil marks the end of input. */
#include "lua_internal.h"
#include "log.h"
#include "xalloc.h"
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>

typedef struct stdin_reader {
    union {
        uv_pipe_t pipe;
        uv_tty_t tty;
    } h;
    lua_host *host;
    int fn_ref;
    bytes line;              /* a line not finished yet */
    /* A file or device (</dev/null, <file), which epoll cannot watch:
     * read in libuv's thread pool instead. */
    bool is_file;
    uv_fs_t req;
    char fbuf[16 * 1024];
} stdin_reader;

static void call_fn(stdin_reader *r, const char *line, size_t len)
{
    lua_State *L = r->host->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn_ref);
    if (line) lua_pushlstring(L, line, len);
    else lua_pushnil(L);
    lh_run(r->host, NULL, "stdin callback", 1);
    lh_settle(r->host);
}

static void on_stdin_closed(uv_handle_t *h)
{
    stdin_reader *r = h->data;
    free(r->line.data);
    free(r);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    stdin_reader *r = h->data;
    buf->base = r->host->srv->readbuf;
    buf->len = sizeof r->host->srv->readbuf;
}

static void append(bytes *b, const char *p, size_t n) { bytes_append(b, p, n); }

/* The end of input: the last unfinished line, then nil. */
static void finish(stdin_reader *r)
{
    if (r->line.len) call_fn(r, (const char *)r->line.data, r->line.len);
    call_fn(r, NULL, 0);
    luaL_unref(r->host->L, LUA_REGISTRYINDEX, r->fn_ref);
}

static void lines(stdin_reader *r, const char *p, const char *end);

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    stdin_reader *r = st->data;
    if (nread < 0) {
        finish(r);
        uv_close((uv_handle_t *)st, on_stdin_closed);
        return;
    }
    lines(r, buf->base, buf->base + nread);
}

static void on_fs_read(uv_fs_t *req)
{
    stdin_reader *r = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    if (n <= 0) {
        finish(r);
        free(r->line.data);
        free(r);
        return;
    }
    lines(r, r->fbuf, r->fbuf + n);
    uv_buf_t b = uv_buf_init(r->fbuf, sizeof r->fbuf);
    if (uv_fs_read(r->host->srv->loop, &r->req, 0, &b, 1, -1, on_fs_read) < 0) {
        finish(r);
        free(r->line.data);
        free(r);
    }
}

static void lines(stdin_reader *r, const char *p, const char *end)
{
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            append(&r->line, p, (size_t)(end - p));
            break;
        }
        append(&r->line, p, (size_t)(nl - p));
        size_t n = r->line.len;
        if (n && r->line.data[n - 1] == '\r') n--;
        call_fn(r, (const char *)r->line.data, n);
        r->line.len = 0;
        p = nl + 1;
    }
}

static int l_read_stdin(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_host *h = lh_host(L);
    if (!h->srv->loop) return 0;
    stdin_reader *r = calloc(1, sizeof *r);
    if (!r) return luaL_error(L, "out of memory");
    r->host = h;
    int err;
    uv_handle_type type = uv_guess_handle(0);
    if (type == UV_FILE || type == UV_UNKNOWN_HANDLE) {
        lua_pushvalue(L, 1);
        r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        r->is_file = true;
        r->req.data = r;
        uv_buf_t b = uv_buf_init(r->fbuf, sizeof r->fbuf);
        err = uv_fs_read(h->srv->loop, &r->req, 0, &b, 1, -1, on_fs_read);
        if (err < 0) {
            luaL_unref(L, LUA_REGISTRYINDEX, r->fn_ref);
            free(r);
            return luaL_error(L, "cannot read standard input: %s", uv_strerror(err));
        }
        return 0;
    }
    if (type == UV_TTY) err = uv_tty_init(h->srv->loop, &r->h.tty, 0, 1);
    else if ((err = uv_pipe_init(h->srv->loop, &r->h.pipe, 0)) == 0) err = uv_pipe_open(&r->h.pipe, 0);
    if (err) {
        free(r);
        return luaL_error(L, "cannot read standard input: %s", uv_strerror(err));
    }
    r->h.pipe.data = r;
    lua_pushvalue(L, 1);
    r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_read_start((uv_stream_t *)&r->h.pipe, on_alloc, on_read);
    return 0;
}

static void on_exit_timer(uv_timer_t *t)
{
    fflush(stdout);
    /* The client is done: nothing left worth tidying before exit. */
    _exit((int)(intptr_t)t->data);
}

/* core.exit(code): exits once the loop has turned a little more, so that
 * what is being written (the reply to a close frame) leaves first. */
static int l_exit(lua_State *L)
{
    lua_host *h = lh_host(L);
    int code = (int)luaL_optinteger(L, 1, 0);
    if (!h->srv->loop) {
        fflush(stdout);
        _exit(code);
    }
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) _exit(code);
    uv_timer_init(h->srv->loop, t);
    t->data = (void *)(intptr_t)code;
    uv_timer_start(t, on_exit_timer, 20, 0);
    return 0;
}

/* core.isatty(fd): is it a terminal (colors in luaws client)? */
static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

void ls_register(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"isatty", l_isatty},
        {"read_stdin", l_read_stdin},
        {"exit", l_exit},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
