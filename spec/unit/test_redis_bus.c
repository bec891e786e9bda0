/* test_redis_bus.c — src/redis_bus.c against real redis-server processes.
 *
 * Each server runs on a free loopback port with persistence off; the test
 * kills, stops (SIGSTOP) and restarts them to drive the bus through its
 * failure paths, all on one libuv loop in this process. The test's own
 * log_msg() records the bus's log lines so they can be checked.
 * Build and run: spec/unit/build_redis.sh [valgrind|asan]; -v prints the
 * log lines as they come. */
#include "log.h"
#include "redis_bus.h"
#include <hiredis/hiredis.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int passed, failed;
static bool verbose;
static uv_loop_t loop;

static void check(bool ok, const char *what)
{
    if (ok) {
        passed++;
        if (verbose) printf("ok: %s\n", what);
    } else {
        failed++;
        printf("FAIL: %s\n", what);
    }
    fflush(stdout);
}

/* ---- log lines, kept for checking (replaces src/log.c) ---- */

#define MAX_LINES 512
static char *lines[MAX_LINES];
static int nlines;

void log_msg(enum log_level level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (verbose) fprintf(stderr, "  log %d: %s\n", (int)level, buf);
    if (nlines < MAX_LINES) lines[nlines++] = strdup(buf);
}

static void log_clear(void)
{
    for (int i = 0; i < nlines; i++) free(lines[i]);
    nlines = 0;
}

static int log_count(const char *needle)
{
    int n = 0;
    for (int i = 0; i < nlines; i++)
        if (strstr(lines[i], needle)) n++;
    return n;
}

static bool logged(const char *fmt, ...)
{
    char needle[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(needle, sizeof needle, fmt, ap);
    va_end(ap);
    return log_count(needle) > 0;
}

/* ---- redis-server processes ---- */

typedef struct server {
    int port;
    pid_t pid;
} server;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *sync_connect(int port)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static bool server_ping(int port)
{
    redisContext *c = sync_connect(port);
    if (!c) return false;
    redisReply *r = redisCommand(c, "PING");
    bool ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    if (r) freeReplyObject(r);
    redisFree(c);
    return ok;
}

static bool server_start(server *s)
{
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    char *argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", NULL};
    s->pid = fork();
    if (s->pid < 0) abort();
    if (s->pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        if (server_ping(s->port)) return true;
        usleep(10000);
    }
    return false;
}

static void server_kill(server *s)
{
    if (s->pid <= 0) return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

/* Subscribers of a channel, asked with a separate plain connection. */
static long long numsub(int port, const char *channel)
{
    redisContext *c = sync_connect(port);
    if (!c) return -1;
    long long n = -1;
    redisReply *r = redisCommand(c, "PUBSUB NUMSUB %s", channel);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_INTEGER)
        n = r->element[1]->integer;
    if (r) freeReplyObject(r);
    redisFree(c);
    return n;
}

static bool external_publish(int port, const char *channel, const char *payload)
{
    redisContext *c = sync_connect(port);
    if (!c) return false;
    redisReply *r = redisCommand(c, "PUBLISH %s %s", channel, payload);
    bool ok = r && r->type == REDIS_REPLY_INTEGER;
    if (r) freeReplyObject(r);
    redisFree(c);
    return ok;
}

/* ---- running the loop ---- */

static void on_tick(uv_timer_t *t) { (void)t; }

/* Runs the loop until pred(arg) holds or ms pass; a tick keeps it turning. */
static bool run_until(bool (*pred)(void *), void *arg, int ms)
{
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + (uint64_t)ms;
    bool ok;
    while (!(ok = pred && pred(arg)) && uv_now(&loop) < end) uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return ok;
}

static void run_for(int ms) { run_until(NULL, NULL, ms); }

static bool is_connected(void *b) { return redis_bus_connected(b); }
static bool is_disconnected(void *b) { return !redis_bus_connected(b); }

typedef struct subs_query {
    int port;
    const char *channel;
    long long want;
} subs_query;

static bool has_numsub(void *arg)
{
    subs_query *q = arg;
    return numsub(q->port, q->channel) == q->want;
}

static bool wait_numsub(int port, const char *channel, long long want)
{
    subs_query q = {port, channel, want};
    return run_until(has_numsub, &q, 5000);
}

/* Runs the loop until every handle is closed: what redis_bus_close promises. */
static bool drains(void)
{
    for (int i = 0; i < 1000 && uv_run(&loop, UV_RUN_NOWAIT); i++) usleep(1000);
    return !uv_loop_alive(&loop);
}

/* ---- receiving ---- */

typedef struct inbox {
    int count;
    char topic[64];
    size_t topic_len;
    uint8_t payload[64];
    size_t len;
    redis_bus *close_me;   /* closed from inside the callback when set */
} inbox;

static void on_msg(void *ud, const char *topic, size_t topic_len, const uint8_t *payload, size_t len)
{
    inbox *in = ud;
    in->count++;
    in->topic_len = topic_len;
    memcpy(in->topic, topic, topic_len < sizeof in->topic ? topic_len : sizeof in->topic);
    in->len = len;
    memcpy(in->payload, payload, len < sizeof in->payload ? len : sizeof in->payload);
    if (in->close_me) {
        redis_bus_close(in->close_me);
        in->close_me = NULL;
    }
}

typedef struct count_query {
    inbox *in;
    int want;
} count_query;

static bool has_count(void *arg)
{
    count_query *q = arg;
    return q->in->count >= q->want;
}

/* Waits for the want-th message, then a little longer to catch extras. */
static bool receives(inbox *in, int want)
{
    count_query q = {in, want};
    run_until(has_count, &q, 3000);
    run_for(150);
    return in->count == want;
}

static redis_bus *bus_new(int port, const char *path, inbox *in)
{
    char url[64], err[256];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d%s", port, path);
    redis_bus *b = redis_bus_new(&loop, url, on_msg, in, err, sizeof err);
    if (!b) printf("redis_bus_new(%s): %s\n", url, err);
    return b;
}

static bool pub(redis_bus *b, const char *topic, const char *payload)
{
    return redis_bus_publish(b, topic, strlen(topic), (const uint8_t *)payload, strlen(payload));
}

static void sub(redis_bus *b, const char *topic) { redis_bus_subscribe(b, topic, strlen(topic)); }
static void unsub(redis_bus *b, const char *topic) { redis_bus_unsubscribe(b, topic, strlen(topic)); }

/* ---- tests ---- */

static void test_urls(void)
{
    static const char *const bad[] = {
        "", "http://127.0.0.1", "redis://", "redis://:6379", "redis://host:", "redis://host:0",
        "redis://host:65536", "redis://host:12x", "redis://host/x", "redis://host/1/2",
        "redis://:secret@host", "redis://[::1", "redis://host?db=1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "", what[128];
        redis_bus *b = redis_bus_new(&loop, bad[i], on_msg, NULL, err, sizeof err);
        snprintf(what, sizeof what, "bad URL \"%s\" refused with a message", bad[i]);
        check(b == NULL && err[0] != '\0', what);
        redis_bus_close(b);
    }
    /* Good ones start connecting at once; closing right away (while the
     * name is being resolved) must leave nothing behind. */
    static const char *const good[] = {"redis://localhost", "redis://127.0.0.1:1/", "redis://[::1]:1/15",
                                       "redis://no-such-host.invalid:6379/2"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char err[256] = "", what[128];
        redis_bus *b = redis_bus_new(&loop, good[i], on_msg, NULL, err, sizeof err);
        snprintf(what, sizeof what, "good URL \"%s\" accepted", good[i]);
        check(b != NULL, what);
        check(!redis_bus_connected(b), "not connected right after new");
        redis_bus_close(b);
    }
    check(drains(), "buses closed while resolving leave no handles");
}

static void test_pubsub(server *s)
{
    inbox ia = {0}, ib = {0};
    redis_bus *a = bus_new(s->port, "", &ia), *b = bus_new(s->port, "", &ib);
    check(run_until(is_connected, a, 5000) && run_until(is_connected, b, 5000), "both buses connect");
    check(logged("redis: connected to 127.0.0.1:%d", s->port), "\"connected\" logged");

    sub(a, "chat");
    check(wait_numsub(s->port, "luaws:chat", 1), "subscribed as luaws:chat");
    check(pub(b, "chat", "hello"), "publish returns true when connected");
    check(receives(&ia, 1), "subscriber receives exactly once");
    check(ia.topic_len == 4 && memcmp(ia.topic, "chat", 4) == 0 && ia.len == 5 && memcmp(ia.payload, "hello", 5) == 0,
          "topic and payload as published");
    check(ib.count == 0, "the publisher, not subscribed, receives nothing");

    check(pub(a, "chat", "me too"), "publish on the subscribing bus");
    check(receives(&ia, 2), "a bus receives its own publish back, once");

    /* Binary topic and payload: spaces, NULs, high bytes, and empty. */
    static const char btopic[] = {'a', ' ', 'b', '\0', 'c'};
    static const uint8_t bpayload[] = {0, 'x', 0, 0xff, '\r', '\n', 0};
    redis_bus_subscribe(a, btopic, sizeof btopic);
    run_for(100);
    check(redis_bus_publish(b, btopic, sizeof btopic, bpayload, sizeof bpayload), "binary publish");
    check(receives(&ia, 3), "binary message received once");
    check(ia.topic_len == sizeof btopic && memcmp(ia.topic, btopic, sizeof btopic) == 0, "binary topic intact");
    check(ia.len == sizeof bpayload && memcmp(ia.payload, bpayload, sizeof bpayload) == 0, "binary payload intact");
    check(redis_bus_publish(b, btopic, sizeof btopic, NULL, 0) && receives(&ia, 4) && ia.len == 0, "empty payload");

    /* Anyone who can PUBLISH to luaws:T reaches T; bare "chat" is not ours. */
    check(external_publish(s->port, "luaws:chat", "from redis-cli") && receives(&ia, 5) && ia.len == 14,
          "external PUBLISH to luaws:chat delivered");
    check(external_publish(s->port, "chat", "x") && receives(&ia, 5), "channel without the prefix ignored");
    check(pub(b, "other", "x") && receives(&ia, 5), "topic not subscribed: nothing");

    /* Subscribing twice is a no-op: still one delivery. */
    sub(a, "chat");
    run_for(50);
    check(pub(b, "chat", "once") && receives(&ia, 6), "double subscribe still delivers once");

    /* Unsubscribe, then publish at once: Redis may still send it (it can see
     * the PUBLISH first), but the bus must not deliver it. */
    unsub(a, "chat");
    check(pub(b, "chat", "gone") && receives(&ia, 6), "nothing delivered after unsubscribe");
    check(wait_numsub(s->port, "luaws:chat", 0), "unsubscribed in Redis");
    unsub(a, "chat");   /* not subscribed: a no-op */
    check(pub(b, "chat", "gone again") && receives(&ia, 6), "still nothing");

    redis_bus_close(a);
    redis_bus_close(b);
    check(drains(), "closed buses leave no handles");
}

static void test_restart(server *s)
{
    log_clear();
    inbox ia = {0}, ib = {0};
    redis_bus *a = bus_new(s->port, "", &ia), *b = bus_new(s->port, "", &ib);
    check(run_until(is_connected, a, 5000) && run_until(is_connected, b, 5000), "connected before the kill");
    sub(a, "x");
    sub(a, "y");
    check(wait_numsub(s->port, "luaws:x", 1) && wait_numsub(s->port, "luaws:y", 1), "x and y subscribed");

    /* Unread input on the server's side turns its death into a reset. */
    kill(s->pid, SIGSTOP);
    for (int i = 0; i < 20; i++) pub(b, "x", "unread");
    run_for(50);
    server_kill(s);
    check(run_until(is_disconnected, a, 3000) && run_until(is_disconnected, b, 3000), "kill noticed");
    check(logged("redis: connection lost ("), "\"connection lost\" logged");
    check(logged("reconnecting in 100 ms"), "first reconnect after 100 ms");
    check(!pub(b, "x", "lost"), "publish returns false while disconnected");
    /* Changes while down are what gets subscribed after the reconnect. */
    unsub(a, "y");
    sub(a, "z");
    run_for(400);
    check(logged("redis: cannot connect to 127.0.0.1:%d (Connection refused), retrying in 200 ms", s->port),
          "retries logged with a doubled delay");

    log_clear();
    check(server_start(s), "redis restarted on the same port");
    check(run_until(is_connected, a, 8000) && run_until(is_connected, b, 8000), "both reconnect");
    check(logged("redis: connected to 127.0.0.1:%d", s->port), "\"connected\" logged again");
    check(wait_numsub(s->port, "luaws:x", 1), "x subscribed again");
    check(wait_numsub(s->port, "luaws:z", 1), "z, subscribed while down, subscribed");
    check(numsub(s->port, "luaws:y") == 0, "y, unsubscribed while down, not");
    check(pub(b, "x", "back") && receives(&ia, 1), "messages flow again, once");
    check(ia.len == 4 && memcmp(ia.payload, "back", 4) == 0, "the right one");
    check(pub(b, "y", "no") && receives(&ia, 1), "nothing on y");

    redis_bus_close(a);
    redis_bus_close(b);
    check(drains(), "closed after a reconnect: no handles left");
}

static void test_refused_then_up(void)
{
    log_clear();
    server s = {free_port(), 0};
    inbox in = {0};
    redis_bus *b = bus_new(s.port, "", &in);
    sub(b, "early");
    run_for(800);
    check(!redis_bus_connected(b), "not connected while refused");
    for (int ms = 100; ms <= 400; ms *= 2) {
        char what[96];
        snprintf(what, sizeof what, "\"cannot connect ... retrying in %d ms\" logged", ms);
        check(logged("redis: cannot connect to 127.0.0.1:%d (Connection refused), retrying in %d ms", s.port, ms), what);
    }
    check(!pub(b, "early", "x"), "publish false before the first connect");

    check(server_start(&s), "redis started late");
    check(run_until(is_connected, b, 8000), "the bus connects once redis is up");
    check(logged("redis: connected to 127.0.0.1:%d", s.port), "\"connected\" logged");
    check(wait_numsub(s.port, "luaws:early", 1), "topic subscribed before connecting is subscribed");
    check(pub(b, "early", "hi") && receives(&in, 1), "and delivers");

    redis_bus_close(b);
    check(drains(), "no handles left");
    server_kill(&s);
}

static void test_db(server *s)
{
    log_clear();
    inbox i1 = {0}, i0 = {0};
    redis_bus *one = bus_new(s->port, "/1", &i1), *zero = bus_new(s->port, "/", &i0);
    check(run_until(is_connected, one, 5000) && run_until(is_connected, zero, 5000), "buses with /1 and / connect");
    sub(one, "t");
    check(wait_numsub(s->port, "luaws:t", 1), "subscribed from db 1");
    /* Documented: pub/sub ignores the database. */
    check(pub(zero, "t", "across") && receives(&i1, 1), "db 0 publish reaches the db 1 subscriber");

    inbox ibad = {0};
    redis_bus *bad = bus_new(s->port, "/100000", &ibad);
    run_for(500);
    check(!redis_bus_connected(bad), "bad db never connects");
    check(log_count("(ERR DB index is out of range), retrying in 100 ms") == 1 &&
              logged("(ERR DB index is out of range), retrying in 200 ms"),
          "bad db logged once per attempt (two connections, one line)");
    redis_bus_close(one);
    redis_bus_close(zero);
    redis_bus_close(bad);
    check(drains(), "no handles left");
}

static void test_close_paths(server *s)
{
    /* Closing with lots in flight: publishes without replies, subscribes
     * without confirmations, all abandoned with NULL replies. */
    inbox in = {0};
    redis_bus *b = bus_new(s->port, "", &in);
    check(run_until(is_connected, b, 5000), "connected");
    bool all = true;
    for (int i = 0; i < 2000; i++) all = all && pub(b, "busy", "payload payload payload");
    for (int i = 0; i < 100; i++) {
        char t[16];
        snprintf(t, sizeof t, "t%d", i);
        sub(b, t);
    }
    unsub(b, "t1");
    check(all, "2000 publishes queued");
    redis_bus_close(b);
    check(drains(), "close with commands pending: no handles left");

    /* Closing from inside the message callback, with more messages behind
     * it in the same read: hiredis frees the context only after the
     * callback returns, and the rest must not be delivered. */
    inbox victim = {0}, ip = {0};
    redis_bus *v = bus_new(s->port, "", &victim), *p = bus_new(s->port, "", &ip);
    check(run_until(is_connected, v, 5000) && run_until(is_connected, p, 5000), "connected");
    sub(v, "bye");
    check(wait_numsub(s->port, "luaws:bye", 1), "subscribed");
    victim.close_me = v;
    for (int i = 0; i < 50; i++) pub(p, "bye", "m");
    run_for(300);
    check(victim.count == 1, "close in the callback: exactly one delivered");
    redis_bus_close(p);
    check(drains(), "close in the callback: no handles left");

    /* Closing while waiting to retry, and right after a failed connect. */
    log_clear();
    inbox iw = {0};
    redis_bus *w = bus_new(free_port(), "", &iw);
    run_for(150);
    check(logged("retrying in 100 ms"), "a retry is pending");
    redis_bus_close(w);
    check(drains(), "close while waiting to retry: no handles left");

    /* Closing while connecting: the server is stopped, so the TCP connect
     * completes but the handshake never answers. */
    kill(s->pid, SIGSTOP);
    redis_bus *c = bus_new(s->port, "", &iw);
    sub(c, "x");
    run_for(200);
    check(!redis_bus_connected(c), "a stopped server does not answer");
    redis_bus_close(c);
    check(drains(), "close mid-handshake: no handles left");
    kill(s->pid, SIGCONT);
}

static void test_stalled(server *s)
{
    log_clear();
    inbox in = {0};
    redis_bus *b = bus_new(s->port, "", &in);
    check(run_until(is_connected, b, 5000), "connected");

    /* A stopped server: publishes pile up until the cap. */
    kill(s->pid, SIGSTOP);
    static uint8_t big[1 << 20];
    int sent = 0;
    while (sent < 100 && redis_bus_publish(b, "big", 3, big, sizeof big)) sent++;
    check(sent >= 20 && sent <= 32, "publish refuses past the unacknowledged-bytes cap");
    check(logged("not yet acknowledged, delivering locally only"), "backlog warned");
    check(!redis_bus_publish(b, "big", 3, big, sizeof big), "still refused");
    check(log_count("not yet acknowledged") == 1, "warned once");

    /* A connection attempt to the stopped server times out. */
    inbox it = {0};
    redis_bus *t = bus_new(s->port, "", &it);
    run_for(5600);
    check(logged("redis: cannot connect to 127.0.0.1:%d (timed out), retrying in 100 ms", s->port),
          "handshake timeout after 5 s");

    kill(s->pid, SIGCONT);
    static uint8_t small[8];
    check(run_until(is_connected, t, 5000), "connects once the server runs again");
    bool ok = false;
    for (int i = 0; i < 300 && !(ok = redis_bus_publish(b, "big", 3, small, sizeof small)); i++) run_for(10);
    check(ok, "publish accepted again once the backlog drains");
    redis_bus_close(b);
    redis_bus_close(t);
    check(drains(), "no handles left");
}

int main(int argc, char **argv)
{
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    signal(SIGPIPE, SIG_IGN);   /* as luaws does: hiredis writes with write(2) */
    uv_loop_init(&loop);

    test_urls();
    server s = {free_port(), 0};
    if (!server_start(&s)) {
        printf("FAIL: cannot start redis-server on port %d\n", s.port);
        failed++;
    } else {
        test_pubsub(&s);
        test_db(&s);
        test_close_paths(&s);
        test_stalled(&s);
        test_restart(&s);
    }
    test_refused_then_up();
    server_kill(&s);

    check(uv_loop_close(&loop) == 0, "loop closes: nothing left on it");
    log_clear();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
