/* test_acme_store.c -- certbot's layout under config_dir (proxy/acme/store.c):
 * directories and modes, versions N and N+1, the live links, the renewal
 * conf, load (and what makes a lineage broken), failures that must leave
 * live/ alone, the lock.
 *
 * tests/unit/fixtures/certbot/ is a lineage certbot 2.1.0 made (certonly
 * --standalone against pebble, config dir /tmp/certbot-fixture/le, names
 * example.test and www.example.test): load must read it and save must add
 * version 2 to it. When certbot is installed, `certbot certificates` must
 * still list it afterwards, with the new expiry. Everything else is made
 * here with OpenSSL. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "px/acme.h"
#include "unit.h"

/* CHECK_STR's message may be cut short for long paths: that is fine here */
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#define FIXTURE "tests/unit/fixtures/certbot"
#define URL "https://acme.test/dir"

/* ---- temp dirs ---- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        chmod(path, 0700); /* a test may have made it read-only */
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *tmpdir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/proxyd-acme-store-XXXXXX");
    return mkdtemp(buf);
}

/* cp -a for files, directories and symlinks */
static int copy_tree(const char *from, const char *to)
{
    struct stat st;
    if (lstat(from, &st) < 0)
        return -1;
    if (S_ISLNK(st.st_mode)) {
        char t[PATH_MAX];
        ssize_t len = readlink(from, t, sizeof(t) - 1);
        if (len < 0)
            return -1;
        t[len] = '\0';
        return symlink(t, to);
    }
    if (S_ISDIR(st.st_mode)) {
        if (mkdir(to, st.st_mode & 07777) < 0 && errno != EEXIST)
            return -1;
        DIR *d = opendir(from);
        struct dirent *de;
        int rc = d ? 0 : -1;
        while (d && (de = readdir(d)) != NULL) {
            char a[PATH_MAX], b[PATH_MAX];
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            snprintf(a, sizeof(a), "%s/%s", from, de->d_name);
            snprintf(b, sizeof(b), "%s/%s", to, de->d_name);
            if (copy_tree(a, b) < 0)
                rc = -1;
        }
        if (d)
            closedir(d);
        return rc;
    }
    char buf[8192];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, st.st_mode & 07777);
    ssize_t n;
    while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n)
            break;
    int rc = in >= 0 && out >= 0 ? 0 : -1;
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return rc;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    static char buf[65536];
    if (f == NULL)
        return NULL;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int mode_of(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static const char *link_of(const char *path)
{
    static char buf[PATH_MAX];
    ssize_t n = readlink(path, buf, sizeof(buf) - 1);
    if (n < 0)
        return "(not a link)";
    buf[n] = '\0';
    return buf;
}

/* A non-empty directory at dir/sub: neither unlink nor rename can replace it. */
static void obstacle(const char *dir, const char *sub)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, sub);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/%s/x", dir, sub);
    mkdir(p, 0700);
}

static void unobstacle(const char *dir, const char *sub)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, sub);
    rm_rf(p);
}

/* ---- certificates made with OpenSSL ---- */

struct made {
    char *cert, *chain, *fullchain, *key;
    struct px_acme_cert c;
};

static char *pem_of_cert(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p, *s;
    PEM_write_bio_X509(b, x);
    long n = BIO_get_mem_data(b, &p);
    s = strndup(p, (size_t)n);
    BIO_free(b);
    return s;
}

/* A certificate for key k named cn (and names as its SAN), valid [nb, na],
 * signed by issuer_key under issuer's name (itself when issuer is NULL). */
static X509 *make_x509(EVP_PKEY *k, const char *cn, const char *const *names, size_t n, time_t nb, time_t na,
                       X509 *issuer, EVP_PKEY *issuer_key)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(nb & 0x7fffffff) + (issuer ? 1 : 0));
    ASN1_TIME_set(X509_getm_notBefore(x), nb);
    ASN1_TIME_set(X509_getm_notAfter(x), na);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : nm);
    X509_set_pubkey(x, k);
    if (n) {
        char san[1024] = "";
        for (size_t i = 0; i < n; i++)
            snprintf(san + strlen(san), sizeof(san) - strlen(san), "%sDNS:%s", i ? "," : "", names[i]);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, issuer ? issuer_key : k, EVP_sha256());
    return x;
}

/* A leaf for names with its own new key, valid [nb, na], issued by a
 * throwaway CA that is its chain (certbot checks the leaf's signature
 * against the chain's first certificate). */
static void make_cert(struct made *m, const char *const *names, size_t n, time_t nb, time_t na)
{
    EVP_PKEY *k = EVP_EC_gen("P-256"), *ik = EVP_EC_gen("P-256");
    X509 *inter = make_x509(ik, "proxyd test intermediate", NULL, 0, nb, na, NULL, NULL);
    X509 *leaf = make_x509(k, n ? names[0] : "no-san.test", names, n, nb, na, inter, ik);
    BIO *b = BIO_new(BIO_s_mem());
    char *p;
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    long len = BIO_get_mem_data(b, &p);
    m->key = strndup(p, (size_t)len);
    BIO_free(b);
    m->cert = pem_of_cert(leaf);
    m->chain = pem_of_cert(inter);
    m->fullchain = malloc(strlen(m->cert) + strlen(m->chain) + 1);
    strcpy(m->fullchain, m->cert);
    strcat(m->fullchain, m->chain);
    m->c.privkey_pem = m->key;
    m->c.cert_pem = m->cert;
    m->c.chain_pem = m->chain;
    m->c.fullchain_pem = m->fullchain;
    m->c.not_before = nb;
    m->c.not_after = na;
    X509_free(leaf);
    X509_free(inter);
    EVP_PKEY_free(k);
    EVP_PKEY_free(ik);
}

static void made_free(struct made *m)
{
    free(m->cert);
    free(m->chain);
    free(m->fullchain);
    free(m->key);
}

static const char *const NAMES[] = {"example.test", "www.example.test"};
#define T0 ((time_t)1767225600) /* 2026-01-01T00:00:00Z */
#define DAY 86400

/* ---- tests ---- */

static void test_init_modes(void)
{
    char t[64], dir[256], p[512];
    CHECK(tmpdir(t, sizeof(t)) != NULL);
    snprintf(dir, sizeof(dir), "%s/etc/le", t);
    mode_t old = umask(077);
    char err[512] = "";
    int rc = px_acme_store_init(dir, err, sizeof(err));
    umask(old);
    CHECK_INT(rc, 0);
    static const struct {
        const char *sub;
        int mode;
    } want[] = {{"", 0755},
                {"/accounts", 0700},
                {"/archive", 0700},
                {"/live", 0700},
                {"/renewal", 0755},
                {"/renewal-hooks", 0755},
                {"/renewal-hooks/pre", 0755},
                {"/renewal-hooks/deploy", 0755},
                {"/renewal-hooks/post", 0755}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", dir, want[i].sub);
        CHECK_INT(mode_of(p), want[i].mode);
    }
    /* existing ones are left as they are */
    snprintf(p, sizeof(p), "%s/live", dir);
    chmod(p, 0750);
    CHECK_INT(px_acme_store_init(dir, err, sizeof(err)), 0);
    CHECK_INT(mode_of(p), 0750);
    /* a file where a directory belongs */
    snprintf(p, sizeof(p), "%s/renewal-hooks/post", dir);
    rmdir(p);
    close(open(p, O_WRONLY | O_CREAT, 0644));
    CHECK_INT(px_acme_store_init(dir, err, sizeof(err)), -1);
    CHECK(strstr(err, "not a directory") != NULL);
    rm_rf(t);
}

static const char *expected_conf(const char *root, const char *domains)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf),
             "# renew_before_expiry = 30 days\n"
             "version = 2.1.0\n"
             "archive_dir = %s/archive/example.test\n"
             "cert = %s/live/example.test/cert.pem\n"
             "privkey = %s/live/example.test/privkey.pem\n"
             "chain = %s/live/example.test/chain.pem\n"
             "fullchain = %s/live/example.test/fullchain.pem\n"
             "# the names proxyd asks for (certbot reads them from the certificate)\n"
             "proxyd_domains = %s\n"
             "\n"
             "# Options used in the renewal process\n"
             "[renewalparams]\n"
             "authenticator = standalone\n"
             "server = " URL "\n"
             "key_type = ecdsa\n",
             root, root, root, root, root, domains);
    return buf;
}

static void test_save_v1_v2(void)
{
    char t[64], dir[256], p[512], err[512] = "";
    struct made a = {0}, b = {0};
    struct px_acme_lineage l = {0};
    CHECK(tmpdir(t, sizeof(t)) != NULL);
    snprintf(dir, sizeof(dir), "%s/le", t);
    make_cert(&a, NAMES, 2, T0, T0 + 90 * DAY);
    make_cert(&b, NAMES, 2, T0 + 60 * DAY, T0 + 150 * DAY);

    mode_t old = umask(077); /* the modes must not depend on it */
    int rc = px_acme_store_save(dir, "example.test", URL, NAMES, 2, &a.c, &l, err, sizeof(err));
    umask(old);
    CHECK_STR(err, "");
    CHECK_INT(rc, 0);
    CHECK_INT(l.version, 1);
    CHECK_STR(l.name, "example.test");
    CHECK_INT(l.nnames, 2);
    if (l.nnames == 2) {
        CHECK_STR(l.names[0], "example.test");
        CHECK_STR(l.names[1], "www.example.test");
    }
    CHECK_INT(l.not_before, T0);
    CHECK_INT(l.not_after, T0 + 90 * DAY);
    snprintf(p, sizeof(p), "%s/live/example.test", dir);
    CHECK_STR(l.live_dir, p);
    snprintf(p, sizeof(p), "%s/live/example.test/fullchain.pem", dir);
    CHECK_STR(l.fullchain, p);
    snprintf(p, sizeof(p), "%s/live/example.test/privkey.pem", dir);
    CHECK_STR(l.privkey, p);
    px_acme_lineage_clear(&l);

    static const struct {
        const char *kind;
        int mode;
    } files[] = {{"cert", 0644}, {"chain", 0644}, {"fullchain", 0644}, {"privkey", 0600}};
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s/archive/example.test/%s1.pem", dir, files[i].kind);
        CHECK_INT(mode_of(p), files[i].mode);
        snprintf(p, sizeof(p), "%s/live/example.test/%s.pem", dir, files[i].kind);
        char want[128];
        snprintf(want, sizeof(want), "../../archive/example.test/%s1.pem", files[i].kind);
        CHECK_STR(link_of(p), want);
    }
    snprintf(p, sizeof(p), "%s/archive/example.test/fullchain1.pem", dir);
    CHECK_STR(slurp(p), a.fullchain);
    snprintf(p, sizeof(p), "%s/archive/example.test/privkey1.pem", dir);
    CHECK_STR(slurp(p), a.key);
    snprintf(p, sizeof(p), "%s/archive/example.test", dir);
    CHECK_INT(mode_of(p), 0755);
    snprintf(p, sizeof(p), "%s/live/example.test", dir);
    CHECK_INT(mode_of(p), 0755);
    snprintf(p, sizeof(p), "%s/live/example.test/README", dir);
    CHECK(slurp(p) && strstr(slurp(p), "`privkey.pem`  : the private key for your certificate.") != NULL);
    snprintf(p, sizeof(p), "%s/live/README", dir);
    CHECK(slurp(p) && strstr(slurp(p), "`[cert name]/privkey.pem`") != NULL);

    char root[PATH_MAX];
    CHECK(realpath(dir, root) != NULL);
    snprintf(p, sizeof(p), "%s/renewal/example.test.conf", dir);
    CHECK_STR(slurp(p), expected_conf(root, "example.test www.example.test"));
    CHECK_INT(mode_of(p), 0644);

    /* version 2: a new key that keeps the group bits of the old one, as certbot does */
    snprintf(p, sizeof(p), "%s/archive/example.test/privkey1.pem", dir);
    chmod(p, 0640);
    CHECK_INT(px_acme_store_save(dir, "example.test", URL, NAMES, 2, &b.c, &l, err, sizeof(err)), 0);
    CHECK_INT(l.version, 2);
    CHECK_INT(l.not_after, T0 + 150 * DAY);
    px_acme_lineage_clear(&l);
    snprintf(p, sizeof(p), "%s/archive/example.test/privkey2.pem", dir);
    CHECK_INT(mode_of(p), 0640);
    snprintf(p, sizeof(p), "%s/archive/example.test/cert1.pem", dir);
    CHECK(exists(p)); /* the old version stays */
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s/live/example.test/%s.pem", dir, files[i].kind);
        char want[128];
        snprintf(want, sizeof(want), "../../archive/example.test/%s2.pem", files[i].kind);
        CHECK_STR(link_of(p), want);
        snprintf(p, sizeof(p), "%s/live/example.test/%s.pem.tmp", dir, files[i].kind);
        CHECK(!exists(p));
        snprintf(p, sizeof(p), "%s/archive/example.test/%s2.pem.tmp", dir, files[i].kind);
        CHECK(!exists(p));
    }
    snprintf(p, sizeof(p), "%s/renewal/example.test.conf", dir);
    CHECK_STR(slurp(p), expected_conf(root, "example.test www.example.test"));

    /* load reads back what save wrote */
    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), 1);
    CHECK_INT(l.version, 2);
    CHECK_INT(l.nnames, 2);
    CHECK_INT(l.not_before, T0 + 60 * DAY);
    CHECK_INT(l.not_after, T0 + 150 * DAY);
    px_acme_lineage_clear(&l);

    /* the scan, not the live links, picks N: a stray chain7.pem makes the next one 8 */
    snprintf(p, sizeof(p), "%s/archive/example.test/chain7.pem", dir);
    close(open(p, O_WRONLY | O_CREAT, 0644));
    CHECK_INT(px_acme_store_save(dir, "example.test", URL, NAMES, 2, &a.c, &l, err, sizeof(err)), 0);
    CHECK_INT(l.version, 8);
    snprintf(p, sizeof(p), "%s/live/example.test/privkey.pem", dir);
    CHECK_STR(link_of(p), "../../archive/example.test/privkey8.pem");
    px_acme_lineage_clear(&l);

    made_free(&a);
    made_free(&b);
    rm_rf(t);
}

static void test_save_rejects(void)
{
    char t[64], dir[256], p[512], err[512] = "";
    struct made a = {0}, b = {0};
    CHECK(tmpdir(t, sizeof(t)) != NULL);
    snprintf(dir, sizeof(dir), "%s/le", t);
    make_cert(&a, NAMES, 2, T0, T0 + 90 * DAY);
    make_cert(&b, NAMES, 2, T0, T0 + 90 * DAY);
    struct px_acme_cert mixed = a.c;
    mixed.privkey_pem = b.key;
    CHECK_INT(px_acme_store_save(dir, "example.test", URL, NAMES, 2, &mixed, NULL, err, sizeof(err)), -1);
    CHECK(strstr(err, "is not the key") != NULL);
    snprintf(p, sizeof(p), "%s/archive/example.test", dir);
    CHECK(!exists(p));
    static const char *const bad[] = {"", ".hidden", "a/b", "..", "x\ny"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK_INT(px_acme_store_save(dir, bad[i], URL, NAMES, 2, &a.c, NULL, err, sizeof(err)), -1);
        CHECK(err[0] != '\0');
    }
    /* a directory URL configobj cannot hold */
    CHECK_INT(px_acme_store_save(dir, "example.test", "https://x/\"'", NAMES, 2, &a.c, NULL, err, sizeof(err)), -1);
    snprintf(p, sizeof(p), "%s/archive/example.test/cert1.pem", dir);
    CHECK(!exists(p));
    snprintf(p, sizeof(p), "%s/live/example.test", dir);
    CHECK(!exists(p));
    made_free(&a);
    made_free(&b);
    rm_rf(t);
}

/* A save that fails leaves live/ pointing at version 1 and no file of version 2. */
static void check_still_v1(const char *dir)
{
    char p[512], want[128];
    static const char *const k[] = {"cert", "chain", "fullchain", "privkey"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s/live/example.test/%s.pem", dir, k[i]);
        snprintf(want, sizeof(want), "../../archive/example.test/%s1.pem", k[i]);
        CHECK_STR(link_of(p), want);
        snprintf(p, sizeof(p), "%s/archive/example.test/%s2.pem", dir, k[i]);
        CHECK(!exists(p));
        snprintf(p, sizeof(p), "%s/archive/example.test/%s2.pem.tmp", dir, k[i]);
        CHECK(!exists(p));
    }
}

/* Failure injection that works as root too (where chmod stops nothing):
 * a non-empty directory where a temp file or link must go. */
static void test_save_failures_leave_live(void)
{
    char t[64], dir[256], p[512], err[512] = "";
    struct made a = {0}, b = {0};
    struct px_acme_lineage l = {0};
    CHECK(tmpdir(t, sizeof(t)) != NULL);
    snprintf(dir, sizeof(dir), "%s/le", t);
    make_cert(&a, NAMES, 2, T0, T0 + 90 * DAY);
    make_cert(&b, NAMES, 2, T0 + DAY, T0 + 91 * DAY);
    CHECK_INT(px_acme_store_save(dir, "example.test", URL, NAMES, 2, &a.c, NULL, err, sizeof(err)), 0);

    /* 1. an archive file cannot be written (the third of four) */
    obstacle(dir, "archive/example.test/chain2.pem.tmp");
    CHECK_INT(px_acme_store_save(dir, "example.test", URL, NAMES, 2, &b.c, NULL, err, sizeof(err)), -1);
    CHECK(strstr(err, "chain2.pem.tmp") != NULL);
    unobstacle(dir, "archive/example.test/chain2.pem.tmp");
    check_still_v1(dir);

    /* 2. the renewal conf cannot be written (it changes: another server) */
    obstacle(dir, "renewal/example.test.conf.new");
    CHECK_INT(px_acme_store_save(dir, "example.test", "https://other.test/dir", NAMES, 2, &b.c, NULL, err, sizeof(err)),
              -1);
    CHECK(strstr(err, "example.test.conf.new") != NULL);
    unobstacle(dir, "renewal/example.test.conf.new");
    check_still_v1(dir);

    /* 3. the first link cannot be made: nothing switched */
    obstacle(dir, "live/example.test/cert.pem.tmp");
    CHECK_INT(px_acme_store_save(dir, "example.test", URL, NAMES, 2, &b.c, NULL, err, sizeof(err)), -1);
    CHECK(strstr(err, "cert.pem.tmp") != NULL);
    unobstacle(dir, "live/example.test/cert.pem.tmp");
    check_still_v1(dir);

    /* 4. the last link cannot be made: the three switched ones are put back */
    obstacle(dir, "live/example.test/fullchain.pem.tmp");
    CHECK_INT(px_acme_store_save(dir, "example.test", URL, NAMES, 2, &b.c, NULL, err, sizeof(err)), -1);
    CHECK(strstr(err, "fullchain.pem.tmp") != NULL);
    unobstacle(dir, "live/example.test/fullchain.pem.tmp");
    check_still_v1(dir);

    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), 1);
    CHECK_INT(l.version, 1);
    CHECK_INT(l.not_after, T0 + 90 * DAY);
    px_acme_lineage_clear(&l);

    /* and with the obstacles gone, the next save is version 2 */
    CHECK_INT(px_acme_store_save(dir, "example.test", URL, NAMES, 2, &b.c, &l, err, sizeof(err)), 0);
    CHECK_INT(l.version, 2);
    px_acme_lineage_clear(&l);

    /* a first save that fails leaves no live/NAME behind */
    snprintf(p, sizeof(p), "%s/archive/new.test", dir);
    mkdir(p, 0755);
    obstacle(dir, "archive/new.test/privkey1.pem.tmp");
    CHECK_INT(px_acme_store_save(dir, "new.test", URL, NAMES, 2, &b.c, NULL, err, sizeof(err)), -1);
    snprintf(p, sizeof(p), "%s/live/new.test", dir);
    CHECK(!exists(p));
    snprintf(p, sizeof(p), "%s/archive/new.test/cert1.pem", dir);
    CHECK(!exists(p));
    CHECK_INT(px_acme_store_load(dir, "new.test", &l, err, sizeof(err)), 0);

    made_free(&a);
    made_free(&b);
    rm_rf(t);
}

static void test_load_none_and_broken(void)
{
    char t[64], dir[256], p[512], q[512], err[512] = "";
    struct made a = {0}, b = {0};
    struct px_acme_lineage l = {0};
    CHECK(tmpdir(t, sizeof(t)) != NULL);
    snprintf(dir, sizeof(dir), "%s/le", t);
    make_cert(&a, NAMES, 2, T0, T0 + 90 * DAY);
    make_cert(&b, NAMES, 2, T0, T0 + 90 * DAY);

    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), 0);
    CHECK_INT(l.version, 0);
    CHECK_INT(px_acme_store_init(dir, err, sizeof(err)), 0);
    snprintf(p, sizeof(p), "%s/live/example.test", dir);
    mkdir(p, 0755);
    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), 0);
    CHECK_INT(px_acme_store_save(dir, "example.test", URL, NAMES, 2, &a.c, NULL, err, sizeof(err)), 0);
    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), 1);
    px_acme_lineage_clear(&l);

    /* a dangling link */
    snprintf(p, sizeof(p), "%s/archive/example.test/fullchain1.pem", dir);
    snprintf(q, sizeof(q), "%s/archive/example.test/fullchain1.pem.away", dir);
    rename(p, q);
    err[0] = '\0';
    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), -1);
    CHECK(strstr(err, "fullchain.pem -> ../../archive/example.test/fullchain1.pem: No such file") != NULL);
    CHECK(l.names == NULL && l.nnames == 0);
    rename(q, p);

    /* not a certificate */
    snprintf(q, sizeof(q), "%s/archive/example.test/cert1.pem", dir);
    char *keep = strdup(slurp(p));
    FILE *f = fopen(p, "w");
    fputs("-----BEGIN CERTIFICATE-----\nnot base64 !\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), -1);
    CHECK(strstr(err, "no PEM certificate") != NULL);
    f = fopen(p, "w");
    fputs(keep, f);
    fclose(f);
    free(keep);

    /* a key that is not the certificate's */
    snprintf(p, sizeof(p), "%s/archive/example.test/privkey1.pem", dir);
    f = fopen(p, "w");
    fputs(b.key, f);
    fclose(f);
    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), -1);
    CHECK(strstr(err, "is not the key of the certificate") != NULL);
    f = fopen(p, "w");
    fputs(a.key, f);
    fclose(f);
    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), 1);
    px_acme_lineage_clear(&l);

    /* links at different versions */
    snprintf(p, sizeof(p), "%s/live/example.test/privkey.pem", dir);
    unlink(p);
    symlink("../../archive/example.test/privkey2.pem", p);
    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), -1);
    CHECK(strstr(err, "version 1") != NULL && strstr(err, "version 2") != NULL);

    /* a regular file instead of a link */
    unlink(p);
    f = fopen(p, "w");
    fputs(a.key, f);
    fclose(f);
    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), -1);
    CHECK(strstr(err, "not a symlink") != NULL);

    /* one of the two missing */
    unlink(p);
    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), -1);
    CHECK(strstr(err, "privkey.pem is missing") != NULL);

    /* a certificate without a SAN: its CN */
    made_free(&a);
    make_cert(&a, NULL, 0, T0, T0 + DAY);
    CHECK_INT(px_acme_store_save(dir, "cn.test", URL, NULL, 0, &a.c, &l, err, sizeof(err)), 0);
    CHECK_INT(l.nnames, 1);
    if (l.nnames == 1)
        CHECK_STR(l.names[0], "no-san.test");
    px_acme_lineage_clear(&l);

    made_free(&a);
    made_free(&b);
    rm_rf(t);
}

/* certbot's lineage: loaded as is, then version 2 added to it. */
static int certbot_lists(const char *dir, const char *want_expiry, const char *want_path, char *out, size_t outlen)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "certbot certificates --config-dir '%s' --work-dir '%s/work' --logs-dir '%s/logs' 2>&1",
             dir, dir, dir);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, outlen - 1, p) : 0;
    out[n] = '\0';
    int rc = p ? pclose(p) : -1;
    return rc == 0 && strstr(out, "Certificate Name: example.test") && strstr(out, want_expiry) &&
           strstr(out, want_path);
}

static void test_certbot_lineage(void)
{
    char t[64], dir[256], p[512], err[512] = "", root[PATH_MAX];
    struct made a = {0};
    struct px_acme_lineage l = {0};
    CHECK(tmpdir(t, sizeof(t)) != NULL);
    snprintf(dir, sizeof(dir), "%s/le", t);
    CHECK_INT(copy_tree(FIXTURE, dir), 0);
    CHECK(realpath(dir, root) != NULL);

    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), 1);
    CHECK_STR(err, "");
    CHECK_INT(l.version, 1);
    CHECK_INT(l.nnames, 2);
    if (l.nnames == 2) {
        CHECK_STR(l.names[0], "example.test");
        CHECK_STR(l.names[1], "www.example.test");
    }
    CHECK_INT(l.not_after, 1953432460);  /* Nov 26 04:07:40 2031 GMT */
    CHECK_INT(l.not_before, 1795666061); /* Nov 26 04:07:41 2026 GMT */
    px_acme_lineage_clear(&l);

    /* version 2, from the same server: certbot's own settings stay */
    const char *server = "https://127.0.0.1:56541/dir";
    make_cert(&a, NAMES, 2, T0, T0 + 400 * DAY); /* expires 2027-02-05 */
    snprintf(p, sizeof(p), "%s/archive/example.test/privkey1.pem", dir);
    chmod(p, 0600); /* git checks it out 0644 */
    CHECK_INT(px_acme_store_save(dir, "example.test", server, NAMES, 2, &a.c, &l, err, sizeof(err)), 0);
    CHECK_STR(err, "");
    CHECK_INT(l.version, 2);
    px_acme_lineage_clear(&l);
    snprintf(p, sizeof(p), "%s/live/example.test/fullchain.pem", dir);
    CHECK_STR(link_of(p), "../../archive/example.test/fullchain2.pem");
    snprintf(p, sizeof(p), "%s/archive/example.test/privkey2.pem", dir);
    CHECK_INT(mode_of(p), 0600);
    snprintf(p, sizeof(p), "%s/renewal/example.test.conf", dir);
    char want[4096];
    snprintf(want, sizeof(want),
             "# renew_before_expiry = 30 days\n"
             "version = 2.1.0\n"
             "archive_dir = %s/archive/example.test\n"
             "cert = %s/live/example.test/cert.pem\n"
             "privkey = %s/live/example.test/privkey.pem\n"
             "chain = %s/live/example.test/chain.pem\n"
             "fullchain = %s/live/example.test/fullchain.pem\n"
             "# the names proxyd asks for (certbot reads them from the certificate)\n"
             "proxyd_domains = example.test www.example.test\n"
             "\n"
             "# Options used in the renewal process\n"
             "[renewalparams]\n"
             "account = 79781daf734180c55c19e78c2f817cad\n"
             "http01_port = 38827\n"
             "config_dir = %s\n"
             "work_dir = /tmp/certbot-fixture/work\n"
             "logs_dir = /tmp/certbot-fixture/logs\n"
             "server = https://127.0.0.1:56541/dir\n"
             "authenticator = standalone\n"
             "key_type = ecdsa\n",
             root, root, root, root, root, root);
    CHECK_STR(slurp(p), want);

    CHECK_INT(px_acme_store_load(dir, "example.test", &l, err, sizeof(err)), 1);
    CHECK_INT(l.version, 2);
    CHECK_INT(l.not_after, T0 + 400 * DAY);
    px_acme_lineage_clear(&l);

    /* certbot still reads it, with the new expiry */
    if (access("/usr/bin/certbot", X_OK) == 0) {
        char out[8192], path[600];
        snprintf(path, sizeof(path), "%s/live/example.test/fullchain.pem", root);
        int ok = certbot_lists(dir, "Expiry Date: 2027-02-05", path, out, sizeof(out));
        if (!ok)
            fprintf(stderr, "certbot certificates said:\n%s\n", out);
        CHECK(ok);
    } else {
        printf("# test_certbot_lineage: certbot not installed, `certbot certificates` not checked\n");
    }

    /* another server: the account (the old server's) goes */
    made_free(&a);
    make_cert(&a, NAMES, 2, T0, T0 + 401 * DAY);
    CHECK_INT(px_acme_store_save(dir, "example.test", URL, NAMES, 2, &a.c, &l, err, sizeof(err)), 0);
    CHECK_INT(l.version, 3);
    px_acme_lineage_clear(&l);
    snprintf(p, sizeof(p), "%s/renewal/example.test.conf", dir);
    const char *conf = slurp(p);
    CHECK(conf && strstr(conf, "account =") == NULL);
    CHECK(conf && strstr(conf, "server = " URL "\n") != NULL);
    CHECK(conf && strstr(conf, "http01_port = 38827\n") != NULL);

    made_free(&a);
    rm_rf(t);
}

static void test_lock(void)
{
    char t[64], p[512], err[512] = "";
    CHECK(tmpdir(t, sizeof(t)) != NULL);
    int fd = px_acme_store_lock(t, err, sizeof(err));
    CHECK(fd >= 0);
    snprintf(p, sizeof(p), "%s/.certbot.lock", t);
    CHECK_INT(mode_of(p), 0600);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    CHECK_INT(px_acme_store_lock(t, err, sizeof(err)), -1);
    CHECK(strstr(err, "held by another process") != NULL);

    /* certbot (lockf, a POSIX lock, in another process) is kept out too */
    pid_t pid = fork();
    if (pid == 0) {
        int cfd = open(p, O_WRONLY);
        _exit(cfd >= 0 && lockf(cfd, F_TLOCK, 0) < 0 && (errno == EACCES || errno == EAGAIN) ? 0 : 1);
    }
    int st = -1;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    px_acme_store_unlock(fd);
    fd = px_acme_store_lock(t, err, sizeof(err));
    CHECK(fd >= 0);
    px_acme_store_unlock(fd);

    /* and we are kept out while certbot holds it */
    int pfd[2];
    CHECK_INT(pipe(pfd), 0);
    pid = fork();
    if (pid == 0) {
        int cfd = open(p, O_WRONLY);
        char c = lockf(cfd, F_TLOCK, 0) == 0 ? 'y' : 'n';
        (void)!write(pfd[1], &c, 1);
        pause(); /* holding it until killed */
        _exit(0);
    }
    char c = 0;
    (void)!read(pfd[0], &c, 1);
    CHECK_INT(c, 'y');
    CHECK_INT(px_acme_store_lock(t, err, sizeof(err)), -1);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    close(pfd[0]);
    close(pfd[1]);
    fd = px_acme_store_lock(t, err, sizeof(err));
    CHECK(fd >= 0);
    px_acme_store_unlock(fd);
    rm_rf(t);
}

int main(void)
{
    UNIT_RUN(test_init_modes);
    UNIT_RUN(test_save_v1_v2);
    UNIT_RUN(test_save_rejects);
    UNIT_RUN(test_save_failures_leave_live);
    UNIT_RUN(test_load_none_and_broken);
    UNIT_RUN(test_certbot_lineage);
    UNIT_RUN(test_lock);
    return unit_report();
}
