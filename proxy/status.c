/* status.c -- the status page behind metrics_listen (GET /, GET
 * /status.json): hooks px/metrics.h calls. Not built yet: both answer 404. */
#include "px/metrics.h"

int px_status_json(struct evbuffer *body, const char **content_type)
{
    (void)body;
    (void)content_type;
    return 404;
}

int px_status_page(struct evbuffer *body, const char **content_type)
{
    (void)body;
    (void)content_type;
    return 404;
}
