/* xalloc.h — allocation that cannot fail: the one place luaws decides
 * what running out of memory means (abort, as a worker cannot go on
 * half-built), and the one buffer-growth rule.
 *
 * Limits that protect the server (message size, backpressure, script
 * memory) are enforced before allocating, never by a failing malloc. */
#ifndef LUAWS_XALLOC_H
#define LUAWS_XALLOC_H

#include <stddef.h>
#include "bytes.h"

void *xmalloc(size_t n);                 /* n may be 0 */
void *xcalloc(size_t n);                 /* zeroed */
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);            /* NULL gives "" */
/* Room for extra more bytes in b: the capacity doubles (at least min_cap). */
void bytes_reserve(bytes *b, size_t extra, size_t min_cap);
void bytes_append(bytes *b, const void *p, size_t n);

#endif
