/* redis_bus.c — topics over Redis pub/sub on hiredis; see redis_bus.h.
 *
 * The two connections share one fate: WAITING (retry timer) -> RESOLVING
 * (uv_getaddrinfo) -> CONNECTING (both contexts open, handshake in flight)
 * -> READY. Any failure on either drops both and goes back to WAITING, so
 * there is one backoff, one state and one log line per event.
 *
 * Ownership: the bus owns a hiredis context while it tracks it in pub.ac or
 * sub.ac. It stops tracking a context before freeing it, or when hiredis
 * frees it on its own, and every callback for an untracked context does
 * nothing. hiredis calls each pending callback once with a NULL reply when
 * a context goes away, and when asked to free a context from inside one of
 * its reply callbacks it does so only after that callback returns; both
 * happen before control goes back to the loop. The bus memory is freed in
 * its timer's close callback, on a later loop iteration, so those late
 * callbacks always find it alive. */
#include "redis_bus.h"
#include "redis_uv.h"
#include "log.h"
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHANNEL_PREFIX "luaws:"
#define PREFIX_LEN (sizeof CHANNEL_PREFIX - 1)

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
/* hiredis 0.14 has no connect timeout for async contexts, and a host that
 * drops packets would hold a connect for minutes: this bounds resolving,
 * connecting and the handshake together. */
#define CONNECT_TIMEOUT_MS 5000

/* Publish bytes Redis has not acknowledged yet. Past this, publish refuses
 * (the caller delivers locally), so a stalled Redis cannot grow our memory
 * without bound. Each publish is also charged for hiredis's bookkeeping. */
#define MAX_PENDING_BYTES ((size_t)32 << 20)
#define PUBLISH_OVERHEAD 64

/* ---- the set of subscribed topics ---- */

typedef struct topic {
    struct topic *next;
    uint64_t hash;
    size_t len;
    char name[];
} topic;

typedef struct topic_set {
    topic **slots;
    size_t nslots;   /* a power of two; 0 before the first add */
    size_t count;
} topic_set;

static uint64_t topic_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603u;   /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211u;
    }
    return h;
}

/* The link that points at the topic, or NULL. */
static topic **set_find(const topic_set *s, const char *name, size_t len, uint64_t h)
{
    if (s->nslots == 0) return NULL;
    topic **link = &s->slots[h & (s->nslots - 1)];
    for (; *link; link = &(*link)->next)
        if ((*link)->hash == h && (*link)->len == len && memcmp((*link)->name, name, len) == 0) return link;
    return NULL;
}

static bool set_contains(const topic_set *s, const char *name, size_t len)
{
    return set_find(s, name, len, topic_hash(name, len)) != NULL;
}

/* Doubles the table; on failure the old one stays, only with longer chains. */
static void set_grow(topic_set *s)
{
    size_t n = s->nslots ? s->nslots * 2 : 16;
    topic **slots = calloc(n, sizeof *slots);
    if (!slots) return;
    for (size_t i = 0; i < s->nslots; i++) {
        topic *t = s->slots[i];
        while (t) {
            topic *next = t->next;
            t->next = slots[t->hash & (n - 1)];
            slots[t->hash & (n - 1)] = t;
            t = next;
        }
    }
    free(s->slots);
    s->slots = slots;
    s->nslots = n;
}

/* 1 if added, 0 if it was there, -1 without memory. */
static int set_add(topic_set *s, const char *name, size_t len)
{
    uint64_t h = topic_hash(name, len);
    if (set_find(s, name, len, h)) return 0;
    if (s->count >= s->nslots) set_grow(s);
    if (s->nslots == 0) return -1;
    topic *t = malloc(sizeof *t + len);
    if (!t) return -1;
    t->hash = h;
    t->len = len;
    memcpy(t->name, name, len);
    t->next = s->slots[h & (s->nslots - 1)];
    s->slots[h & (s->nslots - 1)] = t;
    s->count++;
    return 1;
}

static bool set_remove(topic_set *s, const char *name, size_t len)
{
    topic **link = set_find(s, name, len, topic_hash(name, len));
    if (!link) return false;
    topic *t = *link;
    *link = t->next;
    free(t);
    s->count--;
    return true;
}

static void set_free(topic_set *s)
{
    for (size_t i = 0; i < s->nslots; i++) {
        topic *t = s->slots[i];
        while (t) {
            topic *next = t->next;
            free(t);
            t = next;
        }
    }
    free(s->slots);
    *s = (topic_set){0};
}

/* ---- the bus ---- */

enum bus_state { WAITING, RESOLVING, CONNECTING, READY, CLOSED };

typedef struct rconn {
    redis_bus *bus;
    redisAsyncContext *ac;   /* tracked context, or NULL */
    bool ready;              /* it answered its handshake */
} rconn;

struct redis_bus {
    uv_loop_t *loop;
    redis_bus_message_cb cb;
    void *ud;
    redis_url url;           /* host, port, db, and "host:port" for log lines */

    enum bus_state state;
    uv_timer_t timer;        /* the retry delay, then the connect timeout */
    unsigned backoff_ms;     /* the next retry delay */
    unsigned addr_turn;      /* which resolved address to try: moves on after a failure */
    /* While resolving; on giving up the bus clears its data and the request
     * frees itself when it completes. */
    uv_getaddrinfo_t *resolving;
    rconn pub, sub;

    topic_set topics;
    size_t pending_bytes;    /* charged for publishes not yet acknowledged */
    bool backlog_warned;
};

static void on_timer(uv_timer_t *t);
static void on_message(redisAsyncContext *ac, void *r, void *privdata);

/* Stops the attempt or the connection in progress. Safe from inside any
 * hiredis callback: each context is untracked before it is freed, and one
 * whose callback is running is freed by hiredis once that callback returns. */
static void drop_connections(redis_bus *b)
{
    if (b->resolving) {
        b->resolving->data = NULL;
        uv_cancel((uv_req_t *)b->resolving);
        b->resolving = NULL;
    }
    rconn *conns[2] = {&b->pub, &b->sub};
    for (int i = 0; i < 2; i++) {
        redisAsyncContext *ac = conns[i]->ac;
        conns[i]->ac = NULL;
        conns[i]->ready = false;
        if (ac) redisAsyncFree(ac);
    }
}

static void fail(redis_bus *b, const char *why)
{
    /* A copy: why may live in a context about to be freed. */
    char reason[256];
    snprintf(reason, sizeof reason, "%s", why && *why ? why : "unknown error");
    bool was_ready = b->state == READY;
    drop_connections(b);
    unsigned delay = b->backoff_ms;
    b->backoff_ms = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
    if (was_ready) {
        log_warn("redis: connection lost (%s), reconnecting in %u ms", reason, delay);
    } else {
        b->addr_turn++;
        log_warn("redis: cannot connect to %s (%s), retrying in %u ms", b->url.label, reason, delay);
    }
    b->state = WAITING;
    uv_timer_start(&b->timer, on_timer, delay, 0);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;
    if (status == REDIS_OK || c->ac != ac) return;
    c->ac = NULL;   /* hiredis frees it when we return */
    fail(c->bus, ac->c.errstr);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;   /* ac->c.err tells more */
    rconn *c = ac->data;
    if (c->ac != ac) return;   /* dropped by us */
    c->ac = NULL;              /* hiredis frees it when we return */
    c->ready = false;
    fail(c->bus, ac->c.err ? ac->c.errstr : "closed");
}

/* A handshake reply; true if it was a good one for a tracked context. */
static bool handshake_ok(redisAsyncContext *ac, redisReply *reply)
{
    rconn *c = ac->data;
    if (!reply || c->ac != ac) return false;
    if (reply->type == REDIS_REPLY_ERROR) {
        fail(c->bus, reply->str);   /* for "-LOADING", "-NOAUTH", a bad db... */
        return false;
    }
    return true;
}

static void on_select_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    handshake_ok(ac, r);
}

/* PING goes last, so its answer means the whole handshake went through. */
static void on_ping_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    if (!handshake_ok(ac, r)) return;
    rconn *c = ac->data;
    redis_bus *b = c->bus;
    c->ready = true;
    if (b->state == CONNECTING && b->pub.ready && b->sub.ready) {
        b->state = READY;
        b->backoff_ms = BACKOFF_FIRST_MS;
        uv_timer_stop(&b->timer);
        log_info("redis: connected to %s", b->url.label);
    }
}

static void send_subscribe(redis_bus *b, const char *name, size_t len)
{
    redisAsyncCommand(b->sub.ac, on_message, NULL, "SUBSCRIBE " CHANNEL_PREFIX "%b", name, len);
}

/* Opens one context and queues its handshake (and, on the subscriber, every
 * topic); hiredis sends them once the connect completes. */
static bool conn_open(redis_bus *b, rconn *c, const char *ip, char *why, size_t whylen)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, b->url.port);
    if (!ac) {
        snprintf(why, whylen, "out of memory");
        return false;
    }
    if (ac->err) {
        snprintf(why, whylen, "%s", ac->errstr);
        redisAsyncFree(ac);
        return false;
    }
    if (redis_uv_attach(ac, b->loop) != 0) {
        snprintf(why, whylen, "cannot watch the socket");
        redisAsyncFree(ac);
        return false;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Notices a Redis host that vanished without closing the connection. */
    redisEnableKeepAlive(&ac->c);
    c->ac = ac;
    if (b->url.db > 0) redisAsyncCommand(ac, on_select_reply, NULL, "SELECT %d", b->url.db);
    redisAsyncCommand(ac, on_ping_reply, NULL, "PING");
    if (c == &b->sub) {
        for (size_t i = 0; i < b->topics.nslots; i++)
            for (topic *t = b->topics.slots[i]; t; t = t->next) send_subscribe(b, t->name, t->len);
    }
    return true;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    redis_bus *b = req->data;
    free(req);
    if (!b) {   /* the bus gave up on this attempt, or closed */
        uv_freeaddrinfo(res);
        return;
    }
    b->resolving = NULL;
    if (status < 0) {
        fail(b, uv_strerror(status));
        return;
    }
    unsigned n = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) n++;
    struct addrinfo *ai = res;
    for (unsigned i = b->addr_turn % n; i > 0; i--) ai = ai->ai_next;
    char ip[INET6_ADDRSTRLEN] = "";
    if (ai->ai_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, ip, sizeof ip);
    else
        uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, ip, sizeof ip);
    uv_freeaddrinfo(res);

    char why[128];
    b->state = CONNECTING;
    if (!conn_open(b, &b->pub, ip, why, sizeof why) || !conn_open(b, &b->sub, ip, why, sizeof why))
        fail(b, why);
}

static void connect_start(redis_bus *b)
{
    b->state = RESOLVING;
    uv_timer_start(&b->timer, on_timer, CONNECT_TIMEOUT_MS, 0);
    uv_getaddrinfo_t *req = malloc(sizeof *req);
    if (!req) {
        fail(b, "out of memory");
        return;
    }
    req->data = b;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(b->loop, req, on_resolved, b->url.host, b->url.port_str, &hints);
    if (rc < 0) {
        free(req);
        fail(b, uv_strerror(rc));
        return;
    }
    b->resolving = req;
}

static void on_timer(uv_timer_t *t)
{
    redis_bus *b = t->data;
    if (b->state == WAITING)
        connect_start(b);
    else if (b->state == RESOLVING || b->state == CONNECTING)
        fail(b, "timed out");
}

static void on_message(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    redisReply *reply = r;
    rconn *c = ac->data;
    if (!reply || c->ac != ac) return;
    /* Subscribe and unsubscribe confirmations come here too. */
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) return;
    const redisReply *kind = reply->element[0], *chan = reply->element[1], *msg = reply->element[2];
    if (kind->type != REDIS_REPLY_STRING || kind->len != 7 || memcmp(kind->str, "message", 7) != 0) return;
    if (chan->type != REDIS_REPLY_STRING || msg->type != REDIS_REPLY_STRING) return;
    if (chan->len < PREFIX_LEN || memcmp(chan->str, CHANNEL_PREFIX, PREFIX_LEN) != 0) return;
    const char *name = chan->str + PREFIX_LEN;
    size_t len = chan->len - PREFIX_LEN;
    redis_bus *b = c->bus;
    /* Redis keeps sending until it has seen our UNSUBSCRIBE. */
    if (!set_contains(&b->topics, name, len)) return;
    /* Last: the callback may close the bus. */
    b->cb(b->ud, name, len, (const uint8_t *)msg->str, msg->len);
}

static void on_publish_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    rconn *c = ac->data;
    redis_bus *b = c->bus;
    b->pending_bytes -= (size_t)(uintptr_t)privdata;
    if (b->backlog_warned && b->pending_bytes < MAX_PENDING_BYTES / 2) b->backlog_warned = false;
    if (reply && reply->type == REDIS_REPLY_ERROR && c->ac == ac) log_warn("redis: PUBLISH failed: %s", reply->str);
}

/* ---- the API ---- */

redis_bus *redis_bus_new(uv_loop_t *loop, const char *url, redis_bus_message_cb cb, void *ud,
                         char *err, size_t errlen)
{
    redis_bus *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!redis_url_parse(url, "redis URL", &b->url, err, errlen)) {
        free(b);
        return NULL;
    }
    b->loop = loop;
    b->cb = cb;
    b->ud = ud;
    b->pub.bus = b;
    b->sub.bus = b;
    b->backoff_ms = BACKOFF_FIRST_MS;
    uv_timer_init(loop, &b->timer);
    b->timer.data = b;
    connect_start(b);
    return b;
}

void redis_bus_subscribe(redis_bus *b, const char *topic_name, size_t len)
{
    if (b->state == CLOSED) return;
    int added = set_add(&b->topics, topic_name, len);
    if (added < 0) log_error("redis: out of memory subscribing to a topic");
    if (added <= 0) return;
    /* While connecting, this joins the queue after the topics sent at open. */
    if (b->sub.ac) send_subscribe(b, topic_name, len);
}

void redis_bus_unsubscribe(redis_bus *b, const char *topic_name, size_t len)
{
    if (b->state == CLOSED || !set_remove(&b->topics, topic_name, len)) return;
    if (b->sub.ac) redisAsyncCommand(b->sub.ac, NULL, NULL, "UNSUBSCRIBE " CHANNEL_PREFIX "%b", topic_name, len);
}

bool redis_bus_publish(redis_bus *b, const char *topic_name, size_t tlen, const uint8_t *payload, size_t len)
{
    if (b->state != READY) return false;
    size_t charge = tlen + len + PUBLISH_OVERHEAD;
    if (charge > MAX_PENDING_BYTES - b->pending_bytes || charge < len) {
        if (!b->backlog_warned)
            log_warn("redis: %zu bytes of publishes not yet acknowledged, delivering locally only",
                     b->pending_bytes);
        b->backlog_warned = true;
        return false;
    }
    if (redisAsyncCommand(b->pub.ac, on_publish_reply, (void *)(uintptr_t)charge,
                          "PUBLISH " CHANNEL_PREFIX "%b %b", topic_name, tlen, payload, len) != REDIS_OK)
        return false;
    b->pending_bytes += charge;
    return true;
}

bool redis_bus_connected(const redis_bus *b)
{
    return b && b->state == READY;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void redis_bus_close(redis_bus *b)
{
    if (!b || b->state == CLOSED) return;
    b->state = CLOSED;
    drop_connections(b);
    set_free(&b->topics);
    uv_close((uv_handle_t *)&b->timer, on_timer_closed);
}
