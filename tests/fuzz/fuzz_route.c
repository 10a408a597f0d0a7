/* fuzz_route.c -- libFuzzer target for [route] matching: the request-path
 * normalizer (%XX, ";params", "//", "." and "..") and the match over a fixed
 * table. Input: HOST '\n' PATH (no '\n': all path). Any input must match or
 * not, cleanly; the normalized path must be no longer than the input, start
 * with '/' when the input did, and hold no empty, "." or ".." segment and no
 * ';'. The target checks (px_h1_check_target) run on the path too.
 *
 *   ./fuzz_route tests/fuzz/corpus/route
 *
 * The file includes routes.c to reach its static normalizer; the archive's
 * routes.o is then never linked (every symbol it has is defined here). */
#include "../../proxy/routes.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct px_routes *table(void)
{
    static struct px_routes *r;
    static const char ini[] =
        "[proxy]\nlisten_http = 127.0.0.1:0\naccess_log = off\n"
        "[service s]\ntargets = 127.0.0.1:9\n"
        "[limit api]\nrate = 10r/s\nburst = 5\nzone_size = 64k\n"
        "[route /api/]\nlimit = api\n"
        "[route /api/v1/sessions/]\nhost = example.com *.example.org\nlimit = api\nheaders = h\n"
        "[route /]\nsuffix = .js .css\nheaders = h\n"
        "[route /a]\nsuffix = .min.js\n"
        "[route /a]\n"
        "[headers h]\nX-H = 1\n";
    if (r == NULL) {
        struct px_config *cfg = NULL;
        char err[256];
        if (px_config_load_string(ini, "fuzz.ini", &cfg, err, sizeof(err)) < 0 ||
            (r = px_routes_build(cfg, NULL, err, sizeof(err))) == NULL)
            abort();
        px_routes_publish(r);
    }
    return r;
}

static void check_normalized(const char *in, size_t n)
{
    static char out[1 << 16];
    if (n > sizeof(out))
        return;
    size_t m = normalize_path(in, n, out);
    if (m > n)
        abort();
    if (n && in[0] == '/') {
        if (m == 0 || out[0] != '/')
            abort();
        for (size_t i = 0; i < m; i++) {
            if (out[i] != '/')
                continue;
            size_t j = i + 1;
            while (j < m && out[j] != '/')
                j++;
            size_t len = j - i - 1;
            if (j < m && len == 0) /* "//" */
                abort();
            if (memchr(out + i + 1, ';', len) != NULL) /* ";params" are dropped */
                abort();
            if ((len == 1 && out[i + 1] == '.') || (len == 2 && out[i + 1] == '.' && out[i + 2] == '.'))
                abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct px_routes *r = table();
    const char *p = (const char *)data, *nl = memchr(p, '\n', size);
    const char *host = nl ? p : NULL, *path = nl ? nl + 1 : p;
    size_t host_len = nl ? (size_t)(nl - p) : 0, path_len = size - (size_t)(path - p);

    if (size > (1 << 16))
        return 0;
    const struct px_route *rt = px_routes_route(r, host, host_len, path, path_len);
    if (rt && rt->nzones > 1)
        abort();
    check_normalized(path, path_len);
    int bad = px_h1_check_target(path, path_len);
    if (bad != 0 && bad != -400 && bad != -414)
        abort();
    return 0;
}
