/* Unit tests: the spool (proxy/spool.c) -- memory up to its bound, then the
 * temp file; a FIFO whatever the mix of adds and takes; the file is
 * unlinked, opened only when needed and closed by reset; a missing or
 * unusable directory is an error, not a crash. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "px/spool.h"
#include "unit.h"

static char dir[64];

static int dir_entries(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s')\"", dir);
    return system(cmd) == 0 ? 0 : 1;
}

/* Add n bytes of the running pattern at *pos. */
static int add(struct px_spool *sp, size_t n, size_t *pos, uint64_t mem)
{
    struct evbuffer *src = evbuffer_new();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)((*pos + i) * 7 % 251);
        evbuffer_add(src, &c, 1);
    }
    evbuffer_add(src, "tail", 4); /* bytes after len stay in src */
    *pos += n;
    int rc = px_spool_add(sp, src, n, dir, mem);
    CHECK_INT(evbuffer_get_length(src), 4);
    evbuffer_free(src);
    return rc;
}

/* Take up to max bytes from the front and check they continue the pattern. */
static size_t take(struct px_spool *sp, size_t max, size_t *pos)
{
    struct evbuffer *f = px_spool_front(sp, max);
    if (f == NULL)
        return 0;
    size_t n = evbuffer_get_length(f);
    if (n > max)
        n = max;
    unsigned char *buf = malloc(n ? n : 1);
    evbuffer_remove(f, buf, n);
    for (size_t i = 0; i < n; i++)
        if (buf[i] != (unsigned char)((*pos + i) * 7 % 251)) {
            CHECK_INT(buf[i], (*pos + i) * 7 % 251);
            break;
        }
    free(buf);
    *pos += n;
    return n;
}

static void test_memory_only(void)
{
    struct px_spool sp = {0};
    size_t in = 0, out = 0;
    CHECK_INT(add(&sp, 1000, &in, 4096), 0);
    CHECK_INT(add(&sp, 3000, &in, 4096), 0);
    CHECK_INT(sp.has_file, 0);
    CHECK_INT(px_spool_length(&sp), 4000);
    CHECK_INT(sp.added, 4000);
    while (take(&sp, 1500, &out))
        ;
    CHECK_INT(out, 4000);
    px_spool_release(&sp);
}

static void test_spill_and_fifo(void)
{
    struct px_spool sp = {0};
    size_t in = 0, out = 0;
    CHECK_INT(add(&sp, 3000, &in, 4096), 0);
    CHECK_INT(add(&sp, 3000, &in, 4096), 0); /* over the bound: the file */
    CHECK_INT(sp.has_file, 1);
    CHECK_INT(dir_entries(), 0);            /* unlinked: nothing to see in the directory */
    CHECK_INT(take(&sp, 1000, &out), 1000); /* memory first */
    CHECK_INT(add(&sp, 10, &in, 4096), 0);  /* the file has bytes left: behind them, in the file */
    CHECK_INT(take(&sp, 5000, &out), 2000); /* the rest of memory */
    CHECK_INT(take(&sp, 1000, &out), 1000); /* from the file */
    CHECK_INT(add(&sp, 500, &in, 4096), 0);
    while (take(&sp, 700, &out))
        ;
    CHECK_INT(out, in);
    CHECK_INT(px_spool_length(&sp), 0);
    CHECK_INT(sp.file_rd, 0); /* caught up: starts over at 0 */
    CHECK_INT(add(&sp, 100, &in, 4096), 0); /* memory again */
    CHECK_INT(px_spool_length(&sp), 100);
    CHECK_INT(sp.file_wr, 0);
    take(&sp, 100, &out);
    CHECK_INT(out, in);
    px_spool_reset(&sp);
    CHECK_INT(sp.has_file, 0);
    CHECK_INT(sp.added, 0);
    px_spool_release(&sp);
}

static void test_mem_zero_big_body(void)
{
    struct px_spool sp = {0};
    size_t in = 0, out = 0;
    for (int i = 0; i < 40; i++)
        CHECK_INT(add(&sp, 100 * 1024, &in, 0), 0);
    CHECK_INT(px_spool_length(&sp), 4000 * 1024);
    while (take(&sp, 256 * 1024, &out))
        ;
    CHECK_INT(out, in);
    px_spool_release(&sp);
}

static void test_bad_dir(void)
{
    struct px_spool sp = {0};
    size_t in = 0;
    char saved[64];
    memcpy(saved, dir, sizeof(saved));
    snprintf(dir, sizeof(dir), "/proc/self/none/x"); /* cannot be made */
    CHECK_INT(add(&sp, 100, &in, 10), -1);
    memcpy(dir, saved, sizeof(saved));
    CHECK_INT(sp.has_file, 0);
    px_spool_release(&sp);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/px-spool-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    UNIT_RUN(test_memory_only);
    UNIT_RUN(test_spill_and_fifo);
    UNIT_RUN(test_mem_zero_big_body);
    UNIT_RUN(test_bad_dir);
    rmdir(dir);
    return unit_report();
}
