/* Unit tests: active health checks against a loopback listener the test
 * answers by hand -- 2xx passes, 503 fails with its status, a refused
 * connect and a silent target fail with a reason; the request carries the
 * path, Host and User-Agent: proxyd. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "px/common.h"
#include "px/health.h"
#include "px/log.h"
#include "unit.h"

static struct event_base *base;
static int results, passes, last_status;
static char last_reason[128];
static char seen_request[1024];

static void on_result(void *arg, const struct px_health_result *res)
{
    results++;
    passes += res->pass;
    last_status = res->status;
    snprintf(last_reason, sizeof(last_reason), "%s", res->reason ? res->reason : "");
}

static int listener(struct px_addr *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    listen(fd, 8);
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    char text[64];
    snprintf(text, sizeof(text), "127.0.0.1:%u", ntohs(sa.sin_port));
    px_addr_parse(text, a);
    return fd;
}

/* Run the loop until n results came in; answer connections on lfd with
 * `reply` (NULL: never answer) meanwhile. */
static void run(int lfd, const char *reply, int n, int ms)
{
    int conns[8], nconns = 0;
    uint64_t end = px_now_ms() + (uint64_t)ms;
    while (results < n && px_now_ms() < end) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        if (lfd < 0)
            continue;
        int c = accept(lfd, NULL, NULL);
        if (c >= 0 && nconns < 8) {
            conns[nconns++] = c;
            fcntl(c, F_SETFL, O_NONBLOCK);
        } else if (c >= 0) {
            close(c);
        }
        for (int i = 0; i < nconns; i++) {
            if (conns[i] < 0)
                continue;
            char buf[1024];
            ssize_t k = read(conns[i], buf, sizeof(buf) - 1);
            if (k > 0) {
                buf[k] = '\0';
                snprintf(seen_request, sizeof(seen_request), "%s", buf);
                if (reply) {
                    if (write(conns[i], reply, strlen(reply)) < 0)
                        break;
                    close(conns[i]);
                    conns[i] = -1;
                }
            }
        }
        usleep(1000);
    }
    for (int i = 0; i < nconns; i++)
        if (conns[i] >= 0)
            close(conns[i]);
}

static void reset(void)
{
    results = passes = last_status = 0;
    last_reason[0] = seen_request[0] = '\0';
}

static void test_2xx_passes_and_repeats(void)
{
    reset();
    struct px_addr a;
    int lfd = listener(&a);
    struct px_health *h = px_health_new(base, &a, "/up", 50, 1000, on_result, NULL);
    run(lfd, "HTTP/1.1 204 No Content\r\n\r\n", 2, 3000);
    CHECK_INT(results, 2);
    CHECK_INT(passes, 2);
    CHECK_INT(last_status, 204);
    CHECK(strncmp(seen_request, "GET /up HTTP/1.1\r\n", 18) == 0);
    CHECK(strstr(seen_request, "\r\nHost: 127.0.0.1:") != NULL);
    CHECK(strstr(seen_request, "\r\nUser-Agent: proxyd/") != NULL);
    px_health_free(h);
    close(lfd);
}

static void test_503_fails_with_status(void)
{
    reset();
    struct px_addr a;
    int lfd = listener(&a);
    struct px_health *h = px_health_new(base, &a, "/up", 1000, 1000, on_result, NULL);
    run(lfd, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 1, 3000);
    CHECK_INT(results, 1);
    CHECK_INT(passes, 0);
    CHECK_INT(last_status, 503);
    CHECK_STR(last_reason, "503");
    px_health_free(h);
    close(lfd);
}

static void test_refused_and_silent_fail(void)
{
    reset();
    struct px_addr a;
    int lfd = listener(&a);
    close(lfd); /* nothing listens there now */
    struct px_health *h = px_health_new(base, &a, "/up", 1000, 1000, on_result, NULL);
    run(-1, NULL, 1, 3000);
    CHECK_INT(results, 1);
    CHECK_INT(passes, 0);
    CHECK(strstr(last_reason, "connect") != NULL);
    px_health_free(h);

    reset();
    lfd = listener(&a);
    h = px_health_new(base, &a, "/up", 1000, 100, on_result, NULL);
    run(lfd, NULL, 1, 3000); /* accepted, read, never answered */
    CHECK_INT(results, 1);
    CHECK_INT(passes, 0);
    CHECK_STR(last_reason, "timed out after 100 ms");
    px_health_free(h);
    close(lfd);
}

static struct px_health *self_freeing;
static void free_in_callback(void *arg, const struct px_health_result *res)
{
    results++;
    px_health_free(self_freeing);
    self_freeing = NULL;
}

static void test_free_inside_callback(void)
{
    reset();
    struct px_addr a;
    int lfd = listener(&a);
    self_freeing = px_health_new(base, &a, "/up", 10, 1000, free_in_callback, NULL);
    run(lfd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1, 3000);
    int before = results;
    run(lfd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", before + 1, 200); /* no more checks */
    CHECK_INT(results, 1);
    CHECK(self_freeing == NULL);
    close(lfd);
}

int main(void)
{
    px_log_open("/dev/null", "off", NULL, 0);
    base = event_base_new();
    UNIT_RUN(test_2xx_passes_and_repeats);
    UNIT_RUN(test_503_fails_with_status);
    UNIT_RUN(test_refused_and_silent_fail);
    UNIT_RUN(test_free_inside_callback);
    event_base_free(base);
    px_log_close();
    return unit_report();
}
