/* Unit tests: the carry-over object -- listeners recorded per address in
 * worker order, references on the zone set it holds (a zone set outlives
 * the snapshot that made it while the carry holds it, and a rebuild
 * carries zone state from it by name). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/addr.h"
#include "px/carry.h"
#include "px/common.h"
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

/* A binary upgrade's blob: the zones' buckets go across by name (and
 * zone_size, as a reload keeps them); a truncated blob is refused. */
static void test_export_import(void)
{
    static const char ini1[] = "[proxy]\nlisten_http = 127.0.0.1:0\n"
                               "[limit api]\nrate = 1r/m\nburst = 1\nzone_size = 64k\n"
                               "[limit other]\nrate = 1r/m\nburst = 0\nzone_size = 64k\n[route /]\nlimit = api other\n";
    static const char ini2[] = "[proxy]\nlisten_http = 127.0.0.1:0\n"
                               "[limit api]\nrate = 1r/m\nburst = 1\nzone_size = 64k\n"
                               "[limit other]\nrate = 1r/m\nburst = 0\nzone_size = 128k\n[route /]\nlimit = api other\n";
    struct px_carry c1, c2;
    struct px_limit_key k = {4, {192, 0, 2, 7}}, k2 = {6, {0x20, 0x01, 0x0d, 0xb8, [15] = 1}};
    struct px_limit_result res;
    struct px_carry_counts n;
    unsigned char *blob = NULL;
    size_t len = 0;
    char err[256];
    uint64_t now = px_now_ms();
    px_carry_init(&c1);
    px_carry_init(&c2);
    struct px_limits *l1 = zones(ini1), *l2 = zones(ini2);
    REQUIRE_ELSE(l1 != NULL && l2 != NULL, (px_limits_free(l1), px_limits_free(l2)));
    px_carry_keep_zones(&c1, l1);
    px_carry_keep_zones(&c2, l2);
    px_limits_free(l1);
    px_limits_free(l2);
    struct px_limit_zone *a1 = px_limits_find(c1.zones, "api"), *o1 = px_limits_find(c1.zones, "other");
    for (int i = 0; i < 2; i++) { /* burst 1: two pass, k is at its burst */
        px_limit_check(&a1, 1, &k, now, &res);
        CHECK_INT(res.verdict, PX_LIMIT_PASS);
    }
    px_limit_check(&a1, 1, &k2, now, &res);
    px_limit_check(&o1, 1, &k, now, &res);
    CHECK_INT(px_carry_export(&c1, &blob, &len, err, sizeof(err)), 0);
    REQUIRE(blob != NULL);
    CHECK_INT(px_carry_import(&c2, blob, len / 2, &n, err, sizeof(err)), -1); /* truncated */
    CHECK(strstr(err, "truncated") != NULL);
    CHECK_INT(px_carry_import(&c2, (const unsigned char *)"nonsense", 8, &n, err, sizeof(err)), -1);
    CHECK_INT(px_carry_import(&c2, blob, len, &n, err, sizeof(err)), 0);
    CHECK_INT(n.zones, 1);  /* "other" changed its zone_size: starts empty */
    CHECK_INT(n.keys, 2);
    CHECK_INT(n.sessions, 0);
    struct px_limit_zone *a2 = px_limits_find(c2.zones, "api"), *o2 = px_limits_find(c2.zones, "other");
    CHECK_INT(px_limit_zone_keys(a2), 2);
    CHECK_INT(px_limit_zone_keys(o2), 0);
    px_limit_check(&a2, 1, &k, now + 1, &res); /* still at its burst in the new zone */
    CHECK_INT(res.verdict, PX_LIMIT_REJECT);
    px_limit_check(&a2, 1, &k2, now + 1, &res); /* one charge of burst 1 left */
    CHECK_INT(res.verdict, PX_LIMIT_PASS);
    free(blob);
    px_carry_free(&c1);
    px_carry_free(&c2);
}

int main(void)
{
    UNIT_RUN(test_listeners_by_address);
    UNIT_RUN(test_zones_held);
    UNIT_RUN(test_export_import);
    return unit_report();
}
