/* client.h — outbound WebSocket connections (luaws.connect). */
#ifndef LUAWS_CLIENT_H
#define LUAWS_CLIENT_H

#include "conn.h"

typedef struct client_request {
    const char *host;
    int port;
    const char *request;      /* the whole upgrade request */
    size_t request_len;
    const char *key;          /* its Sec-WebSocket-Key */
    const char *protocols;    /* offered subprotocols, comma-separated, or NULL */
    bool deflate;             /* offered permessage-deflate */
    bool tls;                 /* wss:// */
    const char *ca;           /* CA file to verify the server with; NULL: the system's */
    bool verify;              /* check the server's certificate and name */
} client_request;
conn *client_connect(server *s, const client_request *req, uint64_t id);
/* Starts resolving and connecting, once Lua has its socket object. */
void client_start(conn *c);
/* Or on a connected socket we were handed (luaws test: one end of a socket
 * pair); takes fd. */
void client_start_fd(conn *c, int fd);
void client_on_response(conn *c);
void client_free(conn *c);
/* Not open yet (resolving, connecting, or waiting for the 101). */
bool client_is_connecting(const conn *c);
/* Gives up before it opened: on_close(code, reason) once it is gone. */
void client_abandon(conn *c, uint16_t code, const char *reason);
/* It will never open: on_error(why), on_close(1006, why), closed now. */
void client_failed(conn *c, const char *why);
/* Sends the upgrade request once the connection (and TLS) is up. */
void client_send_request(conn *c);

#endif
