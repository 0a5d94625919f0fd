/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

static veer_log_level_t min_level = VEER_LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void veer_log_set_level(veer_log_level_t level)
{
    min_level = level;
}

void veer_log_timestamp(char out[32])
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (tm.tm_year + 1900) % 10000, (tm.tm_mon + 1) % 100, tm.tm_mday % 100,
             tm.tm_hour % 100, tm.tm_min % 100, tm.tm_sec % 100, (int)(tv.tv_usec / 1000) % 1000);
}

size_t veer_json_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc = 0;
        switch (c) {
        case '"': esc = '"'; break;
        case '\\': esc = '\\'; break;
        case '\n': esc = 'n'; break;
        case '\r': esc = 'r'; break;
        case '\t': esc = 't'; break;
        default: break;
        }
        if (esc) {
            if (o + 2 > cap)
                break;
            out[o++] = '\\';
            out[o++] = esc;
        } else if (c < 0x20 || c == 0x7f) {
            if (o + 6 > cap)
                break;
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            if (o + 1 > cap)
                break;
            out[o++] = (char)c;
        }
    }
    return o;
}

void veer_log_raw(const char *json, size_t len)
{
    char line[8192];
    if (len > sizeof(line) - 1)
        len = sizeof(line) - 1;
    memcpy(line, json, len);
    line[len] = '\n';
    ssize_t r = write(STDERR_FILENO, line, len + 1);
    (void)r;
}

void veer_log_json(struct cJSON *line)
{
    char *text = line != NULL ? cJSON_PrintUnformatted(line) : NULL;
    cJSON_Delete(line);
    if (text != NULL)
        veer_log_raw(text, strlen(text));
    cJSON_free(text);
}

void veer_log(veer_log_level_t level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[2048], esc[4096], ts[32], line[4608];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t mlen = (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
    size_t elen = veer_json_escape(esc, sizeof(esc), msg, mlen);
    veer_log_timestamp(ts);
    int len = snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%.*s\"}", ts,
                       level_names[level], (int)elen, esc);
    if (len > 0)
        veer_log_raw(line, (size_t)len < sizeof(line) ? (size_t)len : sizeof(line) - 1);
}
