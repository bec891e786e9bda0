/* static.c — plain files for the HTTP side (--static DIR): GET and HEAD of
 * a path under DIR answer with the file and its content type; anything
 * else falls through to the script's handler. */
#include "static.h"
#include "server.h"
#include "log.h"
#include "xalloc.h"
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_STATIC_FILE (64u << 20)

static const struct { const char *ext, *type; } types[] = {
    {"html", "text/html; charset=utf-8"}, {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"}, {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"}, {"json", "application/json"},
    {"txt", "text/plain; charset=utf-8"}, {"md", "text/markdown; charset=utf-8"},
    {"svg", "image/svg+xml"}, {"png", "image/png"}, {"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"},
    {"gif", "image/gif"}, {"webp", "image/webp"}, {"ico", "image/x-icon"}, {"wasm", "application/wasm"},
    {"woff", "font/woff"}, {"woff2", "font/woff2"}, {"xml", "application/xml"}, {"pdf", "application/pdf"},
    {"map", "application/json"}, {"lua", "text/plain; charset=utf-8"},
};

const char *static_content_type(const char *path)
{
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) return "application/octet-stream";
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(dot + 1, types[i].ext) == 0) return types[i].type;
    return "application/octet-stream";
}

/* Decodes %XX in the path and refuses anything that could leave DIR. */
static bool safe_path(const char *url, size_t len, char *out, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len && url[i] != '?' && url[i] != '#'; i++) {
        char ch = url[i];
        if (ch == '%' && i + 2 < len) {
            char hex[3] = {url[i + 1], url[i + 2], 0};
            char *end;
            long v = strtol(hex, &end, 16);
            if (*end || v <= 0) return false;
            ch = (char)v;
            i += 2;
        }
        if (n + 1 >= size) return false;
        out[n++] = ch;
    }
    out[n] = '\0';
    if (out[0] != '/' || strstr(out, "/../") || strstr(out, "/./") || strstr(out, "//")) return false;
    if (n >= 3 && strcmp(out + n - 3, "/..") == 0) return false;
    if (n >= 2 && strcmp(out + n - 2, "/.") == 0) return false;
    return true;
}

/* A dotfile anywhere in the path (/.git/config, /.env)? */
static bool has_dot_segment(const char *rel)
{
    for (const char *p = rel; (p = strchr(p, '/')); p++)
        if (p[1] == '.') return true;
    return false;
}

/* Does path, symlinks resolved, stay inside dir? */
static bool inside(const char *dir, const char *path)
{
    char rdir[PATH_MAX], rpath[PATH_MAX];
    if (!realpath(dir, rdir) || !realpath(path, rpath)) return false;
    size_t n = strlen(rdir);
    return strncmp(rpath, rdir, n) == 0 && (rpath[n] == '/' || rpath[n] == '\0' || (n == 1 && rdir[0] == '/'));
}

/* A file being read for a connection (off the loop). */
struct static_read {
    uv_fs_t req;
    uv_loop_t *loop;
    conn *c;                  /* NULL once the connection is gone: then only freed */
    int fd;
    char *body;
    size_t size, got;
    bool keep_alive;
    char type[128];
    char path[2048];
};

static void read_done(static_read *sr, ssize_t n);

static void on_file_read(uv_fs_t *req)
{
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    read_done(req->data, n);
}

/* Starts reading the rest; 0, or a libuv error if the read cannot start. */
static int start_read(static_read *sr)
{
    uv_buf_t b = uv_buf_init(sr->body + sr->got, (unsigned)(sr->size - sr->got));
    return uv_fs_read(sr->loop, &sr->req, sr->fd, &b, 1, (int64_t)sr->got, on_file_read);
}

static void read_done(static_read *sr, ssize_t n)
{
    if (sr->c && n > 0 && sr->got + (size_t)n < sr->size) {
        sr->got += (size_t)n;
        int r = start_read(sr);
        if (r == 0) return;
        n = r;
    }
    if (n > 0) sr->got += (size_t)n;
    close(sr->fd);
    conn *c = sr->c;
    if (c) {
        c->http->static_read = NULL;
        if (sr->got == sr->size) {
            conn_respond(c, 200, sr->type, strlen(sr->type), sr->body, sr->got, sr->keep_alive);
        } else {
            log_warn("conn %llu: cannot read %s", (unsigned long long)c->id, sr->path);
            static const char body[] = "500 Internal Server Error: cannot read the file\n";
            conn_respond(c, 500, NULL, 0, body, sizeof body - 1, false);
        }
        http_conn_answered(c);
        conn_resume(c);
    }
    free(sr->body);
    free(sr);
}

void static_conn_gone(conn *c)
{
    if (!c->http || !c->http->static_read) return;
    c->http->static_read->c = NULL;   /* the read in flight frees itself */
    c->http->static_read = NULL;
}

bool static_serve(conn *c, const char *dir, const http_request *req, bool dotfiles, bool symlinks)
{
    bool head = strcmp(req->method, "HEAD") == 0;
    if (!head && strcmp(req->method, "GET") != 0) return false;
    char rel[1024], path[2048];
    if (!safe_path(req->url, req->url_len, rel, sizeof rel)) return false;
    snprintf(path, sizeof path, "%s%s%s", dir, rel, rel[strlen(rel) - 1] == '/' ? "index.html" : "");
    /* Hidden files (.git, .env) and links out of DIR are not served unless
     * asked for (--static-dotfiles, --static-symlinks). */
    if (!dotfiles && has_dot_segment(rel)) {
        log_warn("conn %llu: --static refuses %s: a dotfile (--static-dotfiles serves them)", (unsigned long long)c->id, rel);
        return false;
    }
    if (!symlinks && access(path, F_OK) == 0 && !inside(dir, path)) {
        log_warn("conn %llu: --static refuses %s: a link out of the directory (--static-symlinks follows them)",
                 (unsigned long long)c->id, rel);
        return false;
    }
    /* O_NONBLOCK: a named pipe must not block the worker (it is no regular
     * file and gets no answer from here anyway). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return false;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > MAX_STATIC_FILE) {
        close(fd);
        return false;
    }
    char type[128];
    snprintf(type, sizeof type, "Content-Type: %s\r\n", static_content_type(path));
    if (st.st_size == 0) {
        close(fd);
        conn_respond(c, 200, type, strlen(type), "", 0, req->keep_alive);
        return true;
    }
    /* The file is read in libuv's thread pool: a slow disk must not stall
     * the worker. The connection reads no more requests meanwhile, so the
     * answers keep their order. */
    static_read *sr = xcalloc(sizeof *sr);
    sr->loop = c->srv->loop;
    sr->c = c;
    sr->fd = fd;
    sr->size = (size_t)st.st_size;
    sr->body = xmalloc(sr->size + 1);
    sr->keep_alive = req->keep_alive;
    memcpy(sr->type, type, sizeof type);
    snprintf(sr->path, sizeof sr->path, "%s", path);
    sr->req.data = sr;
    if (start_read(sr) != 0) {
        log_warn("conn %llu: cannot read %s", (unsigned long long)c->id, path);
        close(fd);
        free(sr->body);
        free(sr);
        return false;
    }
    c->http->static_read = sr;
    conn_pause(c);
    return true;
}
