/* redis_store.c — the Redis client of luaws.store; see redis_store.h.
 *
 * States: WAITING (retry timer) -> RESOLVING (uv_getaddrinfo) -> CONNECTING
 * (context open, SELECT/PING in flight) -> READY; any failure drops the
 * context and goes back to WAITING. Commands accepted while RESOLVING or
 * CONNECTING wait in the list unsent and go out when READY.
 *
 * Ownership of a request: while unsent it belongs to the client (in
 * rs->live); once handed to hiredis it belongs to hiredis's callback
 * (on_reply frees it; hiredis calls it exactly once, with NULL when the
 * context goes away). rs->live holds every request whose callback is still
 * due, in the order they were made, which is also deadline order (one
 * timeout for all): one timer watches the head.
 *
 * The libuv glue is the same as redis_bus.c's (see there why not hiredis's
 * own adapter). The client memory is freed in its timer's close callback,
 * after the late NULL-reply callbacks of a freed context have run. */
#include "redis_store.h"
#include "redis_uv.h"
#include "log.h"
#include <hiredis/async.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 2000

/* ---- the client ---- */

enum rs_state { WAITING, RESOLVING, CONNECTING, READY, CLOSED };

struct rstore_req {
    rstore *rs;
    rstore_req *prev, *next;  /* in rs->live while the callback is due */
    uint64_t deadline;        /* uv_now ms */
    rstore_cb cb;             /* NULL once answered, timed out or cancelled */
    void *ud;
    bool sent;                /* hiredis owns it now */
    char *cmd;                /* the formatted command, until sent */
    size_t cmdlen;
};

struct rstore {
    uv_loop_t *loop;
    redis_url url;            /* host, port, db, and "host:port" for log lines */
    unsigned timeout_ms;
    enum rs_state state;
    uv_timer_t retry;         /* the retry delay, then the connect timeout */
    uv_timer_t deadline;      /* the oldest live request's timeout */
    int open_handles;         /* of the two timers, at close */
    unsigned backoff_ms;
    unsigned addr_turn;
    uv_getaddrinfo_t *resolving;
    redisAsyncContext *ac;    /* tracked context, or NULL */
    rstore_req *live, *live_tail;
    char last_error[200];     /* why it is down, for refused commands */
    const char *drop_reason;  /* given to the requests a drop fails */
};

static void on_retry(uv_timer_t *t);
static void arm_deadline(rstore *rs);

static void live_unlink(rstore_req *r)
{
    rstore *rs = r->rs;
    if (r->prev) r->prev->next = r->next;
    else rs->live = r->next;
    if (r->next) r->next->prev = r->prev;
    else rs->live_tail = r->prev;
    r->prev = r->next = NULL;
}

static void req_free_unsent(rstore_req *r)
{
    free(r->cmd);
    free(r);
}

/* hiredis's callback of a sent request: exactly once per request. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    rstore_req *r = privdata;
    rstore_cb cb = r->cb;
    void *ud = r->ud;
    rstore *rs = r->rs;
    if (cb) live_unlink(r);
    r->cb = NULL;
    free(r);
    if (!cb) return;
    const char *why = rs->drop_reason ? rs->drop_reason : "connection lost";
    cb(ud, reply, reply ? NULL : why);
}

static void drop_connection(rstore *rs, const char *reason)
{
    if (rs->resolving) {
        rs->resolving->data = NULL;
        uv_cancel((uv_req_t *)rs->resolving);
        rs->resolving = NULL;
    }
    redisAsyncContext *ac = rs->ac;
    rs->ac = NULL;
    if (ac) {
        /* Its pending callbacks run now (NULL replies), or right after the
         * hiredis callback we are in returns. */
        rs->drop_reason = reason;
        redisAsyncFree(ac);
        rs->drop_reason = NULL;
    }
}

static void fail(rstore *rs, const char *why)
{
    char reason[200];
    snprintf(reason, sizeof reason, "%s", why && *why ? why : "unknown error");
    bool was_ready = rs->state == READY;
    unsigned delay = rs->backoff_ms;
    rs->backoff_ms = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
    rs->state = WAITING;   /* first: callbacks run by the drop see it down */
    snprintf(rs->last_error, sizeof rs->last_error, "%s", reason);
    if (was_ready) log_warn("redis store: connection lost (%s), reconnecting in %u ms", reason, delay);
    else {
        rs->addr_turn++;
        log_warn("redis store: cannot connect to %s (%s), retrying in %u ms", rs->url.label, reason, delay);
    }
    uv_timer_start(&rs->retry, on_retry, delay, 0);
    drop_connection(rs, reason);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rstore *rs = ac->data;
    if (status == REDIS_OK || rs->ac != ac) return;
    rs->ac = NULL;   /* hiredis frees it when we return */
    fail(rs, ac->c.errstr);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    rstore *rs = ac->data;
    if (rs->ac != ac) return;
    rs->ac = NULL;
    fail(rs, ac->c.err ? ac->c.errstr : "closed");
}

static void send_req(rstore *rs, rstore_req *r)
{
    if (redisAsyncFormattedCommand(rs->ac, on_reply, r, r->cmd, r->cmdlen) != REDIS_OK) return;   /* stays queued */
    free(r->cmd);
    r->cmd = NULL;
    r->sent = true;
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *rep = reply;
    rstore *rs = ac->data;
    if (!rep || rs->ac != ac) return;
    if (rep->type == REDIS_REPLY_ERROR) {
        fail(rs, rep->str);
        return;
    }
    if (!privdata) return;   /* SELECT; PING (privdata 1) comes last */
    rs->state = READY;
    rs->backoff_ms = BACKOFF_FIRST_MS;
    uv_timer_stop(&rs->retry);
    log_info("redis store: connected to %s", rs->url.label);
    for (rstore_req *r = rs->live; r && rs->state == READY; r = r->next)
        if (!r->sent) send_req(rs, r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rstore *rs = req->data;
    free(req);
    if (!rs) {
        uv_freeaddrinfo(res);
        return;
    }
    rs->resolving = NULL;
    if (status < 0) {
        fail(rs, uv_strerror(status));
        return;
    }
    unsigned n = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) n++;
    struct addrinfo *ai = res;
    for (unsigned i = rs->addr_turn % n; i > 0; i--) ai = ai->ai_next;
    char ip[INET6_ADDRSTRLEN] = "";
    if (ai->ai_family == AF_INET6) uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, ip, sizeof ip);
    else uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, ip, sizeof ip);
    uv_freeaddrinfo(res);

    rs->state = CONNECTING;
    redisAsyncContext *ac = redisAsyncConnect(ip, rs->url.port);
    if (!ac) {
        fail(rs, "out of memory");
        return;
    }
    if (ac->err || redis_uv_attach(ac, rs->loop) != 0) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac->err ? ac->errstr : "cannot watch the socket");
        redisAsyncFree(ac);
        fail(rs, why);
        return;
    }
    ac->data = rs;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisEnableKeepAlive(&ac->c);
    rs->ac = ac;
    if (rs->url.db > 0) redisAsyncCommand(ac, on_handshake, NULL, "SELECT %d", rs->url.db);
    redisAsyncCommand(ac, on_handshake, (void *)1, "PING");
}

static void connect_start(rstore *rs)
{
    rs->state = RESOLVING;
    /* Bounds resolving, connecting and the handshake together: a stalled
     * Redis accepts the connection but never answers the PING. */
    uv_timer_start(&rs->retry, on_retry, rs->timeout_ms < 1000 ? 1000 : rs->timeout_ms, 0);
    uv_getaddrinfo_t *req = malloc(sizeof *req);
    if (!req) {
        fail(rs, "out of memory");
        return;
    }
    req->data = rs;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(rs->loop, req, on_resolved, rs->url.host, rs->url.port_str, &hints);
    if (rc < 0) {
        free(req);
        fail(rs, uv_strerror(rc));
        return;
    }
    rs->resolving = req;
}

static void on_retry(uv_timer_t *t)
{
    rstore *rs = t->data;
    if (rs->state == WAITING) connect_start(rs);
    else if (rs->state == RESOLVING || rs->state == CONNECTING) fail(rs, "timed out");
}

/* The head's timeout: every request past its deadline fails; one that was
 * sent means Redis stopped answering, so the connection goes. */
static void on_deadline(uv_timer_t *t)
{
    rstore *rs = t->data;
    uint64_t now = uv_now(rs->loop);
    bool stalled = false;
    char why[64];
    snprintf(why, sizeof why, "no reply within %u ms", rs->timeout_ms);
    while (rs->live && rs->live->deadline <= now) {
        rstore_req *r = rs->live;
        rstore_cb cb = r->cb;
        void *ud = r->ud;
        live_unlink(r);
        r->cb = NULL;
        if (r->sent) stalled = true;   /* hiredis still owns it */
        else req_free_unsent(r);
        cb(ud, NULL, why);
        if (rs->state == CLOSED) return;
    }
    if (stalled && rs->ac) {
        rs->state = READY;   /* so fail() logs "connection lost" */
        fail(rs, why);
    }
    if (rs->state != CLOSED) arm_deadline(rs);
}

static void arm_deadline(rstore *rs)
{
    if (!rs->live) {
        uv_timer_stop(&rs->deadline);
        return;
    }
    uint64_t now = uv_now(rs->loop);
    uv_timer_start(&rs->deadline, on_deadline, rs->live->deadline > now ? rs->live->deadline - now : 0, 0);
}

/* ---- the API ---- */

rstore *rstore_new(uv_loop_t *loop, const char *url, unsigned timeout_ms, char *err, size_t errlen)
{
    rstore *rs = calloc(1, sizeof *rs);
    if (!rs) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!redis_url_parse(url, "--store", &rs->url, err, errlen)) {
        free(rs);
        return NULL;
    }
    rs->loop = loop;
    rs->timeout_ms = timeout_ms ? timeout_ms : RSTORE_DEFAULT_TIMEOUT_MS;
    rs->backoff_ms = BACKOFF_FIRST_MS;
    uv_timer_init(loop, &rs->retry);
    uv_timer_init(loop, &rs->deadline);
    rs->retry.data = rs->deadline.data = rs;
    connect_start(rs);
    return rs;
}

rstore_req *rstore_command(rstore *rs, int argc, const char **argv, const size_t *argvlen, rstore_cb cb,
                           void *ud, char *err, size_t errlen)
{
    if (rs->state == WAITING || rs->state == CLOSED) {
        snprintf(err, errlen, "not connected: %s", rs->last_error[0] ? rs->last_error : "closed");
        return NULL;
    }
    rstore_req *r = calloc(1, sizeof *r);
    char *cmd = NULL;
    long long n = r ? redisFormatCommandArgv(&cmd, argc, argv, argvlen) : -1;
    if (n < 0) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->rs = rs;
    r->cb = cb;
    r->ud = ud;
    r->cmd = cmd;
    r->cmdlen = (size_t)n;
    r->deadline = uv_now(rs->loop) + rs->timeout_ms;
    r->prev = rs->live_tail;
    if (rs->live_tail) rs->live_tail->next = r;
    else rs->live = r;
    rs->live_tail = r;
    if (rs->live == r) arm_deadline(rs);
    if (rs->state == READY) send_req(rs, r);
    return r;
}

void rstore_cancel(rstore_req *r)
{
    if (!r || !r->cb) return;
    rstore *rs = r->rs;
    bool head = rs->live == r;
    live_unlink(r);
    r->cb = NULL;
    if (!r->sent) req_free_unsent(r);
    if (head) arm_deadline(rs);
}

static void on_timer_closed(uv_handle_t *h)
{
    rstore *rs = h->data;
    if (--rs->open_handles == 0) free(rs);
}

void rstore_close(rstore *rs)
{
    if (!rs || rs->state == CLOSED) return;
    rs->state = CLOSED;
    while (rs->live) rstore_cancel(rs->live);
    drop_connection(rs, "closed");
    rs->open_handles = 2;
    uv_close((uv_handle_t *)&rs->retry, on_timer_closed);
    uv_close((uv_handle_t *)&rs->deadline, on_timer_closed);
}
