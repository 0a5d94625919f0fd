/* webhook.h - fire-and-forget HTTP POSTs from the main event base (canary
 * phase changes, confirm_promotion): each call has its own connection, a
 * timeout per attempt and retries with exponential backoff, and nothing on
 * the request path ever waits for one. */
#ifndef VEER_WEBHOOK_H
#define VEER_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

/* Calls in flight at once; a call past it is refused and counted. */
#define VEER_WEBHOOK_MAX_INFLIGHT 64
#define VEER_WEBHOOK_MAX_BODY (1024u * 1024u)

typedef struct veer_webhooks_s veer_webhooks_t;

/* The call's outcome: the last attempt's HTTP status, or 0 when no attempt
 * got an answer (connect failure, timeout). Called once per accepted call,
 * never from inside veer_webhook_post, never after veer_webhooks_free. */
typedef void (*veer_webhook_done_fn)(void *arg, int status);

veer_webhooks_t *veer_webhooks_new(struct event_base *base);
/* Cancels the calls in flight without calling their done. */
void veer_webhooks_free(veer_webhooks_t *wh);

/* POST body (JSON) to url ("http://host[:port]/path"). A non-2xx answer or
 * no answer is retried up to retries times, 100 ms apart doubling up to 5 s.
 * 0, or -1 with err: a malformed URL, too many calls in flight, out of memory. */
int veer_webhook_post(veer_webhooks_t *wh, const char *url, const char *body, uint64_t timeout_ms, uint32_t retries,
                      veer_webhook_done_fn done, void *arg, char *err, size_t errlen);

/* Calls refused because VEER_WEBHOOK_MAX_INFLIGHT were in flight. */
uint64_t veer_webhooks_refused(const veer_webhooks_t *wh);

#endif
