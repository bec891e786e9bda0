/* workers.h — several worker processes on one port (SO_REUSEPORT). */
#ifndef LUAWS_WORKERS_H
#define LUAWS_WORKERS_H

#include "server.h"

/* Forks n workers, each with its own loop and Lua state, restarts any that
 * dies, forwards SIGTERM/SIGINT/SIGHUP. Returns the exit code. */
int workers_run(config *cfg, const host_ops *host, int n, bool watch);

#endif
