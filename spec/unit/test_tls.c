/* test_tls.c — src/tls.c against an OpenSSL client, both in memory.
 *
 * A throwaway root CA, intermediate and server certificates are made with
 * the openssl CLI in a temporary directory; the client trusts only the root,
 * so every handshake also proves the chain file is sent whole.
 * Build and run: spec/unit/build_tls.sh [valgrind|asan] */
#include "tls.h"
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void check(bool ok, const char *what)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL: %s\n", what);
    }
}

/* ---- files ---- */

static char dir[64];

static const char *path(const char *name)
{
    static char buf[8][256];   /* a few paths alive at once */
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

static void copy_file(const char *from, const char *to)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path(from), path(to));
    if (system(cmd) != 0) abort();
}

static bool make_certs(void)
{
    static const char script[] =
        "set -e; cd '%s'\n"
        "ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1 2>/dev/null; }\n"
        "ec ca.key; ec int.key; ec srv1.key; ec other.key\n"
        "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out srv2.key 2>/dev/null\n"
        "openssl req -x509 -new -key ca.key -subj /CN=luaws-test-root -days 2 -out ca.pem"
        "  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign\n"
        "printf 'basicConstraints=critical,CA:TRUE,pathlen:0\\nkeyUsage=critical,keyCertSign,cRLSign\\n' > ca.ext\n"
        "printf 'subjectAltName=DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > leaf.ext\n"
        "openssl req -new -key int.key -subj /CN=luaws-test-intermediate -out int.csr\n"
        "openssl x509 -req -in int.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        "  -extfile ca.ext -out int.pem 2>/dev/null\n"
        "for n in 1 2; do\n"
        "  openssl req -new -key srv$n.key -subj /CN=luaws-test-$n -out srv$n.csr\n"
        "  openssl x509 -req -in srv$n.csr -CA int.pem -CAkey int.key -CAcreateserial -days 2"
        "    -extfile leaf.ext -out srv$n.pem 2>/dev/null\n"
        "  cat srv$n.pem int.pem > chain$n.pem\n"
        "done\n"
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes-128-cbc -pass pass:x -out enc.key 2>/dev/null\n"
        "echo 'not a certificate' > garbage.pem\n"
        "cp chain1.pem live.pem; cp srv1.key live.key\n";
    char cmd[sizeof script + 64];
    snprintf(cmd, sizeof cmd, script, dir);
    return system(cmd) == 0;
}

/* ---- a client and a server connection, wired together in memory ---- */

typedef struct buf {
    uint8_t *data;
    size_t len, cap;
} buf;

static void buf_add(buf *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2;
        b->data = realloc(b->data, b->cap);
        if (!b->data) abort();
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

typedef struct pair {
    SSL *cl;
    BIO *cl_in, *cl_out;      /* the client's view of the wire */
    tls_conn *sv;
    buf sv_got, cl_got;       /* plaintext each side received */
    int sv_rc;                /* the server's error, or 0 */
    bool sv_closed;           /* the server saw close_notify */
    bool cl_failed, cl_closed;
    size_t feed_chunk;        /* feed the server this many bytes at a time (0: all) */
    size_t take_chunk;        /* consume its output this many at a time (0: all) */
} pair;

static pair *pair_new(SSL_CTX *cctx, tls_server *s, const char *sni, const char *alpn,
                      size_t alpn_len, SSL_SESSION *sess)
{
    pair *p = calloc(1, sizeof *p);
    p->cl = SSL_new(cctx);
    p->cl_in = BIO_new(BIO_s_mem());
    p->cl_out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(p->cl_in, -1);
    SSL_set_bio(p->cl, p->cl_in, p->cl_out);
    SSL_set_connect_state(p->cl);
    SSL_set1_host(p->cl, "localhost");
    if (sni) SSL_set_tlsext_host_name(p->cl, sni);
    if (alpn) SSL_set_alpn_protos(p->cl, (const unsigned char *)alpn, (unsigned)alpn_len);
    if (sess) SSL_set_session(p->cl, sess);
    p->sv = tls_conn_new(s);
    if (!p->sv) abort();
    return p;
}

static void pair_free(pair *p)
{
    SSL_free(p->cl);
    tls_conn_free(p->sv);
    free(p->sv_got.data);
    free(p->cl_got.data);
    free(p);
}

static void client_step(pair *p)
{
    if (p->cl_failed) return;
    if (!SSL_is_init_finished(p->cl) && SSL_do_handshake(p->cl) <= 0) {
        int e = SSL_get_error(p->cl, -1);
        if (e != SSL_ERROR_WANT_READ) p->cl_failed = true;
        ERR_clear_error();
        return;
    }
    uint8_t tmp[16384];
    size_t n;
    while (SSL_read_ex(p->cl, tmp, sizeof tmp, &n)) buf_add(&p->cl_got, tmp, n);
    int e = SSL_get_error(p->cl, 0);
    if (e == SSL_ERROR_ZERO_RETURN) p->cl_closed = true;
    else if (e != SSL_ERROR_WANT_READ) p->cl_failed = true;
    ERR_clear_error();
}

static void server_read(pair *p)
{
    uint8_t tmp[16384];
    for (;;) {
        ssize_t r = tls_read(p->sv, tmp, sizeof tmp);
        if (r > 0) {
            buf_add(&p->sv_got, tmp, (size_t)r);
        } else {
            if (r == TLS_CLOSED) p->sv_closed = true;
            else if (r < 0) p->sv_rc = (int)r;
            return;
        }
    }
}

/* Moves bytes both ways until neither side has anything to say. */
static void pump(pair *p)
{
    for (int round = 0; round < 10000; round++) {
        bool moved = false;
        client_step(p);
        uint8_t tmp[16384];
        int n;
        while ((n = BIO_read(p->cl_out, tmp, sizeof tmp)) > 0) {
            moved = true;
            size_t chunk = p->feed_chunk ? p->feed_chunk : (size_t)n;
            for (size_t off = 0; off < (size_t)n; off += chunk) {
                size_t len = (size_t)n - off < chunk ? (size_t)n - off : chunk;
                int rc = tls_feed(p->sv, tmp + off, len);
                if (rc < 0) p->sv_rc = rc;
                server_read(p);
            }
        }
        server_read(p);   /* input left from before a pause, or none */
        const uint8_t *out;
        size_t len;
        while ((len = tls_pending_out(p->sv, &out)) > 0) {
            moved = true;
            if (p->take_chunk && len > p->take_chunk) len = p->take_chunk;
            BIO_write(p->cl_in, out, (int)len);
            tls_consume_out(p->sv, len);
        }
        if (!moved) return;
    }
}

static bool handshake(pair *p)
{
    pump(p);
    return SSL_is_init_finished(p->cl) && tls_handshake_done(p->sv) && !p->cl_failed && p->sv_rc == 0
           && SSL_get_verify_result(p->cl) == X509_V_OK;
}

static SSL_CTX *client_ctx(int min, int max)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_max_proto_version(ctx, max);
    if (min < TLS1_2_VERSION) {   /* OpenSSL 3 refuses TLS 1.1 above level 0 */
        SSL_CTX_set_security_level(ctx, 0);
        SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
    }
    SSL_CTX_load_verify_locations(ctx, path("ca.pem"), NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

static bool peer_cn_is(pair *p, const char *cn)
{
    char got[128] = "";
    X509 *cert = SSL_get0_peer_certificate(p->cl);
    if (cert) X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, got, sizeof got);
    return strcmp(got, cn) == 0;
}

static bool describe_has(pair *p, const char *text)
{
    char d[256];
    return strstr(tls_describe(p->sv, d, sizeof d), text) != NULL;
}

/* Sends len random bytes each way and checks they arrive intact. */
static bool exchange(pair *p, size_t len)
{
    uint8_t *data = malloc(len);
    RAND_bytes(data, (int)len);
    size_t n;
    p->sv_got.len = p->cl_got.len = 0;
    bool ok = SSL_write_ex(p->cl, data, len, &n) && n == len;
    pump(p);
    ok = ok && p->sv_got.len == len && memcmp(p->sv_got.data, data, len) == 0;
    ok = ok && tls_write(p->sv, data, len) == 0;
    pump(p);
    ok = ok && p->cl_got.len == len && memcmp(p->cl_got.data, data, len) == 0;
    free(data);
    return ok;
}

static const char ALPN_BOTH[] = "\x02h2\x08http/1.1";
static const char ALPN_H2[] = "\x02h2";

/* ---- the tests ---- */

static void test_server_errors(void)
{
    char err[512];
    tls_server *s;

    s = tls_server_new(path("nope.pem"), path("srv1.key"), NULL, err, sizeof err);
    check(!s && strstr(err, "nope.pem") && strstr(err, "No such file"), "missing certificate file is reported");
    s = tls_server_new(path("garbage.pem"), path("srv1.key"), NULL, err, sizeof err);
    check(!s && strstr(err, "cannot read certificate chain"), "garbage certificate file is reported");
    s = tls_server_new(path("chain1.pem"), path("nope.key"), NULL, err, sizeof err);
    check(!s && strstr(err, "cannot read private key") && strstr(err, "No such file"), "missing key file is reported");
    s = tls_server_new(path("chain1.pem"), path("other.key"), NULL, err, sizeof err);
    check(!s && strstr(err, "does not match"), "key of another certificate is refused");
    s = tls_server_new(path("chain1.pem"), path("srv2.key"), NULL, err, sizeof err);
    check(!s && strstr(err, "does not match"), "key of another type (RSA for EC) is refused");
    s = tls_server_new(path("chain1.pem"), path("enc.key"), NULL, err, sizeof err);
    check(!s && strstr(err, "no unencrypted PEM private key"), "encrypted key is refused, without a prompt");
    s = tls_server_new(path("chain1.pem"), path("chain1.pem"), NULL, err, sizeof err);
    check(!s && strstr(err, "no unencrypted PEM private key"), "a certificate given as the key is refused");
    s = tls_server_new(path("chain1.pem"), path("srv1.key"), "NOT-A-CIPHER", err, sizeof err);
    check(!s && strstr(err, "no usable TLS 1.2 cipher"), "bad cipher list is reported");
}

static void test_tls13(tls_server *s)
{
    SSL_CTX *cctx = client_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
    pair *p = pair_new(cctx, s, "localhost", ALPN_BOTH, sizeof ALPN_BOTH - 1, NULL);
    check(!tls_handshake_done(p->sv), "1.3: not done before any byte");
    check(handshake(p), "1.3: handshake, chain verified by a client that trusts only the root");
    check(SSL_version(p->cl) == TLS1_3_VERSION, "1.3: version");
    const unsigned char *alpn;
    unsigned alpn_len;
    SSL_get0_alpn_selected(p->cl, &alpn, &alpn_len);
    check(alpn_len == 8 && memcmp(alpn, "http/1.1", 8) == 0, "1.3: ALPN http/1.1 chosen from h2,http/1.1");
    check(describe_has(p, "TLSv1.3") && describe_has(p, "alpn=http/1.1"), "1.3: describe");
    const char *sni = tls_servername(p->sv);
    check(sni && strcmp(sni, "localhost") == 0, "1.3: SNI recorded");
    check(exchange(p, 5), "1.3: small data both ways");
    check(exchange(p, 1 << 20), "1.3: 1 MiB both ways");
    check(exchange(p, 1), "1.3: 1 byte both ways after that");
    /* A post-handshake message: tls_read answers it with output of its own. */
    check(SSL_key_update(p->cl, SSL_KEY_UPDATE_REQUESTED) == 1 && exchange(p, 100)
          && p->sv_rc == 0 && !p->cl_failed, "1.3: client key update (update requested), data still flows");
    pair_free(p);
    SSL_CTX_free(cctx);
}

static void test_tls12(tls_server *s)
{
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
    pair *p = pair_new(cctx, s, "localhost", ALPN_BOTH, sizeof ALPN_BOTH - 1, NULL);
    check(handshake(p), "1.2: handshake");
    check(SSL_version(p->cl) == TLS1_2_VERSION, "1.2: version");
    const char *cipher = SSL_get_cipher_name(p->cl);
    check(strncmp(cipher, "ECDHE-", 6) == 0 && (strstr(cipher, "GCM") || strstr(cipher, "CHACHA20")),
          "1.2: ECDHE + AEAD cipher");
    check(exchange(p, 100), "1.2: data both ways");
    check(exchange(p, 1 << 20), "1.2: 1 MiB both ways");
    pair_free(p);

    /* A client offering only CBC suites finds none. */
    SSL_CTX_set_cipher_list(cctx, "AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA");
    p = pair_new(cctx, s, NULL, NULL, 0, NULL);
    pump(p);
    check(p->sv_rc == TLS_ERR && strstr(tls_error(p->sv), "no shared cipher"), "1.2: CBC-only client refused");
    pair_free(p);
    SSL_CTX_free(cctx);
}

static void test_alpn_sni(tls_server *s)
{
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, 0);
    pair *p = pair_new(cctx, s, NULL, ALPN_H2, sizeof ALPN_H2 - 1, NULL);
    const unsigned char *alpn;
    unsigned alpn_len;
    check(handshake(p), "ALPN h2 only: handshake goes on");
    SSL_get0_alpn_selected(p->cl, &alpn, &alpn_len);
    check(alpn_len == 0 && !describe_has(p, "alpn="), "ALPN h2 only: no protocol selected");
    check(tls_servername(p->sv) == NULL, "no SNI: servername NULL");
    pair_free(p);

    p = pair_new(cctx, s, "Weird.Example", NULL, 0, NULL);
    check(handshake(p), "no ALPN, other SNI name: handshake");
    check(tls_servername(p->sv) && strcmp(tls_servername(p->sv), "Weird.Example") == 0, "any SNI name accepted");
    pair_free(p);

    p = pair_new(cctx, s, "evil\nname", NULL, 0, NULL);
    check(handshake(p), "SNI with a control character: handshake");
    check(tls_servername(p->sv) && strcmp(tls_servername(p->sv), "(unprintable)") == 0,
          "SNI with a control character is not handed to the log");
    pair_free(p);
    SSL_CTX_free(cctx);
}

static void test_fragmented(tls_server *s)
{
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, 0);
    pair *p = pair_new(cctx, s, "localhost", ALPN_BOTH, sizeof ALPN_BOTH - 1, NULL);
    p->feed_chunk = 1;
    p->take_chunk = 7;
    check(handshake(p), "handshake fed 1 byte at a time, output taken 7 at a time");
    check(exchange(p, 40000), "data fed 1 byte at a time");
    pair_free(p);
    SSL_CTX_free(cctx);
}

static void test_old_protocols(tls_server *s)
{
    SSL_CTX *cctx = client_ctx(TLS1_1_VERSION, TLS1_1_VERSION);
    pair *p = pair_new(cctx, s, "localhost", NULL, 0, NULL);
    pump(p);
    check(p->sv_rc == TLS_ERR && !tls_handshake_done(p->sv), "TLS 1.1 client refused");
    check(strstr(tls_error(p->sv), "unsupported protocol") != NULL, "TLS 1.1: error says why");
    check(p->cl_failed, "TLS 1.1: the client sees the failure");
    check(tls_read(p->sv, (uint8_t[4]){0}, 4) == TLS_ERR, "errors are sticky");
    pair_free(p);
    SSL_CTX_free(cctx);
}

static void feed_all(tls_conn *c, const void *data, size_t len, ssize_t *rc)
{
    uint8_t tmp[4096];
    int f = tls_feed(c, data, len);
    *rc = f < 0 ? f : tls_read(c, tmp, sizeof tmp);
}

static void test_garbage(tls_server *s)
{
    ssize_t rc;
    tls_conn *c;

    c = tls_conn_new(s);
    static const char http[] = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    int f = tls_feed(c, (const uint8_t *)http, sizeof http - 1);
    const uint8_t *out;
    check(f == TLS_ERR_PLAIN_HTTP, "plain HTTP: tls_feed says so");
    check(tls_read(c, (uint8_t[16]){0}, 16) == TLS_ERR_PLAIN_HTTP, "plain HTTP: tls_read says so");
    check(strcmp(tls_error(c), "plain HTTP on the TLS port") == 0, "plain HTTP: message");
    check(tls_pending_out(c, &out) == 0, "plain HTTP: nothing to send back");
    tls_conn_free(c);

    c = tls_conn_new(s);
    feed_all(c, "O", 1, &rc);   /* OPTIONS, one byte so far */
    check(rc == TLS_ERR_PLAIN_HTTP, "plain HTTP seen from its first byte");
    tls_conn_free(c);

    c = tls_conn_new(s);
    feed_all(c, "\x16\x03\x01", 3, &rc);
    check(rc == 0, "a partial record header waits for more");
    tls_conn_free(c);   /* freed with input pending: no leak */

    c = tls_conn_new(s);
    feed_all(c, "\x16\x03\x01\x00\x05" "abcde", 10, &rc);
    check(rc == TLS_ERR, "a handshake record of garbage fails");
    tls_conn_free(c);

    c = tls_conn_new(s);
    feed_all(c, (uint8_t[64]){0}, 64, &rc);
    check(rc == TLS_ERR, "zeros fail");
    tls_conn_free(c);

    c = tls_conn_new(s);
    feed_all(c, "\x16\x03\x01\xff\xff", 5, &rc);
    check(rc == TLS_ERR, "an oversized record fails");
    tls_conn_free(c);

    /* Random input: never a crash or a leak, never data. */
    int errors = 0, bad = 0;
    for (int i = 0; i < 300; i++) {
        uint8_t junk[2048];
        size_t len = 1 + (size_t)(i * 37) % sizeof junk;
        RAND_bytes(junk, (int)len);
        if (i % 2) junk[0] = 0x16;   /* half look like a handshake record */
        if (i % 4 == 1) junk[1] = 3;
        c = tls_conn_new(s);
        feed_all(c, junk, len, &rc);
        if (rc < 0) errors++;
        if (rc > 0) bad++;
        tls_pending_out(c, &out);
        tls_conn_free(c);
    }
    check(bad == 0 && errors > 200, "random input: errors, no data");
}

static void test_renegotiation(tls_server *s)
{
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
    pair *p = pair_new(cctx, s, "localhost", NULL, 0, NULL);
    check(handshake(p) && exchange(p, 10), "renegotiation: first handshake");
    check(SSL_renegotiate(p->cl) == 1, "renegotiation: client asks");
    SSL_do_handshake(p->cl);
    ERR_clear_error();
    pump(p);
    check(p->sv_rc == TLS_ERR && strstr(tls_error(p->sv), "renegotiation"), "renegotiation refused, connection ended");
    pair_free(p);
    SSL_CTX_free(cctx);
}

static SSL_SESSION *first_session(SSL_CTX *cctx, tls_server *s)
{
    pair *p = pair_new(cctx, s, "localhost", ALPN_BOTH, sizeof ALPN_BOTH - 1, NULL);
    SSL_SESSION *sess = NULL;
    if (handshake(p) && exchange(p, 10)) sess = SSL_get1_session(p->cl);
    SSL_shutdown(p->cl);   /* freed without it, OpenSSL marks the session unusable */
    pair_free(p);
    return sess;
}

static bool resumes(SSL_CTX *cctx, tls_server *s, SSL_SESSION *sess)
{
    pair *p = pair_new(cctx, s, "localhost", ALPN_BOTH, sizeof ALPN_BOTH - 1, sess);
    bool ok = handshake(p) && SSL_session_reused(p->cl) && describe_has(p, "resumed") && exchange(p, 10);
    pair_free(p);
    return ok;
}

static void test_resumption(tls_server *s)
{
    int versions[] = { TLS1_3_VERSION, TLS1_2_VERSION };
    for (int i = 0; i < 2; i++) {
        SSL_CTX *cctx = client_ctx(versions[i], versions[i]);
        SSL_SESSION *sess = first_session(cctx, s);
        check(sess && SSL_SESSION_is_resumable(sess), i ? "1.2: ticket received" : "1.3: ticket received");
        check(sess && resumes(cctx, s, sess), i ? "1.2: session resumed" : "1.3: session resumed");
        SSL_SESSION_free(sess);
        SSL_CTX_free(cctx);
    }
}

static void test_close(tls_server *s)
{
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, 0);
    pair *p = pair_new(cctx, s, "localhost", NULL, 0, NULL);
    check(tls_write(p->sv, (const uint8_t *)"x", 1) == TLS_ERR, "write before the handshake is an error");
    pair_free(p);

    p = pair_new(cctx, s, "localhost", NULL, 0, NULL);
    check(tls_close_notify(p->sv) == 0, "close_notify before the handshake: nothing to do");
    check(handshake(p), "close: handshake");
    check(tls_write(p->sv, (const uint8_t *)"", 0) == 0, "empty write");
    check(tls_close_notify(p->sv) == 0, "close_notify queued");
    pump(p);
    check(p->cl_closed, "client sees close_notify");
    SSL_shutdown(p->cl);
    pump(p);
    check(p->sv_closed && p->sv_rc == 0, "server sees the client's close_notify as TLS_CLOSED");
    pair_free(p);
    SSL_CTX_free(cctx);
}

static void test_reload(tls_server *s)
{
    char err[512];
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, 0);
    SSL_CTX *cctx12 = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
    pair *old = pair_new(cctx, s, "localhost", NULL, 0, NULL);
    check(handshake(old) && peer_cn_is(old, "luaws-test-1"), "reload: before, the first certificate");
    SSL_SESSION *sess = first_session(cctx, s);

    copy_file("chain2.pem", "live.pem");
    copy_file("srv2.key", "live.key");
    check(tls_server_reload(s, err, sizeof err) == 0, "reload with a new certificate (RSA)");
    pair *p = pair_new(cctx, s, "localhost", NULL, 0, NULL);
    check(handshake(p) && peer_cn_is(p, "luaws-test-2"), "reload: a new connection sees the new certificate");
    pair_free(p);
    p = pair_new(cctx12, s, "localhost", NULL, 0, NULL);
    check(handshake(p) && strncmp(SSL_get_cipher_name(p->cl), "ECDHE-RSA-", 10) == 0,
          "reload: TLS 1.2 with the RSA certificate");
    pair_free(p);
    check(exchange(old, 1000), "reload: a live connection is unaffected");
    check(sess && resumes(cctx, s, sess), "reload: a ticket from before still resumes");
    SSL_SESSION_free(sess);

    copy_file("other.key", "live.key");
    check(tls_server_reload(s, err, sizeof err) == -1 && strstr(err, "does not match"),
          "reload with a mismatched key fails, saying why");
    p = pair_new(cctx, s, "localhost", NULL, 0, NULL);
    check(handshake(p) && peer_cn_is(p, "luaws-test-2"), "reload failure keeps the previous certificate");
    pair_free(p);
    copy_file("garbage.pem", "live.pem");
    check(tls_server_reload(s, err, sizeof err) == -1, "reload with a garbage certificate fails");
    p = pair_new(cctx, s, "localhost", NULL, 0, NULL);
    check(handshake(p) && peer_cn_is(p, "luaws-test-2"), "...and keeps the previous certificate");
    pair_free(p);

    pair_free(old);
    SSL_CTX_free(cctx);
    SSL_CTX_free(cctx12);
}

static void test_ciphers_option(void)
{
    char err[512];
    tls_server *s = tls_server_new(path("chain1.pem"), path("srv1.key"), "ECDHE-ECDSA-CHACHA20-POLY1305",
                                   err, sizeof err);
    check(s != NULL, "server with a cipher list");
    if (!s) return;
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
    pair *p = pair_new(cctx, s, NULL, NULL, 0, NULL);
    check(handshake(p) && strcmp(SSL_get_cipher_name(p->cl), "ECDHE-ECDSA-CHACHA20-POLY1305") == 0,
          "the configured TLS 1.2 cipher is used");
    pair_free(p);
    /* The owner lets go first: the connection keeps the server alive. */
    p = pair_new(cctx, s, NULL, NULL, 0, NULL);
    tls_server_free(s);
    check(handshake(p) && exchange(p, 100), "a connection outlives tls_server_free");
    pair_free(p);
    SSL_CTX_free(cctx);
}

/* Heap bytes per idle connection: handshake and a message each way, then
 * the client side is freed and only the server's tls_conn is left. */
static void measure(tls_server *s, int version, const char *label)
{
    enum { N = 200 };
    static tls_conn *conns[N];
    SSL_CTX *cctx = client_ctx(version, version);
    for (int warm = 0; warm < 2; warm++) {   /* the first round fills OpenSSL's caches */
        size_t before = mallinfo2().uordblks;
        for (int i = 0; i < N; i++) {
            pair *p = pair_new(cctx, s, "localhost", ALPN_BOTH, sizeof ALPN_BOTH - 1, NULL);
            if (!handshake(p) || !exchange(p, 64)) abort();
            conns[i] = p->sv;
            p->sv = NULL;
            pair_free(p);
        }
        size_t after = mallinfo2().uordblks;
        for (int i = 0; i < N; i++) tls_conn_free(conns[i]);
        if (warm && after > before) {
            long per = (long)(after - before) / N;
            printf("%s: %ld heap bytes per idle connection\n", label, per);
            check(per < 16 * 1024, "idle connection under 16 KiB");
        }
    }
    SSL_CTX_free(cctx);
}

int main(int argc, char **argv)
{
    (void)argc, (void)argv;
    snprintf(dir, sizeof dir, "/tmp/luaws-tls-XXXXXX");
    if (!mkdtemp(dir) || !make_certs()) {
        fprintf(stderr, "cannot make test certificates in %s\n", dir);
        return 2;
    }

    char err[512];
    tls_server *s = tls_server_new(path("live.pem"), path("live.key"), NULL, err, sizeof err);
    check(s != NULL, "server from a chain file");
    if (!s) {
        printf("%s\n", err);
        return 1;
    }
    test_server_errors();
    test_tls13(s);
    test_tls12(s);
    test_alpn_sni(s);
    test_fragmented(s);
    test_old_protocols(s);
    test_garbage(s);
    test_renegotiation(s);
    test_resumption(s);
    test_close(s);
    test_ciphers_option();
    if (!getenv("TLS_TEST_NO_MEASURE")) {
        measure(s, TLS1_3_VERSION, "TLS 1.3");
        measure(s, TLS1_2_VERSION, "TLS 1.2");
    }
    test_reload(s);
    tls_server_free(s);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
