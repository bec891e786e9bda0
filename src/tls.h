/* tls.h — TLS on OpenSSL, free of I/O: the caller moves bytes between the
 * socket and these buffers, so nothing here knows about libuv or sockets.
 *
 * Policy: TLS 1.2 and 1.3 only; ECDHE + AEAD suites for 1.2 (configurable),
 * OpenSSL's default 1.3 suites; ALPN "http/1.1" chosen when offered, no ALPN
 * otherwise; any SNI name accepted; resumption by session tickets only (no
 * server-side session cache); renegotiation refused and the connection ended.
 *
 * Pumping a connection:
 *   socket read  -> tls_feed(), then tls_read() until it returns 0 (or < 0),
 *                   then flush tls_pending_out() — the handshake answers and
 *                   TLS 1.3 session tickets are produced by tls_read();
 *   to send      -> tls_write(), then flush tls_pending_out();
 *   flush        -> while (n = tls_pending_out(c, &p)) { copy p,n out; tls_consume_out(c, n); }
 * After an error, flush once more (it may hold an alert) and close. */
#ifndef LUAWS_TLS_H
#define LUAWS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What tls_read / tls_feed / tls_write return besides bytes and 0. */
enum {
    TLS_CLOSED = -1,          /* the peer sent close_notify: a clean end of input */
    TLS_ERR = -2,             /* handshake or protocol failure; see tls_error() */
    TLS_ERR_PLAIN_HTTP = -3,  /* the first bytes were plain text: HTTP on the TLS port */
};

typedef struct tls_server tls_server;   /* per listener and worker: the SSL_CTX */
typedef struct tls_conn tls_conn;       /* per connection */

/* Loads a PEM certificate chain (leaf first, then intermediates) and its
 * unencrypted PEM private key, which must match the leaf. ciphers is an
 * OpenSSL cipher string for TLS 1.2 (NULL or "": ECDHE with AES-GCM or
 * ChaCha20-Poly1305); TLS 1.3 suites are OpenSSL's defaults. Returns NULL
 * with a message in err. */
tls_server *tls_server_new(const char *cert_file, const char *key_file, const char *ciphers,
                           char *err, size_t errlen);
/* Re-reads the certificate and key (SIGHUP). New handshakes use them; live
 * connections keep theirs; session tickets issued before stay valid. On
 * failure nothing changes. Returns 0, or -1 with a message in err. */
int tls_server_reload(tls_server *s, char *err, size_t errlen);
/* Drops the owner's reference: the server goes away with its last tls_conn. */
void tls_server_free(tls_server *s);

/* A new server-side connection (NULL if OpenSSL is out of memory); it
 * holds a reference to s. */
tls_conn *tls_conn_new(tls_server *s);
void tls_conn_free(tls_conn *c);

/* Hands over bytes read from the socket (copied: the buffer can be reused at
 * once, even as tls_read's output). Returns 0, or the error that already
 * ended the connection. */
int tls_feed(tls_conn *c, const uint8_t *data, size_t len);
/* Decrypts into buf: returns bytes (> 0), 0 when more input is needed, or
 * TLS_CLOSED / TLS_ERR / TLS_ERR_PLAIN_HTTP. Drives the handshake. Input
 * fed earlier can still be waiting: after a pause, call it before reading
 * the socket again. Errors are sticky. */
ssize_t tls_read(tls_conn *c, uint8_t *buf, size_t len);
/* Encrypts all of data into the output (only once the handshake is done).
 * Returns 0 or TLS_ERR. */
int tls_write(tls_conn *c, const uint8_t *data, size_t len);
/* Queues close_notify, once: flush, then close the socket. Before the
 * handshake completes or after an error there is nothing to send. Returns 0
 * or TLS_ERR. */
int tls_close_notify(tls_conn *c);

/* Encrypted bytes waiting for the socket: sets *data, returns their count. */
size_t tls_pending_out(tls_conn *c, const uint8_t **data);
/* n of them were taken (copied out); at most what tls_pending_out returned. */
void tls_consume_out(tls_conn *c, size_t n);

bool tls_handshake_done(const tls_conn *c);

/* Client side (luaws.connect to wss://): a context that verifies servers
 * against ca_file (NULL: the system's CA store), or not at all. */
tls_server *tls_client_ctx_new(const char *ca_file, bool verify, char *err, size_t errlen);
/* A connection to host (sent as SNI, and checked against the certificate). */
tls_conn *tls_client_new(tls_server *s, const char *host);
/* Queues the ClientHello: flush tls_pending_out, then feed and read as usual. */
int tls_start(tls_conn *c);
/* Why the connection failed, for the log ("" if it did not). */
const char *tls_error(const tls_conn *c);
/* The SNI host name the client sent: NULL if none, "(unprintable)" if it
 * holds bytes other than printable ASCII, so it is safe to log as is. */
const char *tls_servername(const tls_conn *c);
/* One line for the log: "TLSv1.3 TLS_AES_128_GCM_SHA256 alpn=http/1.1 resumed". */
const char *tls_describe(const tls_conn *c, char *buf, size_t size);

#endif
