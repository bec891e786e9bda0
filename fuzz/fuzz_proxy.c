/* fuzz_proxy.c — libFuzzer target for the connection-address code:
 * src/proxy_proto.c (PROXY protocol v1/v2 header) and src/forwarded.c
 * (X-Forwarded-For / Forwarded with a trusted list).
 *
 * Input: byte 0 is options — bits 0-1 the accepted versions (0 means both),
 * bit 2 the forwarding header kind (XFF or RFC 7239), bits 3-5 which peer
 * (from PEERS below) the connection comes from. The rest is both what a
 * connection sends first (for proxy_parse) and a header value (for
 * forwarded_client).
 *
 * proxy_parse: every prefix of the input, each a heap copy of exactly its
 * size, must agree with the whole: NEED_MORE up to some point, then a single
 * verdict that does not change with more bytes (DONE with the same consumed,
 * or ERROR). NEED_MORE never holds PROXY_MAX_HEADER bytes (107 for v1):
 * a caller's buffer is bounded. DONE results are consistent (version, family,
 * consumed within bounds), and a header written back from the result, as v1
 * text through proxy_addr_format and as v2 binary, parses to the same
 * addresses.
 *
 * forwarded_client: an untrusted peer gets FORWARDED_PEER and itself back,
 * whatever the header; a trusted peer never gets FORWARDED_PEER; *client is
 * the peer unless FORWARDED_CLIENT, and then an untrusted AF_INET/AF_INET6
 * address. X-Forwarded-For: adding a trusted entry on the right or garbage
 * on the left of a CLIENT answer does not change it. Forwarded: adding a
 * trusted element on the right of a CLIENT answer does not change it.
 *
 * Bugs found, with their reproducers in regressions/fuzz_proxy/ (replayed by
 * `make regress`; the first byte is this harness's options):
 *  - v1-error-with-consumed-set: a complete v1 line with a bad address or
 *    port returned ERROR with consumed (and version) already filled in;
 *    now an ERROR result holds only its reason;
 *  - v1-cr-past-the-limit-need-more: a line whose CR came one byte past the
 *    107-byte limit was ERROR at 106 bytes but NEED_MORE at 107 (the CR was
 *    found, the LF awaited, before the length was judged). */
#include "forwarded.h"
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); abort(); } } while (0)

static const char *const TRUSTED[] = {"10.0.0.0/8", "127.0.0.1", "fd00::/8", "::ffff:192.168.0.0/112"};
static const char *const PEERS[] = {"10.0.0.2", "203.0.113.9", "::ffff:10.9.8.7", "fd00::5",
                                    "2001:db8::1", "127.0.0.1", "192.168.7.7", "::1"};
static cidr_list *trusted;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    trusted = cidr_list_new();   /* lives as long as the process */
    for (size_t i = 0; i < sizeof TRUSTED / sizeof *TRUSTED; i++) CHECK(cidr_list_add(trusted, TRUSTED[i], NULL));
    return 0;
}

static struct sockaddr_storage sa_of(const char *text)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(40000);
    } else {
        CHECK(inet_pton(AF_INET6, text, &s6->sin6_addr) == 1);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(40000);
    }
    return ss;
}

static enum proxy_status parse_copy(const uint8_t *data, size_t n, unsigned versions, proxy_result *r)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    enum proxy_status st = proxy_parse(copy, n, versions, r);
    free(copy);
    return st;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
    }
    return true;
}

static unsigned port_of(const struct sockaddr_storage *s)
{
    return ntohs(s->ss_family == AF_INET ? ((const struct sockaddr_in *)s)->sin_port
                                         : ((const struct sockaddr_in6 *)s)->sin6_port);
}

/* Writes r back as a v1 line and as a v2 header; both must read the same. */
static void round_trip(const proxy_result *r)
{
    char a[PROXY_ADDR_STRLEN], b[PROXY_ADDR_STRLEN], line[256];
    CHECK(proxy_addr_format(&r->src, false, a, sizeof a) < (int)sizeof a);
    CHECK(proxy_addr_format(&r->dst, false, b, sizeof b) < (int)sizeof b);
    int n = snprintf(line, sizeof line, "PROXY %s %s %s %u %u\r\n", r->family == AF_INET ? "TCP4" : "TCP6", a, b,
                     port_of(&r->src), port_of(&r->dst));
    CHECK(n > 0 && n <= PROXY_V1_MAX_LINE);
    proxy_result r1;
    CHECK(parse_copy((const uint8_t *)line, (size_t)n, PROXY_V1, &r1) == PROXY_DONE);
    CHECK(r1.family == r->family && same_addr(&r1.src, &r->src) && same_addr(&r1.dst, &r->dst));

    uint8_t v2[16 + 36] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21};
    size_t alen;
    if (r->family == AF_INET) {
        const struct sockaddr_in *s = (const void *)&r->src, *d = (const void *)&r->dst;
        v2[13] = 0x11;
        memcpy(v2 + 16, &s->sin_addr, 4);
        memcpy(v2 + 20, &d->sin_addr, 4);
        memcpy(v2 + 24, &s->sin_port, 2);
        memcpy(v2 + 26, &d->sin_port, 2);
        alen = 12;
    } else {
        const struct sockaddr_in6 *s = (const void *)&r->src, *d = (const void *)&r->dst;
        v2[13] = 0x21;
        memcpy(v2 + 16, &s->sin6_addr, 16);
        memcpy(v2 + 32, &d->sin6_addr, 16);
        memcpy(v2 + 48, &s->sin6_port, 2);
        memcpy(v2 + 50, &d->sin6_port, 2);
        alen = 36;
    }
    v2[15] = (uint8_t)alen;
    proxy_result r2;
    CHECK(parse_copy(v2, 16 + alen, PROXY_V2, &r2) == PROXY_DONE && r2.consumed == 16 + alen);
    CHECK(r2.family == r->family && same_addr(&r2.src, &r->src) && same_addr(&r2.dst, &r->dst));
}

static void fuzz_proxy_header(const uint8_t *data, size_t n, unsigned versions)
{
    proxy_result whole;
    enum proxy_status st = parse_copy(data, n, versions, &whole);
    if (st == PROXY_NEED_MORE) {
        CHECK(n < PROXY_MAX_HEADER);
        CHECK(n == 0 || data[0] != 'P' || n < PROXY_V1_MAX_LINE);
        CHECK(whole.consumed == 0 && whole.error == NULL);
    } else if (st == PROXY_ERROR) {
        CHECK(whole.error && *whole.error && whole.consumed == 0);
    } else {
        CHECK(st == PROXY_DONE && whole.error == NULL);
        CHECK(whole.consumed > 0 && whole.consumed <= n && whole.consumed <= PROXY_MAX_HEADER);
        CHECK(whole.version == 1 || whole.version == 2);
        CHECK(versions & (whole.version == 1 ? PROXY_V1 : PROXY_V2));
        if (whole.version == 1) CHECK(whole.consumed <= PROXY_V1_MAX_LINE &&
                                      memcmp(data + whole.consumed - 2, "\r\n", 2) == 0);
        else CHECK(whole.consumed >= PROXY_V2_HEADER);
        if (whole.local) {
            CHECK(whole.family == AF_UNSPEC && whole.src.ss_family == AF_UNSPEC && whole.dst.ss_family == AF_UNSPEC);
        } else {
            CHECK(whole.family == AF_INET || whole.family == AF_INET6);
            CHECK(whole.src.ss_family == whole.family && whole.dst.ss_family == whole.family);
            round_trip(&whole);
        }
    }
    /* Every prefix: NEED_MORE, then the whole's verdict from some point on. */
    bool decided = false;
    for (size_t k = 0; k < n; k++) {
        proxy_result r;
        enum proxy_status pst = parse_copy(data, k, versions, &r);
        if (pst == PROXY_NEED_MORE) {
            CHECK(!decided);
            CHECK(st != PROXY_DONE || k < whole.consumed);
            continue;
        }
        decided = true;
        CHECK(pst == st);
        if (st == PROXY_DONE) {
            CHECK(r.consumed == whole.consumed && r.version == whole.version && r.local == whole.local);
            CHECK(r.family == whole.family && same_addr(&r.src, &whole.src) && same_addr(&r.dst, &whole.dst));
        }
    }
}

static enum forwarded_status fwd(const struct sockaddr_storage *peer, enum forwarded_header kind, const char *v,
                                 size_t n, struct sockaddr_storage *client)
{
    char *copy = malloc(n ? n : 1);
    memcpy(copy, v, n);
    enum forwarded_status st = forwarded_client(trusted, peer, kind, copy, n, client);
    free(copy);
    return st;
}

static void fuzz_forwarded(const char *v, size_t n, enum forwarded_header kind, const struct sockaddr_storage *peer)
{
    struct sockaddr_storage client;
    enum forwarded_status st = fwd(peer, kind, v, n, &client);
    bool peer_trusted = cidr_list_contains(trusted, peer);
    if (!peer_trusted) {
        CHECK(st == FORWARDED_PEER && same_addr(&client, peer));
        return;
    }
    CHECK(st != FORWARDED_PEER);
    CHECK(forwarded_status_name(st)[0] != '?');
    if (st != FORWARDED_CLIENT) {
        CHECK(same_addr(&client, peer));
    } else {
        CHECK(client.ss_family == AF_INET || client.ss_family == AF_INET6);
        CHECK(!cidr_list_contains(trusted, &client));
    }
    /* The same with a trusted proxy added on the right, and (XFF) garbage on the left. */
    static const char right_xff[] = ", 10.1.2.3", right_fwd[] = ", for=\"[fd00::9]:1\"", left[] = "x!, ";
    const char *right = kind == FORWARDED_XFF ? right_xff : right_fwd;
    size_t rn = strlen(right), ln = strlen(left);
    char *buf = malloc(ln + n + rn);
    struct sockaddr_storage c2;
    memcpy(buf, v, n);
    memcpy(buf + n, right, rn);
    enum forwarded_status st2 = fwd(peer, kind, buf, n + rn, &c2);
    if (kind == FORWARDED_XFF || st == FORWARDED_CLIENT) {
        if (st == FORWARDED_ABSENT) CHECK(st2 == FORWARDED_ALL_TRUSTED);
        else CHECK(st2 == st && same_addr(&c2, &client));
    }
    if (kind == FORWARDED_XFF && st == FORWARDED_CLIENT) {
        memcpy(buf, left, ln);
        memcpy(buf + ln, v, n);
        st2 = fwd(peer, kind, buf, ln + n, &c2);
        CHECK(st2 == st && same_addr(&c2, &client));
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 1) return 0;
    unsigned opt = data[0];
    unsigned versions = opt & 3 ? opt & 3 : PROXY_V1 | PROXY_V2;
    enum forwarded_header kind = opt & 4 ? FORWARDED_RFC7239 : FORWARDED_XFF;
    struct sockaddr_storage peer = sa_of(PEERS[(opt >> 3) & 7]);
    fuzz_proxy_header(data + 1, n - 1, versions);
    fuzz_forwarded((const char *)data + 1, n - 1, kind, &peer);
    /* No header at all. */
    struct sockaddr_storage client;
    enum forwarded_status st = forwarded_client(trusted, &peer, kind, NULL, 0, &client);
    CHECK(st == (cidr_list_contains(trusted, &peer) ? FORWARDED_ABSENT : FORWARDED_PEER) && same_addr(&client, &peer));
    return 0;
}
