/* forwarded.c — trusted proxy ranges and the client address from
 * X-Forwarded-For / Forwarded. See forwarded.h for the rules. */
#include "forwarded.h"
#include "xalloc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A range or an address, IPv4-mapped IPv6 already turned into IPv4. */
typedef struct cidr {
    int family;          /* AF_INET or AF_INET6 */
    uint8_t addr[16];    /* 4 or 16 bytes used */
    unsigned prefix;     /* bits */
} cidr;

struct cidr_list {
    cidr *v;
    size_t n, cap;
};

static const uint8_t MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

cidr_list *cidr_list_new(void)
{
    return xcalloc(sizeof(cidr_list));
}

void cidr_list_free(cidr_list *l)
{
    if (!l) return;
    free(l->v);
    free(l);
}

size_t cidr_list_count(const cidr_list *l)
{
    return l ? l->n : 0;
}

/* The address of sa in c (prefix unset); false for other families. */
static bool addr_of(const struct sockaddr_storage *sa, cidr *c)
{
    if (sa->ss_family == AF_INET) {
        c->family = AF_INET;
        memcpy(c->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->ss_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (memcmp(a, MAPPED, 12) == 0) {
            c->family = AF_INET;
            memcpy(c->addr, a + 12, 4);
        } else {
            c->family = AF_INET6;
            memcpy(c->addr, a, 16);
        }
        return true;
    }
    return false;
}

/* True when the first bits of a and b agree. */
static bool same_prefix(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    size_t whole = bits / 8;
    if (memcmp(a, b, whole) != 0) return false;
    unsigned rest = bits % 8;
    if (!rest) return true;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return ((a[whole] ^ b[whole]) & mask) == 0;
}

bool cidr_list_add(cidr_list *l, const char *spec, const char **why)
{
    const char *dummy;
    if (!why) why = &dummy;
    char text[INET6_ADDRSTRLEN];
    const char *slash = strchr(spec, '/');
    size_t alen = slash ? (size_t)(slash - spec) : strlen(spec);
    if (alen == 0) return *why = "no address", false;
    if (alen >= sizeof text) return *why = "not an IPv4 or IPv6 address", false;
    memcpy(text, spec, alen);
    text[alen] = '\0';

    cidr c = {0};
    if (inet_pton(AF_INET, text, c.addr) == 1) c.family = AF_INET;
    else if (inet_pton(AF_INET6, text, c.addr) == 1) c.family = AF_INET6;
    else return *why = "not an IPv4 or IPv6 address", false;
    unsigned max = c.family == AF_INET ? 32 : 128;

    c.prefix = max;
    if (slash) {
        const char *p = slash + 1;
        size_t n = strlen(p);
        if (n == 0 || n > 3 || (p[0] == '0' && n > 1)) return *why = "prefix length is not a number 0..32 or 0..128", false;
        unsigned v = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] < '0' || p[i] > '9') return *why = "prefix length is not a number 0..32 or 0..128", false;
            v = v * 10 + (unsigned)(p[i] - '0');
        }
        if (v > max) return *why = c.family == AF_INET ? "prefix length over 32 for IPv4" : "prefix length over 128 for IPv6", false;
        c.prefix = v;
    }
    /* Every bit past the prefix must be zero: "10.1.0.0/8" is a typo. */
    for (unsigned b = c.prefix; b < max; b++)
        if (c.addr[b / 8] & (0x80 >> (b % 8))) return *why = "address has bits set past the prefix length", false;
    /* A mapped range covering only mapped addresses is the IPv4 range. */
    if (c.family == AF_INET6 && c.prefix >= 96 && memcmp(c.addr, MAPPED, 12) == 0) {
        c.family = AF_INET;
        memmove(c.addr, c.addr + 12, 4);
        memset(c.addr + 4, 0, 12);
        c.prefix -= 96;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = c;
    return true;
}

bool cidr_list_contains(const cidr_list *l, const struct sockaddr_storage *sa)
{
    cidr a;
    if (!l || !addr_of(sa, &a)) return false;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].family == a.family && same_prefix(l->v[i].addr, a.addr, l->v[i].prefix)) return true;
    return false;
}

/* ---- nodes: one address as the headers write it ---- */

enum node_kind { NODE_ADDR, NODE_HIDDEN, NODE_BAD };

#define NODE_MAX 64   /* "[" IPv6 "]:" port is 54 at most */

/* Port after an address: 1..5 digits up to 65535, or an obfuscated "_x". */
static bool node_port(const char *p, size_t n, uint16_t *port)
{
    *port = 0;
    if (n > 0 && p[0] == '_') return true;
    if (n == 0 || n > 5) return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v > 65535) return false;
    *port = (uint16_t)v;
    return true;
}

static bool pton_n(int family, const char *s, size_t n, void *dst)
{
    char text[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof text) return false;
    memcpy(text, s, n);
    text[n] = '\0';
    return inet_pton(family, text, dst) == 1;
}

static enum node_kind parse_node(const char *s, size_t n, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (n == 0 || n > NODE_MAX) return NODE_BAD;
    if ((n == 7 && strncasecmp(s, "unknown", 7) == 0) || s[0] == '_') return NODE_HIDDEN;
    struct sockaddr_in *sin = (struct sockaddr_in *)out;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
    uint16_t port = 0;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close) return NODE_BAD;
        size_t inner = (size_t)(close - s) - 1, after = n - inner - 2;
        if (!pton_n(AF_INET6, s + 1, inner, &sin6->sin6_addr)) return NODE_BAD;
        if (after > 0 && (close[1] != ':' || !node_port(close + 2, after - 1, &port))) return NODE_BAD;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        return NODE_ADDR;
    }
    if (pton_n(AF_INET6, s, n, &sin6->sin6_addr)) {   /* bare IPv6: no port */
        sin6->sin6_family = AF_INET6;
        return NODE_ADDR;
    }
    const char *colon = memchr(s, ':', n);
    size_t alen = colon ? (size_t)(colon - s) : n;
    if (!pton_n(AF_INET, s, alen, &sin->sin_addr)) return NODE_BAD;
    if (colon && !node_port(colon + 1, n - alen - 1, &port)) return NODE_BAD;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    return NODE_ADDR;
}

/* ---- the walk ---- */

/* The right-most entry that is not a trusted address, as the list is read
 * from the left: each such entry replaces the one before. */
typedef struct walk {
    const cidr_list *trusted;
    size_t entries;
    bool have;                        /* a candidate was seen */
    enum node_kind kind;
    struct sockaddr_storage addr;
} walk;

static void walk_entry(walk *w, enum node_kind kind, const struct sockaddr_storage *addr)
{
    w->entries++;
    if (kind == NODE_ADDR && cidr_list_contains(w->trusted, addr)) return;
    w->have = true;
    w->kind = kind;
    if (kind == NODE_ADDR) w->addr = *addr;
}

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

static void walk_xff(walk *w, const char *s, size_t len)
{
    size_t i = 0;
    while (i <= len) {
        size_t start = i;
        while (i < len && s[i] != ',') i++;
        size_t a = start, b = i;
        while (a < b && ows(s[a])) a++;
        while (b > a && ows(s[b - 1])) b--;
        if (b > a) {   /* empty elements are skipped */
            struct sockaddr_storage addr;
            enum node_kind k = parse_node(s + a, b - a, &addr);
            walk_entry(w, k, &addr);
        }
        i++;   /* past the comma (or past the end) */
    }
}

static bool tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Reads one RFC 7239 value at s[*i]: a quoted-string (unescaped into val)
 * or a run of visible characters other than , ; and ". val gets at most
 * NODE_MAX + 1 bytes: a longer value reads as too long for a node. Returns
 * false on a syntax error. */
static bool read_value(const char *s, size_t len, size_t *i, char *val, size_t *vlen)
{
    size_t n = 0;
    if (*i < len && s[*i] == '"') {
        ++*i;
        for (;;) {
            if (*i >= len) return false;   /* unterminated */
            unsigned char c = (unsigned char)s[*i];
            if (c == '"') break;
            if (c == '\\') {
                if (++*i >= len) return false;
                c = (unsigned char)s[*i];
            }
            if (c < 0x20 ? c != '\t' : c == 0x7f) return false;
            if (n <= NODE_MAX) val[n++] = (char)c;
            ++*i;
        }
        ++*i;   /* the closing quote */
    } else {
        while (*i < len) {
            unsigned char c = (unsigned char)s[*i];
            if (c <= 0x20 || c >= 0x7f || c == ',' || c == ';' || c == '"') break;
            if (n <= NODE_MAX) val[n++] = (char)c;
            ++*i;
        }
        if (n == 0) return false;
    }
    *vlen = n;
    return true;
}

/* false: not RFC 7239 syntax. */
static bool walk_forwarded(walk *w, const char *s, size_t len)
{
    size_t i = 0;
    for (;;) {
        while (i < len && ows(s[i])) i++;
        if (i >= len) return true;
        if (s[i] == ',') {   /* an empty element */
            i++;
            continue;
        }
        bool has_for = false;
        enum node_kind kind = NODE_HIDDEN;   /* no for=: the client is not told */
        struct sockaddr_storage addr = {0};
        for (;;) {   /* the pairs of one element */
            while (i < len && ows(s[i])) i++;
            if (i < len && s[i] != ';' && s[i] != ',') {
                size_t name = i;
                while (i < len && tchar((unsigned char)s[i])) i++;
                size_t nlen = i - name;
                if (nlen == 0 || i >= len || s[i] != '=') return false;
                i++;
                char val[NODE_MAX + 1];
                size_t vlen;
                if (!read_value(s, len, &i, val, &vlen)) return false;
                if (nlen == 3 && strncasecmp(s + name, "for", 3) == 0) {
                    if (has_for) return false;   /* at most once per element */
                    has_for = true;
                    kind = parse_node(val, vlen, &addr);
                }
                while (i < len && ows(s[i])) i++;
            }
            if (i >= len || s[i] == ',') break;
            if (s[i] != ';') return false;
            i++;
        }
        walk_entry(w, kind, &addr);
        if (i < len) i++;   /* the comma */
    }
}

enum forwarded_status forwarded_client(const cidr_list *trusted, const struct sockaddr_storage *peer,
                                       enum forwarded_header kind, const char *value, size_t len,
                                       struct sockaddr_storage *client)
{
    *client = *peer;
    if (!cidr_list_contains(trusted, peer)) return FORWARDED_PEER;
    if (!value) return FORWARDED_ABSENT;
    walk w = {.trusted = trusted};
    if (kind == FORWARDED_RFC7239) {
        if (!walk_forwarded(&w, value, len)) return FORWARDED_MALFORMED;
    } else {
        walk_xff(&w, value, len);
    }
    if (w.entries == 0) return FORWARDED_ABSENT;
    if (!w.have) return FORWARDED_ALL_TRUSTED;
    if (w.kind == NODE_HIDDEN) return FORWARDED_UNUSABLE;
    if (w.kind == NODE_BAD) return FORWARDED_MALFORMED;
    *client = w.addr;
    return FORWARDED_CLIENT;
}

const char *forwarded_status_name(enum forwarded_status s)
{
    switch (s) {
    case FORWARDED_PEER: return "untrusted peer";
    case FORWARDED_CLIENT: return "client";
    case FORWARDED_ABSENT: return "no header";
    case FORWARDED_ALL_TRUSTED: return "all trusted";
    case FORWARDED_UNUSABLE: return "client hidden";
    case FORWARDED_MALFORMED: return "malformed";
    }
    return "?";
}
