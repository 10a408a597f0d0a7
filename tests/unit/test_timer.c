/* Unit tests: lazily re-armed timeouts (include/px/timer.h) -- a deadline
 * moved later leaves the event where it is, and the callback, woken at the
 * old deadline, re-arms for the rest and runs its timeout only at the new
 * one; a deadline moved earlier fires early; a deleted event is added again
 * by the next arm. */
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "px/timer.h"
#include "unit.h"

struct probe {
    struct event ev;
    struct px_timer_due due;
    int early;            /* callbacks that found the deadline moved on */
    int fired;            /* timeouts that ran */
    uint64_t fired_ms;    /* px_now_ms() when the timeout ran */
};

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct probe *p = arg;
    if (px_timer_early(&p->ev, &p->due)) {
        p->early++;
        return;
    }
    p->fired++;
    p->fired_ms = px_now_ms();
}

static struct timeval ms(long v)
{
    struct timeval tv = {v / 1000, (v % 1000) * 1000};
    return tv;
}

/* A base with p's timer on it (the caller REQUIREs it and frees it). */
static struct event_base *base_with(struct probe *p)
{
    struct event_base *b = event_base_new();
    if (b != NULL)
        evtimer_assign(&p->ev, b, on_timer, p);
    return b;
}

static void run(struct event_base *b, long limit_ms)
{
    struct timeval tv = ms(limit_ms);
    event_base_loopexit(b, &tv);
    event_base_dispatch(b);
}

static void test_later_deadline_is_lazy_and_exact(void)
{
    struct probe p = {0};
    struct event_base *b = base_with(&p);
    REQUIRE(b != NULL);
    struct timeval t50 = ms(50), t150 = ms(150);
    uint64_t t0 = px_now_ms();
    px_timer_arm(&p.ev, &p.due, &t50);
    CHECK_INT(p.due.fire_ms, p.due.due_ms);
    uint64_t fire = p.due.fire_ms;
    px_timer_arm(&p.ev, &p.due, &t150); /* later: only the deadline moves */
    CHECK_INT(p.due.fire_ms, fire);
    CHECK(p.due.due_ms >= t0 + 150);
    run(b, 400);
    CHECK(p.early <= 1);    /* woken at 50 ms, re-armed (a loaded machine may wake it late, when due) */
    CHECK_INT(p.fired, 1);  /* and the timeout ran once, ... */
    CHECK(p.fired_ms + PX_TIMER_SLACK_MS >= t0 + 150); /* ... not before its deadline */
    event_base_free(b);
}

static void test_earlier_deadline_fires_early(void)
{
    struct probe p = {0};
    struct event_base *b = base_with(&p);
    REQUIRE(b != NULL);
    struct timeval t300 = ms(300), t30 = ms(30);
    uint64_t t0 = px_now_ms();
    px_timer_arm(&p.ev, &p.due, &t300);
    px_timer_arm(&p.ev, &p.due, &t30); /* earlier: added again */
    CHECK_INT(p.due.fire_ms, p.due.due_ms);
    run(b, 200); /* ends before the 300 ms one could have run */
    CHECK_INT(p.early, 0);
    CHECK_INT(p.fired, 1);
    CHECK(p.fired_ms + PX_TIMER_SLACK_MS >= t0 + 30);
    event_base_free(b);
}

static void test_deleted_event_is_added_again(void)
{
    struct probe p = {0};
    struct event_base *b = base_with(&p);
    REQUIRE(b != NULL);
    struct timeval t20 = ms(20), t40 = ms(40);
    px_timer_arm(&p.ev, &p.due, &t20);
    event_del(&p.ev);
    px_timer_arm(&p.ev, &p.due, &t40); /* later than the old fire_ms, but nothing is pending */
    CHECK(event_pending(&p.ev, EV_TIMEOUT, NULL));
    run(b, 200);
    CHECK_INT(p.fired, 1);
    /* after it ran: not pending, so the next arm adds it */
    px_timer_arm(&p.ev, &p.due, &t20);
    CHECK(event_pending(&p.ev, EV_TIMEOUT, NULL));
    run(b, 200);
    CHECK_INT(p.fired, 2);
    event_base_free(b);
}

static void test_busy_rearms_cost_one_wakeup(void)
{
    /* a connection that re-arms a 500 ms timeout every 5 ms for 650 ms or
     * more (a busy keep-alive connection): the timeout never runs, and the
     * event is woken about once per 500 ms, not re-added 130 times */
    struct probe p = {0};
    struct event_base *b = base_with(&p);
    REQUIRE(b != NULL);
    struct timeval t500 = ms(500), t5 = ms(5);
    px_timer_arm(&p.ev, &p.due, &t500);
    for (int i = 0; i < 130; i++) {
        event_base_loopexit(b, &t5);
        event_base_dispatch(b);
        px_timer_arm(&p.ev, &p.due, &t500);
    }
    CHECK_INT(p.fired, 0);
    CHECK(p.early >= 1 && p.early <= 8);
    run(b, 1000);
    CHECK_INT(p.fired, 1);
    event_base_free(b);
}

static void test_common_timeouts(void)
{
    /* the workers' tv_* are libevent common timeouts (a magic in tv_usec) */
    struct event_base *b = event_base_new();
    REQUIRE(b != NULL);
    struct timeval t = ms(1250);
    const struct timeval *common = event_base_init_common_timeout(b, &t);
    REQUIRE(common != NULL && common->tv_usec != t.tv_usec);
    CHECK_INT(px_tv_ms(common), 1250);
    struct timeval t80 = ms(80);
    const struct timeval *c80 = event_base_init_common_timeout(b, &t80);
    REQUIRE(c80 != NULL);
    struct probe p = {0};
    evtimer_assign(&p.ev, b, on_timer, &p);
    uint64_t t0 = px_now_ms();
    px_timer_arm(&p.ev, &p.due, c80);
    CHECK(p.due.due_ms >= t0 + 80 && p.due.due_ms <= t0 + 80 + 50);
    run(b, 400);
    CHECK_INT(p.fired, 1);
    CHECK(p.fired_ms + PX_TIMER_SLACK_MS >= t0 + 80);
    event_base_free(b);
}

int main(void)
{
    UNIT_RUN(test_later_deadline_is_lazy_and_exact);
    UNIT_RUN(test_earlier_deadline_fires_early);
    UNIT_RUN(test_deleted_event_is_added_again);
    UNIT_RUN(test_busy_rearms_cost_one_wakeup);
    UNIT_RUN(test_common_timeouts);
    return unit_report();
}
