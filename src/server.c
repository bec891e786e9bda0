/* server.c — the listening socket, accepting, and stopping on a signal. */
#include "server.h"
#include <malloc.h>
#include "log.h"
#include "reload.h"
#include "redis_bus.h"
#include "local_bus.h"
#include "xalloc.h"
#include <assert.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>

static void on_connection(uv_stream_t *stream, int status)
{
    listener *l = stream->data;
    if (status < 0) {
        log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    conn_accept(l);
}

static void close_listeners(server *s)
{
    for (int i = 0; i < s->nlisteners; i++) {
        if (!uv_is_closing((uv_handle_t *)&s->listeners[i].tcp))
            uv_close((uv_handle_t *)&s->listeners[i].tcp, NULL);
    }
}

static void on_handle_closed(uv_handle_t *h) { (void)h; }

static void on_shutdown_timeout(uv_timer_t *t)
{
    server *s = t->data;
    log_warn("shutdown: %zu connections still open after %u ms (--shutdown-timeout), closing them",
             s->nconns, s->cfg->shutdown_timeout_ms);
    server_drop_all(s);
}

void server_drop_all(server *s)
{
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        ws_drop(c);
    }
}

/* Stop accepting, close every WebSocket with 1001, and let the loop end
 * once every connection is gone. */
static void shut_down(server *s, int signum)
{
    log_info("signal %d: shutting down (%zu connections open)", signum, s->nconns);
    s->stopping = true;
    close_listeners(s);
    static const char reason[] = "server shutting down";
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (ws_is_open(c)) ws_close(c, WS_CLOSE_GOING_AWAY, reason, sizeof reason - 1);
        else if (c->state == CONN_HTTP) conn_linger(c);
        else if (client_is_connecting(c)) client_abandon(c, WS_CLOSE_GOING_AWAY, reason);
    }
    if (s->nconns == 0) {
        server_stop(s);
        return;
    }
    uv_timer_init(s->loop, &s->shutdown_timer);
    s->shutdown_timer.data = s;
    uv_timer_start(&s->shutdown_timer, on_shutdown_timeout, s->cfg->shutdown_timeout_ms, 0);
    uv_unref((uv_handle_t *)&s->shutdown_timer);
}

static void on_drained(uv_timer_t *t)
{
    server *s = t->data;
    uv_close((uv_handle_t *)t, NULL);
    if (!s->stopping) shut_down(s, s->drain_signal);
}

/* SIGTERM/SIGINT. With --drain-delay (default with --health): first drain,
 * serving on while /health answers 503 so that a load balancer stops
 * sending new connections here, then shut down. A second signal shuts
 * down at once (while draining) or exits (while shutting down). */
static void on_signal(uv_signal_t *sig, int signum)
{
    server *s = sig->data;
    if (s->stopping) {
        log_warn("second signal: exiting now");
        uv_stop(s->loop);
        return;
    }
    if (s->draining || !s->cfg->drain_delay_ms) {
        if (s->draining) uv_close((uv_handle_t *)&s->drain_timer, NULL);
        shut_down(s, signum);
        return;
    }
    log_info("signal %d: draining for %u ms (%s answers 503), then shutting down", signum,
             s->cfg->drain_delay_ms, s->cfg->health_path ? s->cfg->health_path : "no --health");
    s->draining = true;
    s->drain_signal = signum;
    uv_timer_init(s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    uv_timer_start(&s->drain_timer, on_drained, s->cfg->drain_delay_ms, 0);
}

/* ---- timeouts and pings, checked for every connection by one timer ---- */

static void check_conn(conn *c, uint64_t now)
{
    const config *cfg = c->srv->cfg;
    /* The HTTP phase's state lives from the first byte to the upgrade. */
    assert(c->http || (c->state != CONN_HTTP && c->state != CONN_CONNECTING && c->state != CONN_CLIENT_HANDSHAKE));
    char peer[ADDR_TEXT_MAX];
    if (c->state == CONN_HTTP && now >= c->http->deadline) {
        if (c->http->proxy) {
            /* Not even the PROXY header: there is nobody to answer. */
            log_warn("conn %llu from %s: no valid PROXY header (none complete within %u ms), closing",
                     (unsigned long long)c->id, conn_peer_text(c, peer), cfg->handshake_timeout_ms);
            conn_close_now(c);
            return;
        }
        if (c->tls && !tls_handshake_done(c->tls)) {
            /* No TLS yet: nothing can be answered. */
            log_warn("conn %llu from %s: TLS handshake not finished within %u ms, closing",
                     (unsigned long long)c->id, conn_peer_text(c, peer), cfg->handshake_timeout_ms);
            conn_close_now(c);
            return;
        }
        log_warn("conn %llu from %s: no complete request within %u ms, answering 408", (unsigned long long)c->id,
                 conn_peer_text(c, peer), cfg->handshake_timeout_ms);
        static const char body[] = "408 Request Timeout\n";
        conn_respond(c, 408, NULL, 0, body, sizeof body - 1, false);
        return;
    }
    if ((c->state == CONN_CONNECTING || c->state == CONN_CLIENT_HANDSHAKE) && now >= c->http->deadline) {
        client_failed(c, "timed out (--handshake-timeout)");
        return;
    }
    if (!ws_is_open(c) || !cfg->ping_interval_ms || c->instrument) return;
    /* Silent for an interval: ping. Still silent an interval after the
     * ping (not after the last byte: the loop may have been busy): cut.
     * Anything read or written clears ping_sent, so while it is set
     * last_seen is when the ping went out. */
    if (c->ping_sent && now - c->last_seen >= cfg->ping_interval_ms) {
        ws_abort(c, WS_CLOSE_ABNORMAL, "no answer to ping (--ping-interval), peer presumed dead");
    } else if (!c->ping_sent && now - c->last_seen >= cfg->ping_interval_ms) {
        c->ping_sent = true;
        c->last_seen = now;
        ws_send(c, WS_OP_PING, (const uint8_t *)"luaws", 5, NULL, NULL);
    }
}

/* What a burst of connections leaves behind goes back to the system: the
 * host's garbage by a full collection, then the heap's free memory
 * (malloc_trim). Two bursts qualify (SHRINK_AFTER connections or more):
 * - many have gone, and fewer than half of the peak are left: a worker
 *   that once held 10,000 connections otherwise keeps ~30 MB it no longer
 *   uses;
 * - many have come since the last time, and the worker has been quiet for a
 *   housekeeping tick: the handshakes' garbage (request strings, tables)
 *   that the incremental collector has not reached yet is freed while
 *   nothing waits, not counted as the connections' memory. */
#define SHRINK_AFTER 1000

static void shrink_after_bursts(server *s)
{
    bool quiet = s->activity == s->shrink_activity;
    s->shrink_activity = s->activity;
    bool gone = s->conns_peak >= s->nconns + SHRINK_AFTER && s->nconns < s->conns_peak / 2;
    bool came = quiet && s->nconns >= s->conns_settled + SHRINK_AFTER;
    if (!gone && !came) return;
    log_debug("%zu connections now, %zu at the peak, %zu before: memory given back", s->nconns, s->conns_peak,
              s->conns_settled);
    s->conns_peak = s->conns_settled = s->nconns;
    if (s->host->collect) s->host->collect(s->host_ud);
    malloc_trim(0);
}

static void on_housekeeping(wtimer *t)
{
    server *s = t->data;
    uint64_t now = server_now(s);
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        check_conn(c, now);
    }
    shrink_after_bursts(s);
}

static void housekeeping_start(server *s)
{
    const config *cfg = s->cfg;
    uint64_t tick = cfg->handshake_timeout_ms / 4;
    if (cfg->ping_interval_ms && cfg->ping_interval_ms / 4 < tick) tick = cfg->ping_interval_ms / 4;
    if (tick < 25) tick = 25;
    if (tick > 1000) tick = 1000;
    wtimer_init(&s->clock, &s->housekeeping);
    s->housekeeping.data = s;
    wtimer_start(&s->housekeeping, on_housekeeping, tick, tick);
    wtimer_unref(&s->housekeeping);
}

/* The last connection is gone: a stopping server may now end. */
static void on_empty(server *s)
{
    if (s->stopping) server_stop(s);
}

/* Closes the last handles so uv_run returns. */
void server_stop(server *s)
{
    reloader_stop(s->reloader);
    s->reloader = NULL;
    s->host->stop(s->host_ud);
    if (s->bus) {
        redis_bus_close(s->bus);
        s->bus = NULL;
    }
    local_bus_close(s->lbus);
    s->lbus = NULL;
    if (s->housekeeping.clock && !wtimer_is_closing(&s->housekeeping)) wtimer_close(&s->housekeeping, NULL);
    if (s->flush_check.loop && !uv_is_closing((uv_handle_t *)&s->flush_check)) {
        uv_close((uv_handle_t *)&s->flush_prepare, NULL);
        uv_close((uv_handle_t *)&s->flush_check, NULL);
        uv_close((uv_handle_t *)&s->flush_idle, NULL);
        conn_flush_end(s);
    }
    if (s->shutdown_timer.loop && !uv_is_closing((uv_handle_t *)&s->shutdown_timer))
        uv_close((uv_handle_t *)&s->shutdown_timer, NULL);
    if (s->sig_term.loop && !uv_is_closing((uv_handle_t *)&s->sig_term)) {
        uv_close((uv_handle_t *)&s->sig_term, on_handle_closed);
        uv_close((uv_handle_t *)&s->sig_int, on_handle_closed);
    }
    close_listeners(s);
}

/* Creates a TCP socket bound to host:port (port 0: the kernel picks one,
 * returned in *bound_port). With reuseport, other sockets (other workers)
 * may bind the same port. Returns the fd, or -1 with a message in err. */
int listen_socket(const char *host, int port, bool reuseport, bool do_listen, int *bound_port,
                  char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t alen;
    memset(&addr, 0, sizeof addr);
    if (strchr(host, ':')) {
        if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) < 0) goto bad_host;
        alen = sizeof(struct sockaddr_in6);
    } else {
        if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) < 0) goto bad_host;
        alen = sizeof(struct sockaddr_in);
    }
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, alen) < 0 || (do_listen && listen(fd, 1024) < 0)) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(fd, (struct sockaddr *)&bound, &blen);
    *bound_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    return fd;
bad_host:
    snprintf(err, errlen, "invalid host '%s' (give an IPv4 or IPv6 address)", host);
    return -1;
}

static int listener_start(server *s, listener *l, const listen_spec *spec, int fd)
{
    l->srv = s;
    snprintf(l->host, sizeof l->host, "%s", spec->host);
    l->port = spec->port;
    l->tls = spec->tls_ctx;
    l->proxy = spec->proxy;
    uv_tcp_init(s->loop, &l->tcp);
    l->tcp.data = l;
    int r = uv_tcp_open(&l->tcp, fd);
    if (r == 0) r = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection);
    if (r < 0) {
        log_error("cannot listen on %s:%d: %s", l->host, l->port, uv_strerror(r));
        return -1;
    }
    return 0;
}

void server_reload_tls(server *s)
{
    for (int i = 0; i < s->nlisteners; i++) {
        listener *l = &s->listeners[i];
        if (!l->tls) continue;
        char err[256];
        if (tls_server_reload(l->tls, err, sizeof err) == 0)
            log_info("TLS certificate and key reloaded for wss://%s:%d", l->host, l->port);
        else
            log_error("TLS reload failed, keeping the old certificate: %s", err);
    }
}

static int server_start(server *s, const int *fds)
{
    for (int i = 0; i < s->cfg->nlistens; i++) {
        s->nlisteners++;
        if (listener_start(s, &s->listeners[i], &s->cfg->listens[i], fds[i]) != 0) {
            for (int j = i + 1; j < s->cfg->nlistens; j++) close(fds[j]);
            return -1;
        }
    }
    uv_signal_init(s->loop, &s->sig_term);
    uv_signal_init(s->loop, &s->sig_int);
    s->sig_term.data = s->sig_int.data = s;
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    return 0;
}

static void on_bus_message(void *ud, const char *topic, size_t tlen, const uint8_t *payload, size_t len)
{
    server *s = ud;
    s->host->topic_message(s->host_ud, topic, tlen, payload, len);
}

/* The link to the main process's topic broker: straight to the host. */
static void on_local_message(void *ud, const char *topic, size_t tlen, uint8_t opcode, uint64_t except,
                             const uint8_t *data, size_t len)
{
    server *s = ud;
    s->host->topic_deliver(s->host_ud, topic, tlen, opcode, except, data, len);
}

static void on_local_count(void *ud, unsigned worker, const char *topic, size_t tlen, uint32_t count)
{
    server *s = ud;
    s->host->topic_count(s->host_ud, worker, topic, tlen, count);
}

static void on_local_gone(void *ud, unsigned worker)
{
    server *s = ud;
    s->host->topic_worker_gone(s->host_ud, worker);
}

static void on_local_resync(void *ud)
{
    server *s = ud;
    s->host->topic_resync(s->host_ud);
}

static const local_bus_cbs local_cbs = {on_local_message, on_local_count, on_local_gone, on_local_resync};

void log_startup(const config *cfg, int workers)
{
    char extra[32] = "";
    if (workers > 1) snprintf(extra, sizeof extra, ", %d workers", workers);
    for (int i = 0; i < cfg->nlistens; i++) {
        const listen_spec *l = &cfg->listens[i];
        const char *fmt = strchr(l->host, ':') ? "luaws listening on %s://[%s]:%d, script %s%s"
                                               : "luaws listening on %s://%s:%d, script %s%s";
        log_info(fmt, l->tls ? "wss" : "ws", l->host, l->port, cfg->script, extra);
    }
}

worker_slot *server_slots;
int server_nslots;
int server_broker_fd = -1;
uint32_t *server_ip_counts;

/* An active idle handle only makes the poll return at once. */
static void on_flush_idle(uv_idle_t *h) { (void)h; }

static void flush_pass(server *s)
{
    bool more = conn_flush_pass(s);
    if (more != (bool)uv_is_active((uv_handle_t *)&s->flush_idle)) {
        if (more)
            uv_idle_start(&s->flush_idle, on_flush_idle);
        else
            uv_idle_stop(&s->flush_idle);
    }
}

static void on_flush_prepare(uv_prepare_t *h) { flush_pass(h->data); }
static void on_flush_check(uv_check_t *h) { flush_pass(h->data); }

/* What connections are sent from timers, other sockets' events and
 * publishes goes out at the end of the loop iteration (conn_flush_pass; a
 * fan-out to thousands over a few iterations). The handles do not keep the
 * loop alive. */
static void flush_start(server *s)
{
    uv_prepare_init(s->loop, &s->flush_prepare);
    uv_check_init(s->loop, &s->flush_check);
    uv_idle_init(s->loop, &s->flush_idle);
    s->flush_prepare.data = s->flush_check.data = s->flush_idle.data = s;
    uv_prepare_start(&s->flush_prepare, on_flush_prepare);
    uv_check_start(&s->flush_check, on_flush_check);
    uv_unref((uv_handle_t *)&s->flush_prepare);
    uv_unref((uv_handle_t *)&s->flush_check);
    uv_unref((uv_handle_t *)&s->flush_idle);
}

/* What a worker and a test run share: the loop, the clock, deflate, the
 * host. Returns false (logged) if the host cannot be created. */
static bool server_init(server *s, const config *cfg, const host_ops *host, const char *script, bool manual_clock)
{
    s->cfg = cfg;
    s->loop = uv_default_loop();
    wclock_init(&s->clock, s->loop, manual_clock);
    flush_start(s);
    pmd_worker_init(&s->pmd, cfg->deflate, cfg->deflate_level, cfg->deflate_min);
    if (!s->metrics) s->metrics = &s->own_metrics;
    s->wss_cfg = (wss_config){cfg->max_message, cfg->deflate_min, &s->pmd, &s->metrics->ws, &s->buffered_total};
    s->host = host;
    s->on_empty = on_empty;
    char *err = NULL;
    s->host_ud = host->create(s, script, &err);
    if (!s->host_ud) {
        log_error("cannot load %s: %s", script ? script : "the test runner", err);
        free(err);
        pmd_worker_free(&s->pmd);
        return false;
    }
    return true;
}

int server_test(const config *cfg, const host_ops *host, int (*run)(void *host_ud, int argc, char **argv),
                int argc, char **argv)
{
    static server srv;
    server *s = &srv;
    s->id_step = 1;
    /* Test connections come from two listeners that never listen: the
     * server under test, and the fake remotes of luaws.connect. */
    for (int i = 0; i < 2; i++) {
        s->listeners[i].srv = s;
        s->listeners[i].port = 80;
        s->listeners[i].host_tag = i;
        snprintf(s->listeners[i].host, sizeof s->listeners[i].host, "%s", i ? "remote.test" : "luaws.test");
    }
    if (!server_init(s, cfg, host, NULL, true)) return 1;
    housekeeping_start(s);
    int code = run(s->host_ud, argc, argv);
    /* Whatever the specs left open is dropped; then the loop ends. */
    s->stopping = true;
    server_drop_all(s);
    server_stop(s);
    uv_run(s->loop, UV_RUN_DEFAULT);
    host->destroy(s->host_ud);
    pmd_worker_free(&s->pmd);
    uv_loop_close(s->loop);
    return code;
}

int server_run(const config *cfg, const host_ops *host, const int *fds, int worker, int nworkers, bool watch,
               int ready_fd)
{
    /* Big (the shared read buffer): static, one per process. */
    static server srv;
    server *s = &srv;
    s->id_base = (uint64_t)worker;
    s->id_step = (uint64_t)nworkers;
    if (server_slots) {
        s->slots = server_slots;
        s->nslots = server_nslots;
        s->slot = &server_slots[worker];
        s->metrics = &s->slot->metrics;
        if (cfg->script_timeout_ms) s->beat = &s->slot->beat;
    }
    if (cfg->max_conns_per_ip) {
        /* Under --workers N the main process shares one table; alone, our own. */
        s->ip_counts = server_ip_counts ? server_ip_counts : xcalloc(IP_BUCKETS * sizeof *s->ip_counts);
        s->ip_cols = server_ip_counts ? nworkers : 1;
        s->ip_col = server_ip_counts ? worker : 0;
    }
    /* Before the script loads: what it publishes at load time, or from
     * a timer it starts, already goes to every worker. */
    if (server_broker_fd >= 0) {
        s->loop = uv_default_loop();
        s->lbus = local_bus_new(s->loop, server_broker_fd, (unsigned)worker, &local_cbs, s);
        server_broker_fd = -1;
    }
    /* The loop first: a script may start timers while it loads. */
    if (!server_init(s, cfg, host, cfg->script, false)) {
        for (int i = 0; i < cfg->nlistens; i++) close(fds[i]);
        return 1;
    }
    int code = 0;
    if (server_start(s, fds) != 0) {
        code = 1;
        close_listeners(s);
        uv_run(s->loop, UV_RUN_NOWAIT);
        goto done;
    }
    s->reloader = reloader_start(s, watch);
    if (cfg->redis_url) {
        char rerr[256];
        s->bus = redis_bus_new(s->loop, cfg->redis_url, on_bus_message, s, rerr, sizeof rerr);
        if (!s->bus) {
            log_error("--redis: %s", rerr);
            code = 1;
            server_stop(s);
            uv_run(s->loop, UV_RUN_DEFAULT);
            goto done;
        }
    }
    housekeeping_start(s);
    if (nworkers == 1) log_startup(cfg, 1);
    if (ready_fd >= 0) {
        (void)!write(ready_fd, "r", 1);
        close(ready_fd);
    }
    uv_run(s->loop, UV_RUN_DEFAULT);
done:
    host->destroy(s->host_ud);
    pmd_worker_free(&s->pmd);
    uv_loop_close(s->loop);
    if (s->ip_counts != server_ip_counts) free(s->ip_counts);
    s->ip_counts = NULL;
    return code;
}
