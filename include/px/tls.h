/* px/tls.h -- the TLS contexts of one configuration.
 *
 * A px_tls is built from [tls] on the main thread (it reads the certificate
 * files) and is immutable afterwards; it lives in the route snapshot, so a
 * reload (SIGHUP, proxyctl cert reload, an ACME renewal) swaps certificates
 * exactly like routes: new handshakes get the new contexts, connections
 * already open keep theirs (each SSL holds a reference on its SSL_CTX), and
 * a bad file fails the build so the old snapshot keeps serving.
 *
 * Contexts: one default (certificate/certificate_key) and one per `sni`
 * name; each may hold an ECDSA and an RSA certificate (give two
 * space-separated files in certificate/certificate_key, or two sni lines for
 * the same name). The server-side session cache lives in the default
 * context and is shared by all workers (OpenSSL locks it). */
#ifndef PX_TLS_H
#define PX_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct px_tls;
struct px_tls_conf;

/* NULL with a message in err on failure ("certificate FILE: reason"). */
struct px_tls *px_tls_build(const struct px_tls_conf *conf, char *err, size_t errlen);
void px_tls_free(struct px_tls *t);
/* A server SSL for an accepted socket (worker thread). NULL on failure. */
SSL *px_tls_new(const struct px_tls *t, int fd);
/* Call when SSL_do_handshake succeeded: writes go straight to the socket
 * from now on. 0 done; 1 the last flight is still buffered (call again when
 * writable); -1 error. */
int px_tls_handshake_done(SSL *ssl);
/* With session_tickets = yes: start a new ticket key when the current one is
 * an hour old (the previous one is still accepted, and its tickets renewed).
 * Main thread; cheap when nothing is due. */
void px_tls_rotate_tickets(struct px_tls *t, uint64_t now_ms);
/* 1 when the connection negotiated ALPN "h2". */
int px_tls_is_h2(SSL *ssl);

#endif
