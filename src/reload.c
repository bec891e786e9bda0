/* reload.c — file watching for hot reload.
 *
 * Editors save in place or by writing a new file and renaming it over the
 * old one (vim, VS Code, sed -i), which replaces the inode: so we watch the
 * directories that hold the files, not the files. Events within a short
 * window are coalesced, and a reload happens only if a file's identity,
 * size or mtime really changed. */
#include "reload.h"
#include "log.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define COALESCE_MS 20
#define MAX_DIRS 32

typedef struct watched_file {
    char *path;
    char *base;              /* points into path: the name within its directory */
    struct stat st;
    bool exists;
} watched_file;

struct reloader {
    server *srv;
    bool watch;
    uv_signal_t sighup;
    uv_timer_t timer;
    uv_fs_event_t *dirs[MAX_DIRS];
    int closing;             /* handles still closing at stop */
    bool failed;             /* the last load failed */
    bool retry;              /* ... and something changed beside it */
    bool dir_mode;           /* the script is a directory of scripts */
    char *dir_names[MAX_DIRS];
    bool dir_used[MAX_DIRS];  /* still needed after a rewatch */
    int ndirs;
    watched_file *files;
    size_t nfiles;
};

static bool same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void on_dir_closed(uv_handle_t *h)
{
    free(h);
}

static void unwatch_dirs(reloader *r)
{
    for (int i = 0; i < r->ndirs; i++) {
        uv_close((uv_handle_t *)r->dirs[i], on_dir_closed);
        free(r->dir_names[i]);
    }
    r->ndirs = 0;
}

static void free_files(reloader *r)
{
    for (size_t i = 0; i < r->nfiles; i++) free(r->files[i].path);
    free(r->files);
    r->files = NULL;
    r->nfiles = 0;
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status);

static void watch_dir(reloader *r, const char *dir)
{
    for (int i = 0; i < r->ndirs; i++) {
        if (strcmp(r->dir_names[i], dir) == 0) {
            r->dir_used[i] = true;
            return;
        }
    }
    if (r->ndirs == MAX_DIRS) return;
    uv_fs_event_t *h = malloc(sizeof *h);
    if (!h) abort();
    uv_fs_event_init(r->srv->loop, h);
    h->data = r;
    int err = uv_fs_event_start(h, on_fs_event, dir, 0);
    if (err) {
        log_warn("cannot watch %s for changes: %s", dir, uv_strerror(err));
        uv_close((uv_handle_t *)h, on_dir_closed);
        return;
    }
    r->dirs[r->ndirs] = h;
    r->dir_used[r->ndirs] = true;
    r->dir_names[r->ndirs++] = strdup(dir);
}

/* Watches the directory of path, or its nearest existing ancestor when it
 * does not exist yet (a module a failed require looked for). */
static void watch_parent(reloader *r, const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    for (;;) {
        char *slash = strrchr(dir, '/');
        if (!slash) {
            watch_dir(r, ".");
            return;
        }
        *slash = '\0';
        struct stat st;
        if (!*dir) {
            watch_dir(r, "/");
            return;
        }
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
            watch_dir(r, dir);
            return;
        }
    }
}

/* (Re)reads the list of files the script depends on and their stat. */
static void rewatch(reloader *r)
{
    /* Directories already watched stay watched: closing an inotify watch
     * and adding it again at once can lose the new one's events. */
    free_files(r);
    for (int i = 0; i < r->ndirs; i++) r->dir_used[i] = false;
    size_t n;
    char **paths = r->srv->host->watched_files(r->srv->host_ud, &n);
    r->files = calloc(n ? n : 1, sizeof *r->files);
    if (!r->files) abort();
    for (size_t i = 0; i < n; i++) {
        watched_file *f = &r->files[i];
        f->path = paths[i];
        char *slash = strrchr(f->path, '/');
        f->base = slash ? slash + 1 : f->path;
        f->exists = stat(f->path, &f->st) == 0;
        if (r->watch) watch_parent(r, f->path);
    }
    free(paths);
    r->nfiles = n;
    int kept = 0;
    for (int i = 0; i < r->ndirs; i++) {
        if (r->dir_used[i]) {
            r->dirs[kept] = r->dirs[i];
            r->dir_names[kept] = r->dir_names[i];
            r->dir_used[kept++] = true;
        } else {
            uv_close((uv_handle_t *)r->dirs[i], on_dir_closed);
            free(r->dir_names[i]);
        }
    }
    r->ndirs = kept;
}

static void on_coalesced(uv_timer_t *t);

static void reload(reloader *r, const char *why, bool retry)
{
    /* The files as they were before loading: a save that lands while the
     * load runs must not be taken for what was loaded. */
    size_t n = r->nfiles;
    watched_file *before = malloc((n ? n : 1) * sizeof *before);
    if (!before) abort();
    for (size_t i = 0; i < n; i++) {
        before[i] = r->files[i];
        before[i].path = strdup(r->files[i].path);
        before[i].exists = stat(before[i].path, &before[i].st) == 0;
    }
    r->failed = r->srv->host->reload(r->srv->host_ud, why, retry) != 0;
    rewatch(r);
    bool again = false;
    for (size_t i = 0; i < r->nfiles; i++) {
        for (size_t j = 0; j < n; j++) {
            if (strcmp(r->files[i].path, before[j].path) != 0) continue;
            if (r->files[i].exists != before[j].exists ||
                (r->files[i].exists && !same_stat(&r->files[i].st, &before[j].st))) {
                r->files[i] = (watched_file){r->files[i].path, r->files[i].base, before[j].st, before[j].exists};
                again = true;
            }
        }
    }
    for (size_t j = 0; j < n; j++) free(before[j].path);
    free(before);
    if (again) uv_timer_start(&r->timer, on_coalesced, COALESCE_MS, 0);
}

static void on_coalesced(uv_timer_t *t)
{
    reloader *r = t->data;
    bool changed = false;
    for (size_t i = 0; i < r->nfiles; i++) {
        struct stat st;
        bool exists = stat(r->files[i].path, &st) == 0;
        /* A file that is gone for now (mid-rename) is not a change yet. In
         * directory mode a file still gone after the coalescing delay was
         * deleted: its route goes (loading the rest again). */
        if (exists && (!r->files[i].exists || !same_stat(&st, &r->files[i].st))) changed = true;
        if (!exists && r->files[i].exists && r->dir_mode) changed = true;
    }
    /* After a failed load, a new .lua file beside the script may be the
     * missing module: try again. */
    if (changed || r->retry) reload(r, "file changed", !changed && !r->dir_mode);
    r->retry = false;
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    reloader *r = h->data;
    if (status < 0 || !filename) return;
    for (size_t i = 0; i < r->nfiles; i++) {
        if (strcmp(r->files[i].base, filename) == 0) {
            uv_timer_start(&r->timer, on_coalesced, COALESCE_MS, 0);
            return;
        }
    }
    /* After a failed load, anything new beside the script (a module, or the
     * directory of one) may be what was missing: try again. Serving a
     * directory, a new script there is a new route. */
    size_t len = strlen(filename);
    bool lua_file = len > 4 && strcmp(filename + len - 4, ".lua") == 0;
    if (r->failed || (r->dir_mode && lua_file)) {
        r->retry = true;
        uv_timer_start(&r->timer, on_coalesced, COALESCE_MS, 0);
    }
}

static void on_sighup(uv_signal_t *sig, int signum)
{
    reloader *r = sig->data;
    server_reload_tls(r->srv);
    reload(r, "SIGHUP", false);
}

reloader *reloader_start(server *s, bool watch)
{
    reloader *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->srv = s;
    r->watch = watch;
    struct stat st;
    r->dir_mode = stat(s->cfg->script, &st) == 0 && S_ISDIR(st.st_mode);
    uv_timer_init(s->loop, &r->timer);
    r->timer.data = r;
    uv_signal_init(s->loop, &r->sighup);
    r->sighup.data = r;
    uv_signal_start(&r->sighup, on_sighup, SIGHUP);
    rewatch(r);
    return r;
}

static void on_own_closed(uv_handle_t *h)
{
    reloader *r = h->data;
    if (--r->closing == 0) free(r);
}

void reloader_stop(reloader *r)
{
    if (!r || r->closing) return;
    unwatch_dirs(r);
    free_files(r);
    r->closing = 2;
    uv_close((uv_handle_t *)&r->timer, on_own_closed);
    uv_close((uv_handle_t *)&r->sighup, on_own_closed);
}
