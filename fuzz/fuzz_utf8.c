/* fuzz_utf8.c — libFuzzer target for the incremental UTF-8 validator (src/utf8.c).
 *
 * Input: arbitrary bytes.
 *
 * A reference decoder written here (code point arithmetic, no tables) says
 * where the input stops being a prefix of any valid UTF-8 text — the byte at
 * which RFC 6455 8.1 wants a fail-fast validator to fail — and after which
 * bytes a code point is complete. Checked against it:
 *   - utf8_valid on the whole buffer;
 *   - utf8_feed one byte at a time: the first false is at exactly the
 *     reference's position, and utf8_complete after every byte;
 *   - utf8_feed in two parts for every split point (each part a heap copy of
 *     exactly its size): the same answer and completeness.
 */
#include "utf8.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); abort(); } } while (0)

/* Can some code point in [lo, hi] at least min be encoded (not a surrogate,
 * not above U+10FFFF)? */
static bool range_ok(uint32_t lo, uint32_t hi, uint32_t min)
{
    if (lo < min) lo = min;
    if (lo > hi) return false;
    if (lo <= 0xD7FF) return true;                       /* [lo, ...] meets [min, D7FF] */
    if (hi < 0xE000) return false;                       /* inside the surrogates */
    return (lo > 0xE000 ? lo : 0xE000) <= (hi < 0x10FFFF ? hi : 0x10FFFF);
}

/* Returns the index of the first byte after which the input can no longer
 * be valid UTF-8, or n. boundary[k] says whether s[0..k] ends a code point. */
static size_t ref_decode(const uint8_t *s, size_t n, bool *boundary)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            boundary[i++] = true;
            continue;
        }
        unsigned len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return i;                                   /* stray continuation, F8..FF */
        for (unsigned m = 0; m < len; m++) {
            if (m > 0) {
                if (i + m >= n) return n;                /* truncated: still a valid prefix */
                uint8_t b = s[i + m];
                if ((b & 0xC0) != 0x80) return i + m;
                cp = cp << 6 | (b & 0x3F);
            }
            unsigned rem = 6 * (len - 1 - m);           /* bits still to come */
            uint32_t lo = cp << rem, hi = lo + ((1u << rem) - 1);
            if (!range_ok(lo, hi, min)) return i + m;
            boundary[i + m] = m == len - 1;
        }
        i += len;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    bool *boundary = calloc(n + 1, sizeof *boundary);
    size_t err = ref_decode(data, n, boundary);
    bool complete = err == n && (n == 0 || boundary[n - 1]);
    bool valid = err == n && complete;

    CHECK(utf8_valid(data, n) == valid);

    /* One byte at a time: fail exactly at err, completeness after each byte. */
    utf8_state st;
    utf8_init(&st);
    CHECK(utf8_complete(&st));
    for (size_t i = 0; i < n; i++) {
        uint8_t *one = malloc(1);
        *one = data[i];
        bool ok = utf8_feed(&st, one, 1);
        free(one);
        CHECK(ok == (i < err));
        if (!ok) break;
        CHECK(utf8_complete(&st) == boundary[i]);
    }

    /* Every split point. */
    for (size_t k = 0; k <= n; k++) {
        uint8_t *head = malloc(k ? k : 1);
        memcpy(head, data, k);
        utf8_init(&st);
        bool ok1 = utf8_feed(&st, head, k);
        free(head);
        CHECK(ok1 == (err >= k));
        if (!ok1) continue;
        if (k > 0 && err > k - 1) CHECK(utf8_complete(&st) == boundary[k - 1]);
        bool ok2 = utf8_feed(&st, data + k, n - k);
        CHECK(ok2 == (err == n));
        if (ok2) CHECK(utf8_complete(&st) == complete);
    }
    free(boundary);
    return 0;
}
