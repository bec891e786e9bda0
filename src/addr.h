/* addr.h — a peer's IP address and port in 20 bytes, as a connection
 * keeps it (a sockaddr_storage is 128 bytes, the text up to 54). It is
 * turned into text only for a log line or a script (addr_text,
 * addr_ip_text), into a sockaddr only for --trust-proxy's checks
 * (addr_to_sockaddr), and hashed as it is for --max-conns-per-ip. */
#ifndef LUAWS_ADDR_H
#define LUAWS_ADDR_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

typedef struct net_addr {
    uint8_t family;           /* AF_INET or AF_INET6; 0: unknown (shown as "?") */
    uint16_t port;            /* host order */
    uint8_t ip[16];           /* network order; IPv4 in the first 4 bytes */
} net_addr;

/* Room for "ADDR:PORT": an IPv6 address, ':', five digits, NUL. */
#define ADDR_TEXT_MAX (INET6_ADDRSTRLEN + 6)

/* The address in ss; unknown (family 0) for NULL or anything but IPv4/IPv6. */
static inline net_addr addr_from_sockaddr(const struct sockaddr_storage *ss)
{
    net_addr a;
    memset(&a, 0, sizeof a);
    if (ss && ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        a.family = AF_INET;
        a.port = ntohs(in->sin_port);
        memcpy(a.ip, &in->sin_addr, 4);
    } else if (ss && ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        a.family = AF_INET6;
        a.port = ntohs(in6->sin6_port);
        memcpy(a.ip, &in6->sin6_addr, 16);
    }
    return a;
}

/* The address as a sockaddr; false if it is unknown. */
static inline bool addr_to_sockaddr(const net_addr *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (a->family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(a->port);
        memcpy(&in->sin_addr, a->ip, 4);
        return true;
    }
    if (a->family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(a->port);
        memcpy(&in6->sin6_addr, a->ip, 16);
        return true;
    }
    return false;
}

/* The address without the port ("127.0.0.1", "::1", "?"); returns out. */
static inline const char *addr_ip_text(const net_addr *a, char out[INET6_ADDRSTRLEN])
{
    if (!a->family || !inet_ntop(a->family, a->ip, out, INET6_ADDRSTRLEN)) snprintf(out, INET6_ADDRSTRLEN, "?");
    return out;
}

/* "ADDR:PORT" ("::1:5000" for IPv6, "?:0" when unknown); returns out. */
static inline const char *addr_text(const net_addr *a, char out[ADDR_TEXT_MAX])
{
    char ip[INET6_ADDRSTRLEN];
    snprintf(out, ADDR_TEXT_MAX, "%s:%u", addr_ip_text(a, ip), a->family ? (unsigned)a->port : 0u);
    return out;
}

/* FNV-1a of the family and address bytes: the port is not part of it. */
static inline uint32_t addr_hash(const net_addr *a)
{
    size_t n = a->family == AF_INET ? 4 : a->family == AF_INET6 ? 16 : 0;
    uint32_t h = (2166136261u ^ a->family) * 16777619u;
    for (size_t i = 0; i < n; i++) h = (h ^ a->ip[i]) * 16777619u;
    return h;
}

#endif
