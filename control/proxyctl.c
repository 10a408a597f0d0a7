/* proxyctl.c -- the control client. The control socket arrives with the
 * deploy issue; until then: no arguments prints the usage on stderr and
 * exits 2 (usage error); -h/--help prints it on stdout and -V/--version the
 * version, exit 0; any command exits 3 ("cannot reach the daemon"). */
#include <stdio.h>
#include <string.h>

#include "px/common.h"

static void usage(FILE *f)
{
    fputs("usage: proxyctl [--socket PATH] COMMAND [ARGS]\n"
          "commands:\n"
          "  deploy SERVICE --target HOST:PORT [--target ...] [--host NAME ...] [--path-prefix P]\n"
          "         [--health-check-path /up] [--health-check-interval 1s] [--health-check-timeout 5s]\n"
          "         [--deploy-timeout 30s] [--drain-timeout 30s] [--force]\n"
          "  rollback SERVICE\n"
          "  list [--json]\n"
          "  stop SERVICE [--message TEXT]\n"
          "  pause SERVICE [--max-pause 30s]\n"
          "  resume SERVICE\n"
          "  remove SERVICE\n"
          "  status [--json]\n"
          "  reload\n"
          "  cert status | cert renew [--force] | cert reload\n"
          "The socket defaults to $PROXYCTL_SOCKET, else /run/proxyd/control.sock.\n",
          f);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("proxyctl %s\n", PX_VERSION);
        return 0;
    }
    fprintf(stderr, "proxyctl: the control socket is not implemented in this version of proxyd\n");
    return 3;
}
