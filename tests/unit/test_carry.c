/* Unit tests: the carry-over object -- listeners recorded per address in
 * worker order, references on the zone set it holds (a zone set outlives
 * the snapshot that made it while the carry holds it, and a rebuild
 * carries zone state from it by name). */
#include <stdio.h>

#include "px/addr.h"
#include "px/carry.h"
#include "px/config.h"
#include "px/limit.h"
#include "unit.h"

static void test_listeners_by_address(void)
{
    struct px_carry c;
    struct px_addr a, b;
    px_carry_init(&c);
    REQUIRE(px_addr_parse("127.0.0.1:8080", &a) == NULL);
    REQUIRE(px_addr_parse("127.0.0.1:8443", &b) == NULL);
    CHECK_INT(px_carry_add_listener(&c, &a, 0, 5), 0);
    CHECK_INT(px_carry_add_listener(&c, &b, 1, 6), 0);
    CHECK_INT(px_carry_add_listener(&c, &a, 0, 7), 0);
    CHECK_INT(px_carry_add_listener(&c, &b, 1, 8), 0);
    CHECK_INT(c.nlisteners, 2);
    CHECK_STR(c.listeners[0].addr.text, "127.0.0.1:8080");
    CHECK_INT(c.listeners[0].https, 0);
    CHECK_INT(c.listeners[0].nfds, 2);
    CHECK_INT(c.listeners[0].fds[0], 5);
    CHECK_INT(c.listeners[0].fds[1], 7);
    CHECK_INT(c.listeners[1].https, 1);
    CHECK_INT(c.listeners[1].fds[1], 8);
    /* bounded: one socket per worker at most */
    for (int i = 2; i < PX_MAX_WORKERS; i++)
        CHECK_INT(px_carry_add_listener(&c, &a, 0, 100 + i), 0);
    CHECK_INT(px_carry_add_listener(&c, &a, 0, 999), -1);
    px_carry_free(&c);
    CHECK_INT(c.nlisteners, 0);
}

static struct px_limits *zones(const char *ini)
{
    char err[256];
    struct px_config *cfg = NULL;
    struct px_limits *l = NULL;
    if (px_config_load_string(ini, "t.ini", &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return NULL;
    }
    l = px_limits_build(cfg, NULL, err, sizeof(err));
    px_config_free(cfg);
    return l;
}

/* The carry's reference keeps a set (and its zone state) alive after its
 * maker dropped it; keeping another set drops it. */
static void test_zones_held(void)
{
    static const char ini[] = "[proxy]\nlisten_http = 127.0.0.1:0\n"
                              "[limit api]\nrate = 1r/m\nburst = 0\nzone_size = 64k\n[route /]\nlimit = api\n";
    struct px_carry c;
    struct px_limit_key k = {4, {192, 0, 2, 7}};
    struct px_limit_result res;
    px_carry_init(&c);
    struct px_limits *l1 = zones(ini);
    REQUIRE(l1 != NULL);
    struct px_limit_zone *z = px_limits_find(l1, "api");
    REQUIRE_ELSE(z != NULL, px_limits_free(l1));
    px_limit_check(&z, 1, &k, 1000, &res);
    CHECK_INT(res.verdict, PX_LIMIT_PASS);
    px_carry_keep_zones(&c, l1);
    px_carry_keep_zones(&c, l1); /* the same set again: no second reference */
    px_limits_free(l1);          /* the snapshot that made it is gone */
    CHECK(c.zones == l1);
    CHECK_INT(px_limit_zone_keys(px_limits_find(c.zones, "api")), 1); /* still alive, state and all */
    px_limit_check(&z, 1, &k, 1000, &res);
    CHECK_INT(res.verdict, PX_LIMIT_REJECT);
    px_carry_keep_zones(&c, NULL); /* drops the last reference (ASan checks the free) */
    CHECK(c.zones == NULL);
    px_carry_free(&c);
}

int main(void)
{
    UNIT_RUN(test_listeners_by_address);
    UNIT_RUN(test_zones_held);
    return unit_report();
}
