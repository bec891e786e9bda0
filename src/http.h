/* http.h — HTTP/1.1 request reading and the WebSocket handshake, free of I/O.
 *
 * The request line and headers are parsed by Node's http-parser (Debian's
 * libhttp-parser-dev): a small, incremental, allocation-free C parser. This
 * file only collects what it reports into an http_request and answers the
 * questions the upgrade needs. */
#ifndef LUAWS_HTTP_H
#define LUAWS_HTTP_H

#include <http_parser.h>
#include <stddef.h>
#include <stdbool.h>
#include "deflate.h"

typedef struct http_header {
    char *name;   /* lower-cased */
    char *value;  /* repeated headers joined with ", " */
} http_header;

typedef struct http_request {
    char *method;
    char *url;
    size_t url_len;
    char *body;
    size_t body_len;
    http_header *headers;
    size_t nheaders, cap_headers;
    unsigned short http_major, http_minor;
    int status;          /* responses (outbound connections) only */
    bool keep_alive;
    bool upgrade;        /* the parser saw Connection: upgrade + Upgrade */
} http_request;

enum http_read_status {
    HTTP_NEED_MORE,      /* request incomplete */
    HTTP_DONE,           /* request complete: see reader->req */
    HTTP_FAILED,         /* bad request: see reader->error_status */
};

typedef struct http_reader {
    http_parser parser;
    http_request req;
    char *field;          /* header name being read */
    size_t field_len;
    char *value;          /* header value being read */
    size_t value_len;
    bool in_value;
    bool done;
    bool head_done;       /* the request line and headers are complete */
    size_t head_bytes;    /* bytes of the head fed so far (every byte: 431 beyond the limit) */
    size_t header_bytes;  /* bytes of request line + headers so far */
    size_t max_header_bytes;
    size_t max_body;
    int error_status;     /* 400, 413, 431 */
    bool response;        /* reads a response (luaws.connect) */
} http_reader;

void http_reader_init(http_reader *r, size_t max_header_bytes, size_t max_body);
/* The same for the response to our own upgrade request. */
void http_reader_init_response(http_reader *r, size_t max_header_bytes, size_t max_body);
/* Frees the request and readies the reader for the next one (keep-alive). */
void http_reader_reset(http_reader *r);
void http_reader_free(http_reader *r);

/* Feeds bytes; *used gets how many were consumed (bytes after a complete
 * request belong to the next request or, after an upgrade, to WebSocket). */
enum http_read_status http_reader_feed(http_reader *r, const char *data, size_t len, size_t *used);

/* Header value by lower-case name, or NULL. */
const char *http_header_get(const http_request *req, const char *name);

/* True if the comma-separated token list contains token (case-insensitive). */
bool http_token_list_has(const char *list, const char *token);

/* Checks an upgrade request against RFC 6455 4.2.1. Returns 0 when it is a
 * valid handshake, else the HTTP status to refuse it with (400, 405, 426). */
int http_ws_check_upgrade(const http_request *req, const char **why);

/* A fresh Sec-WebSocket-Key: base64 of 16 random bytes, 24 chars + NUL. */
void http_ws_client_key(char out[25]);

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)), 28 chars + NUL. */
void http_ws_accept_key(const char *key, char out[29]);

/* Checks the answer to our own upgrade request (RFC 6455 4.1): a 101 with
 * Upgrade/Connection, the Sec-WebSocket-Accept we expect, a subprotocol
 * we offered, an extension answer our offer allows (then *deflate and
 * params are set). false, with the reason in why, if it is not. */
bool http_ws_check_101(const http_request *res, const char *accept_expected, const char *offered_protocols,
                       bool offered_deflate, bool *deflate, pmd_params *params, char *why, size_t why_size);

const char *http_reason(int status);

#endif
