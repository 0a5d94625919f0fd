/* log.h - structured logging: one JSON object per line on stderr, written
 * with a single write(2) so lines from different threads never interleave. */
#ifndef VEER_LOG_H
#define VEER_LOG_H

#include <stddef.h>

typedef enum { VEER_LOG_DEBUG = 0, VEER_LOG_INFO = 1, VEER_LOG_WARN = 2, VEER_LOG_ERROR = 3 } veer_log_level_t;

void veer_log_set_level(veer_log_level_t level);
/* {"ts":"...","level":"info","msg":"<formatted, JSON-escaped>"} */
void veer_log(veer_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Write an already formatted JSON object (no newline) as one line. */
void veer_log_raw(const char *json, size_t len);
/* Write a cJSON object as one line (veer_log_raw) and delete it; NULL: nothing. */
struct cJSON;
void veer_log_json(struct cJSON *line);
/* Append s JSON-escaped (without quotes) to out; returns bytes written (truncates at cap). */
size_t veer_json_escape(char *out, size_t cap, const char *s, size_t len);
/* "2026-11-23T15:21:18.123Z" */
void veer_log_timestamp(char out[32]);

#define veer_log_info(...) veer_log(VEER_LOG_INFO, __VA_ARGS__)
#define veer_log_warn(...) veer_log(VEER_LOG_WARN, __VA_ARGS__)
#define veer_log_error(...) veer_log(VEER_LOG_ERROR, __VA_ARGS__)

#endif
