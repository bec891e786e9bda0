/* proxy_proto.h — the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) that a load balancer sends before anything else on a
 * connection, free of I/O.
 *
 * Use from a connection's read path, before TLS and HTTP see any byte:
 * keep what has arrived in a buffer and call proxy_parse(buf, len, ...) on
 * all of it after each read. It never consumes on NEED_MORE, so the caller
 * only appends and calls again. On DONE, res->consumed bytes are the header;
 * buf[consumed..len) is the start of the real stream (TLS or HTTP) and must
 * be handed on. On ERROR, close the connection (log res->error). A caller
 * never needs to buffer more than PROXY_MAX_HEADER bytes: by then the parser
 * has said DONE or ERROR.
 *
 * It fails fast: as soon as the bytes received cannot begin a valid header
 * (an HTTP request's 'G', a TLS ClientHello's 0x16, a v1 line with a
 * character its protocol does not allow, a v2 version, command, family or
 * length out of bounds), the answer is ERROR, without waiting for more.
 *
 * Choices where the specification leaves room:
 *  - v1: single spaces, addresses as inet_pton(3) reads them for the named
 *    family, ports 0..65535 in decimal without sign or leading zero ("0"
 *    itself is allowed). "PROXY UNKNOWN" with or without the rest of the
 *    line is accepted as carrying no address (res->local).
 *  - v2 LOCAL: accepted whatever its family; no address (res->local).
 *  - v2 PROXY over AF_UNSPEC or AF_UNIX: accepted, no address (res->local):
 *    the socket's own address is the best one left.
 *  - v2 PROXY over AF_INET/AF_INET6 must be STREAM (TCP): DGRAM (UDP) and
 *    an unspecified transport are an ERROR, since luaws serves TCP only.
 *  - v2 length: the address block (12 bytes for AF_INET, 36 for AF_INET6,
 *    216 for AF_UNIX) plus TLVs may take PROXY_V2_MAX_LEN bytes at most;
 *    a longer header is an ERROR. TLVs are skipped, not read or checked.
 *
 * No global state, no allocation: safe to call from any worker. */
#ifndef LUAWS_PROXY_PROTO_H
#define LUAWS_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Bits of proxy_parse's versions argument: which versions are accepted. */
#define PROXY_V1 1u
#define PROXY_V2 2u

#define PROXY_V1_MAX_LINE 107                /* bytes, CRLF included */
#define PROXY_V2_MAX_LEN 4096                /* v2 length field: addresses + TLVs */
#define PROXY_V2_HEADER 16                   /* v2 fixed part */
#define PROXY_MAX_HEADER (PROXY_V2_HEADER + PROXY_V2_MAX_LEN)

enum proxy_status {
    PROXY_NEED_MORE,   /* a valid header may still follow: read more, call again */
    PROXY_DONE,        /* res is filled; res->consumed bytes are the header */
    PROXY_ERROR,       /* not an acceptable header: res->error says why */
};

typedef struct proxy_result {
    int version;                  /* 1 or 2 (DONE) */
    bool local;                   /* no address carried (v1 UNKNOWN, v2 LOCAL,
                                     v2 AF_UNSPEC/AF_UNIX): keep the socket's
                                     own addresses; src/dst are AF_UNSPEC */
    int family;                   /* AF_INET, AF_INET6, or AF_UNSPEC when local */
    struct sockaddr_storage src;  /* the client as the proxy saw it: a
                                     sockaddr_in/sockaddr_in6, port in
                                     network byte order */
    struct sockaddr_storage dst;  /* the address the client connected to */
    size_t consumed;              /* header length (DONE), else 0 */
    const char *error;            /* ERROR: a static string for a log line */
} proxy_result;

/* Reads a PROXY header at the start of buf[0..len) (everything received so
 * far on the connection; len may be 0). versions is PROXY_V1, PROXY_V2 or
 * both OR'ed; a header of a version not in it is an ERROR. buf is only read;
 * res is always written (zeroed first), so it may be uninitialised. */
enum proxy_status proxy_parse(const uint8_t *buf, size_t len, unsigned versions, proxy_result *res);

/* Room for proxy_addr_format's longest output: "[" IPv6 "]:" port NUL. */
#define PROXY_ADDR_STRLEN 56

/* Writes an AF_INET/AF_INET6 address as text into out (size bytes; pass
 * PROXY_ADDR_STRLEN to never truncate): "ADDR" without port, "ADDR:PORT"
 * ("[ADDR]:PORT" for IPv6) with. Any other family gives "unknown". Returns
 * the length of the text (snprintf's: >= size means it was truncated). */
int proxy_addr_format(const struct sockaddr_storage *sa, bool with_port, char *out, size_t size);

#endif
