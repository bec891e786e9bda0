/* utf8.c — incremental UTF-8 validation; see utf8.h. */
#include "utf8.h"
#include <string.h>

#define ASCII_MASK 0x8080808080808080ULL

bool utf8_feed(utf8_state *s, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;

    while (p < end) {
        if (s->need == 0) {
            /* Fast path: most text is ASCII; check 32, then 8 bytes at once
             * (not right at a lead byte: text that has one often has more). */
            if (*p < 0x80) {
                while (end - p >= 32) {
                    uint64_t w[4];
                    memcpy(w, p, 32);
                    if ((w[0] | w[1] | w[2] | w[3]) & ASCII_MASK) break;
                    p += 32;
                }
                while (end - p >= 8) {
                    uint64_t w;
                    memcpy(&w, p, 8);
                    if (w & ASCII_MASK) break;
                    p += 8;
                }
                if (p == end) break;
            }
            uint8_t c = *p++;
            if (c < 0x80) continue;
            /* Lead byte: the ranges of the next byte rule out overlong forms,
             * surrogates (U+D800..DFFF) and code points above U+10FFFF. */
            s->lo = 0x80; s->hi = 0xBF;
            if (c >= 0xC2 && c <= 0xDF) {
                s->need = 1;
            } else if (c >= 0xE0 && c <= 0xEF) {
                s->need = 2;
                if (c == 0xE0) s->lo = 0xA0;
                else if (c == 0xED) s->hi = 0x9F;
            } else if (c >= 0xF0 && c <= 0xF4) {
                s->need = 3;
                if (c == 0xF0) s->lo = 0x90;
                else if (c == 0xF4) s->hi = 0x8F;
            } else {
                return false;
            }
        } else {
            uint8_t c = *p++;
            if (c < s->lo || c > s->hi) return false;
            s->need--;
            s->lo = 0x80; s->hi = 0xBF;
        }
    }
    return true;
}

bool utf8_valid(const uint8_t *p, size_t n)
{
    utf8_state s;
    utf8_init(&s);
    return utf8_feed(&s, p, n) && utf8_complete(&s);
}
