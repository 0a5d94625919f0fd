/* arena.c - see arena.h. Allocations are 8-byte aligned; the newest one can be
 * grown in place, which is what header accumulation across reads needs. */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN8(n) (((n) + 7u) & ~(size_t)7u)

void veer_arena_init(veer_arena_t *a, void *inline_buf, size_t cap, size_t limit)
{
    a->inline_buf = inline_buf;
    a->inline_cap = cap;
    a->inline_used = 0;
    a->chunks = NULL;
    a->allocated = 0;
    a->limit = limit;
}

void *veer_arena_alloc(veer_arena_t *a, size_t n)
{
    n = ALIGN8(n ? n : 1);
    if (a->chunks == NULL && a->inline_cap - a->inline_used >= n) {
        void *p = a->inline_buf + a->inline_used;
        a->inline_used += n;
        return p;
    }
    veer_arena_chunk_t *c = a->chunks;
    if (c != NULL && c->cap - c->used >= n) {
        void *p = c->data + c->used;
        c->used += n;
        return p;
    }
    size_t cap = n > 4096 ? n : 4096;
    if (a->allocated + cap > a->limit)
        return NULL;
    c = malloc(sizeof(*c) + cap);
    if (c == NULL)
        return NULL;
    c->cap = cap;
    c->used = n;
    c->next = a->chunks;
    a->chunks = c;
    a->allocated += cap;
    return c->data;
}

char *veer_arena_memdup(veer_arena_t *a, const void *p, size_t n)
{
    char *d = veer_arena_alloc(a, n + 1);
    if (d != NULL) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

void *veer_arena_grow(veer_arena_t *a, void *old, size_t old_len, size_t new_len)
{
    size_t old_al = ALIGN8(old_len ? old_len : 1), new_al = ALIGN8(new_len);
    if (old != NULL) {
        /* In place when `old` is the newest allocation and room remains. */
        if (a->chunks == NULL && (char *)old + old_al == a->inline_buf + a->inline_used &&
            a->inline_used - old_al + new_al <= a->inline_cap) {
            a->inline_used = a->inline_used - old_al + new_al;
            return old;
        }
        veer_arena_chunk_t *c = a->chunks;
        if (c != NULL && (char *)old + old_al == c->data + c->used && c->used - old_al + new_al <= c->cap) {
            c->used = c->used - old_al + new_al;
            return old;
        }
    }
    void *p = veer_arena_alloc(a, new_len);
    if (p != NULL && old != NULL)
        memcpy(p, old, old_len);
    return p;
}

int veer_arena_append(veer_arena_t *a, char **buf, size_t *len, const void *at, size_t n)
{
    char *g = veer_arena_grow(a, *buf, *len, *len + n);
    if (g == NULL)
        return -1;
    memcpy(g + *len, at, n);
    *buf = g;
    *len += n;
    return 0;
}

void veer_arena_reset(veer_arena_t *a)
{
    veer_arena_chunk_t *c = a->chunks;
    while (c != NULL) {
        veer_arena_chunk_t *next = c->next;
        free(c);
        c = next;
    }
    a->chunks = NULL;
    a->allocated = 0;
    a->inline_used = 0;
}
