/* main.c -- argv -> px_server_run(). Nothing else. */
#include <getopt.h>
#include <stdio.h>
#include <unistd.h>

#include "px/common.h"
#include "px/mem.h"
#include "px/server.h"

#define DEFAULT_CONFIG "/etc/proxyd/proxyd.ini"

static void usage(FILE *f)
{
    fprintf(f, "usage: proxyd [-c FILE]      run in the foreground (default %s)\n"
               "       proxyd -t [-c FILE]   check the configuration\n"
               "       proxyd -V             print the version\n"
               "       proxyd -h             this help\n"
               "long forms: --config FILE (or --config=FILE), --test, --version, --help\n"
               "signals: HUP reload, TERM/INT graceful stop, USR1 reopen the log files, USR2 binary upgrade\n",
            DEFAULT_CONFIG);
}

int main(int argc, char **argv)
{
    const char *config_path = DEFAULT_CONFIG;
    int test_only = 0;
    int opt;
    char err[1024];

    px_mem_init(); /* before any libevent call */

    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    while ((opt = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'V':
            printf("proxyd %s\n", PX_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (test_only) {
        if (px_server_check(config_path, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        printf("configuration ok\n");
        return 0;
    }
    struct px_server *s = px_server_new(config_path, err, sizeof(err));
    if (s == NULL) {
        if (err[0])
            fprintf(stderr, "%s\n", err);
        return 1;
    }
    int rc = px_server_run(s);
    px_server_free(s);
    return rc;
}
