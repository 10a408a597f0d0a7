/* test_addr.c -- px_addr_parse, px_addr_ntop and CIDR sets. */
#include <arpa/inet.h>
#include <stdlib.h>

#include "px/addr.h"
#include "unit.h"

static unsigned port_of(const struct px_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

static void test_addr_parse_ok(void)
{
    static const struct {
        const char *in;
        int family;
        const char *ip;
        unsigned port;
    } cases[] = {
        {"127.0.0.1:3000", AF_INET, "127.0.0.1", 3000},
        {"0.0.0.0:65535", AF_INET, "0.0.0.0", 65535},
        {"10.1.2.3:0", AF_INET, "10.1.2.3", 0},
        {":8080", AF_INET, "0.0.0.0", 8080},
        {"*:80", AF_INET, "0.0.0.0", 80},
        {"[::1]:443", AF_INET6, "::1", 443},
        {"[::]:0", AF_INET6, "::", 0},
        {"[fd00::5]:3000", AF_INET6, "fd00::5", 3000},
        {"localhost:3000", AF_INET, "127.0.0.1", 3000}, /* a name; IPv4 preferred */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct px_addr a;
        char buf[64];
        memset(&a, 0xab, sizeof(a));
        CHECK_STR(px_addr_parse(cases[i].in, &a) ? cases[i].in : "ok", "ok");
        CHECK_INT(a.ss.ss_family, cases[i].family);
        CHECK_INT(a.len, cases[i].family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
        px_addr_ntop((struct sockaddr *)&a.ss, buf, sizeof(buf));
        CHECK_STR(buf, cases[i].ip);
        CHECK_INT(port_of(&a), cases[i].port);
        CHECK_STR(a.text, cases[i].in);
    }
}

static void test_addr_parse_errors(void)
{
    static char long_name[PX_ADDR_TEXT_MAX + 8];
    static const struct {
        const char *in;
        const char *err;
    } cases[] = {
        {"", "empty address"},
        {"127.0.0.1", "missing port"},
        {"127.0.0.1:", "missing port"},
        {"1.2.3.4:65536", "bad port"},
        {"1.2.3.4:-1", "bad port"},
        {"1.2.3.4:80x", "bad port"},
        {"1.2.3.4: 80", "bad port"},
        {"::1:80", "IPv6 address needs brackets: [ADDR]:PORT"},
        {"[::1]", "missing port"},
        {"[::1]80", "bad port"},
        {"[::1:80", "missing ']'"},
        {"[1.2.3.4]:80", "bad IPv6 address"},
        {"[]:80", "bad IPv6 address"},
        {"host name:80", "bad host"},
        {"a/b:80", "bad host"},
        {"nonexistent.invalid:80", "cannot resolve host"},
        {long_name, "address too long"},
    };
    memset(long_name, 'a', sizeof(long_name) - 4);
    memcpy(long_name + sizeof(long_name) - 4, ":80", 4);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct px_addr a;
        const char *err = px_addr_parse(cases[i].in, &a);
        CHECK_STR(err, cases[i].err);
    }
    CHECK_STR(px_addr_parse(NULL, NULL), "empty address");
}

static void test_addr_ntop(void)
{
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    struct sockaddr un = {.sa_family = AF_UNIX};
    char buf[64], small[4];

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr);
    CHECK_INT(px_addr_ntop((struct sockaddr *)&sin, buf, sizeof(buf)), 9);
    CHECK_STR(buf, "192.0.2.7");

    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
    CHECK_INT(px_addr_ntop((struct sockaddr *)&sin6, buf, sizeof(buf)), 11);
    CHECK_STR(buf, "2001:db8::1");

    CHECK_INT(px_addr_ntop(&un, buf, sizeof(buf)), 0);
    CHECK_STR(buf, "");
    CHECK_INT(px_addr_ntop((struct sockaddr *)&sin, small, sizeof(small)), 0);
    CHECK_STR(small, "");
    CHECK_INT(px_addr_ntop(NULL, buf, sizeof(buf)), 0);
}

static void test_cidr_parse(void)
{
    static const struct {
        const char *in;
        const char *err;
        int family;
        unsigned plen;
        const char *net;
    } cases[] = {
        {"10.0.0.0/8", NULL, AF_INET, 8, "10.0.0.0"},
        {"10.1.2.3/8", NULL, AF_INET, 8, "10.0.0.0"}, /* host part zeroed */
        {"192.168.1.7", NULL, AF_INET, 32, "192.168.1.7"},
        {"172.16.5.4/12", NULL, AF_INET, 12, "172.16.0.0"},
        {"0.0.0.0/0", NULL, AF_INET, 0, "0.0.0.0"},
        {"::1", NULL, AF_INET6, 128, "::1"},
        {"fd00::/8", NULL, AF_INET6, 8, "fd00::"},
        {"fd12:3456::1/17", NULL, AF_INET6, 17, "fd12:0:0:0:0:0:0:0"},
        {"::ffff:10.9.8.7/104", NULL, AF_INET, 8, "10.0.0.0"}, /* v4-mapped = IPv4 */
        {"", "empty address", 0, 0, NULL},
        {"/8", "bad address", 0, 0, NULL},
        {"10.0.0/8", "bad address", 0, 0, NULL},
        {"10.0.0.0.0", "bad address", 0, 0, NULL},
        {"example.com", "bad address", 0, 0, NULL},
        {"10.0.0.0/", "bad prefix length", 0, 0, NULL},
        {"10.0.0.0/33", "bad prefix length", 0, 0, NULL},
        {"10.0.0.0/8 ", "bad prefix length", 0, 0, NULL},
        {"10.0.0.0/-1", "bad prefix length", 0, 0, NULL},
        {"10.0.0.0/0008", "bad prefix length", 0, 0, NULL},
        {"fd00::/129", "bad prefix length", 0, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct px_cidr c;
        const char *err = px_cidr_parse(cases[i].in, &c);
        if (cases[i].err) {
            CHECK_STR(err, cases[i].err);
            continue;
        }
        CHECK_STR(err ? err : "ok", "ok");
        if (err)
            continue;
        CHECK_INT(c.family, cases[i].family);
        CHECK_INT(c.prefix_len, cases[i].plen);
        if (c.family == AF_INET) {
            char buf[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, c.addr, buf, sizeof(buf));
            CHECK_STR(buf, cases[i].net);
        } else {
            uint8_t want[16];
            CHECK_INT(inet_pton(AF_INET6, cases[i].net, want), 1);
            CHECK(memcmp(want, c.addr, 16) == 0);
        }
    }
}

static struct sockaddr_storage sa_of(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &s6->sin6_addr);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &s4->sin_addr);
    }
    return ss;
}

static void test_cidr_match(void)
{
    static const char *const ranges[] = {"10.0.0.0/8", "192.168.1.7", "fd00::/8", "172.16.0.0/12", "2001:db8::/33"};
    static const struct {
        const char *ip;
        int match;
    } cases[] = {
        {"10.255.1.1", 1},   {"11.0.0.1", 0},         {"9.255.255.255", 0},
        {"192.168.1.7", 1},  {"192.168.1.8", 0},      {"172.31.255.255", 1},
        {"172.32.0.0", 0},   {"::ffff:10.1.1.1", 1},  {"::ffff:11.1.1.1", 0},
        {"fd12::1", 1},      {"fe80::1", 0},          {"2001:db8:7fff::1", 1},
        {"2001:db8:8000::1", 0}, {"::1", 0},
    };
    struct px_cidr set[5];

    for (size_t i = 0; i < 5; i++)
        CHECK(px_cidr_parse(ranges[i], &set[i]) == NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sockaddr_storage ss = sa_of(cases[i].ip);
        CHECK_STR(px_cidr_match(set, 5, (struct sockaddr *)&ss) == cases[i].match ? "ok" : cases[i].ip, "ok");
        CHECK_STR(px_cidr_match_text(set, 5, cases[i].ip, strlen(cases[i].ip)) == cases[i].match ? "ok"
                                                                                                  : cases[i].ip,
                  "ok");
    }
    {
        struct sockaddr_storage ss = sa_of("10.0.0.1");
        struct px_cidr any;
        CHECK_INT(px_cidr_match(set, 0, (struct sockaddr *)&ss), 0);
        CHECK_INT(px_cidr_match(NULL, 3, (struct sockaddr *)&ss), 0);
        CHECK_INT(px_cidr_match(set, 5, NULL), 0);
        CHECK(px_cidr_parse("0.0.0.0/0", &any) == NULL);
        CHECK_INT(px_cidr_match(&any, 1, (struct sockaddr *)&ss), 1);
        ss = sa_of("fd00::1");
        CHECK_INT(px_cidr_match(&any, 1, (struct sockaddr *)&ss), 0); /* families do not mix */
    }
}

static void test_cidr_match_text(void)
{
    struct px_cidr set[2];
    const char *xff = "10.0.0.1, 8.8.8.8";

    CHECK(px_cidr_parse("10.0.0.0/8", &set[0]) == NULL);
    CHECK(px_cidr_parse("fd00::/8", &set[1]) == NULL);
    CHECK_INT(px_cidr_match_text(set, 2, xff, 8), 1);          /* a slice, not NUL-terminated */
    CHECK_INT(px_cidr_match_text(set, 2, xff + 9, 8), 0);      /* " 8.8.8.8" */
    CHECK_INT(px_cidr_match_text(set, 2, " 10.2.3.4\t", 10), 1); /* optional whitespace */
    CHECK_INT(px_cidr_match_text(set, 2, "[fd00::1]", 9), 1);
    CHECK_INT(px_cidr_match_text(set, 2, "fd00::1", 7), 1);
    CHECK_INT(px_cidr_match_text(set, 2, "garbage", 7), 0);
    CHECK_INT(px_cidr_match_text(set, 2, "10.0.0.1x", 9), 0);
    CHECK_INT(px_cidr_match_text(set, 2, "10.0.0.1:80", 11), 0);
    CHECK_INT(px_cidr_match_text(set, 2, "", 0), 0);
    CHECK_INT(px_cidr_match_text(set, 2, "10.0.0.1\0", 9), 0);
    CHECK_INT(px_cidr_match_text(set, 0, "10.0.0.1", 8), 0);
    CHECK_INT(px_cidr_match_text(set, 2, NULL, 0), 0);
    {
        char big[200];
        memset(big, '1', sizeof(big));
        CHECK_INT(px_cidr_match_text(set, 2, big, sizeof(big)), 0);
    }
}

int main(void)
{
    UNIT_RUN(test_addr_parse_ok);
    UNIT_RUN(test_addr_parse_errors);
    UNIT_RUN(test_addr_ntop);
    UNIT_RUN(test_cidr_parse);
    UNIT_RUN(test_cidr_match);
    UNIT_RUN(test_cidr_match_text);
    return unit_report();
}
