/* static.h — serving files for the plain-HTTP side (--static DIR). */
#ifndef LUAWS_STATIC_H
#define LUAWS_STATIC_H

#include "server.h"

/* Answers req from a file under dir if there is one; false otherwise. */
bool static_serve(conn *c, const char *dir, const http_request *req, bool dotfiles, bool symlinks);
const char *static_content_type(const char *path);

#endif
