/* admin.h - the admin HTTP API (SPEC "Admin API") on libevent's evhttp,
 * served from the main thread's event base. It reads the runtime snapshot
 * and mutates it only through runtime.h; reload and drain go back to main.c
 * through hooks. */
#ifndef VEER_ADMIN_H
#define VEER_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime.h"

struct event_base;
struct veer_metrics_source_s;
struct veer_controller_s;

typedef struct veer_admin_hooks_s {
    void *ctx;
    /* Re-read and validate the config file and swap it in. 0, or -1 with every
     * error (one per line) in err. */
    int (*reload)(void *ctx, char *err, size_t errlen);
    void (*drain)(void *ctx);       /* start a graceful drain */
    bool (*is_draining)(void *ctx);
    struct veer_metrics_source_s *metrics; /* GET /metrics, /v1/stats (metrics.h); NULL: 503 */
    struct veer_controller_s *canary;      /* the canary controller (controller.h); NULL: 503 */
} veer_admin_hooks_t;

typedef struct veer_admin_s veer_admin_t;

/* Bind cfg->admin.address and serve. NULL with err on failure (e.g. the port
 * is taken). The token (if admin.token_file is set) is read here. */
veer_admin_t *veer_admin_start(struct event_base *base, veer_runtime_t *rt, const veer_config_t *cfg,
                               const veer_admin_hooks_t *hooks, char *err, size_t errlen);
/* Re-read the token file after a reload. */
int veer_admin_reconfigure(veer_admin_t *admin, const veer_config_t *cfg, char *err, size_t errlen);
void veer_admin_free(veer_admin_t *admin);

#endif
