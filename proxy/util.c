/* util.c -- clocks, string vectors, open errors. */
#include <dlfcn.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "px/common.h"

uint64_t px_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t px_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t px_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

char **px_strv_dup(const char *const *v, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof(*out));
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((out[i] = strdup(v[i])) == NULL) {
            px_strv_free(out, i);
            return NULL;
        }
    return out;
}

void px_strv_free(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

const char *px_open_error(const char *path, int e, char *buf, size_t n)
{
    struct stat st;
    if (e != EACCES || stat(path, &st) < 0) {
        snprintf(buf, n, "%s", strerror(e));
        return buf;
    }
    /* getpwuid/getgrgid answer in static storage: copy each name at once */
    char owner[64], group[64], self[64];
    struct passwd *pw = getpwuid(st.st_uid);
    if (pw)
        snprintf(owner, sizeof(owner), "%s", pw->pw_name);
    else
        snprintf(owner, sizeof(owner), "%u", (unsigned)st.st_uid);
    struct group *gr = getgrgid(st.st_gid);
    if (gr)
        snprintf(group, sizeof(group), "%s", gr->gr_name);
    else
        snprintf(group, sizeof(group), "%u", (unsigned)st.st_gid);
    struct passwd *me = getpwuid(geteuid());
    if (me)
        snprintf(self, sizeof(self), "%s", me->pw_name);
    else
        snprintf(self, sizeof(self), "%u", (unsigned)geteuid());
    snprintf(buf, n, "%s (mode %04o, owner %s:%s; proxyd runs as %s)", strerror(e), (unsigned)(st.st_mode & 07777),
             owner, group, self);
    return buf;
}

int px_dl_load(const char *lib, const struct px_dl_sym *syms, size_t n, void *dst, size_t dst_size, char *err,
               size_t errlen)
{
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(err, errlen, "%s cannot be loaded (%s)", lib, dlerror());
        return -1;
    }
    unsigned char api[1024];
    if (dst_size > sizeof(api)) {
        snprintf(err, errlen, "%s: too many functions", lib);
        dlclose(h);
        return -1;
    }
    memcpy(api, dst, dst_size);
    for (size_t i = 0; i < n; i++) {
        void *p = dlsym(h, syms[i].name);
        if (p == NULL || syms[i].off + sizeof(p) > dst_size) {
            snprintf(err, errlen, "%s has no %s", lib, syms[i].name);
            dlclose(h);
            return -1;
        }
        memcpy(api + syms[i].off, &p, sizeof(p)); /* POSIX: a function pointer fits a void * */
    }
    memcpy(dst, api, dst_size);
    return 0;
}
