/* redis_uv.c — hiredis on libuv, and the redis:// URL (see redis_uv.h). */
#include "redis_uv.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hiredis on libuv ----
 * Our own glue rather than <hiredis/adapters/libuv.h>: in 0.14 that one
 * ignores poll errors, and libuv reports a socket error (a refused connect,
 * a reset) as an error status after stopping the handle, so hiredis would
 * never learn of it and the connection would hang for good. */

typedef struct poll_glue {
    uv_poll_t poll;
    redisAsyncContext *ac;   /* NULL once hiredis has let go */
    int events;              /* what hiredis wants */
} poll_glue;

static void glue_on_poll(uv_poll_t *h, int status, int events)
{
    poll_glue *g = h->data;
    /* On an error, let hiredis read or write: that finds the error. */
    if (status < 0) events = g->events;
    if (g->ac && (events & UV_READABLE)) redisAsyncHandleRead(g->ac);
    if (g->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(g->ac);
}

static void glue_update(poll_glue *g)
{
    if (g->events)
        uv_poll_start(&g->poll, g->events, glue_on_poll);
    else
        uv_poll_stop(&g->poll);
}

static void glue_add_read(void *p)  { poll_glue *g = p; g->events |= UV_READABLE;  glue_update(g); }
static void glue_del_read(void *p)  { poll_glue *g = p; g->events &= ~UV_READABLE; glue_update(g); }
static void glue_add_write(void *p) { poll_glue *g = p; g->events |= UV_WRITABLE;  glue_update(g); }
static void glue_del_write(void *p) { poll_glue *g = p; g->events &= ~UV_WRITABLE; glue_update(g); }

static void glue_on_closed(uv_handle_t *h) { free(h->data); }

/* hiredis is freeing the context; the glue lives on until its handle closes. */
static void glue_cleanup(void *p)
{
    poll_glue *g = p;
    g->ac = NULL;
    uv_close((uv_handle_t *)&g->poll, glue_on_closed);
}

int redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    poll_glue *g = calloc(1, sizeof *g);
    if (!g) return -1;
    if (uv_poll_init(loop, &g->poll, ac->c.fd) != 0) {
        free(g);
        return -1;
    }
    g->poll.data = g;
    g->ac = ac;
    ac->ev.data = g;
    ac->ev.addRead = glue_add_read;
    ac->ev.delRead = glue_del_read;
    ac->ev.addWrite = glue_add_write;
    ac->ev.delWrite = glue_del_write;
    ac->ev.cleanup = glue_cleanup;
    return 0;
}

/* ---- the URL ---- */

/* Digits at *p, at least one, up to max. */
static bool parse_number(const char **p, unsigned long max, unsigned long *out)
{
    const char *s = *p;
    unsigned long v = 0;
    if (*s < '0' || *s > '9') return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (unsigned long)(*s - '0');
        if (v > max) return false;
    }
    *p = s;
    *out = v;
    return true;
}

bool redis_url_parse(const char *url, const char *what, redis_url *u, char *err, size_t errlen)
{
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(err, errlen, "%s must start with %s: %s", what, scheme, url);
        return false;
    }
    if (strchr(url, '@')) {
        snprintf(err, errlen, "%s: user and password are not supported: %s", what, url);
        return false;
    }
    const char *p = url + sizeof scheme - 1, *host, *host_end;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end) {
            snprintf(err, errlen, "%s: no ']' after the IPv6 address: %s", what, url);
            return false;
        }
        p = host_end + 1;
    } else {
        host = p;
        p += strcspn(p, ":/?#");
        host_end = p;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen >= sizeof u->host) {
        snprintf(err, errlen, "%s: bad host: %s", what, url);
        return false;
    }
    memcpy(u->host, host, hlen);
    u->host[hlen] = '\0';
    unsigned long port = 6379, db = 0;
    if (*p == ':') {
        p++;
        if (!parse_number(&p, 65535, &port) || port == 0) {
            snprintf(err, errlen, "%s: bad port: %s", what, url);
            return false;
        }
    }
    if (*p == '/') {
        p++;
        if (*p && !parse_number(&p, INT_MAX, &db)) {
            snprintf(err, errlen, "%s: bad database number: %s", what, url);
            return false;
        }
    }
    if (*p) {
        snprintf(err, errlen, "%s: unexpected \"%s\": %s", what, p, url);
        return false;
    }
    u->port = (int)port;
    u->db = (int)db;
    snprintf(u->port_str, sizeof u->port_str, "%d", u->port);
    snprintf(u->label, sizeof u->label, strchr(u->host, ':') ? "[%s]:%d" : "%s:%d", u->host, u->port);
    return true;
}
