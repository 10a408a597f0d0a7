/* fuzz_chunked.c -- libFuzzer target for the incremental chunked decoder.
 *
 * The input is a chunked body. It is decoded whole, byte at a time, at
 * pseudo-random split points seeded from its first bytes, and (when short)
 * at every two-way split; every segment is an exact-size heap copy. The
 * outcome -- DATA byte count and checksum, DONE position, ERROR -- must be
 * identical across all feedings, and every step must respect the API
 * (consumed <= len, DATA/META make progress, AGAIN only on empty input). */
#include "px/http1.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c)                                                                 \
    do {                                                                               \
        if (!(c)) {                                                                    \
            fprintf(stderr, "fuzz_chunked: %s:%d: assertion failed: %s\n", __FILE__,   \
                    __LINE__, #c);                                                     \
            abort();                                                                   \
        }                                                                              \
    } while (0)

struct outcome {
    uint64_t data_bytes;
    uint64_t data_hash; /* FNV-1a over the DATA bytes */
    uint64_t meta_bytes;
    int64_t done;       /* stream offset just past the body, or -1 */
    int error;
};

struct feeder {
    struct px_chunked c;
    struct outcome o;
    size_t pos; /* stream offset of the next byte */
};

static void feeder_init(struct feeder *f)
{
    memset(f, 0, sizeof(*f));
    px_chunked_init(&f->c);
    f->o.done = -1;
    f->o.data_hash = UINT64_C(1469598103934665603);
}

static int finished(const struct feeder *f)
{
    return f->o.error || f->o.done >= 0;
}

static void feed(struct feeder *f, const uint8_t *s, size_t len)
{
    if (finished(f))
        return;
    char *buf = malloc(len ? len : 1);
    if (len)
        memcpy(buf, s, len);
    size_t off = 0;
    for (;;) {
        size_t n = (size_t)-1;
        enum px_chunk_result r = px_chunked_step(&f->c, buf + off, len - off, &n);
        if (r == PX_CHUNK_ERROR) {
            FUZZ_ASSERT(n == 0);
            f->o.error = 1;
            break;
        }
        if (r == PX_CHUNK_AGAIN) {
            FUZZ_ASSERT(off == len && n == 0);
            break;
        }
        FUZZ_ASSERT(n <= len - off);
        if (r == PX_CHUNK_DATA) {
            FUZZ_ASSERT(n > 0);
            for (size_t i = 0; i < n; i++) {
                f->o.data_hash ^= (unsigned char)buf[off + i];
                f->o.data_hash *= UINT64_C(1099511628211);
            }
            f->o.data_bytes += n;
        } else if (r == PX_CHUNK_META) {
            FUZZ_ASSERT(n > 0);
            f->o.meta_bytes += n;
        } else {
            FUZZ_ASSERT(r == PX_CHUNK_DONE);
            f->o.meta_bytes += n;
        }
        off += n;
        f->pos += n;
        if (r == PX_CHUNK_DONE) {
            f->o.done = (int64_t)f->pos;
            /* DONE is final: nothing more is consumed */
            size_t m = 1;
            FUZZ_ASSERT(px_chunked_step(&f->c, buf + off, len - off, &m) == PX_CHUNK_DONE && m == 0);
            break;
        }
    }
    free(buf);
}

static void same(const struct outcome *a, const struct outcome *b)
{
    FUZZ_ASSERT(a->error == b->error);
    FUZZ_ASSERT(a->done == b->done);
    if (!a->error) {
        /* on error, how much was reported before it depends on the split */
        FUZZ_ASSERT(a->data_bytes == b->data_bytes);
        FUZZ_ASSERT(a->data_hash == b->data_hash);
        FUZZ_ASSERT(a->meta_bytes == b->meta_bytes);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct feeder whole, f;

    feeder_init(&whole);
    feed(&whole, data, size);
    if (!whole.o.error) {
        FUZZ_ASSERT(whole.o.data_bytes + whole.o.meta_bytes == (whole.o.done >= 0 ? (uint64_t)whole.o.done : size));
        FUZZ_ASSERT(whole.o.done <= (int64_t)size);
    }

    /* byte at a time */
    feeder_init(&f);
    for (size_t i = 0; i < size && !finished(&f); i++)
        feed(&f, data + i, 1);
    same(&whole.o, &f.o);

    /* pseudo-random segment lengths seeded from the first bytes */
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < size && i < 8; i++)
        seed = (seed ^ data[i]) * UINT64_C(0x100000001b3);
    for (int round = 0; round < 4; round++) {
        feeder_init(&f);
        size_t off = 0;
        while (off < size && !finished(&f)) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            size_t maxseg = round == 0 ? 3 : round == 1 ? 16 : round == 2 ? 128 : 4096;
            size_t n = 1 + (size_t)(seed % maxseg);
            if (n > size - off)
                n = size - off;
            feed(&f, data + off, n);
            off += n;
        }
        same(&whole.o, &f.o);
    }

    /* every two-way split of short inputs */
    if (size <= 256) {
        for (size_t cut = 1; cut < size; cut++) {
            feeder_init(&f);
            feed(&f, data, cut);
            feed(&f, data + cut, size - cut);
            same(&whole.o, &f.o);
        }
    }
    return 0;
}
