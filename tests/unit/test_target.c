/* test_target.c -- px/target.h: the health state list, status, the status
 * page and metrics show (px_target_health_state), and the registry lookup. */
#include <stdatomic.h>

#include "px/addr.h"
#include "px/target.h"
#include "unit.h"

static void test_health_states(void)
{
    struct px_addr a;
    char buf[24];
    px_target_set_nworkers(2);
    REQUIRE(px_addr_parse("127.0.0.1:8080", &a) == NULL);
    struct px_target *t = px_target_acquire(&a);
    REQUIRE(t != NULL);
    CHECK_STR(px_target_health_state(t, buf, sizeof(buf)), "healthy");
    atomic_store(&t->health_fails, 1);
    CHECK_STR(px_target_health_state(t, buf, sizeof(buf)), "failing 1/3");
    atomic_store(&t->health_fails, 2);
    CHECK_STR(px_target_health_state(t, buf, sizeof(buf)), "failing 2/3");
    atomic_store(&t->health_fails, 3);
    atomic_store(&t->healthy, 0);
    CHECK_STR(px_target_health_state(t, buf, sizeof(buf)), "unhealthy");
    atomic_store(&t->health_fails, 0);
    atomic_store(&t->healthy, 1);
    CHECK_STR(px_target_health_state(t, buf, sizeof(buf)), "healthy");
    /* retired: draining while worker 1 still has a request on it, then standby */
    atomic_store(&t->draining, 1);
    px_target_load_add(t, 1, 1, 0);
    CHECK_STR(px_target_health_state(t, buf, sizeof(buf)), "draining");
    px_target_load_add(t, 1, -1, 1); /* a tunnel counts too */
    CHECK_STR(px_target_health_state(t, buf, sizeof(buf)), "draining");
    px_target_load_add(t, 1, 0, -1);
    CHECK_STR(px_target_health_state(t, buf, sizeof(buf)), "standby");
    px_target_release(t);
}

static void test_find(void)
{
    struct px_addr a;
    REQUIRE(px_addr_parse("127.0.0.1:9090", &a) == NULL);
    CHECK(px_target_find("127.0.0.1:9090") == NULL);
    struct px_target *t = px_target_acquire(&a);
    REQUIRE(t != NULL);
    CHECK(px_target_find("127.0.0.1:9090") == t);
    CHECK(px_target_find("127.0.0.1:9091") == NULL);
    px_target_release(t);
    CHECK(px_target_find("127.0.0.1:9090") == NULL);
}

int main(void)
{
    UNIT_RUN(test_health_states);
    UNIT_RUN(test_find);
    px_target_shutdown();
    return unit_report();
}
