/* http.c — collects http-parser's callbacks into a request; see http.h. */
#include "http.h"
#include "xalloc.h"
#include <stdio.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/rand.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* Appends to a NUL-terminated growable string. */
static void append(char **s, size_t *len, const char *at, size_t n)
{
    *s = xrealloc(*s, *len + n + 1);
    memcpy(*s + *len, at, n);
    *len += n;
    (*s)[*len] = '\0';
}

static http_reader *reader_of(http_parser *p) { return p->data; }

/* Also refuses NUL bytes: header names and values become C strings. */
static int count_header_bytes(http_reader *r, const char *at, size_t n)
{
    if (memchr(at, '\0', n)) {
        r->error_status = 400;
        return -1;
    }
    r->header_bytes += n;
    if (r->header_bytes > r->max_header_bytes) {
        r->error_status = 431;
        return -1;
    }
    return 0;
}

static void finish_header(http_reader *r)
{
    if (!r->field) return;
    http_request *q = &r->req;
    for (char *c = r->field; *c; c++) *c = (char)tolower((unsigned char)*c);
    if (!r->value) {
        r->value_len = 0;
        append(&r->value, &r->value_len, "", 0);
    }
    /* Trailing whitespace is not part of the value (RFC 7230 3.2.4). */
    while (r->value_len && (r->value[r->value_len - 1] == ' ' || r->value[r->value_len - 1] == '\t'))
        r->value[--r->value_len] = '\0';
    for (size_t i = 0; i < q->nheaders; i++) {
        if (strcmp(q->headers[i].name, r->field) == 0) {
            /* An empty repeat adds nothing (and no dangling ", "). */
            size_t len = strlen(q->headers[i].value);
            if (r->value_len && len) append(&q->headers[i].value, &len, ", ", 2);
            append(&q->headers[i].value, &len, r->value, r->value_len);
            free(r->field);
            free(r->value);
            goto done;
        }
    }
    if (q->nheaders == q->cap_headers) {
        q->cap_headers = q->cap_headers ? q->cap_headers * 2 : 16;
        q->headers = xrealloc(q->headers, q->cap_headers * sizeof *q->headers);
    }
    q->headers[q->nheaders].name = r->field;
    q->headers[q->nheaders].value = r->value;
    q->nheaders++;
done:
    r->field = r->value = NULL;
    r->field_len = r->value_len = 0;
    r->in_value = false;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    http_reader *r = reader_of(p);
    if (count_header_bytes(r, at, n)) return -1;
    append(&r->req.url, &r->req.url_len, at, n);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    http_reader *r = reader_of(p);
    if (count_header_bytes(r, at, n)) return -1;
    if (r->in_value) finish_header(r);
    append(&r->field, &r->field_len, at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    http_reader *r = reader_of(p);
    /* A field name is a token: no whitespace, not empty (RFC 7230 3.2.4). */
    if (!r->in_value && (!r->field || strpbrk(r->field, " \t"))) {
        r->error_status = 400;
        return -1;
    }
    if (count_header_bytes(r, at, n)) return -1;
    r->in_value = true;
    append(&r->value, &r->value_len, at, n);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    http_reader *r = reader_of(p);
    r->head_done = true;
    finish_header(r);
    http_request *q = &r->req;
    q->method = strdup(http_method_str((enum http_method)p->method));
    q->http_major = p->http_major;
    q->http_minor = p->http_minor;
    q->keep_alive = http_should_keep_alive(p);
    q->upgrade = p->upgrade;
    q->status = r->response ? (int)p->status_code : 0;
    if (p->content_length != ULLONG_MAX && p->content_length > r->max_body) {
        r->error_status = 413;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    http_reader *r = reader_of(p);
    if (r->req.body_len + n > r->max_body) {
        r->error_status = 413;
        return -1;
    }
    append(&r->req.body, &r->req.body_len, at, n);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_reader *r = reader_of(p);
    r->done = true;
    /* Stop here: whatever follows is the next request, handled after this one. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void http_reader_init(http_reader *r, size_t max_header_bytes, size_t max_body)
{
    memset(r, 0, sizeof *r);
    r->max_header_bytes = max_header_bytes;
    r->max_body = max_body;
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
}

static void request_free(http_request *q)
{
    for (size_t i = 0; i < q->nheaders; i++) {
        free(q->headers[i].name);
        free(q->headers[i].value);
    }
    free(q->headers);
    free(q->method);
    free(q->url);
    free(q->body);
    memset(q, 0, sizeof *q);
}

void http_reader_free(http_reader *r)
{
    request_free(&r->req);
    free(r->field);
    free(r->value);
    r->field = r->value = NULL;
}

void http_reader_init_response(http_reader *r, size_t max_header_bytes, size_t max_body)
{
    http_reader_init(r, max_header_bytes, max_body);
    r->response = true;
    http_parser_init(&r->parser, HTTP_RESPONSE);
    r->parser.data = r;
}

void http_reader_reset(http_reader *r)
{
    bool response = r->response;
    http_reader_free(r);
    if (response) http_reader_init_response(r, r->max_header_bytes, r->max_body);
    else http_reader_init(r, r->max_header_bytes, r->max_body);
}

enum http_read_status http_reader_feed(http_reader *r, const char *data, size_t len, size_t *used)
{
    size_t n;
    if (!r->head_done && len) {
        /* Every byte of the head counts (colons, line ends, whitespace,
         * empty headers): the parser gets no more than the limit (and the
         * blank line ending the head) until the head is complete. */
        size_t cap = r->max_header_bytes + 4;
        size_t room = r->head_bytes < cap ? cap - r->head_bytes : 0;
        n = http_parser_execute(&r->parser, &settings, data, len < room ? len : room);
        r->head_bytes += n;
        if (!r->head_done && !r->done && HTTP_PARSER_ERRNO(&r->parser) == HPE_OK) {
            *used = n;
            if (r->head_bytes < cap) return HTTP_NEED_MORE;
            r->error_status = 431;
            return HTTP_FAILED;
        }
        if (!r->done && HTTP_PARSER_ERRNO(&r->parser) == HPE_OK && n < len)
            n += http_parser_execute(&r->parser, &settings, data + n, len - n);
    } else {
        n = http_parser_execute(&r->parser, &settings, data, len);
    }
    enum http_errno err = HTTP_PARSER_ERRNO(&r->parser);
    *used = n;
    if (r->done) {
        if (err == HPE_PAUSED) http_parser_pause(&r->parser, 0);
        return HTTP_DONE;
    }
    if (err != HPE_OK) {
        if (!r->error_status) r->error_status = 400;
        return HTTP_FAILED;
    }
    return HTTP_NEED_MORE;
}

const char *http_header_get(const http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcmp(req->headers[i].name, name) == 0) return req->headers[i].value;
    return NULL;
}

bool http_token_list_has(const char *list, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = list;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *start = p;
        while (*p && *p != ',') p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t')) end--;
        if ((size_t)(end - start) == tlen && strncasecmp(start, token, tlen) == 0) return true;
    }
    return false;
}

/* A client key is base64 of 16 random bytes: 24 characters ending in "==". */
static bool key_valid(const char *key)
{
    if (!key || strlen(key) != 24 || key[22] != '=' || key[23] != '=') return false;
    for (int i = 0; i < 22; i++)
        if (!isalnum((unsigned char)key[i]) && key[i] != '+' && key[i] != '/') return false;
    /* The last character holds 2 bits of data and 4 zero bits. */
    if (!strchr("AQgw", key[21])) return false;
    unsigned char raw[18];
    return EVP_DecodeBlock(raw, (const unsigned char *)key, 24) == 18;
}

int http_ws_check_upgrade(const http_request *req, const char **why)
{
    if (strcmp(req->method, "GET") != 0) {
        *why = "WebSocket upgrade must use GET";
        return 405;
    }
    if (req->http_major < 1 || (req->http_major == 1 && req->http_minor < 1)) {
        *why = "WebSocket upgrade needs HTTP/1.1";
        return 400;
    }
    const char *conn = http_header_get(req, "connection");
    if (!conn || !http_token_list_has(conn, "upgrade")) {
        *why = "Connection header lacks the Upgrade token";
        return 400;
    }
    const char *version = http_header_get(req, "sec-websocket-version");
    if (!version || strcmp(version, "13") != 0) {
        *why = "unsupported Sec-WebSocket-Version (only 13)";
        return 426;
    }
    if (!key_valid(http_header_get(req, "sec-websocket-key"))) {
        *why = "missing or invalid Sec-WebSocket-Key";
        return 400;
    }
    if (!http_header_get(req, "host")) {
        *why = "missing Host header";
        return 400;
    }
    return 0;
}

void http_ws_client_key(char out[25])
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) abort();
    EVP_EncodeBlock((unsigned char *)out, raw, sizeof raw);
}

void http_ws_accept_key(const char *key, char out[29])
{
    unsigned char digest[SHA_DIGEST_LENGTH];
    char buf[128];
    size_t klen = strlen(key);
    if (klen > sizeof buf - sizeof WS_GUID) klen = sizeof buf - sizeof WS_GUID;
    memcpy(buf, key, klen);
    memcpy(buf + klen, WS_GUID, sizeof WS_GUID - 1);
    SHA1((const unsigned char *)buf, klen + sizeof WS_GUID - 1, digest);
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
}

bool http_ws_check_101(const http_request *res, const char *accept_expected, const char *offered_protocols,
                       bool offered_deflate, bool *deflate, pmd_params *params, char *why, size_t why_size)
{
    const char *up = http_header_get(res, "upgrade");
    const char *co = http_header_get(res, "connection");
    const char *accept = http_header_get(res, "sec-websocket-accept");
    const char *proto = http_header_get(res, "sec-websocket-protocol");
    const char *ext = http_header_get(res, "sec-websocket-extensions");
    *deflate = false;
    if (res->status != 101) {
        snprintf(why, why_size, "the server answered %d, not 101", res->status);
    } else if (!up || !http_token_list_has(up, "websocket") || !co || !http_token_list_has(co, "upgrade")) {
        snprintf(why, why_size, "the 101 lacks Upgrade: websocket / Connection: Upgrade");
    } else if (!accept || strcmp(accept, accept_expected) != 0) {
        snprintf(why, why_size, "wrong Sec-WebSocket-Accept");
    } else if (proto && (!offered_protocols || !http_token_list_has(offered_protocols, proto))) {
        snprintf(why, why_size, "the server chose subprotocol '%s', which we did not offer", proto);
    } else if (ext && (!offered_deflate || !pmd_client_accept(ext, params))) {
        snprintf(why, why_size, "the server answered an extension we cannot accept: %s", ext);
    } else {
        *deflate = ext != NULL;
        return true;
    }
    return false;
}

const char *http_reason(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default:  return "Unknown";
    }
}
