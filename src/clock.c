/* clock.c — a worker's time and timers: libuv's, or a spec's (clock.h). */
#include "clock.h"
#include <assert.h>
#include <stddef.h>

void wclock_init(wclock *k, uv_loop_t *loop, bool manual)
{
    *k = (wclock){.loop = loop, .manual = manual};
}

uint64_t wclock_now(const wclock *k) { return k->manual ? k->now : uv_now(k->loop); }

static void unlink_timer(wtimer *t)
{
    if (!t->active) return;
    if (t->prev) t->prev->next = t->next;
    else t->clock->timers = t->next;
    if (t->next) t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->active = false;
}

static void link_timer(wtimer *t)
{
    wclock *k = t->clock;
    t->prev = NULL;
    t->next = k->timers;
    if (k->timers) k->timers->prev = t;
    k->timers = t;
    t->active = true;
}

/* The manual clock's next timer due by `until`: earliest, then first started. */
static wtimer *next_due(wclock *k, uint64_t until)
{
    wtimer *best = NULL;
    for (wtimer *t = k->timers; t; t = t->next)
        if (t->due <= until && (!best || t->due < best->due || (t->due == best->due && t->seq < best->seq)))
            best = t;
    return best;
}

void wclock_advance(wclock *k, uint64_t ms, void (*settle)(void *ud), void *ud)
{
    assert(k->manual && !k->firing);
    uint64_t until = k->now + ms;
    wtimer *t;
    while ((t = next_due(k, until))) {
        k->now = t->due;
        unlink_timer(t);
        k->firing = t;
        t->fn(t);
        k->firing = NULL;
        if (t->closing) {
            if (t->closed) t->closed(t);
        } else if (t->repeat && !t->active) {
            /* Not restarted by its callback: the next period. */
            t->due = k->now + t->repeat;
            t->seq = k->seq++;
            link_timer(t);
        }
        if (settle) settle(ud);
    }
    k->now = until;
}

static void on_uv_timer(uv_timer_t *u)
{
    wtimer *t = u->data;
    t->fn(t);
}

static void on_uv_closed(uv_handle_t *h)
{
    wtimer *t = h->data;
    if (t->closed) t->closed(t);
}

void wtimer_init(wclock *k, wtimer *t)
{
    *t = (wtimer){.clock = k};
    if (!k->manual) {
        uv_timer_init(k->loop, &t->uv);
        t->uv.data = t;
    }
}

void wtimer_start(wtimer *t, wtimer_fn fn, uint64_t ms, uint64_t repeat)
{
    assert(!t->closing);
    t->fn = fn;
    t->repeat = repeat;
    wclock *k = t->clock;
    if (!k->manual) {
        uv_timer_start(&t->uv, on_uv_timer, ms, repeat);
        return;
    }
    unlink_timer(t);
    t->due = k->now + ms;
    t->seq = k->seq++;
    link_timer(t);
}

void wtimer_stop(wtimer *t)
{
    if (!t->clock->manual) uv_timer_stop(&t->uv);
    else unlink_timer(t);
}

void wtimer_unref(wtimer *t)
{
    if (!t->clock->manual) uv_unref((uv_handle_t *)&t->uv);
}

bool wtimer_is_closing(const wtimer *t) { return t->closing; }

void wtimer_close(wtimer *t, void (*closed)(wtimer *t))
{
    assert(!t->closing);
    t->closing = true;
    t->closed = closed;
    wclock *k = t->clock;
    if (!k->manual) {
        uv_close((uv_handle_t *)&t->uv, on_uv_closed);
        return;
    }
    unlink_timer(t);
    if (k->firing != t && closed) closed(t);
}
