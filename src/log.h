/* log.h — one line per event on stderr: "2026-11-25 17:00:00.123 INFO  text". */
#ifndef LUAWS_LOG_H
#define LUAWS_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level level);
/* A short tag shown on every line (the worker: "w1"). */
void log_set_tag(const char *tag);
/* One JSON object per line instead of text (--log-format json). */
void log_set_json(bool json);
/* Returns -1 for an unknown name. */
int log_level_parse(const char *name);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The lowest level logged. Debug lines on hot paths (a send, a read) are
 * skipped before their arguments are even evaluated. */
extern enum log_level log_min_level;

#define log_debug(...) do { if (log_min_level <= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
