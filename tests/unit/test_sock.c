/* Unit tests: px_sock_flush (proxy/sock.c) on plain sockets -- a buffer of
 * more chains than one writev takes is written whole while the send buffer
 * has room (with EPOLLET, a socket marked unwritable that is not full never
 * gets its EPOLLOUT edge: the response would stall); a full send buffer
 * marks the socket unwritable and keeps the rest in order. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "px/sock.h"
#include "unit.h"

static void nop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

/* A connected non-blocking stream pair; fds[0] goes to the px_sock. */
static int pair(int fds[2], int sndbuf)
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0)
        return -1;
    for (int i = 0; i < 2; i++)
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    return 0;
}

/* n chains of len bytes each (references: one chain per add), byte i of
 * the whole stream is i % 251. */
static char *many_chains(struct evbuffer *out, size_t n, size_t len)
{
    char *data = malloc(n * len);
    for (size_t i = 0; i < n * len; i++)
        data[i] = (char)(i % 251);
    for (size_t c = 0; c < n; c++)
        evbuffer_add_reference(out, data + c * len, len, NULL, NULL);
    return data;
}

static size_t drain_check(int fd, size_t *pos)
{
    char buf[65536];
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] != (unsigned char)((*pos + (size_t)i) % 251)) {
                CHECK_INT((unsigned char)buf[i], (*pos + (size_t)i) % 251);
                return got;
            }
        *pos += (size_t)n;
        got += (size_t)n;
    }
    return got;
}

static void test_many_chains_with_room(void)
{
    struct event_base *base = event_base_new();
    int fds[2];
    REQUIRE_OK(pair(fds, 4 << 20));
    struct px_sock s;
    REQUIRE_OK(px_sock_open(&s, base, fds[0], nop, NULL));
    char *data = many_chains(s.out, 300, 100); /* 300 chains, 30 KB: far below the send buffer */
    CHECK_INT(px_sock_flush(&s), 0);
    CHECK_INT(evbuffer_get_length(s.out), 0);
    CHECK(s.writable);
    size_t pos = 0;
    CHECK_INT(drain_check(fds[1], &pos), 30000);
    px_sock_close(&s);
    close(fds[1]);
    free(data);
    event_base_free(base);
}

static void test_full_send_buffer(void)
{
    struct event_base *base = event_base_new();
    int fds[2];
    REQUIRE_OK(pair(fds, 4096));
    struct px_sock s;
    REQUIRE_OK(px_sock_open(&s, base, fds[0], nop, NULL));
    char *data = many_chains(s.out, 200, 16384); /* 3.2 MB: more than the buffer takes */
    CHECK_INT(px_sock_flush(&s), 0);
    CHECK(!s.writable);
    size_t left = evbuffer_get_length(s.out);
    CHECK(left > 0 && left < 200 * 16384);
    /* the peer reads; each EPOLLOUT edge (marked by hand) writes on, in order */
    size_t pos = 0;
    for (int round = 0; round < 100000 && evbuffer_get_length(s.out) > 0; round++) {
        drain_check(fds[1], &pos);
        s.writable = 1;
        CHECK_INT(px_sock_flush(&s), 0);
    }
    drain_check(fds[1], &pos);
    CHECK_INT(evbuffer_get_length(s.out), 0);
    CHECK_INT(pos, 200 * 16384);
    px_sock_close(&s);
    close(fds[1]);
    free(data);
    event_base_free(base);
}

int main(void)
{
    UNIT_RUN(test_many_chains_with_room);
    UNIT_RUN(test_full_send_buffer);
    return unit_report();
}
