/* fuzz_control.c -- libFuzzer target for the control protocol: the input is
 * a byte stream as a control client would send it, framed into lines with
 * a small bound (so long lines are reached too), each line parsed and
 * validated as a request and answered; and each line read as a reply, as
 * proxyctl would. Any input must be handled: no crash, no leak, no UB, and
 * every answer must be one valid JSON line.
 *
 *   ./fuzz_control tests/fuzz/corpus/control */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "px/control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void answer(const json_t *id, enum px_err code, const char *msg)
{
    char *line = px_ctl_error_line(id, code, msg, NULL);
    json_t *back;

    if (line == NULL)
        return;
    if (strchr(line, '\n') != line + strlen(line) - 1)
        abort(); /* one line */
    if ((back = json_loads(line, 0, NULL)) == NULL)
        abort();
    json_decref(back);
    free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    size_t off = 0, scanned = 0, max = size > 0 && data[0] < 0x80 ? 4096 : 64;
    char err[256];

    while (off < size) {
        size_t line, used;
        struct px_ctl_request req;
        struct px_ctl_reply rep;
        enum px_err code;

        enum px_ctl_frame f = px_ctl_frame(buf + off, size - off, max, &scanned, &line, &used);
        if (f == PX_CTL_FRAME_TOO_LONG) {
            answer(NULL, PX_E_LINE_TOO_LONG, "line too long");
            break;
        }
        if (f == PX_CTL_FRAME_MORE)
            line = used = size - off; /* EOF: the tail as a last line */
        if (line > max || used > size - off)
            abort();
        code = px_ctl_request_parse(buf + off, line, &req, err, sizeof(err));
        if (code == PX_E_OK) {
            /* what a handler would do: read every argument through the getters */
            for (size_t i = 0; i < req.cmd->nargs; i++) {
                px_ctl_arg_str(req.args, req.cmd->args[i].name, NULL);
                px_ctl_arg_int(req.args, req.cmd->args[i].name, 0);
                px_ctl_arg_bool(req.args, req.cmd->args[i].name, 0);
            }
            char *ok = px_ctl_ok_line(req.id, json_deep_copy(req.args), NULL);
            free(ok);
            if (req.progress) { /* only a request that asked gets progress lines */
                char *pr = px_ctl_progress_line(req.id, req.cmd->name, NULL); /* err is not written on success */
                free(pr);
            }
            char *again = px_ctl_request_line_progress(req.id, req.cmd->name, json_deep_copy(req.args),
                                                       req.progress, NULL);
            free(again);
        } else {
            if (memchr(err, '\0', sizeof(err)) == NULL)
                abort();
            answer(req.id, code, err);
        }
        px_ctl_request_clear(&req);
        px_ctl_reply_parse(buf + off, line, &rep);
        px_ctl_reply_clear(&rep);
        off += used;
    }
    return 0;
}
