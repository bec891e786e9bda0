/* xalloc.c — see xalloc.h. */
#include "xalloc.h"
#include <stdlib.h>
#include <string.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

void *xcalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) abort();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) abort();
    return p;
}

char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}

void bytes_reserve(bytes *b, size_t extra, size_t min_cap)
{
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap * 2 : min_cap;
    while (cap < b->len + extra) cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void bytes_append(bytes *b, const void *p, size_t n)
{
    bytes_reserve(b, n, 256);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}
