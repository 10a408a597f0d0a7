/* control/proxyctl.h -- what proxyctl.c offers its kamal-proxy personality
 * (kamal.c). Client side only: nothing here is linked into proxyd. */
#ifndef PX_PROXYCTL_H
#define PX_PROXYCTL_H

#include <jansson.h>

/* proxyctl's exit codes (kamal-proxy uses the same). */
enum { EXIT_DONE = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

/* "proxyctl" or "kamal-proxy": what every message starts with. */
extern const char *pxctl_prog;

/* The daemon's error reply, when the caller wants to look at it first. */
struct pxctl_refusal {
    char code[64];
    char message[1100];
};

/* Send one request (cmd, args borrowed) to the control socket and wait for
 * the answer: the result printed on stdout (table or fields, or JSON with
 * json), progress lines on stderr. An error reply is printed on stderr, or
 * with refusal only stored there. Returns the exit code (EXIT_*). */
int pxctl_call(const char *socket, const char *cmd, json_t *args, int json, struct pxctl_refusal *refusal);

/* argv[0] is kamal-proxy: kamal-proxy 0.9's command line (kamal.c). */
int px_kamal_main(int argc, char **argv);

#endif
