/* carry.c -- the carry-over object (see px/carry.h): references, kept in
 * step with what is published. */
#include <string.h>

#include "px/carry.h"
#include "px/limit.h"
#include "px/tls.h"

void px_carry_init(struct px_carry *c)
{
    memset(c, 0, sizeof(*c));
}

int px_carry_add_listener(struct px_carry *c, const struct px_addr *a, int https, int fd)
{
    struct px_carry_listener *l = NULL;
    for (size_t i = 0; i < c->nlisteners && l == NULL; i++)
        if (c->listeners[i].https == https && strcmp(c->listeners[i].addr.text, a->text) == 0)
            l = &c->listeners[i];
    if (l == NULL) {
        if (c->nlisteners == PX_CARRY_MAX_LISTENERS)
            return -1;
        l = &c->listeners[c->nlisteners++];
        memset(l, 0, sizeof(*l));
        l->addr = *a;
        l->https = https;
    }
    if (l->nfds == PX_MAX_WORKERS)
        return -1;
    l->fds[l->nfds++] = fd;
    return 0;
}

void px_carry_keep_zones(struct px_carry *c, struct px_limits *zones)
{
    if (zones == c->zones)
        return;
    px_limits_ref(zones);
    px_limits_free(c->zones);
    c->zones = zones;
}

void px_carry_keep_sessions(struct px_carry *c, struct px_tls_sessions *s)
{
    if (s == c->sessions)
        return;
    px_tls_sessions_ref(s);
    px_tls_sessions_unref(c->sessions);
    c->sessions = s;
}

void px_carry_free(struct px_carry *c)
{
    px_limits_free(c->zones);
    px_tls_sessions_unref(c->sessions);
    px_carry_init(c);
}
