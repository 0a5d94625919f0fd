/* state.c - the state file (see state.h): written with write, fsync and
 * rename so a crash leaves the old or the new file, never half of one. */
#include "state.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static cJSON *split_json(const veer_config_t *cfg, const veer_split_t *split, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; o != NULL && i < n; i++)
        cJSON_AddNumberToObject(o, cfg->clusters[split[i].cluster].name, split[i].weight);
    return o;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static const char *extra_key;
static cJSON *(*extra_fn)(void *ctx);
static void *extra_ctx;

void veer_state_set_extra(const char *key, cJSON *(*fn)(void *ctx), void *ctx)
{
    extra_key = key;
    extra_fn = key != NULL ? fn : NULL;
    extra_ctx = ctx;
}

int veer_state_write(const char *path, const veer_snapshot_t *snap, char *err, size_t errlen)
{
    const veer_config_t *cfg = snap->config;
    cJSON *root = cJSON_CreateObject(), *routes = NULL;
    if (root == NULL)
        goto oom;
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddNumberToObject(root, "generation", (double)snap->generation);
    routes = cJSON_AddObjectToObject(root, "routes");
    for (size_t r = 0; routes != NULL && r < cfg->route_count; r++) {
        cJSON *ro = cJSON_AddObjectToObject(routes, cfg->routes[r].name);
        if (ro == NULL)
            goto oom;
        cJSON_AddItemToObject(ro, "weights", split_json(cfg, snap->routes[r].split, snap->routes[r].count));
        cJSON_AddItemToObject(ro, "base", split_json(cfg, cfg->routes[r].split, cfg->routes[r].split_count));
    }
    if (extra_fn != NULL) {
        cJSON *extra = extra_fn(extra_ctx);
        if (extra != NULL)
            cJSON_AddItemToObject(root, extra_key, extra);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (text == NULL)
        goto oom;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "state_file %s: %s", tmp, strerror(errno));
        free(text);
        return -1;
    }
    int rc = write_all(fd, text, strlen(text));
    free(text);
    if (rc == 0)
        rc = write_all(fd, "\n", 1);
    if (rc == 0)
        rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc == 0 && rename(tmp, path) < 0) {
        saved = errno;
        rc = -1;
    }
    if (rc < 0) {
        unlink(tmp);
        snprintf(err, errlen, "state_file %s: %s", path, strerror(saved));
        return -1;
    }
    char dirbuf[4096];
    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    int dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
oom:
    cJSON_Delete(root);
    snprintf(err, errlen, "state_file %s: out of memory", path);
    return -1;
}

static char *read_file(const char *path, int *err_no)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        *err_no = errno;
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            if (cap > (1u << 24))
                break; /* a state file is small; refuse absurd ones */
            char *g = realloc(buf, cap = cap ? cap * 2 : 8192);
            if (g == NULL)
                break;
            buf = g;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    if (buf != NULL)
        buf[len] = '\0';
    *err_no = buf ? 0 : ENOMEM;
    return buf;
}

/* Does the state's recorded base equal this config route's file split? */
static bool base_matches(const cJSON *base, const veer_config_t *cfg, const veer_route_config_t *rc)
{
    if (!cJSON_IsObject(base) || (size_t)cJSON_GetArraySize(base) != rc->split_count)
        return false;
    size_t i = 0;
    for (const cJSON *e = base->child; e != NULL; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || strcmp(e->string, cfg->clusters[rc->split[i].cluster].name) != 0 ||
            e->valuedouble != rc->split[i].weight)
            return false;
    }
    return true;
}

static void apply_route(veer_snapshot_t *snap, size_t r, const cJSON *weights)
{
    const veer_config_t *cfg = snap->config;
    size_t n = (size_t)cJSON_GetArraySize(weights), k = 0;
    veer_split_t *split = malloc((n ? n : 1) * sizeof(*split));
    uint64_t total = 0;
    if (split == NULL)
        return;
    for (const cJSON *e = weights->child; e != NULL; e = e->next) {
        int c = veer_config_cluster_index(cfg, e->string);
        if (c < 0 || !cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 1000000)
            continue;
        split[k++] = (veer_split_t){.cluster = c, .weight = (uint32_t)e->valuedouble};
        total += (uint32_t)e->valuedouble;
    }
    if (total == 0) {
        free(split);
        return;
    }
    free(snap->routes[r].split);
    snap->routes[r].split = split;
    snap->routes[r].count = k;
}

int veer_state_apply(const char *path, veer_snapshot_t *snap, char *err, size_t errlen)
{
    int err_no = 0;
    char *text = read_file(path, &err_no);
    if (text == NULL) {
        if (err_no == ENOENT)
            return 0;
        snprintf(err, errlen, "state_file %s: %s", path, strerror(err_no));
        return -1;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *routes = cJSON_GetObjectItemCaseSensitive(root, "routes");
    const cJSON *gen = cJSON_GetObjectItemCaseSensitive(root, "generation");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(routes) || !cJSON_IsNumber(gen) || gen->valuedouble < 1) {
        snprintf(err, errlen, "state_file %s: not a veer state file (expected {\"generation\":N,\"routes\":{...}})",
                 path);
        cJSON_Delete(root);
        return -1;
    }
    snap->generation = (uint64_t)gen->valuedouble;
    for (size_t r = 0; r < snap->config->route_count; r++) {
        const veer_route_config_t *rc = &snap->config->routes[r];
        const cJSON *ro = cJSON_GetObjectItemCaseSensitive(routes, rc->name);
        const cJSON *weights = cJSON_GetObjectItemCaseSensitive(ro, "weights");
        if (!cJSON_IsObject(weights) || !base_matches(cJSON_GetObjectItemCaseSensitive(ro, "base"), snap->config, rc))
            continue; /* new route, or the file's split was edited since: the file wins */
        apply_route(snap, r, weights);
    }
    cJSON_Delete(root);
    return 0;
}
