/* arena.h - per-request bump allocator: everything a request allocates (its
 * header list, copied names and values) comes from here and dies in one
 * veer_arena_reset() when the exchange ends. The first block is inline in the
 * owner (no malloc for typical requests); overflow chunks are malloc'd up to
 * a hard limit, past which allocation fails (the caller answers 431). */
#ifndef VEER_ARENA_H
#define VEER_ARENA_H

#include <stddef.h>

typedef struct veer_arena_chunk_s {
    struct veer_arena_chunk_s *next;
    size_t cap, used;
    char data[];
} veer_arena_chunk_t;

typedef struct veer_arena_s {
    char *inline_buf;
    size_t inline_cap, inline_used;
    veer_arena_chunk_t *chunks;
    size_t allocated; /* bytes in chunks */
    size_t limit;     /* max bytes in chunks */
} veer_arena_t;

void veer_arena_init(veer_arena_t *a, void *inline_buf, size_t cap, size_t limit);
void *veer_arena_alloc(veer_arena_t *a, size_t n);
char *veer_arena_memdup(veer_arena_t *a, const void *p, size_t n);
/* Grow the last allocation `old` (of old_len) to new_len, copying when needed. */
void *veer_arena_grow(veer_arena_t *a, void *old, size_t old_len, size_t new_len);
/* Append n bytes to the string *buf of *len bytes (the last allocation grows
 * in place when it can; a parser's name or value arriving in pieces). 0, or
 * -1 when the arena is full. */
int veer_arena_append(veer_arena_t *a, char **buf, size_t *len, const void *at, size_t n);
void veer_arena_reset(veer_arena_t *a);

#endif
