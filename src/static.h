/* static.h — serving files for the plain-HTTP side (--static DIR). */
#ifndef LUAWS_STATIC_H
#define LUAWS_STATIC_H

#include "server.h"

/* Answers req from a file under dir if there is one (read off the loop:
 * the answer comes later, the connection's input paused meanwhile); false
 * otherwise. */
bool static_serve(conn *c, const char *dir, const http_request *req, bool dotfiles, bool symlinks);
/* c is being freed: a read in flight for it only frees itself. */
void static_conn_gone(conn *c);
const char *static_content_type(const char *path);

#endif
