/* log.c — plain line logging to stderr; see log.h. */
#include "log.h"
#include "utf8.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>

/* Set once from the command line before the loop starts. */
enum log_level log_min_level = LOG_INFO;

static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

/* Set once per process, after fork. */
static char tag[16];
static char worker[16];
static bool as_json;

void log_set_tag(const char *t)
{
    snprintf(tag, sizeof tag, "[%s] ", t);
    snprintf(worker, sizeof worker, "%s", t);
}

void log_set_json(bool json) { as_json = json; }

/* Appends s to out as the inside of a JSON string: always valid UTF-8,
 * so bytes that are not (a request path, say) become U+FFFD, and a cut
 * never splits a character. */
static int json_escape(char *out, int room, const char *s)
{
    int n = 0;
    while (*s && n < room - 7) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x80) {
            if (ch == '"' || ch == '\\') {
                out[n++] = '\\';
                out[n++] = (char)ch;
            } else if (ch < 0x20) {
                n += snprintf(out + n, (size_t)(room - n), "\\u%04x", ch);
            } else {
                out[n++] = (char)ch;
            }
            s++;
            continue;
        }
        size_t len = ch >= 0xF0 ? 4 : ch >= 0xE0 ? 3 : 2;
        if (strnlen(s, len) == len && utf8_valid((const uint8_t *)s, len)) {
            memcpy(out + n, s, len);
            n += (int)len;
            s += len;
        } else {
            memcpy(out + n, "\xef\xbf\xbd", 3);
            n += 3;
            s++;
        }
    }
    return n;
}

void log_set_level(enum log_level level) { log_min_level = level; }

int log_level_parse(const char *name)
{
    static const char *const lower[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, lower[i]) == 0) return i;
    return -1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < log_min_level) return;
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    char msg[3072];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int n;
    if (as_json) {
        n = (int)strftime(line, sizeof line, "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
        n += snprintf(line + n, sizeof line - (size_t)n, ".%03d\",\"level\":\"%s\",%s%s%s\"msg\":\"",
                      (int)(tv.tv_usec / 1000), names[level], *worker ? "\"worker\":\"" : "", worker,
                      *worker ? "\"," : "");
        n += json_escape(line + n, (int)sizeof line - n - 3, msg);
        n += snprintf(line + n, sizeof line - (size_t)n, "\"}");
    } else {
        n = (int)strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S", &tm);
        n += snprintf(line + n, sizeof line - (size_t)n, ".%03d %-5s %s%s", (int)(tv.tv_usec / 1000), names[level],
                      tag, msg);
    }
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    /* One write per line keeps lines whole when several processes share stderr. */
    fwrite(line, 1, (size_t)n, stderr);
    fflush(stderr);
}
