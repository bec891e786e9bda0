/* rundir.c — the server's private run directory (see rundir.h). */
#include "rundir.h"
#include "log.h"
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/luaws-run-XXXXXX";
static pid_t owner;   /* the process that made it; 0: none */

bool rundir_create(void)
{
    if (!mkdtemp(dir)) return false;
    owner = getpid();
    setenv("LUAWS_RUNDIR", dir, 1);
    return true;
}

void rundir_remove(void)
{
    if (owner != getpid()) return;
    owner = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[sizeof dir + 256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0) log_warn("cannot remove %s: %s", path, strerror(errno));
    }
    if (d) closedir(d);
    if (rmdir(dir) != 0) log_warn("cannot remove %s: %s", dir, strerror(errno));
    unsetenv("LUAWS_RUNDIR");
}
