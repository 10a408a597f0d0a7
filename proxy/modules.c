/* modules.c -- the data-path modules a worker runs, in the order their
 * hooks run (nginx's ngx_modules.c): pools close before the connections
 * whose requests used them are freed. The only file that names them all;
 * worker.c gets the table through px_worker_init. */
#include "px/cluster.h"
#include "px/common.h"
#include "px/conn.h"
#include "px/h1.h"
#include "px/h2.h"
#include "px/request.h"
#include "px/tunnel.h"
#include "px/upstream.h"
#include "px/worker.h"

const struct px_worker_module *const px_worker_modules[] = {
    &px_upstream_module,
    &px_conn_module,
    &px_h1_module,
    &px_h2_module,
    &px_tunnel_module,
    &px_req_module,
    &px_cluster_module,         /* its exit drops the answers of requests already gone */
};
const size_t px_worker_nmodules = PX_ARRAY_LEN(px_worker_modules);
