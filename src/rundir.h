/* rundir.h — the server's private run directory, /tmp/luaws-run-XXXXXX.
 *
 * Made once by the main process before it serves (one worker or several),
 * published to every worker as $LUAWS_RUNDIR, and removed with everything
 * in it when the server stops. What lives there: the last code that loaded
 * (snapshot.lua, lua/luaws/loader.lua) and the default luaws.store file.
 * Only the process that created it may remove it. */
#ifndef LUAWS_RUNDIR_H
#define LUAWS_RUNDIR_H

#include <stdbool.h>

/* Creates the directory and sets LUAWS_RUNDIR; false (with errno) if it
 * cannot, and the server then runs without one. */
bool rundir_create(void);

/* Removes the files in it, then the directory; logs what it cannot remove.
 * Does nothing if rundir_create() did not succeed in this process. */
void rundir_remove(void);

#endif
