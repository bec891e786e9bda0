/* utf8.h — incremental UTF-8 validation (RFC 3629), free of I/O.
 *
 * Text messages arrive in pieces (frames, TCP reads, inflate output), so the
 * validator keeps the state of a partly seen code point between calls and
 * reports an error at the first byte that can never become valid: this is
 * what RFC 6455 section 8.1 calls failing fast. */
#ifndef LUAWS_UTF8_H
#define LUAWS_UTF8_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef struct utf8_state {
    uint8_t need;    /* continuation bytes still expected */
    uint8_t lo, hi;  /* allowed range of the next continuation byte */
} utf8_state;


static inline void utf8_init(utf8_state *s) { s->need = 0; s->lo = 0x80; s->hi = 0xBF; }

/* Feeds n bytes; returns false as soon as the input can no longer be valid
 * UTF-8 (the state is then meaningless). */
bool utf8_feed(utf8_state *s, const uint8_t *p, size_t n);

/* True when the bytes fed so far end on a code point boundary. */
static inline bool utf8_complete(const utf8_state *s) { return s->need == 0; }

/* Whole-buffer convenience. */
bool utf8_valid(const uint8_t *p, size_t n);

#endif
