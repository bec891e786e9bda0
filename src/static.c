/* static.c — plain files for the HTTP side (--static DIR): GET and HEAD of
 * a path under DIR answer with the file and its content type; anything
 * else falls through to the script's handler. */
#include "static.h"
#include "server.h"
#include "log.h"
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
    /* Local files are read at once: small, and in the page cache. */
    char *body = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (body && got < (size_t)st.st_size) {
        ssize_t r = read(fd, body + got, (size_t)st.st_size - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (!body || got != (size_t)st.st_size) {
        free(body);
        log_warn("conn %llu: cannot read %s", (unsigned long long)c->id, path);
        return false;
    }
    char head_lines[256];
    int hl = snprintf(head_lines, sizeof head_lines, "Content-Type: %s\r\n", static_content_type(path));
    conn_respond(c, 200, head_lines, (size_t)hl, body, got, req->keep_alive);
    free(body);
    return true;
}
