/* store.c -- certbot's files under config_dir: archive/NAME/KINDN.pem,
 * live/NAME/KIND.pem links, renewal/NAME.conf, and the lock.
 *
 * Why it is written the way it is:
 *  - certbot finds the next version by scanning archive/NAME (any kind), so
 *    we do too: a half-written version never gets reused.
 *  - Each archive file is written under a temp name, fsynced and renamed
 *    (never over an existing file); each live link is made under a temp
 *    name and renamed over the old one, so a reader sees either the old or
 *    the new target, never a missing file. The four renames are not one
 *    atomic step: a failure among them puts the earlier ones back.
 *  - renewal/NAME.conf is edited line by line, not regenerated, so that a
 *    conf certbot wrote keeps its account, authenticator and plugin
 *    settings (see update_conf).
 *  - The key of version N+1 gets 0600 plus the group bits and group of the
 *    current key, as certbot does (operators chgrp ssl-cert privkey.pem). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "px/acme.h"
#include "px/log.h"

/* certbot's ALL_FOUR, in its order (the order the links are switched) */
enum { K_CERT, K_PRIVKEY, K_CHAIN, K_FULLCHAIN, NKINDS };
static const char *const kinds[NKINDS] = {"cert", "privkey", "chain", "fullchain"};

/* The certbot release whose renewal-conf format we write (its `version =`). */
#define CERTBOT_FORMAT_VERSION "2.1.0"
#define MAX_PEM (1024 * 1024)
#define CERTBOT_LOCK ".certbot.lock"

/* ---- small helpers ---- */

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* snprintf into a path buffer; -1 (with a message) when it does not fit. */
static int pathf(char *buf, size_t n, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int pathf(char *buf, size_t n, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)m >= n) {
        seterr(err, errlen, "path too long: %.200s...", buf);
        return -1;
    }
    return 0;
}

static const char *check_name(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return "empty lineage name";
    if (strlen(name) >= sizeof(((struct px_acme_lineage *)0)->name))
        return "lineage name too long";
    if (name[0] == '.')
        return "a lineage name must not start with '.'";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p == '/' || *p < 0x20 || *p == 0x7f)
            return "a lineage name must not contain '/' or control characters";
    return NULL;
}

static int fsync_path(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read a whole (small) file, NUL-terminated. 0, or -1 with errno set. */
static int read_file(const char *path, char **out, size_t *outlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC), e = 0;
    size_t cap = 4096, len = 0;
    char *buf = NULL;
    if (fd < 0)
        return -1;
    if ((buf = malloc(cap)) == NULL)
        e = ENOMEM;
    while (e == 0) {
        if (len + 1 >= cap) {
            char *nb = cap < MAX_PEM ? realloc(buf, cap * 2) : NULL;
            if (nb == NULL) {
                e = cap < MAX_PEM ? ENOMEM : EFBIG;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno != EINTR)
            e = errno;
        else if (n == 0)
            break;
        else if (n > 0)
            len += (size_t)n;
    }
    close(fd);
    if (e) {
        free(buf);
        errno = e;
        return -1;
    }
    buf[len] = '\0';
    *out = buf;
    if (outlen)
        *outlen = len;
    return 0;
}

/* Free a buffer that held key material. */
static void free_secret(char *p, size_t len)
{
    if (p)
        OPENSSL_cleanse(p, len);
    free(p);
}

/* Make dir with exactly mode (whatever the umask) if it is missing; an
 * existing directory is left as it is. *created (may be NULL) says which. */
static int ensure_dir(const char *path, mode_t mode, int *created, char *err, size_t errlen)
{
    struct stat st;
    if (created)
        *created = 0;
    if (mkdir(path, mode) == 0) {
        if (created)
            *created = 1;
        if (chmod(path, mode) < 0) {
            seterr(err, errlen, "chmod %s: %s", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    if (errno != EEXIST) {
        seterr(err, errlen, "mkdir %s: %s", path, strerror(errno));
        return -1;
    }
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        seterr(err, errlen, "%s exists and is not a directory", path);
        return -1;
    }
    return 0;
}

/* mkdir -p, 0755 for what it creates (certbot's mode for config_dir). */
static int ensure_tree(const char *path, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    if (pathf(buf, sizeof(buf), err, errlen, "%s", path) < 0)
        return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int rc = ensure_dir(buf, 0755, NULL, err, errlen);
        *p = '/';
        if (rc < 0)
            return -1;
    }
    return ensure_dir(buf, 0755, NULL, err, errlen);
}

/* ---- init ---- */

static const struct {
    const char *sub;
    mode_t mode;
} layout[] = {
    {"accounts", 0700},
    {"archive", 0700},
    {"live", 0700},
    {"renewal", 0755},
    {"renewal-hooks", 0755},
    {"renewal-hooks/pre", 0755},
    {"renewal-hooks/deploy", 0755},
    {"renewal-hooks/post", 0755},
};

int px_acme_store_init(const char *config_dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (config_dir == NULL || config_dir[0] == '\0') {
        seterr(err, errlen, "empty config_dir");
        return -1;
    }
    if (ensure_tree(config_dir, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(layout) / sizeof(layout[0]); i++)
        if (pathf(path, sizeof(path), err, errlen, "%s/%s", config_dir, layout[i].sub) < 0 ||
            ensure_dir(path, layout[i].mode, NULL, err, errlen) < 0)
            return -1;
    return 0;
}

/* ---- certificates ---- */

void px_acme_lineage_clear(struct px_acme_lineage *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->nnames; i++)
        free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof(*l));
}

static time_t asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

static int add_name(struct px_acme_lineage *l, const unsigned char *p, int len)
{
    if (len <= 0 || memchr(p, '\0', (size_t)len))
        return 0; /* not a usable DNS name: skip it */
    char *s = malloc((size_t)len + 1);
    char **v = realloc(l->names, (l->nnames + 1) * sizeof(*v));
    if (s == NULL || v == NULL) {
        free(s);
        if (v)
            l->names = v;
        return -1;
    }
    l->names = v;
    for (int i = 0; i < len; i++)
        s[i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]);
    s[len] = '\0';
    l->names[l->nnames++] = s;
    return 0;
}

/* The leaf is the first certificate of chain_pem. Check that key_pem is its
 * key; fill l's names (the SAN's DNS entries, lowercase; the CN when there
 * are none) and dates. what_* name the inputs in messages. */
static int inspect(const char *chain_pem, const char *key_pem, const char *what_chain, const char *what_key,
                   struct px_acme_lineage *l, char *err, size_t errlen)
{
    BIO *b = NULL;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    GENERAL_NAMES *gens = NULL;
    int rc = -1;

    if ((b = BIO_new_mem_buf(chain_pem, -1)) == NULL || (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL) {
        seterr(err, errlen, "%s: no PEM certificate in it", what_chain);
        goto out;
    }
    BIO_free(b);
    if ((b = BIO_new_mem_buf(key_pem, -1)) == NULL || (k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) == NULL) {
        seterr(err, errlen, "%s: no PEM private key in it", what_key);
        goto out;
    }
    if (X509_check_private_key(x, k) != 1) {
        seterr(err, errlen, "%s is not the key of the certificate in %s", what_key, what_chain);
        goto out;
    }
    gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS &&
            add_name(l, ASN1_STRING_get0_data(g->d.dNSName), ASN1_STRING_length(g->d.dNSName)) < 0)
            goto oom;
    }
    if (l->nnames == 0) {
        X509_NAME *subj = X509_get_subject_name(x);
        int idx = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
        ASN1_STRING *cn = idx >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx)) : NULL;
        if (cn && add_name(l, ASN1_STRING_get0_data(cn), ASN1_STRING_length(cn)) < 0)
            goto oom;
    }
    if (l->nnames == 0) {
        seterr(err, errlen, "%s: the certificate names no DNS name", what_chain);
        goto out;
    }
    l->not_before = asn1_time(X509_get0_notBefore(x));
    l->not_after = asn1_time(X509_get0_notAfter(x));
    if (l->not_before == 0 || l->not_after == 0) {
        seterr(err, errlen, "%s: unreadable validity dates", what_chain);
        goto out;
    }
    rc = 0;
    goto out;
oom:
    seterr(err, errlen, "out of memory");
out:
    GENERAL_NAMES_free(gens);
    EVP_PKEY_free(k);
    X509_free(x);
    BIO_free(b);
    ERR_clear_error(); /* the queue is per thread: leave nothing for the TLS code */
    return rc;
}

/* ---- load ---- */

/* The N of a live link "...KINDN.pem"; -1 with a message if link is not such a link. */
static int link_version(const char *link, const char *kind, char *target, size_t tlen, char *err, size_t errlen)
{
    ssize_t n = readlink(link, target, tlen - 1);
    if (n < 0) {
        if (errno == EINVAL)
            seterr(err, errlen, "%s is not a symlink into archive/ (certbot's layout)", link);
        else
            seterr(err, errlen, "%s: %s", link, strerror(errno));
        return -1;
    }
    target[n] = '\0';
    const char *base = strrchr(target, '/');
    base = base ? base + 1 : target;
    size_t kl = strlen(kind);
    const char *p = base + kl;
    long v = 0;
    if (strncmp(base, kind, kl) != 0 || *p < '0' || *p > '9')
        goto bad;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((v = v * 10 + (*p - '0')) > INT_MAX / 10)
            goto bad;
    if (strcmp(p, ".pem") != 0 || v < 1)
        goto bad;
    return (int)v;
bad:
    seterr(err, errlen, "%s -> %s: not an archive file %sN.pem", link, target, kind);
    return -1;
}

int px_acme_store_load(const char *config_dir, const char *name, struct px_acme_lineage *out, char *err, size_t errlen)
{
    char fctarget[PATH_MAX], pktarget[PATH_MAX], what_fc[2 * PATH_MAX + 8], what_pk[2 * PATH_MAX + 8];
    char *fc = NULL, *pk = NULL;
    size_t pklen = 0;
    struct stat st;
    const char *why;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if ((why = check_name(name)) != NULL) {
        seterr(err, errlen, "%s", why);
        return -1;
    }
    snprintf(out->name, sizeof(out->name), "%s", name);
    if (pathf(out->live_dir, sizeof(out->live_dir), err, errlen, "%s/live/%s", config_dir, name) < 0 ||
        pathf(out->fullchain, sizeof(out->fullchain), err, errlen, "%s/fullchain.pem", out->live_dir) < 0 ||
        pathf(out->privkey, sizeof(out->privkey), err, errlen, "%s/privkey.pem", out->live_dir) < 0)
        goto out;
    if (stat(out->live_dir, &st) < 0) {
        if (errno == ENOENT) {
            rc = 0;
            goto out;
        }
        seterr(err, errlen, "%s: %s", out->live_dir, strerror(errno));
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        seterr(err, errlen, "%s is not a directory", out->live_dir);
        goto out;
    }
    int has_fc = lstat(out->fullchain, &st) == 0, has_pk = lstat(out->privkey, &st) == 0;
    if (!has_fc && !has_pk) {
        rc = 0; /* an empty live/NAME: a first save that failed */
        goto out;
    }
    if (!has_fc || !has_pk) {
        seterr(err, errlen, "%s is missing", has_fc ? out->privkey : out->fullchain);
        goto out;
    }
    int vf = link_version(out->fullchain, "fullchain", fctarget, sizeof(fctarget), err, errlen);
    int vk = vf < 0 ? -1 : link_version(out->privkey, "privkey", pktarget, sizeof(pktarget), err, errlen);
    if (vf < 0 || vk < 0)
        goto out;
    if (vf != vk) {
        seterr(err, errlen, "%s points at version %d but %s at version %d (an interrupted update?)", out->fullchain, vf,
               out->privkey, vk);
        goto out;
    }
    snprintf(what_fc, sizeof(what_fc), "%s -> %s", out->fullchain, fctarget);
    snprintf(what_pk, sizeof(what_pk), "%s -> %s", out->privkey, pktarget);
    if (read_file(out->fullchain, &fc, NULL) < 0) {
        seterr(err, errlen, "%s: %s", what_fc, strerror(errno));
        goto out;
    }
    if (read_file(out->privkey, &pk, &pklen) < 0) {
        seterr(err, errlen, "%s: %s", what_pk, strerror(errno));
        goto out;
    }
    if (inspect(fc, pk, what_fc, what_pk, out, err, errlen) < 0)
        goto out;
    out->version = vf;
    rc = 1;
out:
    free(fc);
    free_secret(pk, pklen);
    if (rc < 0)
        px_acme_lineage_clear(out);
    return rc;
}

/* ---- save: the archive ---- */

/* The highest N of any archive/NAME/KINDN.pem, 0 when none. */
static int max_version(const char *dir, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int max = 0;
    if (d == NULL) {
        seterr(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL)
        for (int k = 0; k < NKINDS; k++) {
            size_t kl = strlen(kinds[k]);
            const char *p = de->d_name + kl;
            long v = 0;
            if (strncmp(de->d_name, kinds[k], kl) != 0 || *p < '0' || *p > '9')
                continue;
            for (; *p >= '0' && *p <= '9' && v < INT_MAX / 10; p++)
                v = v * 10 + (*p - '0');
            if (strcmp(p, ".pem") == 0 && v > max)
                max = (int)v;
        }
    closedir(d);
    if (max >= INT_MAX / 10 - 1) {
        seterr(err, errlen, "%s: version numbers exhausted", dir);
        return -1;
    }
    return max;
}

/* dir/file written under dir/file.tmp, fsynced, renamed without replacing
 * an existing file. gid (gid_t)-1 = leave the group alone. */
static int write_new(const char *dir, const char *file, const char *data, mode_t mode, gid_t gid, char *err,
                     size_t errlen)
{
    char tmp[PATH_MAX], final[PATH_MAX];
    int fd = -1;
    if (pathf(tmp, sizeof(tmp), err, errlen, "%s/%s.tmp", dir, file) < 0 ||
        pathf(final, sizeof(final), err, errlen, "%s/%s", dir, file) < 0)
        return -1;
    unlink(tmp); /* a leftover of a crash */
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)) < 0) {
        seterr(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    struct stat st;
    if (gid != (gid_t)-1 && fstat(fd, &st) == 0 && st.st_gid != gid && fchown(fd, (uid_t)-1, gid) < 0)
        px_log_warn("%s: cannot give it group %u as the previous key has (%s)", final, (unsigned)gid, strerror(errno));
    if (fchmod(fd, mode) < 0 || write_all(fd, data, strlen(data)) < 0 || fsync(fd) < 0) {
        seterr(err, errlen, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        seterr(err, errlen, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) < 0) {
        /* a filesystem without RENAME_NOREPLACE: the lock and the scan already keep N unused */
        if ((errno != EINVAL && errno != ENOSYS) || rename(tmp, final) < 0) {
            seterr(err, errlen, "rename %s to %s: %s", tmp, final, strerror(errno));
            goto fail;
        }
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}

static void remove_version(const char *dir, int n, const int *created)
{
    char path[PATH_MAX];
    for (int k = 0; k < NKINDS; k++)
        if (created[k] && snprintf(path, sizeof(path), "%s/%s%d.pem", dir, kinds[k], n) < (int)sizeof(path))
            unlink(path);
    fsync_path(dir);
}

/* ---- save: the live links ---- */

/* link -> target, made as link.tmp and renamed over link. */
static int point_link(const char *link, const char *target, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    if (pathf(tmp, sizeof(tmp), err, errlen, "%s.tmp", link) < 0)
        return -1;
    unlink(tmp);
    if (symlink(target, tmp) < 0) {
        seterr(err, errlen, "symlink %s: %s", tmp, strerror(errno));
        return -1;
    }
    if (rename(tmp, link) < 0) {
        seterr(err, errlen, "rename %s to %s: %s", tmp, link, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Switch live/NAME's four links to version n. On failure the links already
 * switched are put back; *restored says whether that fully worked (if not,
 * some link may point at version n, which must then stay). */
static int switch_links(const char *live, const char *name, int n, int *restored, char *err, size_t errlen)
{
    char link[NKINDS][PATH_MAX], old[NKINDS][PATH_MAX], target[PATH_MAX];
    int had_old[NKINDS] = {0}, k;
    *restored = 1;
    for (k = 0; k < NKINDS; k++) {
        if (pathf(link[k], sizeof(link[k]), err, errlen, "%s/%s.pem", live, kinds[k]) < 0)
            return -1;
        ssize_t len = readlink(link[k], old[k], sizeof(old[k]) - 1);
        if (len >= 0) {
            old[k][len] = '\0';
            had_old[k] = 1;
        }
    }
    for (k = 0; k < NKINDS; k++)
        if (pathf(target, sizeof(target), err, errlen, "../../archive/%s/%s%d.pem", name, kinds[k], n) < 0 ||
            point_link(link[k], target, err, errlen) < 0)
            break;
    if (k == NKINDS)
        return 0;
    for (int j = 0; j < k; j++) {
        char ignored[256];
        if (had_old[j] ? point_link(link[j], old[j], ignored, sizeof(ignored)) < 0 : unlink(link[j]) < 0)
            *restored = 0;
    }
    return -1;
}

/* ---- save: renewal/NAME.conf ----
 *
 * configobj's format as certbot writes it: top-level `key = value` lines,
 * then `[renewalparams]` (which may hold `[[subsections]]`, e.g.
 * webroot_map). We edit lines in place and write the file only when
 * something changed. What we own:
 *   top level:     archive_dir, cert, privkey, chain, fullchain (set);
 *                  version (added when missing, else certbot's is kept);
 *                  proxyd_domains (set: the names proxyd asked for; certbot
 *                  itself reads the names from the certificate, ignores
 *                  unknown top-level keys and keeps them when it rewrites)
 *   renewalparams: server (set; when it changes, `account` is dropped: that
 *                  account belongs to the old server), key_type = ecdsa
 *                  (set: proxyd's keys are P-256), elliptic_curve (set to
 *                  secp256r1 if present), config_dir (set if present),
 *                  authenticator (added as standalone when missing: the one
 *                  that works if certbot renews with proxyd stopped).
 * Everything else (account while the server stays, http01_port, webroot
 * settings, comments) is left as it is. */

struct lines {
    char **v;
    size_t n, cap;
};

static void lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static int lines_insert(struct lines *l, size_t at, const char *text)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    char *s = strdup(text);
    if (s == NULL)
        return -1;
    memmove(l->v + at + 1, l->v + at, (l->n - at) * sizeof(*l->v));
    l->v[at] = s;
    l->n++;
    return 0;
}

static void lines_delete(struct lines *l, size_t at)
{
    free(l->v[at]);
    memmove(l->v + at, l->v + at + 1, (l->n - at - 1) * sizeof(*l->v));
    l->n--;
}

static int lines_split(struct lines *l, const char *text)
{
    while (*text) {
        const char *nl = strchr(text, '\n');
        size_t len = nl ? (size_t)(nl - text) : strlen(text);
        char *s = strndup(text, len);
        int rc = s ? lines_insert(l, l->n, s) : -1;
        free(s);
        if (rc < 0)
            return -1;
        text += len + (nl ? 1 : 0);
    }
    return 0;
}

enum scope { TOP, RP }; /* the top level, [renewalparams] itself */

/* Where the top level ends and [renewalparams] starts. */
struct conf_map {
    size_t first_section; /* index of the first section header, n if none */
    size_t rp_header;     /* index of [renewalparams], n if none */
};

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static void conf_map(const struct lines *l, struct conf_map *m)
{
    m->first_section = m->rp_header = l->n;
    for (size_t i = 0; i < l->n; i++) {
        const char *p = skip_ws(l->v[i]);
        if (*p != '[')
            continue;
        if (m->first_section == l->n)
            m->first_section = i;
        if (p[1] != '[') {
            p = skip_ws(p + 1);
            if (strncmp(p, "renewalparams", 13) == 0 && *skip_ws(p + 13) == ']')
                m->rp_header = i;
        }
    }
}

/* The line of key in scope, or -1. */
static long conf_find(const struct lines *l, const struct conf_map *m, enum scope sc, const char *key)
{
    size_t from = sc == TOP ? 0 : m->rp_header + 1, to = sc == TOP ? m->first_section : l->n;
    if (sc == RP && m->rp_header == l->n)
        return -1;
    for (size_t i = from; i < to; i++) {
        const char *p = skip_ws(l->v[i]);
        if (*p == '[')
            break; /* [renewalparams] ends at the next header, [[sub]] included */
        size_t kl = strlen(key);
        if (strncmp(p, key, kl) == 0 && *skip_ws(p + kl) == '=')
            return (long)i;
    }
    return -1;
}

/* The value of line i, unquoted (configobj: '...' or "...", else up to a '#'). */
static void conf_value(const char *line, char *out, size_t outlen)
{
    const char *p = skip_ws(strchr(line, '=') + 1);
    size_t len;
    if (*p == '"' || *p == '\'') {
        const char *end = strchr(p + 1, *p);
        p++;
        len = end ? (size_t)(end - p) : strlen(p);
    } else {
        const char *hash = strchr(p, '#');
        len = hash ? (size_t)(hash - p) : strlen(p);
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r'))
            len--;
    }
    if (len >= outlen)
        len = outlen - 1;
    memcpy(out, p, len);
    out[len] = '\0';
}

/* "key = value", quoted when configobj would otherwise read it differently. */
static int conf_line(char *buf, size_t n, const char *key, const char *value)
{
    size_t len = strlen(value);
    int quote = len == 0 || value[0] == ' ' || value[len - 1] == ' ' || strpbrk(value, "#,\"'") != NULL;
    if (strpbrk(value, "\r\n"))
        return -1;
    if (!quote)
        return snprintf(buf, n, "%s = %s", key, value) < (int)n ? 0 : -1;
    if (!strchr(value, '"'))
        return snprintf(buf, n, "%s = \"%s\"", key, value) < (int)n ? 0 : -1;
    if (!strchr(value, '\''))
        return snprintf(buf, n, "%s = '%s'", key, value) < (int)n ? 0 : -1;
    return -1;
}

enum how { SET, SET_IF_PRESENT, ADD_IF_MISSING };

/* One edit; *changed set when the text changed. -1 on a value we cannot
 * write or out of memory. */
static int conf_edit(struct lines *l, enum scope sc, const char *key, const char *value, enum how how,
                     const char *comment, int *changed)
{
    char line[PATH_MAX + 64], old[PATH_MAX + 64];
    struct conf_map m;
    conf_map(l, &m);
    long i = conf_find(l, &m, sc, key);
    if (conf_line(line, sizeof(line), key, value) < 0)
        return -1;
    if (i >= 0) {
        if (how == ADD_IF_MISSING)
            return 0;
        conf_value(l->v[i], old, sizeof(old));
        if (strcmp(old, value) == 0)
            return 0;
        char *s = strdup(line);
        if (s == NULL)
            return -1;
        free(l->v[i]);
        l->v[i] = s;
        *changed = 1;
        return 0;
    }
    if (how == SET_IF_PRESENT)
        return 0;
    size_t at;
    if (sc == TOP) {
        /* before the comments and blank lines that lead into the first section */
        at = m.first_section;
        while (at > 0 && (*skip_ws(l->v[at - 1]) == '#' || *skip_ws(l->v[at - 1]) == '\0'))
            at--;
        if (at == 0 && m.first_section > 0 && *skip_ws(l->v[0]) == '#')
            at = 1; /* below certbot's "# renew_before_expiry" line */
    } else if (m.rp_header < l->n) {
        /* after its last key, before any [[subsection]] */
        at = m.rp_header + 1;
        for (size_t j = m.rp_header + 1; j < l->n && *skip_ws(l->v[j]) != '['; j++)
            if (*skip_ws(l->v[j]) != '#' && *skip_ws(l->v[j]) != '\0')
                at = j + 1;
    } else {
        if (lines_insert(l, l->n, "") < 0 || lines_insert(l, l->n, "# Options used in the renewal process") < 0 ||
            lines_insert(l, l->n, "[renewalparams]") < 0)
            return -1;
        at = l->n;
    }
    if (comment) {
        if (lines_insert(l, at, comment) < 0)
            return -1;
        at++;
    }
    if (lines_insert(l, at, line) < 0)
        return -1;
    *changed = 1;
    return 0;
}

static int conf_delete(struct lines *l, enum scope sc, const char *key, int *changed)
{
    struct conf_map m;
    conf_map(l, &m);
    long i = conf_find(l, &m, sc, key);
    if (i >= 0) {
        lines_delete(l, (size_t)i);
        *changed = 1;
    }
    return 0;
}

static const char new_conf[] = "# renew_before_expiry = 30 days\n"
                               "version = " CERTBOT_FORMAT_VERSION "\n"
                               "\n"
                               "# Options used in the renewal process\n"
                               "[renewalparams]\n"
                               "authenticator = standalone\n";

static int update_conf(const char *root, const char *name, const char *url, const char *const *names, size_t nnames,
                       char *err, size_t errlen)
{
    char path[PATH_MAX], tmp[PATH_MAX], v[NKINDS + 1][PATH_MAX], domains[4096], oldserver[PATH_MAX] = "";
    struct lines l = {0};
    char *text = NULL;
    int changed = 0, rc = -1, fd = -1, exists = 1;
    mode_t mode = 0644;
    struct stat st;

    if (pathf(path, sizeof(path), err, errlen, "%s/renewal/%s.conf", root, name) < 0 ||
        pathf(tmp, sizeof(tmp), err, errlen, "%s.new", path) < 0 ||
        pathf(v[NKINDS], sizeof(v[NKINDS]), err, errlen, "%s/archive/%s", root, name) < 0)
        return -1;
    for (int k = 0; k < NKINDS; k++)
        if (pathf(v[k], sizeof(v[k]), err, errlen, "%s/live/%s/%s.pem", root, name, kinds[k]) < 0)
            return -1;
    size_t dl = 0;
    domains[0] = '\0';
    for (size_t i = 0; i < nnames; i++) {
        int m = snprintf(domains + dl, sizeof(domains) - dl, "%s%s", i ? " " : "", names[i]);
        if (m < 0 || (size_t)m >= sizeof(domains) - dl) {
            seterr(err, errlen, "too many names for %s", path);
            return -1;
        }
        dl += (size_t)m;
    }
    if (read_file(path, &text, NULL) < 0) {
        if (errno != ENOENT) {
            seterr(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        exists = 0;
        changed = 1;
    } else if (stat(path, &st) == 0) {
        mode = st.st_mode & 07777; /* certbot keeps the old file's mode too */
    }
    if (lines_split(&l, exists ? text : new_conf) < 0)
        goto oom;
    struct conf_map m;
    conf_map(&l, &m);
    long si = conf_find(&l, &m, RP, "server");
    if (si >= 0)
        conf_value(l.v[si], oldserver, sizeof(oldserver));
    if (conf_edit(&l, TOP, "version", CERTBOT_FORMAT_VERSION, ADD_IF_MISSING, NULL, &changed) < 0 ||
        conf_edit(&l, TOP, "archive_dir", v[NKINDS], SET, NULL, &changed) < 0)
        goto bad;
    for (int k = 0; k < NKINDS; k++)
        if (conf_edit(&l, TOP, kinds[k], v[k], SET, NULL, &changed) < 0)
            goto bad;
    if (conf_edit(&l, TOP, "proxyd_domains", domains, SET,
                  "# the names proxyd asks for (certbot reads them from the certificate)", &changed) < 0 ||
        conf_edit(&l, RP, "authenticator", "standalone", ADD_IF_MISSING, NULL, &changed) < 0 ||
        conf_edit(&l, RP, "server", url, SET, NULL, &changed) < 0 ||
        conf_edit(&l, RP, "key_type", "ecdsa", SET, NULL, &changed) < 0 ||
        conf_edit(&l, RP, "elliptic_curve", "secp256r1", SET_IF_PRESENT, NULL, &changed) < 0 ||
        conf_edit(&l, RP, "config_dir", root, SET_IF_PRESENT, NULL, &changed) < 0)
        goto bad;
    if (si >= 0 && strcmp(oldserver, url) != 0)
        conf_delete(&l, RP, "account", &changed);
    if (!changed) {
        rc = 0;
        goto out;
    }
    unlink(tmp);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)) < 0 || fchmod(fd, mode) < 0) {
        seterr(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < l.n; i++)
        if (write_all(fd, l.v[i], strlen(l.v[i])) < 0 || write_all(fd, "\n", 1) < 0) {
            seterr(err, errlen, "%s: %s", tmp, strerror(errno));
            goto out;
        }
    if (fsync(fd) < 0) {
        seterr(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    int closed = close(fd);
    fd = -1;
    if (closed < 0 || rename(tmp, path) < 0) {
        seterr(err, errlen, "%s %s: %s", closed < 0 ? "close" : "rename to", closed < 0 ? tmp : path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    *strrchr(path, '/') = '\0';
    fsync_path(path); /* renewal/ */
    rc = 0;
    goto out;
bad:
    seterr(err, errlen, "%s: out of memory, or a value configobj cannot hold (both quote characters, a newline)", path);
    goto out;
oom:
    seterr(err, errlen, "out of memory");
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(text);
    lines_free(&l);
    return rc;
}

/* ---- save: the READMEs certbot writes (best effort) ---- */

static void write_readme(const char *dir, int base)
{
    char path[PATH_MAX], text[2048];
    const char *pre = base ? "[cert name]/" : "";
    if (snprintf(path, sizeof(path), "%s/README", dir) >= (int)sizeof(path))
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return; /* there already, or not worth failing for */
    snprintf(text, sizeof(text),
             "This directory contains your keys and certificates.\n\n"
             "`%sprivkey.pem`  : the private key for your certificate.\n"
             "`%sfullchain.pem`: the certificate file used in most server software.\n"
             "`%schain.pem`    : used for OCSP stapling in Nginx >=1.3.7.\n"
             "`%scert.pem`     : will break many server configurations, and should not be used\n"
             "                 without reading further documentation (see link below).\n\n"
             "WARNING: DO NOT MOVE OR RENAME THESE FILES!\n"
             "         Certbot expects these files to remain in this location in order\n"
             "         to function properly!\n\n"
             "We recommend not moving these files. For more information, see the Certbot\n"
             "User Guide at https://certbot.eff.org/docs/using.html#where-are-my-certificates.\n",
             pre, pre, pre, pre);
    if (write_all(fd, text, strlen(text)) < 0)
        px_log_warn("%s: %s", path, strerror(errno));
    close(fd);
}

/* ---- save ---- */

int px_acme_store_save(const char *config_dir, const char *name, const char *directory_url, const char *const *names,
                       size_t nnames, const struct px_acme_cert *cert, struct px_acme_lineage *out, char *err,
                       size_t errlen)
{
    struct px_acme_lineage info;
    char root[PATH_MAX], arch[PATH_MAX], live[PATH_MAX], file[64], what[PATH_MAX];
    const char *data[NKINDS];
    int created[NKINDS] = {0}, made_arch = 0, made_live = 0, n = -1, rc = -1, switched = 0;
    mode_t keymode = 0600;
    gid_t keygid = (gid_t)-1;
    struct stat st;
    const char *why;

    memset(&info, 0, sizeof(info));
    if (out)
        memset(out, 0, sizeof(*out));
    if ((why = check_name(name)) != NULL) {
        seterr(err, errlen, "%s", why);
        return -1;
    }
    if (cert == NULL || !cert->cert_pem || !cert->privkey_pem || !cert->chain_pem || !cert->fullchain_pem ||
        directory_url == NULL || (nnames && names == NULL)) {
        seterr(err, errlen, "%s: incomplete certificate or no directory URL", name);
        return -1;
    }
    data[K_CERT] = cert->cert_pem;
    data[K_PRIVKEY] = cert->privkey_pem;
    data[K_CHAIN] = cert->chain_pem;
    data[K_FULLCHAIN] = cert->fullchain_pem;
    snprintf(info.name, sizeof(info.name), "%s", name);
    if (pathf(info.live_dir, sizeof(info.live_dir), err, errlen, "%s/live/%s", config_dir, name) < 0 ||
        pathf(info.fullchain, sizeof(info.fullchain), err, errlen, "%s/fullchain.pem", info.live_dir) < 0 ||
        pathf(info.privkey, sizeof(info.privkey), err, errlen, "%s/privkey.pem", info.live_dir) < 0)
        return -1;
    snprintf(what, sizeof(what), "%s: the new fullchain", name);
    if (inspect(cert->fullchain_pem, cert->privkey_pem, what, "the new key", &info, err, errlen) < 0)
        return -1;
    if (px_acme_store_init(config_dir, err, errlen) < 0)
        goto out;
    /* certbot wants absolute paths in the renewal conf */
    if (realpath(config_dir, root) == NULL) {
        seterr(err, errlen, "%s: %s", config_dir, strerror(errno));
        goto out;
    }
    if (pathf(arch, sizeof(arch), err, errlen, "%s/archive/%s", root, name) < 0 ||
        pathf(live, sizeof(live), err, errlen, "%s/live/%s", root, name) < 0 ||
        ensure_dir(arch, 0755, &made_arch, err, errlen) < 0 || ensure_dir(live, 0755, &made_live, err, errlen) < 0)
        goto out;
    if ((n = max_version(arch, err, errlen)) < 0)
        goto out;
    n++;
    if (snprintf(what, sizeof(what), "%s/privkey.pem", live) < (int)sizeof(what) && stat(what, &st) == 0) {
        keymode = 0600 | (st.st_mode & 0074);
        keygid = st.st_gid;
    }
    for (int k = 0; k < NKINDS; k++) {
        snprintf(file, sizeof(file), "%s%d.pem", kinds[k], n);
        if (write_new(arch, file, data[k], k == K_PRIVKEY ? keymode : 0644, k == K_PRIVKEY ? keygid : (gid_t)-1, err,
                      errlen) < 0)
            goto out;
        created[k] = 1;
    }
    if (fsync_path(arch) < 0) {
        seterr(err, errlen, "fsync %s: %s", arch, strerror(errno));
        goto out;
    }
    if (update_conf(root, name, directory_url, names, nnames, err, errlen) < 0)
        goto out;
    int restored;
    if (switch_links(live, name, n, &restored, err, errlen) < 0) {
        switched = !restored; /* a link may still point at n: keep its files */
        goto out;
    }
    switched = 1;
    if (fsync_path(live) < 0)
        px_log_warn("fsync %s: %s", live, strerror(errno));
    write_readme(live, 0);
    if (snprintf(what, sizeof(what), "%s/live", root) < (int)sizeof(what))
        write_readme(what, 1);
    rc = 0;
out:
    if (rc < 0 && !switched) {
        if (n > 0)
            remove_version(arch, n, created);
        if (made_live)
            rmdir(live);
        if (made_arch)
            rmdir(arch);
    }
    if (rc == 0 && out) {
        info.version = n;
        *out = info;
        memset(&info, 0, sizeof(info));
    }
    px_acme_lineage_clear(&info);
    return rc;
}

/* ---- the lock ----
 *
 * certbot's own lock, config_dir/.certbot.lock, so that proxyd excludes
 * certbot as well as another proxyd. certbot takes a POSIX record lock
 * (lockf) on it and deletes the file before closing it; we take an
 * open-file-description lock, which conflicts with both a POSIX lock and
 * another OFD lock (even one taken in this process through another open),
 * and, as certbot does, check after locking that the path still names the
 * file we locked (a certbot releasing it may have just deleted it). We
 * never delete it: leaving it is harmless to certbot's check. */

int px_acme_store_lock(const char *config_dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (pathf(path, sizeof(path), err, errlen, "%s/%s", config_dir, CERTBOT_LOCK) < 0)
        return -1;
    for (int tries = 0; tries < 10; tries++) {
        struct stat a, b;
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
            seterr(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
            int e = errno;
            close(fd);
            if (e == EAGAIN || e == EACCES)
                seterr(err, errlen, "%s is held by another process (certbot, or another proxyd)", path);
            else
                seterr(err, errlen, "lock %s: %s", path, strerror(e));
            return -1;
        }
        if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            return fd;
        close(fd); /* deleted (or replaced) under us by its last holder: lock the new one */
    }
    seterr(err, errlen, "%s keeps being replaced", path);
    return -1;
}

void px_acme_store_unlock(int fd)
{
    if (fd >= 0)
        close(fd);
}
