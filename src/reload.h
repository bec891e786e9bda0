/* reload.h — watches the script and its own modules, and reloads on change
 * or on SIGHUP. */
#ifndef LUAWS_RELOAD_H
#define LUAWS_RELOAD_H

#include "server.h"

typedef struct reloader reloader;

/* watch=false: SIGHUP only (--no-watch). */
reloader *reloader_start(server *s, bool watch);
void reloader_stop(reloader *r);

#endif
