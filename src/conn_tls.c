/* conn_tls.c — TLS as a layer under a connection (conn_io): records in,
 * cleartext up through conn_feed_input, cleartext down as records. The
 * engine itself (OpenSSL over memory BIOs) is tls.c; conn.c knows nothing
 * of TLS beyond calling c->io. */
#include "conn.h"
#include "server.h"
#include "log.h"
#include <string.h>

/* Sends what the TLS engine has for the socket; done rides on the last piece. */
static int tls_flush(conn *c, write_done_fn done, void *ud)
{
    const uint8_t *p;
    size_t n;
    int r = 0;
    while ((n = tls_pending_out(c->tls, &p)) > 0) {
        r = conn_raw_write(c, p, n, NULL, NULL);
        tls_consume_out(c->tls, n);
        if (r < 0) break;
    }
    if (done) {
        /* Tell the sender once the kernel has taken everything so far. */
        if (r == 0) r = conn_raw_write(c, (const uint8_t *)"", 0, done, ud);
        else done(ud, r);
    }
    return r;
}

static void tls_failed(conn *c, int r)
{
    if (r == TLS_ERR_PLAIN_HTTP) {
        static const char resp[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                                   "Content-Length: 46\r\nConnection: close\r\n\r\n"
                                   "This port speaks TLS: use https:// or wss://.\n";
        char peer[ADDR_TEXT_MAX];
        log_warn("conn %llu from %s: plain HTTP on the TLS port", (unsigned long long)c->id, conn_peer_text(c, peer));
        conn_raw_write(c, (const uint8_t *)resp, sizeof resp - 1, NULL, NULL);
    } else if (r == TLS_CLOSED) {
        log_debug("conn %llu: TLS close_notify from the peer", (unsigned long long)c->id);
    } else {
        char peer[ADDR_TEXT_MAX];
        log_warn("conn %llu from %s: TLS error: %s", (unsigned long long)c->id, conn_peer_text(c, peer),
                 tls_error(c->tls));
        tls_flush(c, NULL, NULL);   /* the alert, if any */
    }
    c->phase->lost(c, *tls_error(c->tls) ? tls_error(c->tls) : "TLS closed by the peer");
    if (!conn_is_finished(c)) conn_linger(c);
}

/* Decrypts and processes what the TLS engine holds, until paused. */
static void tls_drain(conn *c)
{
    uint8_t *buf = (uint8_t *)c->srv->plainbuf;
    while (!c->paused && !conn_is_dead(c)) {
        ssize_t n = tls_read(c->tls, buf, sizeof c->srv->plainbuf);
        if (n == 0) break;
        if (n < 0) {
            tls_failed(c, (int)n);
            return;
        }
        if (!c->tls_logged) {
            char desc[160];
            const char *sni = tls_servername(c->tls);
            c->tls_logged = true;
            log_debug("conn %llu: %s%s%s", (unsigned long long)c->id, tls_describe(c->tls, desc, sizeof desc),
                      sni ? " sni=" : "", sni ? sni : "");
        }
        if (conn_is_finished(c)) continue;
        conn_feed_input(c, buf, (size_t)n);
    }
    /* luaws.connect over TLS: the upgrade request waits for the handshake. */
    if (c->phase->secured && !conn_is_finished(c) && tls_handshake_done(c->tls)) c->phase->secured(c);
    if (!conn_is_dead(c)) tls_flush(c, NULL, NULL);
}


/* conn_io.input: records from the socket. */
static void tls_input(conn *c, uint8_t *data, size_t n)
{
    /* After a failure (or once closed) input is only drained: feeding a
     * failed session again would log the same error for every read. */
    if (conn_is_finished(c)) return;
    int r = tls_feed(c->tls, data, n);
    if (r < 0) tls_failed(c, r);
    else tls_drain(c);
}

/* conn_io.writev: the buffers go out in records of up to 16 KiB, TLS's
 * largest: small frames (a batch of them) share a record, as they would
 * share a TCP segment; a large buffer is a record (or several) of its own. */
static int tls_writev(conn *c, const uv_buf_t *bufs, unsigned nbufs, write_done_fn done, void *ud)
{
    if (conn_is_dead(c)) {
        if (done) done(ud, UV_EPIPE);
        return UV_EPIPE;
    }
    uint8_t rec[16 * 1024];
    size_t fill = 0;
    int r = 0;
    for (unsigned i = 0; i < nbufs && r == 0; i++) {
        const uint8_t *p = (const uint8_t *)bufs[i].base;
        size_t n = bufs[i].len;
        if (fill && fill + n > sizeof rec) {
            r = tls_write(c->tls, rec, fill);
            fill = 0;
        }
        if (r == 0 && n >= sizeof rec) {
            r = tls_write(c->tls, p, n);
        } else if (r == 0 && n) {
            memcpy(rec + fill, p, n);
            fill += n;
        }
    }
    if (r == 0 && fill) r = tls_write(c->tls, rec, fill);
    if (r < 0) {
        if (done) done(ud, UV_EPROTO);
        return UV_EPROTO;
    }
    return tls_flush(c, done, ud);
}

/* conn_io.shutdown: close_notify before our FIN. */
static void tls_shutdown(conn *c)
{
    if (tls_close_notify(c->tls) == 0) tls_flush(c, NULL, NULL);
}

static void tls_release(conn *c)
{
    tls_conn_free(c->tls);
    c->tls = NULL;
}

static const conn_io tls_io = {
    .input = tls_input,
    .writev = tls_writev,
    .resume = tls_drain,
    .shutdown = tls_shutdown,
    .release = tls_release,
    .raw = false,
};

void conn_tls_attach(conn *c, tls_conn *t)
{
    c->tls = t;
    c->io = &tls_io;
}

void conn_tls_flush(conn *c) { tls_flush(c, NULL, NULL); }
