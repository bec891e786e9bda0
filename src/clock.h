/* clock.h — a worker's time, and the timers that run on it.
 *
 * Normally this is libuv's loop time and libuv's timers. Under `luaws test`
 * the clock is the spec's (wclock.manual): time stands still until the spec
 * advances it (t.clock:advance), and then each timer due fires in order, at
 * its own time. Everything in the core and the binding that depends on time
 * (luaws.after/every/sleep, automatic pings, the handshake, close and
 * linger timeouts) reads the time and sets its timers here, so a spec
 * drives all of it without waiting. Signals, file watching and the
 * shutdown drain stay on libuv's clock: tests do not use them. */
#ifndef LUAWS_CLOCK_H
#define LUAWS_CLOCK_H

#include <uv.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct wclock wclock;
typedef struct wtimer wtimer;
typedef void (*wtimer_fn)(wtimer *t);

struct wtimer {
    uv_timer_t uv;            /* the real clock's timer */
    wclock *clock;
    wtimer_fn fn;
    void *data;               /* the owner's */
    void (*closed)(wtimer *t);/* called once the timer may be freed */
    /* The manual clock's timers: a list of every started timer. */
    uint64_t due, repeat, seq;
    wtimer *prev, *next;
    bool active;
    bool closing;
};

struct wclock {
    uv_loop_t *loop;
    bool manual;              /* a spec drives it (luaws test) */
    uint64_t now;             /* manual: ms since the start */
    uint64_t seq;             /* manual: start order breaks ties */
    wtimer *timers;           /* manual: the active ones */
    wtimer *firing;           /* manual: the timer whose callback runs */
};

void wclock_init(wclock *k, uv_loop_t *loop, bool manual);
/* Milliseconds, as uv_now. */
uint64_t wclock_now(const wclock *k);
/* Manual clock only: moves time forward by ms. Each timer due fires at its
 * own time, in order (start order for the same time); settle(ud) runs after
 * each, so the I/O and events it caused are done before the next. */
void wclock_advance(wclock *k, uint64_t ms, void (*settle)(void *ud), void *ud);

void wtimer_init(wclock *k, wtimer *t);
/* (Re)starts t: fn(t) after ms, then every repeat ms if repeat > 0. */
void wtimer_start(wtimer *t, wtimer_fn fn, uint64_t ms, uint64_t repeat);
void wtimer_stop(wtimer *t);
/* Does not keep the loop alive (housekeeping). */
void wtimer_unref(wtimer *t);
/* Stops t for good; closed(t) (may be NULL) is called once t may be
 * freed: later (libuv), or at once (manual clock) unless t's own callback
 * is running, then right after it returns. */
void wtimer_close(wtimer *t, void (*closed)(wtimer *t));
bool wtimer_is_closing(const wtimer *t);

#endif
