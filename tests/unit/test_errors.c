/* test_errors.c -- px/errors.h: every code has a wire name, the README's
 * table of error codes lists exactly those names, and every code is
 * produced somewhere (no name on the wire that nothing sends). Runs from
 * the repository's root (tests/run.py does). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/errors.h"
#include "unit.h"

static const char *const ids[] = {
#define ID_(id, name) #id,
    PX_ERRORS(ID_)
#undef ID_
};

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        (buf = malloc((size_t)n + 1)) == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    } else {
        buf[n] = '\0';
    }
    if (f)
        fclose(f);
    return buf;
}

static void test_every_code_has_a_wire_name(void)
{
    CHECK_INT(sizeof(ids) / sizeof(ids[0]), PX_E__COUNT);
    CHECK_STR(px_err_name(PX_E_OK), "ok");
    for (int i = 0; i < PX_E__COUNT; i++) {
        const char *n = px_err_name((enum px_err)i);
        REQUIRE(n != NULL && *n != '\0');
        CHECK(strspn(n, "abcdefghijklmnopqrstuvwxyz_") == strlen(n));
        CHECK(i == PX_E_INTERNAL || strcmp(n, "internal") != 0); /* not the out-of-range fallback */
        CHECK_INT(px_err_from_name(n), i);                        /* distinct, and found back */
    }
    CHECK_STR(px_err_name(PX_E__COUNT), "internal");
    CHECK_STR(px_err_name((enum px_err)-1), "internal");
    CHECK_INT(px_err_from_name("deploy_timeout"), -1);  /* never produced: gone from the list */
    CHECK_INT(px_err_from_name("not_implemented"), -1); /* a command has a handler or does not build */
}

/* The rows "| `code` | when |" of the README's table after "Error codes". */
static void test_readme_lists_exactly_the_codes(void)
{
    char *readme = slurp("README.md");
    int seen[PX_E__COUNT] = {0};
    int rows = 0;

    REQUIRE(readme != NULL);
    char *p = strstr(readme, "\nError codes (stable");
    CHECK(p != NULL);
    if (p == NULL)
        goto done;
    p = strstr(p, "\n|---|");
    CHECK(p != NULL);
    for (p = p ? strchr(p + 1, '\n') : NULL; p && strncmp(p, "\n| `", 4) == 0; p = strchr(p + 1, '\n')) {
        char name[64];
        const char *s = p + 4, *e = strchr(s, '`');
        CHECK(e != NULL && (size_t)(e - s) < sizeof(name));
        if (e == NULL || (size_t)(e - s) >= sizeof(name))
            break;
        memcpy(name, s, (size_t)(e - s));
        name[e - s] = '\0';
        int code = px_err_from_name(name);
        if (code <= 0 && !unit_failed_now) { /* "ok" is not an error code */
            unit_failed_now = 1;
            snprintf(unit_msg, sizeof(unit_msg), "README lists `%s`, which px/errors.h does not have", name);
        }
        if (code > 0) {
            CHECK(!seen[code]); /* listed once */
            seen[code] = 1;
        }
        rows++;
    }
    CHECK_INT(rows, PX_E__COUNT - 1);
    for (int i = 1; i < PX_E__COUNT; i++)
        if (!seen[i] && !unit_failed_now) {
            unit_failed_now = 1;
            snprintf(unit_msg, sizeof(unit_msg), "README's error table lacks `%s`", px_err_name((enum px_err)i));
        }
done:
    free(readme);
}

/* Every code is produced: PX_E_ID, or its wire name as a string literal
 * (ACME's errors are still strings), appears in a .c file of the daemon
 * other than errors.c. */
static int found_in(const char *dir, const char *needle1, const char *needle2)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;

    if (d == NULL)
        return -1;
    while (!found && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        char path[512];
        if (n < 3 || strcmp(e->d_name + n - 2, ".c") != 0 || strcmp(e->d_name, "errors.c") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        char *text = slurp(path);
        found = text && (strstr(text, needle1) || strstr(text, needle2));
        free(text);
    }
    closedir(d);
    return found;
}

static void test_every_code_is_produced(void)
{
    static const char *const dirs[] = {"proxy", "proxy/acme", "control"};

    for (int i = 1; i < PX_E__COUNT; i++) {
        char id[64], lit[64];
        int found = 0;
        snprintf(id, sizeof(id), "PX_E_%s", ids[i]);
        snprintf(lit, sizeof(lit), "\"%s\"", px_err_name((enum px_err)i));
        for (size_t j = 0; j < sizeof(dirs) / sizeof(dirs[0]) && !found; j++) {
            int r = found_in(dirs[j], id, lit);
            CHECK(r >= 0); /* the directory is there: run from the repository's root */
            found = r > 0;
        }
        if (!found && !unit_failed_now) {
            unit_failed_now = 1;
            snprintf(unit_msg, sizeof(unit_msg), "%s (%s) is produced nowhere in proxy/ or control/", id, lit);
        }
    }
}

int main(void)
{
    UNIT_RUN(test_every_code_has_a_wire_name);
    UNIT_RUN(test_readme_lists_exactly_the_codes);
    UNIT_RUN(test_every_code_is_produced);
    return unit_report();
}
