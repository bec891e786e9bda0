/* server.c — the listening socket, accepting, and stopping on a signal. */
#include "server.h"
#include "lua_api.h"
#include "log.h"
#include "reload.h"
#include <stdio.h>
#include <string.h>

static void on_connection(uv_stream_t *listener, int status)
{
    server *s = listener->data;
    if (status < 0) {
        log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    conn_accept(s);
}

static void on_handle_closed(uv_handle_t *h) { (void)h; }

/* SIGTERM/SIGINT: stop accepting, close every WebSocket with 1001, and let
 * the loop end once every connection is gone. */
static void on_signal(uv_signal_t *sig, int signum)
{
    server *s = sig->data;
    if (s->stopping) {
        log_warn("second signal: exiting now");
        uv_stop(s->loop);
        return;
    }
    log_info("signal %d: shutting down (%zu connections open)", signum, s->nconns);
    s->stopping = true;
    uv_close((uv_handle_t *)&s->listener, on_handle_closed);
    static const char reason[] = "server shutting down";
    for (conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_WS) ws_close(c, WS_CLOSE_GOING_AWAY, reason, sizeof reason - 1);
        else if (c->state == CONN_HTTP) conn_close_now(c);
    }
    if (s->nconns == 0) server_stop(s);
}

/* Closes the last handles so uv_run returns. */
void server_stop(server *s)
{
    reloader_stop(s->reloader);
    s->reloader = NULL;
    if (!uv_is_closing((uv_handle_t *)&s->sig_term)) {
        uv_close((uv_handle_t *)&s->sig_term, on_handle_closed);
        uv_close((uv_handle_t *)&s->sig_int, on_handle_closed);
    }
    if (!uv_is_closing((uv_handle_t *)&s->listener)) uv_close((uv_handle_t *)&s->listener, on_handle_closed);
}

int server_start(server *s, uv_loop_t *loop, const config *cfg, lua_host *lua)
{
    struct sockaddr_storage addr;
    int r;
    s->loop = loop;
    s->cfg = cfg;
    s->lua = lua;
    pmd_worker_init(&s->pmd, cfg->deflate, cfg->deflate_level, cfg->deflate_min);
    if (strchr(cfg->host, ':')) r = uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr);
    else r = uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr);
    if (r < 0) {
        fprintf(stderr, "luaws: invalid host '%s'\n", cfg->host);
        return -1;
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    r = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
    if (r == 0) r = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    if (r < 0) {
        fprintf(stderr, "luaws: cannot listen on %s:%d: %s\n", cfg->host, cfg->port, uv_strerror(r));
        uv_close((uv_handle_t *)&s->listener, NULL);
        return -1;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    if (bound.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&bound, s->bound_host, sizeof s->bound_host);
        s->bound_port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&bound, s->bound_host, sizeof s->bound_host);
        s->bound_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    }
    uv_signal_init(loop, &s->sig_term);
    uv_signal_init(loop, &s->sig_int);
    s->sig_term.data = s->sig_int.data = s;
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    const char *fmt = strchr(s->bound_host, ':') ? "luaws listening on ws://[%s]:%d, script %s"
                                                 : "luaws listening on ws://%s:%d, script %s";
    log_info(fmt, s->bound_host, s->bound_port, cfg->script);
    return 0;
}
