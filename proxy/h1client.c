/* h1client.c -- HTTP/1 response framing over a px_sock's input: the head,
 * the body mode (RFC 9112 6.3), and the relay of body bytes to a sink,
 * verbatim or de-chunked. Used by the upstream glue and the health checker;
 * nothing here knows about requests or clients. */
#include <string.h>

#include <event2/buffer.h>

#include "px/http1.h"
#include "px/upstream.h"

int px_h1c_head(struct evbuffer *in, struct px_h1_response *resp)
{
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return 0;
    size_t n = len < PX_H1C_HEAD_MAX ? len : PX_H1C_HEAD_MAX;
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    if (buf == NULL)
        return -1;
    int rc = px_h1_parse_response(buf, n, resp);
    if (rc == PX_H1_INCOMPLETE)
        return len >= PX_H1C_HEAD_MAX ? -2 : 0;
    return rc < 0 ? -1 : rc;
}

int px_h1c_frame(struct px_h1c_body *b, const struct px_h1_response *resp, int head_request)
{
    int status = resp->status;
    int keepalive = !resp->conn_close && (resp->minor_version == 1 || resp->conn_keep_alive);
    b->passthrough = 0;
    b->remaining = 0;
    if (head_request || status == 204 || status == 304 || status < 200) {
        b->mode = PX_BODY_NONE;
    } else if (resp->chunked) {
        b->mode = PX_BODY_CHUNKED;
        px_chunked_init(&b->chunked);
    } else if (resp->content_length >= 0) {
        b->mode = resp->content_length ? PX_BODY_LENGTH : PX_BODY_NONE;
        b->remaining = (uint64_t)resp->content_length;
    } else {
        b->mode = PX_BODY_CLOSE;
        keepalive = 0;
    }
    return keepalive;
}

int px_h1c_relay(struct px_h1c_body *b, struct evbuffer *in, px_h1c_sink sink, void *arg, unsigned *paused)
{
    size_t avail;
    while ((avail = evbuffer_get_length(in)) > 0 && !*paused) {
        switch (b->mode) {
        case PX_BODY_NONE:
            return 1;
        case PX_BODY_LENGTH: {
            size_t n = avail < b->remaining ? avail : (size_t)b->remaining;
            b->remaining -= n;
            if (sink(arg, in, n))
                *paused = 1;
            if (b->remaining == 0)
                return 1;
            break;
        }
        case PX_BODY_CLOSE:
            if (sink(arg, in, avail))
                *paused = 1;
            break;
        case PX_BODY_CHUNKED:
            if (b->passthrough) {
                /* validate without moving, then hand over in one move */
                uint64_t data;
                enum px_chunk_result end;
                size_t n = px_chunked_scan(&b->chunked, in, &data, &end);
                if (end == PX_CHUNK_ERROR)
                    return -1;
                if (n && sink(arg, in, n))
                    *paused = 1;
                if (end == PX_CHUNK_DONE)
                    return 1;
                if (n == 0)
                    return 0;
                break;
            }
            /* de-chunk: data runs to the sink, framing drained */
            for (;;) {
                struct evbuffer_iovec v;
                if (*paused || evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
                    return 0;
                size_t c = 0;
                enum px_chunk_result res = px_chunked_step(&b->chunked, v.iov_base, v.iov_len, &c);
                if (res == PX_CHUNK_ERROR)
                    return -1;
                if (res == PX_CHUNK_DATA) {
                    if (sink(arg, in, c))
                        *paused = 1;
                } else {
                    evbuffer_drain(in, c);
                }
                if (res == PX_CHUNK_DONE)
                    return 1;
            }
        }
    }
    return 0;
}
