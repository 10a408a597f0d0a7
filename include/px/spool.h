/* px/spool.h -- a message body held for one request (DESIGN "Buffering"):
 * in memory up to a bound, then in an unlinked temporary file under
 * [proxy] temp_dir.
 *
 * A FIFO: bytes are added at the back and taken from the front, both at
 * any time (a buffered response is added from the upstream while the
 * client takes it). Bytes in memory are always older than the bytes in
 * the file not yet taken, so order holds: an add goes to memory only while
 * the file has nothing left to take and memory has room. The file is
 * opened on the first spill (O_TMPFILE, else mkstemp and unlink: it has no
 * name, so it cannot outlive its descriptor) and closed by px_spool_reset,
 * which every request end calls.
 *
 * Threading: one worker. The file is on local disk: its reads and writes
 * block the worker for a page-cache copy, each bounded by what one socket
 * read brought (an add) or by the caller's max (a take), never a whole body.
 * A zeroed struct is an empty spool; px_spool_reset keeps the evbuffer for
 * the next request (no allocation per request in steady state),
 * px_spool_release frees it. */
#ifndef PX_SPOOL_H
#define PX_SPOOL_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

struct px_spool {
    struct evbuffer *mem;     /* the front bytes (NULL until the first add) */
    int fd;                   /* the temp file, when has_file */
    unsigned has_file : 1;
    uint64_t file_rd, file_wr;/* file bytes [file_rd, file_wr) wait to be taken */
    uint64_t added;           /* bytes added since the last reset */
};

/* Move len bytes from the front of src to the back of sp: memory while
 * memory holds at most mem_max, else the file (opened in dir on first
 * need). 0, or -1 with errno set (disk full, no dir): the len bytes are
 * drained from src either way, and sp is unusable until reset. */
int px_spool_add(struct px_spool *sp, struct evbuffer *src, size_t len, const char *dir, uint64_t mem_max);
/* Bytes waiting to be taken. */
uint64_t px_spool_length(const struct px_spool *sp);
/* The front of sp as an evbuffer the caller moves or drains bytes from
 * (and adds nothing to): when memory is empty, up to max file bytes are
 * read into it first. NULL with errno on a read error. */
struct evbuffer *px_spool_front(struct px_spool *sp, size_t max);
/* Drop every byte, close the file. The evbuffer is kept. */
void px_spool_reset(struct px_spool *sp);
/* px_spool_reset, and free the evbuffer. */
void px_spool_release(struct px_spool *sp);

#endif
