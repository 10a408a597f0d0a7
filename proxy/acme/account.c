/* account.c -- the ACME account on disk, as certbot keeps it:
 *
 *   accounts/SERVER/PATH/ID/private_key.json   the JWK with "d" (0600)
 *                          /regr.json          {"body": {...}, "uri": ACCOUNT_URL}
 *                          /meta.json          {"creation_dt": ..., "creation_host": ...}
 *
 * SERVER/PATH is the directory URL's netloc and path; ID is the MD5 of the
 * public key's DER, as certbot computes it. Directories are 0700; every
 * file is written to a temporary name, fsynced and renamed. These run on
 * the main thread at client creation and once after registration: small
 * files, local disk. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "px/log.h"

char *px_acme_account_subdir(const char *url, char *err, size_t errlen)
{
    const char *p = strncmp(url, "https://", 8) == 0 ? url + 8 : strncmp(url, "http://", 7) == 0 ? url + 7 : NULL;
    size_t hl;
    char *out;
    if (p == NULL) {
        snprintf(err, errlen, "%s: not an http(s) URL", url);
        return NULL;
    }
    hl = strcspn(p, "/?#");
    if (hl == 0) {
        snprintf(err, errlen, "%s: no host", url);
        return NULL;
    }
    for (size_t i = 0; i < hl; i++)
        if ((unsigned char)p[i] <= ' ' || p[i] == '\\' || p[i] == 0x7f) {
            snprintf(err, errlen, "%s: bad host", url);
            return NULL;
        }
    if ((hl == 1 && p[0] == '.') || (hl == 2 && p[0] == '.' && p[1] == '.')) {
        snprintf(err, errlen, "%s: bad host", url);
        return NULL;
    }
    size_t cap = strlen(p) + 1;
    if ((out = malloc(cap)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(out, p, hl);
    size_t o = hl;
    /* the path, empty segments dropped ("/dir/" is "dir"), "." and ".."
     * refused: this becomes a directory under accounts/ */
    const char *s = p + hl, *end = s + strcspn(s, "?#");
    while (s < end) {
        while (s < end && *s == '/')
            s++;
        const char *seg = s;
        while (s < end && *s != '/')
            s++;
        size_t n = (size_t)(s - seg);
        if (n == 0)
            break;
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.')) {
            snprintf(err, errlen, "%s: \".\" or \"..\" in the path", url);
            free(out);
            return NULL;
        }
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)seg[i] < ' ' || seg[i] == 0x7f) {
                snprintf(err, errlen, "%s: control character in the path", url);
                free(out);
                return NULL;
            }
        out[o++] = '/';
        memcpy(out + o, seg, n);
        o += n;
    }
    out[o] = '\0';
    return out;
}

/* ---- files ---- */

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* The whole file, NUL-terminated; NULL with errno set (ENOENT: absent). */
static char *read_small(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    char *buf = NULL;
    if (fd < 0)
        return NULL;
    if (fstat(fd, &sb) < 0)
        goto out;
    if (sb.st_size > 1 << 20) {
        errno = EFBIG;
        goto out;
    }
    size_t n = (size_t)sb.st_size, off = 0;
    if ((buf = malloc(n + 1)) == NULL)
        goto out;
    while (off < n) {
        ssize_t k = read(fd, buf + off, n - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        off += (size_t)k;
    }
    buf[off] = '\0';
    *len = off;
out:
    close(fd);
    return buf;
}

static int mkdir_p(const char *path, char *err, size_t errlen)
{
    char *p = strdup(path);
    int rc = -1;
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "mkdir %s: %s", p, strerror(errno));
            goto out;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    rc = 0;
out:
    free(p);
    return rc;
}

int px_acme_write_file(const char *path, const char *text, int mode, char *err, size_t errlen)
{
    size_t tl = strlen(path) + 8, len = strlen(text), off = 0;
    char *tmp = malloc(tl), *slash;
    int fd = -1, rc = -1;
    if (tmp == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(tmp, tl, "%s.tmp", path);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)) < 0 ||
        fchmod(fd, (mode_t)mode) < 0)
        goto fail;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto fail;
        off += (size_t)n;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0)
        goto fail;
    /* the rename is durable once the directory is */
    if ((slash = strrchr(tmp, '/')) != NULL) {
        *slash = '\0';
        int dfd = open(tmp[0] ? tmp : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    rc = 0;
    goto out;
fail:
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
out:
    free(tmp);
    return rc;
}

/* ---- load ---- */

void px_acme_account_clear(struct px_acme_account *a)
{
    EVP_PKEY_free(a->key);
    free(a->dir);
    free(a->uri);
    memset(a, 0, sizeof(*a));
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One accounts/SERVER/PATH/ID: 1 usable (out filled), 0 not ours, -1
 * unreadable. */
static int load_one(const char *dir, struct px_acme_account *out, char *err, size_t errlen)
{
    char *kpath = path_join(dir, "private_key.json"), *rpath = path_join(dir, "regr.json"), *text = NULL;
    json_t *jwk = NULL, *regr = NULL;
    size_t len;
    int rc = -1;
    memset(out, 0, sizeof(*out));
    if (kpath == NULL || rpath == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if ((text = read_small(kpath, &len)) == NULL) {
        if (errno == ENOENT || errno == ENOTDIR) {
            rc = 0;
            goto out;
        }
        snprintf(err, errlen, "%s: %s", kpath, strerror(errno));
        goto out;
    }
    if ((jwk = json_loadb(text, len, 0, NULL)) == NULL || !json_is_object(jwk)) {
        px_log_warn("acme: %s is not JSON; that account is not used", kpath);
        rc = 0;
        goto out;
    }
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    if (kty != NULL && strcmp(kty, "RSA") == 0) {
        px_log_info("acme: %s is an RSA account key (certbot's); proxyd signs with ES256 (P-256) only and "
                    "keeps an account of its own",
                    dir);
        rc = 0;
        goto out;
    }
    char why[128];
    if ((out->key = px_acme_jwk_key(jwk, why, sizeof(why))) == NULL) {
        px_log_warn("acme: %s: %s; that account is not used", kpath, why);
        rc = 0;
        goto out;
    }
    free(text);
    if ((text = read_small(rpath, &len)) != NULL) {
        const char *uri;
        if ((regr = json_loadb(text, len, 0, NULL)) != NULL &&
            (uri = json_string_value(json_object_get(regr, "uri"))) != NULL &&
            (strncmp(uri, "https://", 8) == 0 || strncmp(uri, "http://", 7) == 0) && (out->uri = strdup(uri)) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    } else if (errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", rpath, strerror(errno));
        goto out;
    }
    if ((out->dir = strdup(dir)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rc = 1;
out:
    if (rc != 1)
        px_acme_account_clear(out);
    json_decref(jwk);
    json_decref(regr);
    free(text);
    free(kpath);
    free(rpath);
    return rc;
}

int px_acme_account_load(const char *accounts_dir, const char *directory_url, struct px_acme_account *out, char *err,
                         size_t errlen)
{
    char *sub = px_acme_account_subdir(directory_url, err, errlen), *base = NULL, **ids = NULL;
    size_t nids = 0, cap = 0;
    DIR *d = NULL;
    struct dirent *de;
    int rc = -1;
    memset(out, 0, sizeof(*out));
    if (sub == NULL)
        return -1;
    if ((base = path_join(accounts_dir, sub)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if ((d = opendir(base)) == NULL) {
        if (errno == ENOENT) {
            rc = 0;
            goto out;
        }
        snprintf(err, errlen, "%s: %s", base, strerror(errno));
        goto out;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (nids == cap) {
            char **v = realloc(ids, (cap = cap ? cap * 2 : 8) * sizeof(*v));
            if (v == NULL)
                goto oom;
            ids = v;
        }
        if ((ids[nids] = strdup(de->d_name)) == NULL)
            goto oom;
        nids++;
    }
    if (nids > 1)
        qsort(ids, nids, sizeof(*ids), by_name);
    /* the first account (by ID) that has a registration, else the first
     * with a usable key: registering that key again gives its URL back */
    rc = 0;
    for (size_t i = 0; i < nids && !(rc == 1 && out->uri != NULL); i++) {
        struct px_acme_account a;
        char *dir = path_join(base, ids[i]);
        if (dir == NULL)
            goto oom;
        int r = load_one(dir, &a, err, errlen);
        free(dir);
        if (r < 0) {
            px_acme_account_clear(out);
            rc = -1;
            goto out;
        }
        if (r == 1 && (rc == 0 || a.uri != NULL)) {
            px_acme_account_clear(out);
            *out = a;
            rc = 1;
        } else if (r == 1) {
            px_acme_account_clear(&a);
        }
    }
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
    px_acme_account_clear(out);
    rc = -1;
out:
    if (d != NULL)
        closedir(d);
    for (size_t i = 0; i < nids; i++)
        free(ids[i]);
    free(ids);
    free(base);
    free(sub);
    return rc;
}

/* accounts_dir/SERVER/PATH/ID for directory_url, malloc'd; NULL with a
 * message (an id that is not one directory name, out of memory). */
static char *account_dir(const char *accounts_dir, const char *directory_url, const char *id, char *err,
                         size_t errlen)
{
    if (id[0] == '\0' || id[0] == '.' || strchr(id, '/')) {
        snprintf(err, errlen, "a bad account id %s", id);
        return NULL;
    }
    char *sub = px_acme_account_subdir(directory_url, err, errlen), *base = NULL, *dir = NULL;
    if (sub == NULL)
        return NULL;
    if ((base = path_join(accounts_dir, sub)) == NULL || (dir = path_join(base, id)) == NULL)
        snprintf(err, errlen, "out of memory");
    free(sub);
    free(base);
    return dir;
}

int px_acme_account_load_id(const char *accounts_dir, const char *directory_url, const char *id,
                            struct px_acme_account *out, char *err, size_t errlen)
{
    char *dir = id ? account_dir(accounts_dir, directory_url, id, err, errlen) : NULL;
    if (dir) {
        int r = load_one(dir, out, err, errlen);
        free(dir);
        if (r != 0)
            return r;
    }
    return px_acme_account_load(accounts_dir, directory_url, out, err, errlen);
}

/* ---- save ---- */

int px_acme_account_save_key(const char *accounts_dir, const char *directory_url, struct px_acme_account *acct,
                             char *err, size_t errlen)
{
    char *sub = px_acme_account_subdir(directory_url, err, errlen), *base = NULL, *dir = NULL, *path = NULL;
    char *text = NULL, id[33], host[256] = "", when[32];
    json_t *jwk = NULL, *meta = NULL;
    int rc = -1;
    if (sub == NULL)
        return -1;
    if (px_acme_key_id(acct->key, id) < 0 || (jwk = px_acme_jwk(acct->key, 1)) == NULL) {
        snprintf(err, errlen, "the account key is not a P-256 key");
        goto out;
    }
    if ((base = path_join(accounts_dir, sub)) == NULL || (dir = path_join(base, id)) == NULL ||
        (path = path_join(dir, "private_key.json")) == NULL || (text = json_dumps(jwk, JSON_SORT_KEYS)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (mkdir_p(dir, err, errlen) < 0 || px_acme_write_file(path, text, 0600, err, errlen) < 0)
        goto out;
    free(path);
    free(text);
    text = NULL;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    gethostname(host, sizeof(host) - 1);
    if ((path = path_join(dir, "meta.json")) == NULL ||
        (meta = json_pack("{s:s, s:s, s:n}", "creation_dt", when, "creation_host", host, "register_to_eff")) == NULL ||
        (text = json_dumps(meta, JSON_PRESERVE_ORDER)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (px_acme_write_file(path, text, 0644, err, errlen) < 0)
        goto out;
    free(acct->dir);
    acct->dir = dir;
    dir = NULL;
    rc = 0;
out:
    if (text != NULL)
        OPENSSL_cleanse(text, strlen(text));
    json_decref(jwk);
    json_decref(meta);
    free(text);
    free(path);
    free(dir);
    free(base);
    free(sub);
    return rc;
}

int px_acme_account_save_regr(const struct px_acme_account *acct, const json_t *body, const char *uri, char *err,
                              size_t errlen)
{
    json_t *o = json_pack("{s:O, s:s}", "body", body ? body : json_object(), "uri", uri);
    char *text = o ? json_dumps(o, JSON_PRESERVE_ORDER) : NULL, *path = path_join(acct->dir, "regr.json");
    int rc = -1;
    if (text == NULL || path == NULL)
        snprintf(err, errlen, "out of memory");
    else
        rc = px_acme_write_file(path, text, 0644, err, errlen);
    json_decref(o);
    free(text);
    free(path);
    return rc;
}

/* ---- copies for [acme] storage = redis (proxy/acme/shared.c) ---- */

int px_acme_account_export(const char *accounts_dir, const char *directory_url, char **id, char **key_json,
                           char **regr, char **meta, char *err, size_t errlen)
{
    struct px_acme_account a;
    int rc = px_acme_account_load(accounts_dir, directory_url, &a, err, errlen);
    char *kp = NULL, *rp = NULL, *mp = NULL;
    size_t len;
    *id = *key_json = *regr = *meta = NULL;
    if (rc != 1)
        return rc;
    if (a.uri == NULL) { /* not registered yet: nothing worth sharing */
        px_acme_account_clear(&a);
        return 0;
    }
    const char *slash = strrchr(a.dir, '/');
    rc = -1;
    if ((kp = path_join(a.dir, "private_key.json")) == NULL || (rp = path_join(a.dir, "regr.json")) == NULL ||
        (mp = path_join(a.dir, "meta.json")) == NULL || (*id = strdup(slash ? slash + 1 : a.dir)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if ((*key_json = read_small(kp, &len)) == NULL || (*regr = read_small(rp, &len)) == NULL) {
        snprintf(err, errlen, "%s: %s", a.dir, strerror(errno));
        goto out;
    }
    if ((*meta = read_small(mp, &len)) == NULL && (*meta = strdup("{}")) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rc = 1;
out:
    if (rc != 1) {
        if (*key_json)
            OPENSSL_cleanse(*key_json, strlen(*key_json));
        free(*id);
        free(*key_json);
        free(*regr);
        free(*meta);
        *id = *key_json = *regr = *meta = NULL;
    }
    free(kp);
    free(rp);
    free(mp);
    px_acme_account_clear(&a);
    return rc;
}

int px_acme_account_import(const char *accounts_dir, const char *directory_url, const char *id, const char *key_json,
                           const char *regr, const char *meta, int *changed, char *err, size_t errlen)
{
    char *dir = account_dir(accounts_dir, directory_url, id, err, errlen), *kp = NULL, *rp = NULL, *mp = NULL;
    char *cur = NULL;
    size_t len;
    int rc = -1;
    *changed = 0;
    if (dir == NULL)
        return -1;
    if ((kp = path_join(dir, "private_key.json")) == NULL || (rp = path_join(dir, "regr.json")) == NULL ||
        (mp = path_join(dir, "meta.json")) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    cur = read_small(kp, &len);
    int same_key = cur && strcmp(cur, key_json) == 0;
    if (cur)
        OPENSSL_cleanse(cur, len);
    free(cur);
    cur = read_small(rp, &len);
    int same_regr = cur && strcmp(cur, regr) == 0;
    free(cur);
    cur = NULL;
    if (same_key && same_regr) {
        rc = 0;
        goto out;
    }
    if (mkdir_p(dir, err, errlen) < 0 || px_acme_write_file(kp, key_json, 0600, err, errlen) < 0 ||
        px_acme_write_file(rp, regr, 0644, err, errlen) < 0 || px_acme_write_file(mp, meta, 0644, err, errlen) < 0)
        goto out;
    *changed = 1;
    rc = 0;
out:
    free(dir);
    free(kp);
    free(rp);
    free(mp);
    return rc;
}
