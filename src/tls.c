/* tls.c — TLS on OpenSSL with in-memory transport; see tls.h.
 *
 * Each SSL talks to one BIO of our own rather than a pair of BIO_s_mem: a
 * mem BIO keeps its high-water allocation forever and cannot hand out its
 * bytes without copying them. Ours reads from the bytes tls_feed copied in
 * and appends what OpenSSL writes to an output buffer the caller drains in
 * place; both are freed as soon as they are empty, and SSL_MODE_RELEASE_BUFFERS
 * does the same for OpenSSL's record buffers, so an idle connection holds
 * only its cipher state. */
#include "tls.h"
#include "xalloc.h"
#include "bytes.h"
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Mozilla's "intermediate" TLS 1.2 list without DHE: forward secrecy and
 * AEAD only. */
#define DEFAULT_CIPHERS \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

struct tls_server {
    SSL_CTX *ctx;             /* replaced by a reload; SSLs keep their own reference */
    BIO_METHOD *bio_method;   /* the transport every tls_conn's BIO uses */
    char *cert_file, *key_file, *ciphers;
    unsigned refs;            /* the owner's, plus one per tls_conn (they use bio_method) */
};

struct tls_conn {
    tls_server *srv;
    SSL *ssl;
    bytes in;                 /* fed, not yet taken by OpenSSL: from in_off on */
    size_t in_off;
    bytes out;                /* written by OpenSSL, not yet consumed: from out_off on */
    size_t out_off;
    const char *err;          /* static text; set once the connection failed */
    int err_code;             /* what every later call returns */
    bool started;             /* the first byte has been seen */
    bool client;              /* we connected out (luaws.connect) */
    bool renegotiation;       /* the client tried to renegotiate */
};

/* ---- buffers: a consumed prefix [0, off) and the rest ---- */

static void buf_release(bytes *b, size_t *off)
{
    free(b->data);
    memset(b, 0, sizeof *b);
    *off = 0;
}

static void buf_append(bytes *b, size_t *off, const uint8_t *data, size_t len)
{
    if (len == 0) return;
    if (*off > 0) {   /* slide what is left to the front before growing */
        memmove(b->data, b->data + *off, b->len - *off);
        b->len -= *off;
        *off = 0;
    }
    if (len > b->cap - b->len) {
        if (len > SIZE_MAX / 2 - b->len) abort();
        size_t cap = b->cap * 2;
        if (cap < b->len + len) cap = b->len + len;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

/* ---- the BIO between OpenSSL and those buffers ---- */

static int bio_read(BIO *bio, char *out, size_t outl, size_t *readbytes)
{
    tls_conn *c = BIO_get_data(bio);
    size_t avail = c->in.len - c->in_off;
    BIO_clear_retry_flags(bio);
    *readbytes = 0;
    if (avail == 0) {   /* not the end: more may come from the socket */
        BIO_set_retry_read(bio);
        return 0;
    }
    size_t n = outl < avail ? outl : avail;
    memcpy(out, c->in.data + c->in_off, n);
    c->in_off += n;
    if (c->in_off == c->in.len) buf_release(&c->in, &c->in_off);
    *readbytes = n;
    return 1;
}

static int bio_write(BIO *bio, const char *data, size_t len, size_t *written)
{
    tls_conn *c = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    buf_append(&c->out, &c->out_off, (const uint8_t *)data, len);
    *written = len;
    return 1;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    tls_conn *c = BIO_get_data(bio);
    (void)num, (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:      /* nothing is held back here: the caller flushes */
        return 1;
    case BIO_CTRL_PENDING:
        return (long)(c->in.len - c->in_off);
    case BIO_CTRL_WPENDING:
        return (long)(c->out.len - c->out_off);
    default:
        return 0;
    }
}

static BIO_METHOD *bio_method_new(void)
{
    /* The type only matters to BIO_find_type, which nothing calls on it. */
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "luaws tls transport");
    if (m && BIO_meth_set_read_ex(m, bio_read) && BIO_meth_set_write_ex(m, bio_write)
        && BIO_meth_set_ctrl(m, bio_ctrl))
        return m;
    BIO_meth_free(m);
    return NULL;
}

/* ---- OpenSSL callbacks ---- */

/* Any name is fine: there is one certificate. Returning OK (rather than
 * having no callback) makes OpenSSL acknowledge the name and keep it for
 * SSL_get_servername, so nothing is copied here. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    (void)ssl, (void)alert, (void)arg;
    return SSL_TLSEXT_ERR_OK;
}

/* Picks http/1.1 from the client's list (length-prefixed names). Without
 * it, no ALPN: the handshake goes on and the HTTP parser has the last word. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl, (void)arg;
    unsigned i = 0;
    while (i < inlen) {
        unsigned n = in[i++];
        if (n > inlen - i) break;
        if (n == 8 && memcmp(in + i, "http/1.1", 8) == 0) {
            *out = in + i;    /* OpenSSL copies it */
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* SSL_OP_NO_RENEGOTIATION answers a renegotiating ClientHello with a
 * warning alert and carries on; noting the alert lets tls_read end it. */
static void on_info(const SSL *ssl, int where, int ret)
{
    if ((where & SSL_CB_WRITE_ALERT) && (ret & 0xff) == SSL_AD_NO_RENEGOTIATION) {
        tls_conn *c = SSL_get_app_data(ssl);
        if (c) c->renegotiation = true;
    }
}

/* A server cannot answer a passphrase prompt: encrypted keys fail to load. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* ---- the context ---- */

/* The root cause in OpenSSL's error queue, which is then cleared. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_error();
    const char *r = NULL;
    if (ERR_SYSTEM_ERROR(e))
        r = strerror(ERR_GET_REASON(e));
    else if (e)
        r = ERR_reason_error_string(e);
    ERR_clear_error();
    return r ? r : "unknown error";
}

/* OpenSSL's reasons for a file that opens but holds no usable key ("unsupported",
 * "interrupted or cancelled" for a passphrase) say little: ours says what is wanted. */
static EVP_PKEY *read_key(const char *path, char *err, size_t errlen)
{
    BIO *b = BIO_new_file(path, "r");
    if (!b) {
        snprintf(err, errlen, "cannot read private key %s: %s", path, ssl_reason());
        return NULL;
    }
    EVP_PKEY *key = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (!key) {
        ERR_clear_error();
        snprintf(err, errlen, "cannot read private key %s: no unencrypted PEM private key in it", path);
    }
    return key;
}

/* A complete context from the files, or NULL with err set. Ticket keys come
 * from old when given, so tickets survive a reload (and stay shared between
 * workers that inherited them). */
static SSL_CTX *ctx_new(const tls_server *s, SSL_CTX *old, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ssl_reason());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Resumption is by tickets: no per-session state kept on the server. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    SSL_CTX_set_info_callback(ctx, on_info);

    EVP_PKEY *key = NULL;
    if (!SSL_CTX_set_cipher_list(ctx, s->ciphers)) {
        ERR_clear_error();
        snprintf(err, errlen, "no usable TLS 1.2 cipher in \"%s\"", s->ciphers);
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, s->cert_file) != 1) {
        snprintf(err, errlen, "cannot read certificate chain %s: %s", s->cert_file, ssl_reason());
        goto fail;
    }
    if (!(key = read_key(s->key_file, err, errlen))) goto fail;
    if (!X509_check_private_key(SSL_CTX_get0_certificate(ctx), key)) {
        ERR_clear_error();
        snprintf(err, errlen, "private key %s does not match certificate %s",
                 s->key_file, s->cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "cannot use private key %s: %s", s->key_file, ssl_reason());
        goto fail;
    }
    EVP_PKEY_free(key);

    if (old) {
        unsigned char keys[128];
        long n = SSL_CTX_get_tlsext_ticket_keys(old, NULL, 0);
        if (n > 0 && (size_t)n <= sizeof keys
            && SSL_CTX_get_tlsext_ticket_keys(old, keys, n) == 1)
            SSL_CTX_set_tlsext_ticket_keys(ctx, keys, n);
        OPENSSL_cleanse(keys, sizeof keys);
        ERR_clear_error();
    }
    return ctx;

fail:
    EVP_PKEY_free(key);
    SSL_CTX_free(ctx);
    return NULL;
}

static void server_unref(tls_server *s)
{
    if (--s->refs > 0) return;
    SSL_CTX_free(s->ctx);
    BIO_meth_free(s->bio_method);
    free(s->cert_file);
    free(s->key_file);
    free(s->ciphers);
    free(s);
}

tls_server *tls_server_new(const char *cert_file, const char *key_file, const char *ciphers,
                           char *err, size_t errlen)
{
    tls_server *s = xmalloc(sizeof *s);
    memset(s, 0, sizeof *s);
    s->refs = 1;
    s->cert_file = xstrdup(cert_file);
    s->key_file = xstrdup(key_file);
    s->ciphers = xstrdup(ciphers && *ciphers ? ciphers : DEFAULT_CIPHERS);
    if (!(s->bio_method = bio_method_new())) {
        snprintf(err, errlen, "cannot create the TLS transport");
        server_unref(s);
        return NULL;
    }
    if (!(s->ctx = ctx_new(s, NULL, err, errlen))) {
        server_unref(s);
        return NULL;
    }
    return s;
}

int tls_server_reload(tls_server *s, char *err, size_t errlen)
{
    SSL_CTX *ctx = ctx_new(s, s->ctx, err, errlen);
    if (!ctx) return -1;
    SSL_CTX_free(s->ctx);
    s->ctx = ctx;
    return 0;
}

void tls_server_free(tls_server *s)
{
    if (s) server_unref(s);
}

/* ---- the client side (luaws.connect to wss://) ---- */

static int fail_ssl(tls_conn *c);

tls_server *tls_client_ctx_new(const char *ca_file, bool verify, char *err, size_t errlen)
{
    tls_server *s = xmalloc(sizeof *s);
    memset(s, 0, sizeof *s);
    s->refs = 1;
    if (!(s->bio_method = bio_method_new())) {
        snprintf(err, errlen, "cannot create the TLS transport");
        server_unref(s);
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = s->ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ssl_reason());
        server_unref(s);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                         : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            snprintf(err, errlen, "cannot load CA certificates%s%s: %s", ca_file ? " from " : "",
                     ca_file ? ca_file : "", ssl_reason());
            server_unref(s);
            return NULL;
        }
    }
    return s;
}

tls_conn *tls_client_new(tls_server *s, const char *host)
{
    tls_conn *c = tls_conn_new(s);
    if (!c) return NULL;
    c->client = true;
    SSL_set_connect_state(c->ssl);
    /* An IP address is checked as one; a name is also sent as SNI. */
    X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1) {
        ERR_clear_error();
        SSL_set_tlsext_host_name(c->ssl, host);
        SSL_set1_host(c->ssl, host);
    }
    return c;
}

int tls_start(tls_conn *c)
{
    ERR_clear_error();
    if (SSL_do_handshake(c->ssl) == 1) return 0;
    int e = SSL_get_error(c->ssl, 0);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : fail_ssl(c);
}

/* ---- connections ---- */

tls_conn *tls_conn_new(tls_server *s)
{
    tls_conn *c = xmalloc(sizeof *c);
    memset(c, 0, sizeof *c);
    c->ssl = SSL_new(s->ctx);
    BIO *bio = BIO_new(s->bio_method);
    if (!c->ssl || !bio) {
        ERR_clear_error();
        BIO_free(bio);
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    BIO_set_data(bio, c);
    BIO_set_init(bio, 1);
    SSL_set_bio(c->ssl, bio, bio);   /* one BIO both ways; the SSL owns it */
    SSL_set_app_data(c->ssl, c);
    SSL_set_accept_state(c->ssl);
    c->srv = s;
    s->refs++;
    return c;
}

void tls_conn_free(tls_conn *c)
{
    if (!c) return;
    SSL_free(c->ssl);
    buf_release(&c->in, &c->in_off);
    buf_release(&c->out, &c->out_off);
    server_unref(c->srv);
    free(c);
}

static int fail(tls_conn *c, int code, const char *why)
{
    c->err = why;
    c->err_code = code;
    return code;
}

static int fail_ssl(tls_conn *c)
{
    return fail(c, TLS_ERR, ssl_reason());
}

int tls_feed(tls_conn *c, const uint8_t *data, size_t len)
{
    if (c->err) return c->err_code;
    if (len == 0) return 0;
    if (!c->started && !c->client) {
        c->started = true;
        /* A TLS record starts with a content type (20..24), an SSLv2 hello
         * with the high bit set; a capital letter is text: an HTTP method. */
        if (data[0] >= 'A' && data[0] <= 'Z')
            return fail(c, TLS_ERR_PLAIN_HTTP, "plain HTTP on the TLS port");
    }
    buf_append(&c->in, &c->in_off, data, len);
    return 0;
}

ssize_t tls_read(tls_conn *c, uint8_t *buf, size_t len)
{
    if (c->err) return c->err_code;
    size_t n = 0;
    ERR_clear_error();
    int ok = SSL_read_ex(c->ssl, buf, len, &n);
    if (c->renegotiation) {
        ERR_clear_error();
        return fail(c, TLS_ERR, "client attempted renegotiation");
    }
    if (ok) return (ssize_t)n;
    switch (SSL_get_error(c->ssl, 0)) {
    case SSL_ERROR_WANT_READ:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_CLOSED;
    default:
        return fail_ssl(c);
    }
}

int tls_write(tls_conn *c, const uint8_t *data, size_t len)
{
    if (c->err) return TLS_ERR;
    /* Writing during the handshake would need input we do not have. */
    if (!SSL_is_init_finished(c->ssl)) return fail(c, TLS_ERR, "write before the handshake completed");
    if (len == 0) return 0;
    size_t n;
    ERR_clear_error();
    /* The BIO takes everything, so SSL_write_ex either writes all or fails. */
    if (!SSL_write_ex(c->ssl, data, len, &n)) return fail_ssl(c);
    return 0;
}

int tls_close_notify(tls_conn *c)
{
    /* After a fatal error OpenSSL must not be asked to shut down; before
     * the handshake completes there is no session to close. */
    if (c->err || !SSL_is_init_finished(c->ssl) || (SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN))
        return 0;
    ERR_clear_error();
    if (SSL_shutdown(c->ssl) < 0) return fail_ssl(c);
    return 0;
}

size_t tls_pending_out(tls_conn *c, const uint8_t **data)
{
    size_t n = c->out.len - c->out_off;
    *data = n ? c->out.data + c->out_off : NULL;
    return n;
}

void tls_consume_out(tls_conn *c, size_t n)
{
    size_t avail = c->out.len - c->out_off;
    c->out_off += n < avail ? n : avail;
    if (c->out_off == c->out.len) buf_release(&c->out, &c->out_off);
}

bool tls_handshake_done(const tls_conn *c)
{
    return SSL_is_init_finished(c->ssl);
}

const char *tls_error(const tls_conn *c)
{
    return c->err ? c->err : "";
}

const char *tls_servername(const tls_conn *c)
{
    const char *name = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    if (!name) return NULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x21 || *p > 0x7e) return "(unprintable)";
    return name;
}

const char *tls_describe(const tls_conn *c, char *buf, size_t size)
{
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
    snprintf(buf, size, "%s %s%s%.*s%s", SSL_get_version(c->ssl),
             SSL_get_cipher_name(c->ssl), alpn_len ? " alpn=" : "",
             (int)alpn_len, alpn ? (const char *)alpn : "",
             SSL_session_reused(c->ssl) ? " resumed" : "");
    return buf;
}
