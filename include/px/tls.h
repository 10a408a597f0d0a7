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
 * the same name).
 *
 * Sessions outlive certificate swaps: the server-side session cache (shared
 * by all workers; OpenSSL locks it) and the session-ticket keys live in a
 * session context that a new px_tls shares with the previous one when the
 * session settings (protocols, ciphers, session_timeout, session_tickets)
 * are unchanged. Only a change of those starts with an empty cache and new
 * keys. */
#ifndef PX_TLS_H
#define PX_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct px_tls;
struct px_tls_conf;
/* A session context: the server-side session cache and the session-ticket
 * key ring that px_tls objects share. Refcounted (the px_tls built on it,
 * every SSL made from those, and the carry-over object, px/carry.h, hold
 * references); what a reload or a binary upgrade carries over. */
struct px_tls_sessions;

/* The certificates a px_tls serves, for metrics and status (main thread):
 * label is the ACME lineage name for a certificate under ".../live/NAME/",
 * else the certificate file's path (the default certificate: the
 * certificate key as written); not_after in Unix seconds. One entry per
 * label (the earliest expiry when a label has several). */
struct px_tls_cert {
    char *label;
    int64_t not_after;
};
const struct px_tls_cert *px_tls_certs(const struct px_tls *t, size_t *n);

/* Load conf's certificates into new contexts (main thread). sessions: the
 * session context in force (the carry-over object's), or NULL; when its
 * session settings equal conf's the new px_tls shares it (only read; it
 * may be released before or after the result), else the px_tls gets a new
 * one (empty cache, new ticket keys). NULL with a message in err on failure
 * ("certificate FILE: reason"). */
struct px_tls *px_tls_build(const struct px_tls_conf *conf, const struct px_tls_sessions *sessions, char *err,
                            size_t errlen);
/* The session context t was built on (borrowed: valid while t is; NULL for
 * NULL). */
struct px_tls_sessions *px_tls_sessions(const struct px_tls *t);
/* A new reference on s (NULL is fine); main thread. */
struct px_tls_sessions *px_tls_sessions_ref(struct px_tls_sessions *s);
/* Drop one (NULL is fine); the last frees the cache and keys. */
void px_tls_sessions_unref(struct px_tls_sessions *s);
/* Do the certificate chain file and key file load and match? 0, or -1
 * with "certificate FILE: reason" in err (main thread; for certificates
 * that must not fail a whole build, like ACME lineages). */
int px_tls_check_pair(const char *cert, const char *key, char *err, size_t errlen);
/* NULL is fine. Connections already made with t keep working. */
void px_tls_free(struct px_tls *t);
/* 1 when a and b share one session cache and ticket-key ring. */
int px_tls_same_sessions(const struct px_tls *a, const struct px_tls *b);
/* A server SSL for an accepted socket (worker thread). t must stay alive
 * until px_tls_handshake_done() (conn.c pins the snapshot holding it). NULL
 * on failure. */
SSL *px_tls_new(const struct px_tls *t, int fd);
/* Call when SSL_do_handshake succeeded: writes go straight to the socket
 * from now on. 0 done; 1 the last flight is still buffered (call again when
 * writable); -1 error. */
int px_tls_handshake_done(SSL *ssl);
/* Call when SSL_do_handshake wants to read: once the server's last flight
 * is out (TLS 1.3), drops the flight's write buffer while the client
 * answers. */
void px_tls_handshake_waiting(SSL *ssl);
/* With session_tickets = yes: start a new ticket key when the current one is
 * an hour old (the previous one is still accepted, and its tickets renewed).
 * Main thread; cheap when nothing is due. The key ring is shared by every
 * px_tls with the same sessions and has its own lock. */
void px_tls_rotate_tickets(struct px_tls *t, uint64_t now_ms);
/* 1 when the connection negotiated ALPN "h2". */
int px_tls_is_h2(SSL *ssl);

/* ---- a binary upgrade's carry-over (px/carry.h); main thread ---- */

#define PX_TLS_TICKET_KEY_LEN 80 /* name 16, AES 32, HMAC 32 */
/* The ticket keys of s into out (the current one first): bytes written, a
 * multiple of PX_TLS_TICKET_KEY_LEN, 0 without session tickets; and when
 * the current one began (px_now_ms). */
size_t px_tls_ticket_keys_get(struct px_tls_sessions *s, unsigned char *out, size_t cap, uint64_t *rotated_ms);
/* Replace s's ticket keys by those (what px_tls_ticket_keys_get gave in the
 * previous process); nothing when s has no session tickets. */
void px_tls_ticket_keys_set(struct px_tls_sessions *s, const unsigned char *keys, size_t len, uint64_t rotated_ms);
typedef void (*px_tls_session_fn)(void *arg, const unsigned char *der, size_t len);
/* Call fn with every session of s's server-side cache, DER-encoded
 * (i2d_SSL_SESSION), oldest first. The cache is emptied and refilled
 * under OpenSSL's lock (a handshake meanwhile may miss its session and make
 * a full one). Returns how many. */
int px_tls_sessions_each(struct px_tls_sessions *s, px_tls_session_fn fn, void *arg);
/* Add one DER-encoded session to s's cache. 0, or -1 (not a session). */
int px_tls_session_add(struct px_tls_sessions *s, const unsigned char *der, size_t len);

#endif
