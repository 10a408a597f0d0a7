/* px/timer.h -- timeouts re-armed lazily (nginx's NGX_TIMER_LAZY_DELAY,
 * made exact).
 *
 * A keep-alive request re-arms its connections' timeouts five times: the
 * client's header and keep-alive timers, the upstream's send, read and idle
 * timers. Each event_add moves the event in libevent's min-heap (~280
 * instructions, 10 % of a plain request). Most re-arms only move a pending
 * deadline later, so px_timer_arm then records the new deadline and leaves
 * the event where it is; it fires at the old one, and px_timer_early(),
 * first thing in the callback, sees that the deadline has moved and adds
 * the event again for the rest. A deadline moved earlier is an event_add as
 * before. So the callback still runs at its deadline (to the millisecond,
 * libevent's own resolution), not before; a busy connection costs one
 * wake-up per timeout period instead of five heap updates per request.
 *
 * Every event_add of the event goes through px_timer_arm (else fire_ms is
 * stale); event_del stays as it is: a deleted event is not pending, and the
 * next arm adds it. struct px_timer_due is zero for a new object. A leaf on
 * libevent and px/common.h. */
#ifndef PX_TIMER_H
#define PX_TIMER_H

#include <stdint.h>
#include <sys/time.h>

#include <event2/event.h>

#include "px/common.h"

/* Early by at most this much counts as due: libevent computes its deadline
 * from the loop's cached clock, a little behind px_now_ms(). */
#define PX_TIMER_SLACK_MS 2

struct px_timer_due {
    uint64_t due_ms;  /* when the callback is to run (px_now_ms() clock) */
    uint64_t fire_ms; /* when the event fires, as last added */
};

/* tv in milliseconds, rounded up. tv may be one of libevent's common
 * timeouts (event_base_init_common_timeout: the workers' tv_* are), whose
 * tv_usec carries a magic and a queue index above its low 20 bits. */
#define PX_TV_USEC_MASK 0x000fffff
static inline uint64_t px_tv_ms(const struct timeval *tv)
{
    return (uint64_t)tv->tv_sec * 1000u + ((uint64_t)(tv->tv_usec & PX_TV_USEC_MASK) + 999u) / 1000u;
}

/* event_add(ev, tv), or only the new deadline when ev is pending to fire no
 * later than it. */
static inline void px_timer_arm(struct event *ev, struct px_timer_due *d, const struct timeval *tv)
{
    uint64_t due = px_now_ms() + px_tv_ms(tv);
    d->due_ms = due;
    if (due >= d->fire_ms && event_pending(ev, EV_TIMEOUT, NULL))
        return;
    d->fire_ms = due;
    event_add(ev, tv);
}

/* First thing in ev's callback: 1 when its deadline has moved on since it
 * was added (it is added again for the rest; the callback returns), 0 when
 * the timeout is due. */
static inline int px_timer_early(struct event *ev, struct px_timer_due *d)
{
    uint64_t now = px_now_ms();
    if (d->due_ms <= now + PX_TIMER_SLACK_MS)
        return 0;
    uint64_t left = d->due_ms - now;
    struct timeval tv = {(time_t)(left / 1000u), (suseconds_t)(left % 1000u * 1000u)};
    d->fire_ms = d->due_ms;
    event_add(ev, &tv);
    return 1;
}

#endif
