/* forwarded.h — trusted proxies (--trust-proxy CIDR) and the client address
 * they forward in X-Forwarded-For or RFC 7239 Forwarded, free of I/O.
 *
 * The rule: a forwarding header is only as good as whoever added its last
 * entry. So the header is read only when the direct peer (the socket's
 * address, or the PROXY header's source) is a trusted proxy; then its list
 * is walked from the right, each trusted address skipped, and the right-most
 * address that is not trusted is the client. forwarded_client applies the
 * whole rule: given an untrusted peer it returns the peer and never looks at
 * the header, so a spoofed header cannot get through a caller that forgets
 * to check.
 *
 * Only AF_INET/AF_INET6 addresses can be trusted. An IPv4-mapped IPv6
 * address (::ffff:10.1.2.3, as a dual-stack socket reports IPv4 peers)
 * matches IPv4 ranges, and a mapped range (::ffff:10.0.0.0/104) is stored
 * as the IPv4 range it means.
 *
 * No global state. A cidr_list is allocated with xalloc (aborts on OOM) and
 * owned by its creator, who frees it; it is only read by cidr_list_contains
 * and forwarded_client, so one list may serve every connection. */
#ifndef LUAWS_FORWARDED_H
#define LUAWS_FORWARDED_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct cidr_list cidr_list;

/* A new empty list (trusts nobody). Free with cidr_list_free. */
cidr_list *cidr_list_new(void);
/* Frees the list; NULL is allowed. */
void cidr_list_free(cidr_list *l);

/* Adds one range written as "10.0.0.0/8", "fd00::/8", or a bare address
 * ("127.0.0.1" is /32, "::1" is /128). No spaces, the prefix in decimal
 * without leading zeros. Returns false and sets *why (a static string,
 * when why is not NULL) for bad input, leaving the list unchanged: an
 * address inet_pton(3) does not read, a prefix out of 0..32 / 0..128, or
 * bits set past the prefix ("10.1.0.0/8": a typo for /16 or for 10.0.0.0?). */
bool cidr_list_add(cidr_list *l, const char *spec, const char **why);

/* How many ranges the list holds. */
size_t cidr_list_count(const cidr_list *l);

/* True when sa (AF_INET or AF_INET6; other families never match) is in one
 * of the ranges. l may be NULL (trusts nobody). */
bool cidr_list_contains(const cidr_list *l, const struct sockaddr_storage *sa);

enum forwarded_header {
    FORWARDED_XFF,        /* X-Forwarded-For: 203.0.113.7, 10.0.0.2 */
    FORWARDED_RFC7239,    /* Forwarded: for=203.0.113.7;proto=https, for="[2001:db8::1]:4711" */
};

enum forwarded_status {
    FORWARDED_PEER,        /* the peer is not trusted: the header was not read */
    FORWARDED_CLIENT,      /* *client is the right-most untrusted address */
    FORWARDED_ABSENT,      /* trusted peer, no header (NULL or no entries) */
    FORWARDED_ALL_TRUSTED, /* trusted peer, every entry trusted */
    FORWARDED_UNUSABLE,    /* trusted peer, the right-most untrusted entry
                              hides the client (for=unknown, for=_hidden,
                              an element without for=) */
    FORWARDED_MALFORMED,   /* trusted peer, the entry that decides is not an
                              address (XFF), or the header is not RFC 7239
                              syntax (Forwarded) */
};

/* The client address for a connection whose direct peer is peer, given the
 * trusted proxies and the value of one forwarding header (value[0..len), not
 * necessarily NUL-terminated; NULL when the request has none).
 *
 * Several header lines of the same name must be passed joined in order with
 * "," (http.c's http_header_get already joins them with ", "), as RFC 9110
 * allows for list headers. Names are the caller's: pass X-Forwarded-For's
 * value with FORWARDED_XFF, Forwarded's with FORWARDED_RFC7239.
 *
 * *client is always written: the address from the header when the result is
 * FORWARDED_CLIENT (its port is the one the header gives, 0 when none, as
 * X-Forwarded-For entries rarely have one), else a copy of *peer. Keeping the
 * peer in every other case is the safe choice: with every entry trusted the
 * left-most one would still be a value a client could have put there.
 *
 * Entries are OWS-trimmed; empty list elements are skipped (RFC 9110 5.6.1).
 * X-Forwarded-For entries: IPv4, IPv6, "IPv4:port", "[IPv6]", "[IPv6]:port".
 * Entries to the left of the deciding one are not looked at (they are the
 * client's to write, so garbage there must not hide the client).
 * Forwarded: the whole value must parse (pairs token=token or
 * token="quoted", ';' within an element, ',' between elements, at most one
 * for= per element); a for= node is an address as above (IPv6 in brackets,
 * or bare), "unknown", or an obfuscated "_name", with an optional port or
 * "_obfport". An unquoted value is read up to , ; space or quote (more
 * lenient than RFC 7239's token, as proxies write for=[::1]:80 unquoted). */
enum forwarded_status forwarded_client(const cidr_list *trusted, const struct sockaddr_storage *peer,
                                       enum forwarded_header kind, const char *value, size_t len,
                                       struct sockaddr_storage *client);

/* A short static name for a status ("client", "untrusted peer", ...). */
const char *forwarded_status_name(enum forwarded_status s);

#endif
