/* tls.c - builds the OpenSSL contexts of a config (see tls.h): server
 * contexts per TLS listener, client contexts per TLS cluster; starts upstream
 * handshakes; counts and logs (rate-limited) failed handshakes. Every file
 * problem is reported with the key and the path, so a reload that cannot use
 * a certificate says which one and changes nothing. */
#include "tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "log.h"
#include "runtime.h"
#include "worker.h"

/* TLS 1.2 suites with forward secrecy and AEAD only (Mozilla "intermediate"
 * minus DHE, which needs parameters we would have to ship). TLS 1.3 suites
 * are OpenSSL's defaults, all of which qualify. */
#define VEER_TLS12_CIPHERS                                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"                        \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* Listener ALPN lists in wire format. The config allows only "h2" and
 * "http/1.1", so every list is one of these; static storage lets the select
 * callback outlive the set (connections keep their SSL_CTX after a reload). */
typedef struct alpn_list_s {
    const unsigned char *wire;
    unsigned len;
} alpn_list_t;

static const alpn_list_t alpn_h2_h1 = {(const unsigned char *)"\x02h2\x08http/1.1", 12};
static const alpn_list_t alpn_h1_h2 = {(const unsigned char *)"\x08http/1.1\x02h2", 12};
static const alpn_list_t alpn_h2 = {(const unsigned char *)"\x02h2", 3};
static const alpn_list_t alpn_h1 = {(const unsigned char *)"\x08http/1.1", 9};

/* Handshake counts of one cluster name, kept for the whole process so the
 * counters survive reloads. At most VEER_TLS_COUNTED_CLUSTERS names are
 * counted; later names are not (and a warning says so once). */
#define VEER_TLS_COUNTED_CLUSTERS 4096

typedef struct hs_counter_s {
    char *name;
    atomic_uint_fast64_t full, resumed;
} hs_counter_t;

static pthread_mutex_t counters_lock = PTHREAD_MUTEX_INITIALIZER;
static hs_counter_t counters[VEER_TLS_COUNTED_CLUSTERS];
static size_t counter_count; /* written under counters_lock, entries never move */

/* What a cluster context carries for its connections (SSL_CTX ex_data, freed
 * with the context): its generation, unique in the process, tells sessions
 * made under it from sessions made under any other context. */
typedef struct cluster_ctx_info_s {
    uint64_t gen;
    bool session_reuse;
    hs_counter_t *counter; /* NULL: not counted */
} cluster_ctx_info_t;

static pthread_once_t ex_once = PTHREAD_ONCE_INIT;
static int ctx_info_idx = -1;  /* SSL_CTX -> cluster_ctx_info_t */
static int ssl_slot_idx = -1;  /* SSL -> veer_endpoint_slot_t caching its session */
static int ssl_counted_idx = -1; /* SSL -> non-NULL once its handshake was counted */
static atomic_uint_fast64_t next_ctx_gen = 1;

static void ctx_info_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static void ex_init(void)
{
    ctx_info_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_info_free);
    ssl_slot_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ssl_counted_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* The counter of a cluster name, made on first use (main thread, when a
 * config is loaded). */
static hs_counter_t *counter_for(const char *name)
{
    hs_counter_t *found = NULL;
    pthread_mutex_lock(&counters_lock);
    for (size_t i = 0; i < counter_count && found == NULL; i++)
        if (strcmp(counters[i].name, name) == 0)
            found = &counters[i];
    if (found == NULL && counter_count < VEER_TLS_COUNTED_CLUSTERS) {
        char *copy = strdup(name);
        if (copy != NULL) {
            found = &counters[counter_count];
            atomic_init(&found->full, 0);
            atomic_init(&found->resumed, 0);
            found->name = copy;
            counter_count++;
        }
    } else if (found == NULL && counter_count == VEER_TLS_COUNTED_CLUSTERS) {
        veer_log_warn("cluster %s: TLS handshakes not counted: %d cluster names already counted", name,
                      VEER_TLS_COUNTED_CLUSTERS);
        counter_count++; /* warn once: the table stays full */
    }
    pthread_mutex_unlock(&counters_lock);
    return found;
}

void veer_tls_upstream_handshakes(const char *cluster, uint64_t *full, uint64_t *resumed)
{
    *full = *resumed = 0;
    pthread_mutex_lock(&counters_lock);
    size_t n = counter_count < VEER_TLS_COUNTED_CLUSTERS ? counter_count : VEER_TLS_COUNTED_CLUSTERS;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(counters[i].name, cluster) == 0) {
            *full = atomic_load_explicit(&counters[i].full, memory_order_relaxed);
            *resumed = atomic_load_explicit(&counters[i].resumed, memory_order_relaxed);
            break;
        }
    }
    pthread_mutex_unlock(&counters_lock);
}

/* Counts each upstream handshake once, when it completes. */
static void cluster_info_cb(const SSL *ssl, int where, int ret)
{
    (void)ret;
    if (!(where & SSL_CB_HANDSHAKE_DONE) || SSL_get_ex_data(ssl, ssl_counted_idx) != NULL)
        return;
    SSL_set_ex_data((SSL *)ssl, ssl_counted_idx, (void *)1);
    const cluster_ctx_info_t *info = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_info_idx);
    if (info != NULL && info->counter != NULL)
        atomic_fetch_add_explicit(SSL_session_reused(ssl) ? &info->counter->resumed : &info->counter->full, 1,
                                  memory_order_relaxed);
}

/* A session the server gave us (TLS 1.2: the handshake's; TLS 1.3: one per
 * ticket, after the handshake): it replaces the slot's, unless the slot
 * already holds one from a newer context (this connection predates a
 * reload). Returns 1 when the slot took the reference. Runs on the worker
 * that owns the slot. */
static int cluster_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    veer_endpoint_slot_t *slot = SSL_get_ex_data(ssl, ssl_slot_idx);
    const cluster_ctx_info_t *info = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_info_idx);
    if (slot == NULL || info == NULL || !SSL_SESSION_is_resumable(sess))
        return 0;
    if (slot->tls_session != NULL && slot->tls_session_gen > info->gen)
        return 0;
    SSL_SESSION_free(slot->tls_session);
    slot->tls_session = sess;
    slot->tls_session_gen = info->gen;
    return 1;
}

/* An accumulated error text: one line per problem. */
typedef struct errbuf_s {
    char *buf;
    size_t cap, len;
    int count;
} errbuf_t;

static void add_error(errbuf_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_error(errbuf_t *e, const char *fmt, ...)
{
    e->count++;
    if (e->cap == 0 || e->len + 2 >= e->cap)
        return;
    if (e->len > 0)
        e->buf[e->len++] = '\n';
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->buf + e->len, e->cap - e->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        e->len += (size_t)n < e->cap - e->len ? (size_t)n : e->cap - e->len - 1;
    e->buf[e->len] = '\0';
}

/* OpenSSL's first reason on this thread's queue, then an empty queue. */
static const char *openssl_reason(char *out, size_t outlen)
{
    unsigned long code = ERR_peek_error();
    const char *r = code != 0 ? ERR_reason_error_string(code) : NULL;
    snprintf(out, outlen, "%s", r != NULL ? r : "unknown OpenSSL error");
    ERR_clear_error();
    return out;
}

/* A readable file, or an error naming it: OpenSSL's own message for a
 * missing file is "system library" noise. */
static bool file_readable(errbuf_t *e, const char *key, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        add_error(e, "%s: %s: cannot open: %s", key, path, strerror(errno));
        return false;
    }
    fclose(f);
    return true;
}

static bool load_cert_and_key(errbuf_t *e, SSL_CTX *ctx, const char *where, const char *cert, const char *key)
{
    char key_cert[160], key_key[160], reason[160];
    snprintf(key_cert, sizeof(key_cert), "%s.cert", where);
    snprintf(key_key, sizeof(key_key), "%s.key", where);
    bool cert_ok = file_readable(e, key_cert, cert), key_ok = file_readable(e, key_key, key);
    if (!cert_ok || !key_ok)
        return false;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        add_error(e, "%s: %s: not a PEM certificate chain: %s", key_cert, cert, openssl_reason(reason, sizeof(reason)));
        return false;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long code = ERR_peek_error();
        if (ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH)
            add_error(e, "%s: %s: does not match the certificate %s", key_key, key, cert);
        else
            add_error(e, "%s: %s: not a PEM private key: %s", key_key, key, openssl_reason(reason, sizeof(reason)));
        ERR_clear_error();
        return false;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        add_error(e, "%s: %s: does not match the certificate %s: %s", key_key, key, cert,
                  openssl_reason(reason, sizeof(reason)));
        return false;
    }
    return true;
}

static SSL_CTX *ctx_common(errbuf_t *e, const char *where, bool server)
{
    char reason[160];
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL) {
        add_error(e, "%s: cannot create a TLS context: %s", where, openssl_reason(reason, sizeof(reason)));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Peers that close without close_notify are common; HTTP framing, not
     * the TLS close, says whether a message is complete. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 (server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
    /* Read whole socket buffers, not a record header then its body. */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_set_cipher_list(ctx, VEER_TLS12_CIPHERS) != 1) {
        add_error(e, "%s: cannot set the cipher list: %s", where, openssl_reason(reason, sizeof(reason)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                          unsigned inlen, void *arg)
{
    const alpn_list_t *ours = arg;
    unsigned char *sel = NULL, sel_len = 0;
    /* Our list first: the server's preference decides among what the client offers. */
    if (SSL_select_next_proto(&sel, &sel_len, ours->wire, ours->len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no overlap: go on without ALPN, i.e. HTTP/1.1 */
    *out = sel;
    *outlen = sel_len;
    return SSL_TLSEXT_ERR_OK;
}

/* The listener's ALPN preference among what this build serves. */
static const alpn_list_t *listener_alpn(errbuf_t *e, const char *where, const veer_tls_listener_config_t *tc)
{
    int h2_at = -1, h1_at = -1;
    for (size_t i = 0; i < tc->alpn_count; i++) {
        if (tc->alpn[i] == NULL)
            continue;
        if (strcmp(tc->alpn[i], "h2") == 0)
            h2_at = (int)i;
        else if (strcmp(tc->alpn[i], "http/1.1") == 0)
            h1_at = (int)i;
    }
#ifndef VEER_HAVE_H2
    if (h2_at >= 0 && h1_at < 0) {
        add_error(e, "%s.alpn: \"h2\" is not served by this build (HTTP/2 downstream not compiled in)", where);
        return NULL;
    }
    h2_at = -1;
#endif
    if (h2_at >= 0 && h1_at >= 0)
        return h2_at < h1_at ? &alpn_h2_h1 : &alpn_h1_h2;
    if (h2_at >= 0)
        return &alpn_h2;
    if (h1_at >= 0)
        return &alpn_h1;
    add_error(e, "%s.alpn: no protocol to offer", where);
    return NULL;
}

static SSL_CTX *listener_ctx(errbuf_t *e, const veer_listener_config_t *lc, size_t index)
{
    const veer_tls_listener_config_t *tc = lc->tls;
    char where[64], reason[160];
    snprintf(where, sizeof(where), "listeners[%zu].tls", index);
    const alpn_list_t *alpn = listener_alpn(e, where, tc);
    SSL_CTX *ctx = ctx_common(e, where, true);
    if (ctx == NULL)
        return NULL;
    bool ok = alpn != NULL && load_cert_and_key(e, ctx, where, tc->cert, tc->key);
    if (ok && tc->client_ca != NULL) {
        char key[80];
        snprintf(key, sizeof(key), "%s.client_ca", where);
        ok = file_readable(e, key, tc->client_ca);
        STACK_OF(X509_NAME) *names = ok ? SSL_load_client_CA_file(tc->client_ca) : NULL;
        if (ok && (names == NULL || SSL_CTX_load_verify_locations(ctx, tc->client_ca, NULL) != 1)) {
            add_error(e, "%s: %s: no usable CA certificate: %s", key, tc->client_ca,
                      openssl_reason(reason, sizeof(reason)));
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            ok = false;
        }
        if (ok) {
            SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        }
    }
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Resumed sessions must stay within the listener that verified them. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)lc->name,
                                   (unsigned)(strlen(lc->name) < SSL_MAX_SID_CTX_LENGTH ? strlen(lc->name)
                                                                                        : SSL_MAX_SID_CTX_LENGTH));
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, (void *)alpn);
    return ctx;
}

static SSL_CTX *cluster_ctx(errbuf_t *e, const veer_cluster_config_t *cc)
{
    const veer_tls_cluster_config_t *tc = cc->tls;
    char where[160], key[192], reason[160];
    snprintf(where, sizeof(where), "clusters.%s.tls", cc->name);
    if (cc->protocol == VEER_PROTO_H2C) {
        add_error(e, "%s: protocol \"h2c\" is HTTP/2 in cleartext; use \"protocol\": \"h2\" for HTTP/2 over TLS", where);
        return NULL;
    }
    SSL_CTX *ctx = ctx_common(e, where, false);
    if (ctx == NULL)
        return NULL;
    bool ok = true;
    if (tc->insecure_skip_verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        veer_log_warn("%s.insecure_skip_verify is true: the certificates of cluster %s are not verified", where,
                      cc->name);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (tc->ca != NULL) {
            snprintf(key, sizeof(key), "%s.ca", where);
            ok = file_readable(e, key, tc->ca);
            if (ok && SSL_CTX_load_verify_locations(ctx, tc->ca, NULL) != 1) {
                add_error(e, "%s: %s: no usable CA certificate: %s", key, tc->ca, openssl_reason(reason, sizeof(reason)));
                ok = false;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            add_error(e, "%s.ca: cannot load the system CA store: %s", where, openssl_reason(reason, sizeof(reason)));
            ok = false;
        }
    }
    if (ok && tc->cert != NULL && tc->key != NULL)
        ok = load_cert_and_key(e, ctx, where, tc->cert, tc->key);
    if (ok) {
        const alpn_list_t *alpn = cc->protocol == VEER_PROTO_H2 ? &alpn_h2 : &alpn_h1;
        if (SSL_CTX_set_alpn_protos(ctx, alpn->wire, alpn->len) != 0) { /* 0 is success here */
            add_error(e, "%s: cannot set ALPN: %s", where, openssl_reason(reason, sizeof(reason)));
            ok = false;
        }
    }
    cluster_ctx_info_t *info = ok ? calloc(1, sizeof(*info)) : NULL;
    if (ok && (info == NULL || SSL_CTX_set_ex_data(ctx, ctx_info_idx, info) != 1)) {
        add_error(e, "%s: out of memory", where);
        free(info);
        ok = false;
    }
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    info->gen = atomic_fetch_add(&next_ctx_gen, 1);
    info->session_reuse = tc->session_reuse;
    info->counter = counter_for(cc->name);
    SSL_CTX_set_info_callback(ctx, cluster_info_cb);
    if (tc->session_reuse) {
        /* Sessions go to the endpoint slots (new_session_cb), not to
         * OpenSSL's cache, which a client never looks up. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, cluster_new_session_cb);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    return ctx;
}

veer_tls_set_t *veer_tls_set_new(const veer_config_t *cfg, char *err, size_t errlen)
{
    errbuf_t e = {.buf = err, .cap = errlen};
    pthread_once(&ex_once, ex_init);
    if (errlen > 0)
        err[0] = '\0';
    veer_tls_set_t *set = calloc(1, sizeof(*set));
    if (set != NULL) {
        set->listeners = calloc(cfg->listener_count ? cfg->listener_count : 1, sizeof(*set->listeners));
        set->clusters = calloc(cfg->cluster_count ? cfg->cluster_count : 1, sizeof(*set->clusters));
    }
    if (set == NULL || set->listeners == NULL || set->clusters == NULL) {
        add_error(&e, "tls: out of memory");
        veer_tls_set_free(set);
        return NULL;
    }
    set->listener_count = cfg->listener_count;
    set->cluster_count = cfg->cluster_count;
    for (size_t i = 0; i < cfg->listener_count; i++)
        if (cfg->listeners[i].tls != NULL)
            set->listeners[i] = listener_ctx(&e, &cfg->listeners[i], i);
    for (size_t i = 0; i < cfg->cluster_count; i++)
        if (cfg->clusters[i].tls != NULL)
            set->clusters[i] = cluster_ctx(&e, &cfg->clusters[i]);
    if (e.count > 0) {
        veer_tls_set_free(set);
        return NULL;
    }
    return set;
}

void veer_tls_set_free(veer_tls_set_t *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; set->listeners != NULL && i < set->listener_count; i++)
        SSL_CTX_free(set->listeners[i]); /* connections still using it hold their own reference */
    for (size_t i = 0; set->clusters != NULL && i < set->cluster_count; i++)
        SSL_CTX_free(set->clusters[i]);
    free(set->listeners);
    free(set->clusters);
    free(set);
}

SSL_CTX *veer_tls_listener_ctx(const veer_snapshot_t *snap, int listener)
{
    const veer_tls_set_t *set = snap->tls;
    if (set == NULL || listener < 0 || (size_t)listener >= set->listener_count)
        return NULL;
    return set->listeners[listener];
}

SSL_CTX *veer_tls_cluster_ctx(const veer_snapshot_t *snap, int cluster)
{
    const veer_tls_set_t *set = snap->tls;
    if (set == NULL || cluster < 0 || (size_t)cluster >= set->cluster_count)
        return NULL;
    return set->clusters[cluster];
}

const char *veer_tls_cluster_server_name(const veer_snapshot_t *snap, int cluster, const veer_endpoint_t *ep)
{
    const veer_tls_cluster_config_t *tc = snap->config->clusters[cluster].tls;
    if (tc != NULL && tc->sni != NULL)
        return tc->sni;
    return ep->host;
}

int veer_tls_upstream_start(veer_sock_t *s, const veer_snapshot_t *snap, int cluster, const veer_endpoint_t *ep)
{
    SSL_CTX *ctx = veer_tls_cluster_ctx(snap, cluster);
    if (ctx == NULL)
        return 0;
    return veer_sock_tls_connect(s, ctx, veer_tls_cluster_server_name(snap, cluster, ep), NULL, 0);
}

/* Whether sess may be offered on ssl: made under the same context, still
 * resumable and unexpired, and for the server name ssl sends (none for an
 * IP literal). */
static bool session_fits(const SSL *ssl, const SSL_SESSION *sess, uint64_t sess_gen, uint64_t gen)
{
    if (sess_gen != gen || !SSL_SESSION_is_resumable(sess))
        return false;
    long made = SSL_SESSION_get_time(sess), lifetime = SSL_SESSION_get_timeout(sess);
    if ((long)time(NULL) - made >= lifetime)
        return false;
    const char *want = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), *had = SSL_SESSION_get0_hostname(sess);
    return want == NULL ? had == NULL : had != NULL && strcmp(want, had) == 0;
}

int veer_tls_upstream_start_worker(veer_sock_t *s, const veer_snapshot_t *snap, int cluster, veer_endpoint_t *ep,
                                   uint32_t worker)
{
    SSL_CTX *ctx = veer_tls_cluster_ctx(snap, cluster);
    if (ctx == NULL)
        return 0;
    if (veer_sock_tls_connect(s, ctx, veer_tls_cluster_server_name(snap, cluster, ep), NULL, 0) < 0)
        return -1;
    const cluster_ctx_info_t *info = SSL_CTX_get_ex_data(ctx, ctx_info_idx);
    if (info == NULL || !info->session_reuse || worker >= ep->slot_count)
        return 0;
    veer_endpoint_slot_t *slot = &ep->slots[worker];
    if (SSL_set_ex_data(s->ssl, ssl_slot_idx, slot) != 1) {
        ERR_clear_error();
        return 0; /* out of memory: this connection is not cached, nothing else changes */
    }
    if (slot->tls_session == NULL)
        return 0;
    if (!session_fits(s->ssl, slot->tls_session, slot->tls_session_gen, info->gen)) {
        SSL_SESSION_free(slot->tls_session); /* another context's (a reload) or spent */
        slot->tls_session = NULL;
        return 0;
    }
    if (SSL_set_session(s->ssl, slot->tls_session) != 1)
        ERR_clear_error(); /* a full handshake then */
    return 0;
}

static const char *const kind_names[VEER_TLS_FAIL_KINDS] = {"protocol", "certificate", "closed", "timeout"};

void veer_tls_handshake_failed(veer_worker_t *w, bool upstream, const char *name, const struct sockaddr *peer,
                               veer_tls_fail_t kind, const char *reason)
{
    veer_worker_stats_t *st = &w->stats;
    atomic_uint_fast64_t *by_kind = upstream ? st->tls_upstream_failures : st->tls_downstream_failures;
    atomic_fetch_add_explicit(&by_kind[kind], 1, memory_order_relaxed);
    uint64_t total = 0;
    for (int k = 0; k < VEER_TLS_FAIL_KINDS; k++)
        total += atomic_load_explicit(&by_kind[k], memory_order_relaxed);

    veer_tls_log_limit_t *lim = &w->tls_log;
    struct timeval tv;
    event_base_gettimeofday_cached(w->base, &tv);
    uint64_t now_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    if (now_ms - lim->window_start_ms >= 1000) {
        lim->window_start_ms = now_ms;
        lim->lines = 0;
    }
    if (lim->lines >= VEER_TLS_LOG_LINES_PER_SEC) {
        lim->suppressed++;
        return;
    }
    lim->lines++;

    char addr[80] = "-", ts[32], ename[192], ereason[384], line[1024];
    if (peer != NULL)
        veer_sockaddr_format(peer, addr, sizeof(addr));
    size_t nl = veer_json_escape(ename, sizeof(ename), name ? name : "", name ? strlen(name) : 0);
    size_t rl = veer_json_escape(ereason, sizeof(ereason), reason ? reason : "", reason ? strlen(reason) : 0);
    veer_log_timestamp(ts);
    int n = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s\",\"level\":\"warn\",\"msg\":\"tls handshake failed\",\"side\":\"%s\",\"%s\":\"%.*s\","
                     "\"peer\":\"%s\",\"reason\":\"%.*s\",\"kind\":\"%s\",\"worker\":%u,\"failures\":%llu,"
                     "\"suppressed\":%llu}",
                     ts, upstream ? "upstream" : "downstream", upstream ? "cluster" : "listener", (int)nl, ename, addr,
                     (int)rl, ereason, kind_names[kind], w->id, (unsigned long long)total,
                     (unsigned long long)lim->suppressed);
    lim->suppressed = 0;
    if (n > 0)
        veer_log_raw(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}
