/* test_proxy.c — unit tests for the pure connection-address code of src/:
 * proxy_proto.c (PROXY protocol v1/v2 headers) and forwarded.c (trusted
 * proxy ranges, X-Forwarded-For and RFC 7239 Forwarded).
 *
 *   make -C spec/unit            # build and run (with the other runners)
 *   spec/unit/test_proxy -v      # also name every test that passes
 *
 * Same harness as test_parsers.c: CHECK records a failure and goes on; the
 * last line is "N passed, N failed". */
#include "forwarded.h"
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

/* ---- helpers ---- */

#define BOTH (PROXY_V1 | PROXY_V2)

/* Parses a private heap copy of exactly n bytes (ASan sees any over-read). */
static enum proxy_status parse(const void *data, size_t n, unsigned versions, proxy_result *r)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    enum proxy_status st = proxy_parse(copy, n, versions, r);
    free(copy);
    return st;
}

static enum proxy_status parse_str(const char *s, unsigned versions, proxy_result *r)
{
    return parse(s, strlen(s), versions, r);
}

/* "ADDR:PORT" of an address. */
static const char *fmt(const struct sockaddr_storage *sa)
{
    static char buf[4][PROXY_ADDR_STRLEN];
    static int k;
    char *b = buf[k++ % 4];
    proxy_addr_format(sa, true, b, PROXY_ADDR_STRLEN);
    return b;
}

/* Feeds every prefix of a valid header: NEED_MORE for each, then DONE with
 * consumed == n. Returns true when all held. */
static bool every_prefix(const uint8_t *h, size_t n, unsigned versions)
{
    proxy_result r;
    bool ok = true;
    for (size_t k = 0; k < n; k++) {
        enum proxy_status st = parse(h, k, versions, &r);
        ok &= CHECKF(st == PROXY_NEED_MORE && r.consumed == 0, "prefix %zu of %zu: %d %s", k, n, st,
                     r.error ? r.error : "");
    }
    ok &= CHECK(parse(h, n, versions, &r) == PROXY_DONE && r.consumed == n);
    return ok;
}

/* A v2 header: 16 bytes + the address block + extra (TLV) bytes. */
static size_t mkv2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *addrs, size_t alen, size_t extra,
                   int len_adjust)
{
    static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    size_t plen = (size_t)((int)(alen + extra) + len_adjust);
    out[14] = (uint8_t)(plen >> 8);
    out[15] = (uint8_t)plen;
    memcpy(out + 16, addrs, alen);
    for (size_t i = 0; i < extra; i++) out[16 + alen + i] = (uint8_t)(0xA0 + i);
    return 16 + alen + extra;
}

static const uint8_t V4_ADDRS[12] = {192, 0, 2, 1, 198, 51, 100, 2, 0x30, 0x39, 0x01, 0xBB};   /* 12345 -> 443 */

static uint8_t V6_ADDRS[36];
__attribute__((constructor)) static void init_v6(void)
{
    inet_pton(AF_INET6, "2001:db8::1", V6_ADDRS);
    inet_pton(AF_INET6, "2001:db8::2", V6_ADDRS + 16);
    V6_ADDRS[32] = 0x12, V6_ADDRS[33] = 0x34;   /* 4660 */
    V6_ADDRS[34] = 0x00, V6_ADDRS[35] = 0x50;   /* 80 */
}

static void expect_error(const void *h, size_t n, unsigned versions, const char *why)
{
    proxy_result r;
    enum proxy_status st = parse(h, n, versions, &r);
    CHECKF(st == PROXY_ERROR && r.error && strcmp(r.error, why) == 0, "want \"%s\", got %d \"%s\"", why, st,
           r.error ? r.error : "(null)");
    /* Nothing half-filled (the first fuzz_proxy find: consumed was set). */
    CHECK(r.consumed == 0 && r.version == 0 && r.src.ss_family == AF_UNSPEC);
}

static void expect_error_str(const char *s, unsigned versions, const char *why)
{
    expect_error(s, strlen(s), versions, why);
}

/* ---- PROXY v1 ---- */

TEST(v1_tcp4)
{
    const char *h = "PROXY TCP4 192.0.2.1 198.51.100.2 12345 443\r\n";
    proxy_result r;
    CHECK(parse_str(h, BOTH, &r) == PROXY_DONE);
    CHECK(r.version == 1 && !r.local && r.family == AF_INET);
    CHECK(r.consumed == strlen(h));
    CHECK(strcmp(fmt(&r.src), "192.0.2.1:12345") == 0);
    CHECK(strcmp(fmt(&r.dst), "198.51.100.2:443") == 0);
    CHECK(r.error == NULL);
    CHECK(every_prefix((const uint8_t *)h, strlen(h), PROXY_V1));
}

TEST(v1_tcp6)
{
    const char *h = "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 65535 0\r\n";
    proxy_result r;
    CHECK(parse_str(h, PROXY_V1, &r) == PROXY_DONE);
    CHECK(r.version == 1 && !r.local && r.family == AF_INET6);
    CHECK(strcmp(fmt(&r.src), "[2001:db8::1]:65535") == 0);
    CHECK(strcmp(fmt(&r.dst), "[::ffff:10.0.0.1]:0") == 0);
    CHECK(every_prefix((const uint8_t *)h, strlen(h), BOTH));
}

TEST(v1_unknown)
{
    proxy_result r;
    CHECK(parse_str("PROXY UNKNOWN\r\n", BOTH, &r) == PROXY_DONE && r.local && r.consumed == 15);
    CHECK(r.family == AF_UNSPEC && r.src.ss_family == AF_UNSPEC && r.version == 1);
    const char *h = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    CHECK(parse_str(h, BOTH, &r) == PROXY_DONE && r.local && r.consumed == strlen(h));
    CHECK(every_prefix((const uint8_t *)h, strlen(h), BOTH));
    expect_error_str("PROXY UNKNOWNX\r\n", BOTH, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
    CHECK(parse_str("PROXY UNKNOWN", BOTH, &r) == PROXY_NEED_MORE);
}

TEST(v1_longest_line)
{
    /* The specification's worst case: exactly 107 bytes. */
    char h[200];
    snprintf(h, sizeof h, "PROXY UNKNOWN %s %s 65535 65535\r\n",
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    CHECK(strlen(h) == 107);
    proxy_result r;
    CHECK(parse_str(h, BOTH, &r) == PROXY_DONE && r.consumed == 107);
    snprintf(h, sizeof h, "PROXY TCP6 %s %s 65535 65535\r\n",
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    CHECK(strlen(h) == 104 && parse_str(h, BOTH, &r) == PROXY_DONE && r.consumed == 104);
    /* One more byte: the CR at 106 is past the limit. */
    snprintf(h, sizeof h, "PROXY UNKNOWN %s %s 65535 655355\r\n",
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    expect_error_str(h, BOTH, "v1 line longer than 107 bytes");
    /* ... and every prefix from 106 bytes on, the CR included (fuzz_proxy:
     * 107 bytes ending in that CR were NEED_MORE after 106 were ERROR). */
    for (size_t k = 106; k <= strlen(h); k++) {
        proxy_result e;
        CHECKF(parse(h, k, BOTH, &e) == PROXY_ERROR, "k=%zu", k);
    }
    /* No CRLF at all: an error as soon as 106 bytes are in, not later. */
    memset(h, 0, sizeof h);
    memcpy(h, "PROXY UNKNOWN ", 14);
    memset(h + 14, 'x', 150);
    for (size_t k = 14; k < 106; k++) CHECKF(parse(h, k, BOTH, &r) == PROXY_NEED_MORE, "k=%zu", k);
    expect_error(h, 106, BOTH, "v1 line longer than 107 bytes");
    expect_error(h, 164, BOTH, "v1 line longer than 107 bytes");
}

TEST(v1_trailing_data_unconsumed)
{
    const char *h = "PROXY TCP4 10.1.2.3 10.0.0.1 5000 8080\r\nGET / HTTP/1.1\r\n\r\n";
    proxy_result r;
    CHECK(parse_str(h, BOTH, &r) == PROXY_DONE);
    CHECK(r.consumed == strlen("PROXY TCP4 10.1.2.3 10.0.0.1 5000 8080\r\n"));
    CHECK(memcmp(h + r.consumed, "GET /", 5) == 0);
    /* A second PROXY line after the first is the stream's, not ours. */
    const char *two = "PROXY UNKNOWN\r\nPROXY UNKNOWN\r\n";
    CHECK(parse_str(two, BOTH, &r) == PROXY_DONE && r.consumed == 15);
}

TEST(v1_malformed)
{
    expect_error_str("PROXY TCP4 192.0.2.1 198.51.100.2 12345 65536\r\n", BOTH, "v1 bad destination port");
    expect_error_str("PROXY TCP4 192.0.2.1 198.51.100.2 99999 1\r\n", BOTH, "v1 bad source port");
    expect_error_str("PROXY TCP4 192.0.2.1 198.51.100.2 012 1\r\n", BOTH, "v1 bad source port");
    expect_error_str("PROXY TCP4 192.0.2.1 198.51.100.2 123456 1\r\n", BOTH, "v1 bad source port");
    expect_error_str("PROXY TCP4 192.0.2.1 198.51.100.2 1 \r\n", BOTH, "v1 bad destination port");
    expect_error_str("PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n", BOTH, "v1 bad destination port");
    expect_error_str("PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n", BOTH, "v1 line: junk after the destination port");
    expect_error_str("PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n", BOTH, "v1 bad source address");
    expect_error_str("PROXY TCP4 192.0.2.1 198.51.100 1 2\r\n", BOTH, "v1 bad destination address");
    expect_error_str("PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n", BOTH, "v1 bad source address");
    expect_error_str("PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n", BOTH, "v1 bad destination address");
    /* An IPv6 address on a TCP4 line fails as soon as its ':' arrives. */
    expect_error_str("PROXY TCP4 ::1", BOTH, "v1 line has a character its protocol does not allow");
    expect_error_str("PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n", BOTH, "v1 bad source address");
    expect_error_str("PROXY TCP6 ::1 ::g", BOTH, "v1 line has a character its protocol does not allow");
    expect_error_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n", BOTH, "v1 line has a character its protocol does not allow");
    expect_error_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", BOTH, "v1 line has a character its protocol does not allow");
    expect_error_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", BOTH, "v1 line: CR not followed by LF");
    expect_error_str("PROXY UNKNOWN \x01", BOTH, "v1 line has a character its protocol does not allow");
    expect_error_str("PROXY UDP4 1.2.3.4", BOTH, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
    expect_error_str("PROXY tcp4 1.2.3.4", BOTH, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
    expect_error_str("PROXY TCP5", BOTH, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
    expect_error_str("PROXYTCP4", BOTH, "not a PROXY header");
    expect_error_str("PROXY  TCP4", BOTH, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
    expect_error_str("PRoXY", BOTH, "not a PROXY header");
}

TEST(fail_fast)
{
    /* What a client sends when there is no proxy: an error on byte one. */
    expect_error_str("G", BOTH, "not a PROXY header");
    expect_error_str("GET / HTTP/1.1\r\n", BOTH, "not a PROXY header");
    expect_error("\x16\x03\x01", 3, BOTH, "not a PROXY header");   /* TLS ClientHello */
    expect_error_str("\n", BOTH, "not a PROXY header");
    expect_error_str("POST / HTTP/1.1\r\n", BOTH, "not a PROXY header");   /* 'P', then 'O' */
    expect_error_str("PO", BOTH, "not a PROXY header");
    expect_error_str("\r\n\r\n\x01", BOTH, "not a PROXY header");
    expect_error_str("\r\r", BOTH, "not a PROXY header");
    proxy_result r;
    CHECK(parse("", 0, BOTH, &r) == PROXY_NEED_MORE);
    CHECK(parse_str("P", BOTH, &r) == PROXY_NEED_MORE);
    CHECK(parse_str("\r", BOTH, &r) == PROXY_NEED_MORE);
}

TEST(versions_mask)
{
    const char *v1 = "PROXY TCP4 192.0.2.1 198.51.100.2 12345 443\r\n";
    uint8_t v2[64];
    size_t n2 = mkv2(v2, 0x21, 0x11, V4_ADDRS, 12, 0, 0);
    proxy_result r;
    CHECK(parse_str(v1, PROXY_V1, &r) == PROXY_DONE);
    expect_error_str(v1, PROXY_V2, "PROXY v1 header not accepted");
    expect_error_str("P", PROXY_V2, "PROXY v1 header not accepted");   /* fails fast too */
    expect_error_str("PX", PROXY_V2, "not a PROXY header");
    CHECK(parse(v2, n2, PROXY_V2, &r) == PROXY_DONE);
    expect_error(v2, n2, PROXY_V1, "PROXY v2 header not accepted");
    expect_error(v2, 1, PROXY_V1, "PROXY v2 header not accepted");
    expect_error(v1, 10, 0, "PROXY v1 header not accepted");
}

/* ---- PROXY v2 ---- */

TEST(v2_inet)
{
    uint8_t h[64];
    size_t n = mkv2(h, 0x21, 0x11, V4_ADDRS, 12, 0, 0);
    proxy_result r;
    CHECK(parse(h, n, BOTH, &r) == PROXY_DONE);
    CHECK(r.version == 2 && !r.local && r.family == AF_INET && r.consumed == 28);
    CHECK(strcmp(fmt(&r.src), "192.0.2.1:12345") == 0);
    CHECK(strcmp(fmt(&r.dst), "198.51.100.2:443") == 0);
    CHECK(every_prefix(h, n, BOTH));
}

TEST(v2_inet6_with_tlvs_and_trailing_data)
{
    uint8_t h[256];
    size_t n = mkv2(h, 0x21, 0x21, V6_ADDRS, 36, 20, 0);
    memcpy(h + n, "\x16\x03\x01", 3);   /* TLS follows */
    proxy_result r;
    CHECK(parse(h, n + 3, BOTH, &r) == PROXY_DONE);
    CHECK(r.version == 2 && !r.local && r.family == AF_INET6 && r.consumed == 16 + 36 + 20);
    CHECK(strcmp(fmt(&r.src), "[2001:db8::1]:4660") == 0);
    CHECK(strcmp(fmt(&r.dst), "[2001:db8::2]:80") == 0);
    CHECK(every_prefix(h, n, BOTH));
}

TEST(v2_local_and_no_address)
{
    uint8_t h[600];
    proxy_result r;
    /* LOCAL (health checks): no address, whatever the family says. */
    size_t n = mkv2(h, 0x20, 0x00, "", 0, 0, 0);
    CHECK(parse(h, n, BOTH, &r) == PROXY_DONE && r.local && r.consumed == 16 && r.family == AF_UNSPEC);
    n = mkv2(h, 0x20, 0xFF, "", 0, 5, 0);
    CHECK(parse(h, n, BOTH, &r) == PROXY_DONE && r.local && r.consumed == 21);
    n = mkv2(h, 0x20, 0x11, V4_ADDRS, 12, 0, 0);
    CHECK(parse(h, n, BOTH, &r) == PROXY_DONE && r.local && r.src.ss_family == AF_UNSPEC);
    /* PROXY over UNSPEC or AF_UNIX: no address either. */
    n = mkv2(h, 0x21, 0x00, "", 0, 0, 0);
    CHECK(parse(h, n, BOTH, &r) == PROXY_DONE && r.local);
    uint8_t unix_addrs[216] = {0};
    n = mkv2(h, 0x21, 0x31, unix_addrs, 216, 0, 0);
    CHECK(parse(h, n, BOTH, &r) == PROXY_DONE && r.local && r.consumed == 232);
    n = mkv2(h, 0x21, 0x32, unix_addrs, 216, 0, 0);
    CHECK(parse(h, n, BOTH, &r) == PROXY_DONE && r.local);
}

TEST(v2_malformed)
{
    uint8_t h[5000];
    size_t n;
    n = mkv2(h, 0x11, 0x11, V4_ADDRS, 12, 0, 0);
    expect_error(h, n, BOTH, "unsupported v2 version");
    expect_error(h, 13, BOTH, "unsupported v2 version");   /* as soon as byte 13 is in */
    n = mkv2(h, 0x31, 0x11, V4_ADDRS, 12, 0, 0);
    expect_error(h, 13, BOTH, "unsupported v2 version");
    n = mkv2(h, 0x22, 0x11, V4_ADDRS, 12, 0, 0);
    expect_error(h, 13, BOTH, "unsupported v2 command");
    n = mkv2(h, 0x21, 0x41, V4_ADDRS, 12, 0, 0);
    expect_error(h, 14, BOTH, "unsupported v2 address family");
    n = mkv2(h, 0x21, 0x13, V4_ADDRS, 12, 0, 0);
    expect_error(h, 14, BOTH, "unsupported v2 transport");
    n = mkv2(h, 0x21, 0x12, V4_ADDRS, 12, 0, 0);
    expect_error(h, n, BOTH, "v2 transport is not TCP (STREAM)");
    n = mkv2(h, 0x21, 0x10, V4_ADDRS, 12, 0, 0);
    expect_error(h, 14, BOTH, "v2 transport is not TCP (STREAM)");
    /* The length field, judged as soon as it is in (16 bytes). */
    n = mkv2(h, 0x21, 0x11, V4_ADDRS, 12, 0, -1);
    expect_error(h, 16, BOTH, "v2 address block too short for AF_INET");
    n = mkv2(h, 0x21, 0x21, V4_ADDRS, 12, 0, 0);
    expect_error(h, n, BOTH, "v2 address block too short for AF_INET6");
    n = mkv2(h, 0x21, 0x21, V6_ADDRS, 36, 0, -1);
    expect_error(h, 16, BOTH, "v2 address block too short for AF_INET6");
    n = mkv2(h, 0x21, 0x31, V6_ADDRS, 36, 0, 0);
    expect_error(h, 16, BOTH, "v2 address block too short for AF_UNIX");
    /* Huge lengths: an error at 16 bytes, not a 64 KiB wait. */
    h[14] = 0xFF, h[15] = 0xFF;
    expect_error(h, 16, BOTH, "v2 header longer than 4112 bytes");
    n = mkv2(h, 0x21, 0x11, V4_ADDRS, 12, PROXY_V2_MAX_LEN - 12 + 1, 0);
    expect_error(h, 16, BOTH, "v2 header longer than 4112 bytes");
    /* The largest accepted: PROXY_MAX_HEADER bytes. */
    n = mkv2(h, 0x21, 0x11, V4_ADDRS, 12, PROXY_V2_MAX_LEN - 12, 0);
    CHECK(n == PROXY_MAX_HEADER);
    proxy_result r;
    CHECK(parse(h, n - 1, BOTH, &r) == PROXY_NEED_MORE);
    CHECK(parse(h, n, BOTH, &r) == PROXY_DONE && r.consumed == PROXY_MAX_HEADER);
    /* A bad signature byte anywhere in the 12. */
    for (size_t i = 1; i < 12; i++) {
        n = mkv2(h, 0x21, 0x11, V4_ADDRS, 12, 0, 0);
        h[i] ^= 0x40;
        expect_error(h, i + 1, BOTH, "not a PROXY header");
    }
}

TEST(addr_format)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &s6->sin6_addr);
    s6->sin6_port = htons(65535);
    char buf[PROXY_ADDR_STRLEN];
    int n = proxy_addr_format(&ss, true, buf, sizeof buf);
    CHECK(n > 0 && (size_t)n < sizeof buf);
    CHECK(strcmp(buf, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535") == 0);
    CHECK(proxy_addr_format(&ss, false, buf, sizeof buf) == 39);
    inet_pton(AF_INET6, "::ffff:10.0.0.1", &s6->sin6_addr);
    proxy_addr_format(&ss, true, buf, sizeof buf);
    CHECK(strcmp(buf, "[::ffff:10.0.0.1]:65535") == 0);
    char small[8];
    CHECK(proxy_addr_format(&ss, true, small, sizeof small) > 8 && strlen(small) == 7);
    struct sockaddr_storage none = {0};
    proxy_addr_format(&none, true, buf, sizeof buf);
    CHECK(strcmp(buf, "unknown") == 0);
}

/* ---- CIDR lists ---- */

static struct sockaddr_storage sa(const char *text, unsigned port)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
    }
    return ss;
}

static bool in(const cidr_list *l, const char *text)
{
    struct sockaddr_storage ss = sa(text, 0);
    return cidr_list_contains(l, &ss);
}

static cidr_list *list_of(const char *const *specs)
{
    cidr_list *l = cidr_list_new();
    for (; *specs; specs++) {
        const char *why = NULL;
        CHECKF(cidr_list_add(l, *specs, &why), "%s: %s", *specs, why);
    }
    return l;
}

TEST(cidr_parse)
{
    cidr_list *l = cidr_list_new();
    const char *why = NULL;
    const char *good[] = {"10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8", "0.0.0.0/0", "::/0", "192.168.1.0/24",
                          "2001:db8::/32", "203.0.113.7/32", "::ffff:172.16.0.0/108"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CHECKF(cidr_list_add(l, good[i], &why), "%s: %s", good[i], why);
    CHECK(cidr_list_count(l) == sizeof good / sizeof *good);
    struct {
        const char *spec, *why;
    } bad[] = {
        {"", "no address"},
        {"/8", "no address"},
        {"10.0.0.0/", "prefix length is not a number 0..32 or 0..128"},
        {"10.0.0.0/08", "prefix length is not a number 0..32 or 0..128"},
        {"10.0.0.0/-1", "prefix length is not a number 0..32 or 0..128"},
        {"10.0.0.0/8 ", "prefix length is not a number 0..32 or 0..128"},
        {"10.0.0.0/1000", "prefix length is not a number 0..32 or 0..128"},
        {"10.0.0.0/33", "prefix length over 32 for IPv4"},
        {"::/129", "prefix length over 128 for IPv6"},
        {"10.1.0.0/8", "address has bits set past the prefix length"},
        {"fd00::1/8", "address has bits set past the prefix length"},
        {"10.0.0", "not an IPv4 or IPv6 address"},
        {" 10.0.0.0/8", "not an IPv4 or IPv6 address"},
        {"localhost", "not an IPv4 or IPv6 address"},
        {"10.0.0.0/8/8", "prefix length is not a number 0..32 or 0..128"},
        {"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255.1/8", "not an IPv4 or IPv6 address"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why = NULL;
        CHECKF(!cidr_list_add(l, bad[i].spec, &why) && why && strcmp(why, bad[i].why) == 0, "\"%s\": %s",
               bad[i].spec, why ? why : "(accepted)");
    }
    CHECK(!cidr_list_add(l, "nope", NULL));   /* why may be NULL */
    CHECK(cidr_list_count(l) == sizeof good / sizeof *good);   /* bad input left it unchanged */
    cidr_list_free(l);
    cidr_list_free(NULL);
}

TEST(cidr_match)
{
    const char *specs[] = {"10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8", "192.168.1.128/25", "::ffff:172.16.0.0/108",
                           NULL};
    cidr_list *l = list_of(specs);
    CHECK(in(l, "10.0.0.0") && in(l, "10.255.255.255") && in(l, "10.1.2.3"));
    CHECK(!in(l, "11.0.0.0") && !in(l, "9.255.255.255"));
    CHECK(in(l, "127.0.0.1") && !in(l, "127.0.0.2"));
    CHECK(in(l, "::1") && !in(l, "::2") && !in(l, "::"));
    CHECK(in(l, "fd12:3456::1") && in(l, "fdff::") && !in(l, "fe00::") && !in(l, "fc00::1"));
    CHECK(in(l, "192.168.1.128") && in(l, "192.168.1.255") && !in(l, "192.168.1.127"));
    /* IPv4-mapped IPv6 peers match IPv4 ranges, and mapped ranges are IPv4. */
    CHECK(in(l, "::ffff:10.1.2.3") && !in(l, "::ffff:11.1.2.3") && in(l, "::ffff:127.0.0.1"));
    CHECK(in(l, "172.16.5.5") && in(l, "::ffff:172.31.255.255") && !in(l, "172.32.0.0"));
    /* ... but not the IPv4-compatible form, nor IPv6 inside 10/8 bits. */
    CHECK(!in(l, "::10.1.2.3") && !in(l, "a00::1"));
    struct sockaddr_storage un = {0};
    un.ss_family = AF_UNIX;
    CHECK(!cidr_list_contains(l, &un));
    CHECK(!cidr_list_contains(NULL, &un) && !in(NULL, "10.1.2.3"));
    cidr_list_free(l);

    const char *all[] = {"0.0.0.0/0", NULL};
    l = list_of(all);
    CHECK(in(l, "1.2.3.4") && in(l, "::ffff:1.2.3.4") && !in(l, "::1"));
    cidr_list_free(l);
    const char *bits[] = {"10.128.0.0/9", "2001:db8:8000::/33", NULL};
    l = list_of(bits);
    CHECK(in(l, "10.128.0.1") && !in(l, "10.127.255.255") && in(l, "2001:db8:ffff::1") && !in(l, "2001:db8:7fff::1"));
    cidr_list_free(l);
}

/* ---- X-Forwarded-For / Forwarded ---- */

static cidr_list *trusted_list(void)
{
    const char *specs[] = {"10.0.0.0/8", "127.0.0.1", "fd00::/8", NULL};
    return list_of(specs);
}

/* forwarded_client on a C string (NULL: no header); *client as "ADDR:PORT". */
static enum forwarded_status fwd(const cidr_list *l, const char *peer, enum forwarded_header kind, const char *value,
                                 char *out)
{
    struct sockaddr_storage p = sa(peer, 55555), c;
    char *copy = NULL;
    size_t n = value ? strlen(value) : 0;
    if (value) {
        copy = malloc(n ? n : 1);   /* exactly n bytes, no NUL: ASan checks len is honoured */
        memcpy(copy, value, n);
    }
    enum forwarded_status st = forwarded_client(l, &p, kind, copy, n, &c);
    free(copy);
    proxy_addr_format(&c, true, out, PROXY_ADDR_STRLEN);
    return st;
}

#define XFF FORWARDED_XFF
#define FWD FORWARDED_RFC7239

TEST(xff_untrusted_peer_spoof_ignored)
{
    cidr_list *l = trusted_list();
    char c[PROXY_ADDR_STRLEN];
    CHECK(fwd(l, "203.0.113.9", XFF, "1.2.3.4", c) == FORWARDED_PEER && strcmp(c, "203.0.113.9:55555") == 0);
    CHECK(fwd(l, "203.0.113.9", FWD, "for=1.2.3.4", c) == FORWARDED_PEER && strcmp(c, "203.0.113.9:55555") == 0);
    CHECK(fwd(l, "203.0.113.9", XFF, "garbage", c) == FORWARDED_PEER);
    CHECK(fwd(l, "2001:db8::5", XFF, "10.0.0.1", c) == FORWARDED_PEER && strcmp(c, "[2001:db8::5]:55555") == 0);
    /* No list, empty list: nobody is trusted. */
    CHECK(fwd(NULL, "10.0.0.1", XFF, "1.2.3.4", c) == FORWARDED_PEER && strcmp(c, "10.0.0.1:55555") == 0);
    cidr_list *empty = cidr_list_new();
    CHECK(fwd(empty, "10.0.0.1", XFF, "1.2.3.4", c) == FORWARDED_PEER);
    cidr_list_free(empty);
    cidr_list_free(l);
}

TEST(xff_trusted_chain)
{
    cidr_list *l = trusted_list();
    char c[PROXY_ADDR_STRLEN];
    CHECK(fwd(l, "10.0.0.2", XFF, "203.0.113.7", c) == FORWARDED_CLIENT && strcmp(c, "203.0.113.7:0") == 0);
    /* The right-most untrusted one; what the client wrote to its left is ignored. */
    CHECK(fwd(l, "10.0.0.2", XFF, "6.6.6.6, 203.0.113.7, 10.0.0.3, 10.9.9.9", c) == FORWARDED_CLIENT &&
          strcmp(c, "203.0.113.7:0") == 0);
    CHECK(fwd(l, "10.0.0.2", XFF, "garbage,,203.0.113.7,10.0.0.3", c) == FORWARDED_CLIENT &&
          strcmp(c, "203.0.113.7:0") == 0);
    CHECK(fwd(l, "::ffff:10.0.0.2", XFF, "\t2001:db8::7 ,fd00::1", c) == FORWARDED_CLIENT &&
          strcmp(c, "[2001:db8::7]:0") == 0);
    CHECK(fwd(l, "127.0.0.1", XFF, "198.51.100.1:4711", c) == FORWARDED_CLIENT && strcmp(c, "198.51.100.1:4711") == 0);
    CHECK(fwd(l, "127.0.0.1", XFF, "[2001:db8::1]:4711", c) == FORWARDED_CLIENT && strcmp(c, "[2001:db8::1]:4711") == 0);
    CHECK(fwd(l, "127.0.0.1", XFF, "[2001:db8::1]", c) == FORWARDED_CLIENT && strcmp(c, "[2001:db8::1]:0") == 0);
    /* Every entry trusted, none, or absent: the peer. */
    CHECK(fwd(l, "10.0.0.2", XFF, "10.1.1.1, 127.0.0.1", c) == FORWARDED_ALL_TRUSTED && strcmp(c, "10.0.0.2:55555") == 0);
    CHECK(fwd(l, "10.0.0.2", XFF, NULL, c) == FORWARDED_ABSENT && strcmp(c, "10.0.0.2:55555") == 0);
    CHECK(fwd(l, "10.0.0.2", XFF, "", c) == FORWARDED_ABSENT);
    CHECK(fwd(l, "10.0.0.2", XFF, " , ,", c) == FORWARDED_ABSENT);
    cidr_list_free(l);
}

TEST(xff_garbage)
{
    cidr_list *l = trusted_list();
    char c[PROXY_ADDR_STRLEN];
    const char *bad[] = {"garbage", "1.2.3.4.5", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:x", "[2001:db8::1",
                         "[2001:db8::1]x", "[1.2.3.4]", "1.2.3.4 5.6.7.8", "\"1.2.3.4\"", "1.2.3.4;x",
                         "10.0.0.1, 1.2.3.4:80:80, 10.0.0.3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECKF(fwd(l, "10.0.0.2", XFF, bad[i], c) == FORWARDED_MALFORMED && strcmp(c, "10.0.0.2:55555") == 0,
               "\"%s\" gave %s", bad[i], c);
    CHECK(fwd(l, "10.0.0.2", XFF, "unknown", c) == FORWARDED_UNUSABLE && strcmp(c, "10.0.0.2:55555") == 0);
    char big[400];
    memset(big, '1', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(fwd(l, "10.0.0.2", XFF, big, c) == FORWARDED_MALFORMED);
    cidr_list_free(l);
}

TEST(forwarded_rfc7239)
{
    cidr_list *l = trusted_list();
    char c[PROXY_ADDR_STRLEN];
    CHECK(fwd(l, "10.0.0.2", FWD, "for=192.0.2.60;proto=http;by=203.0.113.43", c) == FORWARDED_CLIENT &&
          strcmp(c, "192.0.2.60:0") == 0);
    CHECK(fwd(l, "10.0.0.2", FWD, "For=\"[2001:db8:cafe::17]:4711\"", c) == FORWARDED_CLIENT &&
          strcmp(c, "[2001:db8:cafe::17]:4711") == 0);
    CHECK(fwd(l, "10.0.0.2", FWD, "for=192.0.2.43, for=198.51.100.17;by=10.0.0.3, for=10.0.0.9", c) ==
              FORWARDED_CLIENT && strcmp(c, "198.51.100.17:0") == 0);
    CHECK(fwd(l, "10.0.0.2", FWD, "for=\"192.0.2.43:_abc\"", c) == FORWARDED_CLIENT && strcmp(c, "192.0.2.43:0") == 0);
    CHECK(fwd(l, "10.0.0.2", FWD, "for=\"\\1\\9\\2.0.2.1\"", c) == FORWARDED_CLIENT && strcmp(c, "192.0.2.1:0") == 0);
    CHECK(fwd(l, "10.0.0.2", FWD, "for=[2001:db8::1]:80", c) == FORWARDED_CLIENT && strcmp(c, "[2001:db8::1]:80") == 0);
    CHECK(fwd(l, "10.0.0.2", FWD, "proto=https;for=192.0.2.60 ; host=\"a,b;c\"", c) == FORWARDED_CLIENT &&
          strcmp(c, "192.0.2.60:0") == 0);
    /* Obfuscated, unknown, or no for=: the client is hidden; keep the peer. */
    CHECK(fwd(l, "10.0.0.2", FWD, "for=_hidden, for=10.0.0.4", c) == FORWARDED_UNUSABLE && strcmp(c, "10.0.0.2:55555") == 0);
    CHECK(fwd(l, "10.0.0.2", FWD, "for=unknown", c) == FORWARDED_UNUSABLE);
    CHECK(fwd(l, "10.0.0.2", FWD, "for=\"UNKNOWN\"", c) == FORWARDED_UNUSABLE);
    CHECK(fwd(l, "10.0.0.2", FWD, "for=1.2.3.4, proto=https", c) == FORWARDED_UNUSABLE);
    /* ... but to the left of an untrusted address they do not matter. */
    CHECK(fwd(l, "10.0.0.2", FWD, "for=_x, for=198.51.100.1, for=10.0.0.1", c) == FORWARDED_CLIENT &&
          strcmp(c, "198.51.100.1:0") == 0);
    CHECK(fwd(l, "10.0.0.2", FWD, "for=10.0.0.5, for=\"[fd00::1]\"", c) == FORWARDED_ALL_TRUSTED);
    CHECK(fwd(l, "10.0.0.2", FWD, "", c) == FORWARDED_ABSENT);
    CHECK(fwd(l, "10.0.0.2", FWD, ",,", c) == FORWARDED_ABSENT);
    cidr_list_free(l);
}

TEST(forwarded_garbage)
{
    cidr_list *l = trusted_list();
    char c[PROXY_ADDR_STRLEN];
    const char *bad[] = {"for", "for=", "=1.2.3.4", "for=\"1.2.3.4", "for=1.2.3.4 x", "for=1.2.3.4;for=5.6.7.8",
                         "for=\"1.2.3.4\"x", "for=1.2.3.4;;;=", "f@r=1.2.3.4", "for=\"a\x01\"", "for=\"\\",
                         "for =1.2.3.4", "for=1.2.3.4, garbage, for=5.6.7.8"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECKF(fwd(l, "10.0.0.2", FWD, bad[i], c) == FORWARDED_MALFORMED && strcmp(c, "10.0.0.2:55555") == 0,
               "\"%s\" gave %s", bad[i], c);
    /* Syntax fine, the deciding node not an address. */
    const char *bad_node[] = {"for=1.2.3", "for=\"[::1\"", "for=\"1.2.3.4:99999\"", "for=2001:db8::1:80x",
                              "for=\"1.2.3.4:\""};
    for (size_t i = 0; i < sizeof bad_node / sizeof *bad_node; i++)
        CHECKF(fwd(l, "10.0.0.2", FWD, bad_node[i], c) == FORWARDED_MALFORMED, "\"%s\" gave %s", bad_node[i], c);
    CHECK(strcmp(forwarded_status_name(FORWARDED_PEER), "untrusted peer") == 0);
    cidr_list_free(l);
}

/* ---- main ---- */

int main(int argc, char **argv) { return unit_main(argc, argv); }
