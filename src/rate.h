/* rate.h — a token bucket: at most `rate` events per second on average,
 * `burst` at once (pure: the caller gives the time). Used for --rate, the
 * messages one socket may send (ws.c). */
#ifndef LUAWS_RATE_H
#define LUAWS_RATE_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct rate_bucket {
    double rate;              /* tokens per second, > 0 */
    double burst;             /* the bucket's size, >= 1 */
    double tokens;            /* may go below 0: a debt paid back over time */
    uint64_t last_ms;         /* when tokens was last brought up to date */
} rate_bucket;

static inline void rate_init(rate_bucket *b, double rate, double burst, uint64_t now_ms)
{
    *b = (rate_bucket){rate, burst, burst, now_ms};
}

static inline void rate_refill(rate_bucket *b, uint64_t now_ms)
{
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * b->rate / 1000.0;
        if (b->tokens > b->burst) b->tokens = b->burst;
    }
    b->last_ms = now_ms;
}

/* Whether one event may happen now without taking it. */
static inline bool rate_allows(rate_bucket *b, uint64_t now_ms)
{
    rate_refill(b, now_ms);
    return b->tokens >= 1.0 - 1e-9;   /* a whole token, give or take rounding */
}

/* Takes one token (possibly into debt); returns the tokens left. */
static inline double rate_take(rate_bucket *b, uint64_t now_ms)
{
    rate_refill(b, now_ms);
    return b->tokens -= 1.0;
}

/* Milliseconds until the bucket holds a whole token again. */
static inline uint64_t rate_wait_ms(const rate_bucket *b)
{
    if (b->tokens >= 1.0) return 0;
    double ms = ceil((1.0 - b->tokens) * 1000.0 / b->rate - 1e-9);
    return ms < 1 ? 1 : (uint64_t)ms;
}

#endif
