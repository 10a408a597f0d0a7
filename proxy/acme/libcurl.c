/* libcurl.c -- libcurl, loaded when ACME is first enabled. A proxy
 * without [acme] never maps it: libcurl and the ~27 shared libraries it
 * pulls in (LDAP, Kerberos, SSH, IDN, PSL, RTMP, brotli, zstd ...) cost
 * every process ~4 MiB of relocated pages at start, for a feature most
 * configurations leave off. So proxyd does not link -lcurl: the functions
 * the client uses are looked up once with dlsym into px_curl; the headers
 * (libcurl4-openssl-dev) still give their types: each pointer in
 * struct px_curl has the type of the function it is loaded from. */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "client_internal.h"
#include "px/common.h"

#define LIBCURL "libcurl.so.4"

struct px_curl px_curl;

static const struct px_dl_sym entries[] = {
#define ENTRY(member, fn) {#fn, offsetof(struct px_curl, member)},
    PX_CURL_FUNCTIONS(ENTRY)
#undef ENTRY
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int loaded, initialized; /* under lock; never reset once set */

/* dlopen and resolve everything, or nothing (px_curl untouched). */
static int load_locked(char *err, size_t errlen)
{
    char why[512];
    if (px_dl_load(LIBCURL, entries, PX_ARRAY_LEN(entries), &px_curl, sizeof(px_curl), why, sizeof(why)) < 0) {
        snprintf(err, errlen, "ACME is unavailable: %s; install the libcurl4 package (7.84 or newer)", why);
        return -1;
    }
    loaded = 1;
    return 0;
}

int px_acme_global_init(char *err, size_t errlen)
{
    int rc = 0;
    pthread_mutex_lock(&lock);
    if (!loaded && load_locked(err, errlen) < 0) {
        rc = -1;
    } else if (!initialized) {
        /* curl_global_init is not thread-safe before libcurl 7.84 (what
         * CURL_VERSION_THREADSAFE says): the lock keeps two of ours apart,
         * and no other thread of proxyd ever calls libcurl */
        if (px_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            snprintf(err, errlen, "ACME is unavailable: curl_global_init failed");
            rc = -1;
        } else {
            initialized = 1;
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}
