/* lua_reqpack.c — a request kept packed: the compact copy of an upgrade
 * request that its socket keeps instead of a Lua table (a few hundred bytes
 * of C data inside the socket userdata, where a request table with its
 * headers costs about a kilobyte of Lua heap), and the request table built
 * from it. Every request table luaws makes for the script comes from a
 * packed request, the handler's and socket.request alike, so the two cannot
 * differ.
 *
 * The packed form (no pointers, no alignment; lengths are LEB128 varints):
 *   flags (PK_*), http_major, http_minor, server_port (varints)
 *   method, url, remote_addr                         (strings: length, bytes)
 *   [PK_LISTENER_HOST] the listening address (no usable Host header)
 *   nheaders, then per header: a name code (1..: common_names[code - 1];
 *     0: the name follows as a string) and the value (a string)
 *   [PK_BODY] body
 *   [PK_PROTOCOL] the subprotocol the handler chose (lh_request_pack_protocol)
 * Only lua_socket.c and lua_request.c use it (lua_internal.h). */
#include "lua_internal.h"
#include "xalloc.h"
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    PK_TLS = 1,
    PK_UPGRADE = 2,
    PK_BODY = 4,
    PK_LISTENER_HOST = 8,
    PK_PROTOCOL = 16,
};

/* Header names most requests carry, each packed as one byte. */
static const char *const common_names[] = {
    "host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-extensions", "sec-websocket-protocol", "origin", "user-agent", "accept",
    "accept-encoding", "accept-language", "cache-control", "pragma", "cookie", "authorization",
    "x-forwarded-for", "x-forwarded-proto", "x-real-ip", "forwarded", "referer", "content-type",
    "content-length", "sec-websocket-accept",
};
#define NCOMMON (sizeof common_names / sizeof *common_names)
#define HOST_CODE 1   /* common_names[0] */

/* ---- writing ---- */

typedef struct packer {
    uint8_t *out;             /* NULL: only count */
    size_t n;
} packer;

static void put_byte(packer *pk, uint8_t b)
{
    if (pk->out) pk->out[pk->n] = b;
    pk->n++;
}

static void put_varint(packer *pk, size_t v)
{
    do {
        put_byte(pk, (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)));
        v >>= 7;
    } while (v);
}

static void put_str(packer *pk, const char *s, size_t len)
{
    put_varint(pk, len);
    if (pk->out && len) memcpy(pk->out + pk->n, s, len);
    pk->n += len;
}

static unsigned name_code(const char *name)
{
    for (unsigned i = 0; i < NCOMMON; i++)
        if (strcmp(name, common_names[i]) == 0) return i + 1;
    return 0;
}

/* A usable Host header: present and not empty (else server_name is the
 * listening address). */
static bool has_host(const http_request *req)
{
    const char *host = http_header_get(req, "host");
    return host && *host;
}

static void pack(packer *pk, const conn *c, const http_request *req, bool upgrade)
{
    bool listener_host = !has_host(req);
    put_byte(pk, (uint8_t)((c->tls ? PK_TLS : 0) | (upgrade ? PK_UPGRADE : 0) | (req->body ? PK_BODY : 0) |
                           (listener_host ? PK_LISTENER_HOST : 0)));
    put_varint(pk, req->http_major);
    put_varint(pk, req->http_minor);
    put_varint(pk, (size_t)c->lst->port);
    put_str(pk, req->method, strlen(req->method));
    put_str(pk, req->url, req->url_len);
    /* remote_addr without the port, as Ring has it */
    char ip[INET6_ADDRSTRLEN];
    addr_ip_text(&c->peer, ip);
    put_str(pk, ip, strlen(ip));
    if (listener_host) put_str(pk, c->lst->host, strlen(c->lst->host));
    put_varint(pk, req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        unsigned code = name_code(req->headers[i].name);
        put_byte(pk, (uint8_t)code);
        if (!code) put_str(pk, req->headers[i].name, strlen(req->headers[i].name));
        put_str(pk, req->headers[i].value, strlen(req->headers[i].value));
    }
    if (req->body) put_str(pk, req->body, req->body_len);
}

uint8_t *lh_request_pack(const conn *c, const http_request *req, bool upgrade, size_t *len)
{
    packer count = {NULL, 0};
    pack(&count, c, req, upgrade);
    packer pk = {xmalloc(count.n), 0};
    pack(&pk, c, req, upgrade);
    assert(pk.n == count.n);
    *len = pk.n;
    return pk.out;
}

size_t lh_request_pack_protocol(uint8_t *packed, size_t len, const char *protocol)
{
    assert(len && !(packed[0] & PK_PROTOCOL));
    packer pk = {packed, len};
    if (protocol) {
        packed[0] |= PK_PROTOCOL;
        put_str(&pk, protocol, strlen(protocol));
    }
    return pk.n;
}

size_t lh_request_protocol_size(const char *protocol)
{
    packer count = {NULL, 0};
    if (protocol) put_str(&count, protocol, strlen(protocol));
    return count.n;
}

/* ---- reading ---- */

typedef struct span {
    const char *p;            /* NULL: absent */
    size_t n;
} span;

typedef struct reader {
    const uint8_t *p, *end;
} reader;

static size_t get_varint(reader *r)
{
    size_t v = 0;
    for (int shift = 0; r->p < r->end; shift += 7) {
        uint8_t b = *r->p++;
        v |= (size_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) break;
    }
    return v;
}

static span get_str(reader *r)
{
    size_t n = get_varint(r);
    assert(n <= (size_t)(r->end - r->p));
    span s = {(const char *)r->p, n};
    r->p += n;
    return s;
}

/* One header from the headers part; false past the last. */
static bool next_header(reader *r, size_t *left, span *name, span *value)
{
    if (!*left) return false;
    (*left)--;
    unsigned code = *r->p++;
    assert(code <= NCOMMON);
    if (code) *name = (span){common_names[code - 1], strlen(common_names[code - 1])};
    else *name = get_str(r);
    *value = get_str(r);
    return true;
}

/* The fields of a request table, as the packed form gives them. */
typedef struct view {
    span method, uri, query_string, remote_addr, server_name, body, protocol;
    const char *scheme;
    char http[32];            /* "HTTP/1.1" */
    size_t port;
    size_t nheaders;
    reader headers;           /* at the first header */
} view;

static void read_view(view *v, const uint8_t *packed, size_t len)
{
    reader r = {packed, packed + len};
    assert(len);
    uint8_t flags = *r.p++;
    size_t major = get_varint(&r), minor = get_varint(&r);
    snprintf(v->http, sizeof v->http, "HTTP/%zu.%zu", major, minor);
    v->port = get_varint(&r);
    bool tls = flags & PK_TLS, upgrade = flags & PK_UPGRADE;
    v->scheme = tls ? (upgrade ? "wss" : "https") : (upgrade ? "ws" : "http");
    v->method = get_str(&r);
    span url = get_str(&r);
    const char *q = memchr(url.p, '?', url.n);
    v->uri = (span){url.p, q ? (size_t)(q - url.p) : url.n};
    v->query_string = q ? (span){q + 1, url.n - v->uri.n - 1} : (span){NULL, 0};
    v->remote_addr = get_str(&r);
    span listener_host = {NULL, 0};
    if (flags & PK_LISTENER_HOST) listener_host = get_str(&r);
    v->nheaders = get_varint(&r);
    v->headers = r;
    /* Past the headers: server_name from the Host header on the way. */
    size_t left = v->nheaders;
    span name, value, host = {NULL, 0};
    while (next_header(&r, &left, &name, &value))
        if (!host.p && name.n == 4 && memcmp(name.p, "host", 4) == 0) host = value;
    if (listener_host.p) {
        v->server_name = listener_host;
    } else {
        /* the host without the port ([v6] keeps its brackets) */
        assert(host.p && host.n);
        const char *end = host.p[0] == '[' ? memchr(host.p, ']', host.n) : memchr(host.p, ':', host.n);
        v->server_name = (span){host.p, end ? (size_t)(end - host.p) + (host.p[0] == '[') : host.n};
    }
    v->body = flags & PK_BODY ? get_str(&r) : (span){NULL, 0};
    v->protocol = flags & PK_PROTOCOL ? get_str(&r) : (span){NULL, 0};
    assert(r.p == r.end);
}


/* ---- the request table ---- */

static void set_span(lua_State *L, const char *k, span s)
{
    lua_pushlstring(L, s.p, s.n);
    lua_setfield(L, -2, k);
}

void lh_request_push(lua_State *L, const uint8_t *packed, size_t len, bool query)
{
    view v;
    read_view(&v, packed, len);
    lua_createtable(L, 0, 12);
    /* request.query, parsed on first use (lua/luaws.lua fills __index). */
    luaL_setmetatable(L, REQUEST_MT);
    set_span(L, "method", v.method);
    set_span(L, "uri", v.uri);
    if (v.query_string.p) set_span(L, "query_string", v.query_string);
    lua_pushstring(L, v.http);
    lua_setfield(L, -2, "protocol");
    lua_pushstring(L, v.scheme);
    lua_setfield(L, -2, "scheme");
    lua_createtable(L, 0, (int)v.nheaders);
    span name, value;
    for (size_t left = v.nheaders; next_header(&v.headers, &left, &name, &value);) {
        lua_pushlstring(L, name.p, name.n);
        lua_pushlstring(L, value.p, value.n);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    set_span(L, "remote_addr", v.remote_addr);
    set_span(L, "server_name", v.server_name);
    lua_pushinteger(L, (lua_Integer)v.port);
    lua_setfield(L, -2, "server_port");
    if (v.body.p) set_span(L, "body", v.body);
    if (query) {
        lua_getfield(L, -1, "query");
        lua_pop(L, 1);
    }
}

void lh_request_push_protocol(lua_State *L, const uint8_t *packed, size_t len)
{
    view v;
    read_view(&v, packed, len);
    if (v.protocol.p) lua_pushlstring(L, v.protocol.p, v.protocol.n);
    else lua_pushnil(L);
}

/* ---- is a request table still as it was built? ---- */

static bool span_eq(lua_State *L, int idx, span s)
{
    size_t n;
    if (!s.p || lua_type(L, idx) != LUA_TSTRING) return false;
    const char *p = lua_tolstring(L, idx, &n);
    return n == s.n && memcmp(p, s.p, n) == 0;
}

static bool cstr_eq(lua_State *L, int idx, const char *s) { return span_eq(L, idx, (span){s, strlen(s)}); }

static bool no_metatable(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx)) return true;
    lua_pop(L, 1);
    return false;
}

static size_t count_keys(lua_State *L, int idx)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        n++;
    }
    return n;
}

static bool headers_eq(lua_State *L, int idx, view *v)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE || !no_metatable(L, idx) || count_keys(L, idx) != v->nheaders) return false;
    reader r = v->headers;
    span name, value;
    for (size_t left = v->nheaders; next_header(&r, &left, &name, &value);) {
        lua_pushlstring(L, name.p, name.n);
        bool eq = lua_rawget(L, idx) == LUA_TSTRING && span_eq(L, -1, value);
        lua_pop(L, 1);
        if (!eq) return false;
    }
    return true;
}

/* request.query (at idx) against a fresh one parsed from query_string by
 * the request metatable's __index. Runs Lua. */
static bool query_eq(lua_State *L, int idx, const view *v)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE || !no_metatable(L, idx)) return false;
    lua_createtable(L, 0, 2);
    luaL_setmetatable(L, REQUEST_MT);
    if (v->query_string.p) set_span(L, "query_string", v->query_string);
    lua_getfield(L, -1, "query");
    int fresh = lua_gettop(L);
    bool eq = lua_type(L, fresh) == LUA_TTABLE && count_keys(L, fresh) == count_keys(L, idx);
    lua_pushnil(L);
    while (eq && lua_next(L, fresh)) {
        lua_pushvalue(L, -2);
        lua_rawget(L, idx);
        eq = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    if (!eq) lua_settop(L, fresh);
    lua_pop(L, 2);
    return eq;
}

bool lh_request_pristine(lua_State *L, int idx, const uint8_t *packed, size_t len, bool *query)
{
    idx = lua_absindex(L, idx);
    view v;
    read_view(&v, packed, len);
    *query = false;
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return false;
    luaL_getmetatable(L, REQUEST_MT);
    bool same_mt = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!same_mt) return false;
    /* method uri protocol scheme headers remote_addr server_name server_port */
    size_t want = 8 + (v.query_string.p != NULL) + (v.body.p != NULL), seen = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        bool ok = lua_type(L, -2) == LUA_TSTRING;
        const char *k = ok ? lua_tostring(L, -2) : "";
        bool is_query = strcmp(k, "query") == 0;   /* made on first use: not counted */
        *query = *query || is_query;
        ok = ok && (strcmp(k, "method") == 0        ? span_eq(L, -1, v.method)
                    : strcmp(k, "uri") == 0         ? span_eq(L, -1, v.uri)
                    : strcmp(k, "query_string") == 0 ? span_eq(L, -1, v.query_string)
                    : strcmp(k, "protocol") == 0    ? cstr_eq(L, -1, v.http)
                    : strcmp(k, "scheme") == 0      ? cstr_eq(L, -1, v.scheme)
                    : strcmp(k, "headers") == 0     ? headers_eq(L, -1, &v)
                    : strcmp(k, "remote_addr") == 0 ? span_eq(L, -1, v.remote_addr)
                    : strcmp(k, "server_name") == 0 ? span_eq(L, -1, v.server_name)
                    : strcmp(k, "server_port") == 0
                        ? lua_isinteger(L, -1) && lua_tointeger(L, -1) == (lua_Integer)v.port
                    : strcmp(k, "body") == 0        ? span_eq(L, -1, v.body)
                    : is_query);
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            return false;
        }
        if (!is_query) seen++;
    }
    if (seen != want) return false;
    if (!*query) return true;
    lua_pushliteral(L, "query");
    lua_rawget(L, idx);
    bool eq = query_eq(L, -1, &v);
    lua_pop(L, 1);
    return eq;
}
