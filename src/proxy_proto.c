/* proxy_proto.c — the PROXY protocol header, v1 (text) and v2 (binary).
 * See proxy_proto.h for the contract and the choices made. */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t V2_SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char V1_PREFIX[] = "PROXY ";   /* 6 bytes */

/* An ERROR result carries nothing half-filled: only the reason. */
static enum proxy_status fail(proxy_result *res, const char *why)
{
    memset(res, 0, sizeof *res);
    res->error = why;
    return PROXY_ERROR;
}

/* True when buf[0..len) is a prefix of (or equal to) s[0..n). */
static bool prefix_of(const uint8_t *buf, size_t len, const void *s, size_t n)
{
    return memcmp(buf, s, len < n ? len : n) == 0;
}

/* ---- v1 ---- */

enum v1_proto { V1_TCP4, V1_TCP6, V1_UNKNOWN };

static const struct {
    const char *word;    /* with the space or CR that must follow, but UNKNOWN
                            may be followed by either */
    size_t n;
} V1_PROTOS[] = {{"TCP4 ", 5}, {"TCP6 ", 5}, {"UNKNOWN", 7}};

/* Characters a line of each protocol may hold after "PROXY <proto> ". */
static bool v1_char_ok(enum v1_proto p, uint8_t c)
{
    if (c == ' ' || (c >= '0' && c <= '9')) return true;
    switch (p) {
    case V1_TCP4: return c == '.';
    case V1_TCP6: return c == ':' || c == '.' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    case V1_UNKNOWN: return c > ' ' && c < 0x7f;
    }
    return false;
}

/* Next space-separated field of line[*pos..end): exactly one space before
 * it (skip_space), none inside. Returns its length, 0 when absent. */
static size_t v1_field(const uint8_t *line, size_t end, size_t *pos, const uint8_t **f)
{
    if (*pos >= end || line[*pos] != ' ') return 0;
    size_t start = ++*pos;
    while (*pos < end && line[*pos] != ' ') ++*pos;
    *f = line + start;
    return *pos - start;
}

static bool v1_addr(const uint8_t *f, size_t n, int family, struct sockaddr_storage *ss)
{
    char text[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof text) return false;
    memcpy(text, f, n);
    text[n] = '\0';
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        return inet_pton(AF_INET, text, &sin->sin_addr) == 1;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    return inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1;
}

/* Decimal 0..65535, no sign, no leading zero (but "0"). */
static bool v1_port(const uint8_t *f, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5 || (f[0] == '0' && n > 1)) return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (f[i] < '0' || f[i] > '9') return false;
        v = v * 10 + (unsigned)(f[i] - '0');
    }
    if (v > 65535) return false;
    *port = htons((uint16_t)v);
    return true;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port_be)
{
    if (ss->ss_family == AF_INET) ((struct sockaddr_in *)ss)->sin_port = port_be;
    else ((struct sockaddr_in6 *)ss)->sin6_port = port_be;
}

static enum proxy_status parse_v1(const uint8_t *buf, size_t len, proxy_result *res)
{
    if (!prefix_of(buf, len, V1_PREFIX, 6)) return fail(res, "not a PROXY header");
    if (len <= 6) return PROXY_NEED_MORE;
    /* The protocol word, as far as it has arrived. */
    size_t avail = len - 6;
    int proto = -1;
    for (int i = 0; i < 3; i++)
        if (prefix_of(buf + 6, avail, V1_PROTOS[i].word, V1_PROTOS[i].n)) {
            proto = i;
            break;
        }
    if (proto < 0) return fail(res, "v1 protocol is not TCP4, TCP6 or UNKNOWN");

    /* Find CRLF within the line limit; check every character on the way,
     * so that a line that cannot be valid fails before it is complete. */
    size_t body = 6 + V1_PROTOS[proto].n;   /* after "PROXY TCP4 " */
    if (proto == V1_UNKNOWN && len > body && buf[body] != ' ' && buf[body] != '\r')
        return fail(res, "v1 protocol is not TCP4, TCP6 or UNKNOWN");

    size_t cr = 0;
    bool have_cr = false;
    /* The CR may be at index 105 at the latest (CRLF ends at 107). */
    for (size_t i = body; i < len && i < PROXY_V1_MAX_LINE - 1; i++) {
        if (buf[i] == '\r') {
            cr = i;
            have_cr = true;
            break;
        }
        if (!v1_char_ok((enum v1_proto)proto, buf[i]))
            return fail(res, "v1 line has a character its protocol does not allow");
    }
    if (!have_cr) {
        if (len >= PROXY_V1_MAX_LINE - 1) return fail(res, "v1 line longer than 107 bytes");
        return PROXY_NEED_MORE;
    }
    if (cr + 1 >= len) return PROXY_NEED_MORE;
    if (buf[cr + 1] != '\n') return fail(res, "v1 line: CR not followed by LF");

    res->version = 1;
    res->consumed = cr + 2;
    if (proto == V1_UNKNOWN) {
        /* "PROXY UNKNOWN" then CR, or a space and anything: ignored. */
        res->local = true;
        res->family = AF_UNSPEC;
        return PROXY_DONE;
    }

    int family = proto == V1_TCP4 ? AF_INET : AF_INET6;
    size_t pos = body - 1;   /* at the space after the protocol */
    const uint8_t *f = NULL;
    size_t n;
    uint16_t sport, dport;
    n = v1_field(buf, cr, &pos, &f);
    if (!v1_addr(f, n, family, &res->src)) return fail(res, "v1 bad source address");
    n = v1_field(buf, cr, &pos, &f);
    if (!v1_addr(f, n, family, &res->dst)) return fail(res, "v1 bad destination address");
    n = v1_field(buf, cr, &pos, &f);
    if (!v1_port(f, n, &sport)) return fail(res, "v1 bad source port");
    n = v1_field(buf, cr, &pos, &f);
    if (!v1_port(f, n, &dport)) return fail(res, "v1 bad destination port");
    if (pos != cr) return fail(res, "v1 line: junk after the destination port");
    set_port(&res->src, sport);
    set_port(&res->dst, dport);
    res->family = family;
    return PROXY_DONE;
}

/* ---- v2 ---- */

enum { V2_LOCAL = 0x0, V2_PROXY = 0x1 };
enum { V2_AF_UNSPEC = 0x0, V2_AF_INET = 0x1, V2_AF_INET6 = 0x2, V2_AF_UNIX = 0x3 };
enum { V2_TR_UNSPEC = 0x0, V2_TR_STREAM = 0x1, V2_TR_DGRAM = 0x2 };

static enum proxy_status parse_v2(const uint8_t *buf, size_t len, proxy_result *res)
{
    if (!prefix_of(buf, len, V2_SIG, sizeof V2_SIG)) return fail(res, "not a PROXY header");
    /* Judge each fixed byte as soon as it is there. */
    if (len > 12) {
        if (buf[12] >> 4 != 2) return fail(res, "unsupported v2 version");
        if ((buf[12] & 0xF) > V2_PROXY) return fail(res, "unsupported v2 command");
    }
    bool local = len > 12 && (buf[12] & 0xF) == V2_LOCAL;
    unsigned fam = len > 13 ? buf[13] >> 4 : 0, tr = len > 13 ? buf[13] & 0xF : 0;
    if (len > 13 && !local) {
        /* LOCAL's family is to be ignored: judged for PROXY only. */
        if (fam > V2_AF_UNIX) return fail(res, "unsupported v2 address family");
        if (tr > V2_TR_DGRAM) return fail(res, "unsupported v2 transport");
        if ((fam == V2_AF_INET || fam == V2_AF_INET6) && tr != V2_TR_STREAM)
            return fail(res, "v2 transport is not TCP (STREAM)");
    }
    if (len < PROXY_V2_HEADER) return PROXY_NEED_MORE;

    size_t plen = (size_t)buf[14] << 8 | buf[15];
    if (plen > PROXY_V2_MAX_LEN) return fail(res, "v2 header longer than 4112 bytes");
    if (!local) {
        if (fam == V2_AF_INET && plen < 12) return fail(res, "v2 address block too short for AF_INET");
        if (fam == V2_AF_INET6 && plen < 36) return fail(res, "v2 address block too short for AF_INET6");
        if (fam == V2_AF_UNIX && plen < 216) return fail(res, "v2 address block too short for AF_UNIX");
    }
    if (len < PROXY_V2_HEADER + plen) return PROXY_NEED_MORE;

    res->version = 2;
    res->consumed = PROXY_V2_HEADER + plen;
    const uint8_t *a = buf + PROXY_V2_HEADER;
    if (local || fam == V2_AF_UNSPEC || fam == V2_AF_UNIX) {
        res->local = true;
        res->family = AF_UNSPEC;
        return PROXY_DONE;
    }
    uint16_t sport, dport;
    if (fam == V2_AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&res->src, *d = (struct sockaddr_in *)&res->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&sport, a + 8, 2);    /* both already in network byte order */
        memcpy(&dport, a + 10, 2);
        s->sin_port = sport;
        d->sin_port = dport;
        res->family = AF_INET;
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&res->src, *d = (struct sockaddr_in6 *)&res->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&d->sin6_addr, a + 16, 16);
        memcpy(&sport, a + 32, 2);
        memcpy(&dport, a + 34, 2);
        s->sin6_port = sport;
        d->sin6_port = dport;
        res->family = AF_INET6;
    }
    return PROXY_DONE;
}

enum proxy_status proxy_parse(const uint8_t *buf, size_t len, unsigned versions, proxy_result *res)
{
    memset(res, 0, sizeof *res);
    if (len == 0) return PROXY_NEED_MORE;
    /* The first byte tells the versions apart: 'P' (v1) or CR (v2). */
    if (buf[0] == 'P') {
        if (!(versions & PROXY_V1))
            return fail(res, prefix_of(buf, len, V1_PREFIX, 6) ? "PROXY v1 header not accepted"
                                                               : "not a PROXY header");
        return parse_v1(buf, len, res);
    }
    if (buf[0] == '\r') {
        if (!(versions & PROXY_V2))
            return fail(res, prefix_of(buf, len, V2_SIG, sizeof V2_SIG) ? "PROXY v2 header not accepted"
                                                                        : "not a PROXY header");
        return parse_v2(buf, len, res);
    }
    return fail(res, "not a PROXY header");
}

int proxy_addr_format(const struct sockaddr_storage *sa, bool with_port, char *out, size_t size)
{
    char text[INET6_ADDRSTRLEN];
    unsigned port;
    bool v6 = sa->ss_family == AF_INET6;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
        port = ntohs(sin->sin_port);
    } else if (v6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
        port = ntohs(sin6->sin6_port);
    } else {
        return snprintf(out, size, "unknown");
    }
    if (!with_port) return snprintf(out, size, "%s", text);
    return snprintf(out, size, v6 ? "[%s]:%u" : "%s:%u", text, port);
}
