/* px/addr.h -- socket addresses and CIDR sets. Parsing may resolve names
 * (getaddrinfo): call it only from the main/control thread, never from a
 * worker. */
#ifndef PX_ADDR_H
#define PX_ADDR_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PX_ADDR_TEXT_MAX 96

struct px_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[PX_ADDR_TEXT_MAX]; /* as written by the user, e.g. "127.0.0.1:3000" or "web:3000" */
};

/* "HOST:PORT", "[V6]:PORT" or ":PORT" / "*:PORT" (any address). HOST may
 * be a name (resolved, first IPv4 answer preferred). Returns NULL on success or
 * a static error message ("missing port", "bad port", "cannot resolve host"). */
const char *px_addr_parse(const char *s, struct px_addr *out);

/* a with its port replaced by port (1..65535); text says "HOST:PORT" anew. */
void px_addr_with_port(const struct px_addr *a, unsigned port, struct px_addr *out);

/* Print the numeric address of sa without the port ("1.2.3.4", "::1") into
 * buf (>= 46 bytes). Returns length. */
size_t px_addr_ntop(const struct sockaddr *sa, char *buf, size_t buflen);

struct px_cidr {
    int family;          /* AF_INET or AF_INET6 */
    uint8_t addr[16];    /* network bytes, host part zeroed */
    uint8_t prefix_len;
};

/* "10.0.0.0/8", "192.168.1.7" (= /32), "::1", "fd00::/8". NULL or error. */
const char *px_cidr_parse(const char *s, struct px_cidr *out);
/* 1 when sa (AF_INET/AF_INET6, v4-mapped v6 treated as v4) is in one of the n ranges. */
int px_cidr_match(const struct px_cidr *set, size_t n, const struct sockaddr *sa);
/* Same for an address in text form (from X-Forwarded-For); 0 if unparsable. */
int px_cidr_match_text(const struct px_cidr *set, size_t n, const char *p, size_t len);

/* Normalize a Host value into out (lowercase, port and trailing dot
 * stripped). Returns the length, or -1 if it is not a valid host. */
int px_host_normalize(const char *host, size_t len, char *out, size_t outlen);

#endif
