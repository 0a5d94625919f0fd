/* headers.c - header field rules for forwarding: the hop-by-hop set, legal
 * name and value bytes (RFC 9110 §5.1, §5.5) and the in-place sanitizer the
 * exchange runs on every header list before it crosses to the other side.
 * Pure and allocation-free; the bytes stay where the codec put them, only the
 * veer_header_t entries move. */
#include "headers.h"

#include <string.h>

static inline unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

bool veer_header_name_is(veer_iov_t name, const char *lower, size_t len)
{
    if (name.len != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (ascii_lower((unsigned char)name.base[i]) != (unsigned char)lower[i])
            return false;
    }
    return true;
}

/* RFC 9110 §7.6.1 and RFC 9112 §7: fields that describe one connection and
 * must not be forwarded. Proxy-Authenticate/-Authorization are left out on
 * purpose (see headers.h). */
static const struct {
    const char *name;
    size_t len;
} hop_by_hop[] = {
    {"connection", 10}, {"keep-alive", 10}, {"proxy-connection", 16},
    {"te", 2},          {"transfer-encoding", 17}, {"upgrade", 7},
};

bool veer_header_is_hop_by_hop(veer_iov_t name)
{
    for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++) {
        if (veer_header_name_is(name, hop_by_hop[i].name, hop_by_hop[i].len))
            return true;
    }
    return false;
}

/* tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 *         "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA        (RFC 9110 §5.6.2) */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool veer_header_name_valid(veer_iov_t name)
{
    if (name.len == 0)
        return false;
    for (size_t i = 0; i < name.len; i++) {
        if (!is_tchar((unsigned char)name.base[i]))
            return false;
    }
    return true;
}

/* field-value = *( VCHAR / SP / HTAB / obs-text ). Every control byte but
 * HTAB is refused, DEL included: a bare CR or LF forwarded to an HTTP/1.1
 * upstream is request smuggling, and NUL truncates in C consumers. */
bool veer_header_value_valid(veer_iov_t value)
{
    for (size_t i = 0; i < value.len; i++) {
        unsigned char c = (unsigned char)value.base[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* ---- comma-separated lists ----------------------------------------------- */

static veer_iov_t trim_ows(veer_iov_t v)
{
    while (v.len > 0 && (v.base[0] == ' ' || v.base[0] == '\t')) {
        v.base++;
        v.len--;
    }
    while (v.len > 0 && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t'))
        v.len--;
    return v;
}

/* Next non-empty element of a #list (RFC 9110 §5.6.1: empty elements are
 * allowed and ignored), trimmed. *offset advances past it. */
static bool list_next(veer_iov_t value, size_t *offset, veer_iov_t *element)
{
    while (*offset < value.len) {
        const char *start = value.base + *offset;
        size_t rest = value.len - *offset;
        const char *comma = memchr(start, ',', rest);
        size_t len = comma ? (size_t)(comma - start) : rest;
        *offset += len + (comma ? 1 : 0);
        veer_iov_t e = trim_ows((veer_iov_t){start, len});
        if (e.len > 0) {
            *element = e;
            return true;
        }
    }
    return false;
}

bool veer_header_list_has_token(veer_iov_t value, const char *lower, size_t len)
{
    size_t offset = 0;
    veer_iov_t e;
    while (list_next(value, &offset, &e)) {
        const char *semi = memchr(e.base, ';', e.len);
        if (semi != NULL)
            e = trim_ows((veer_iov_t){e.base, (size_t)(semi - e.base)});
        if (veer_header_name_is(e, lower, len))
            return true;
    }
    return false;
}

/* ---- the sanitizer ------------------------------------------------------- */

/* True when some Connection header in conn[0..conn_count) names this field. */
static bool nominated_by_connection(veer_iov_t name, const veer_header_t *conn, size_t conn_count)
{
    for (size_t i = 0; i < conn_count; i++) {
        if (!veer_header_name_is(conn[i].name, "connection", 10))
            continue;
        size_t offset = 0;
        veer_iov_t option;
        while (list_next(conn[i].value, &offset, &option)) {
            if (option.len == name.len) {
                size_t j = 0;
                while (j < name.len && ascii_lower((unsigned char)option.base[j]) ==
                                           ascii_lower((unsigned char)name.base[j]))
                    j++;
                if (j == name.len)
                    return true;
            }
        }
    }
    return false;
}

/* Two passes, no allocation. The first moves every field that is not in the
 * fixed hop-by-hop set to the front in order, swapping rather than
 * overwriting, so all the Connection headers survive intact in the tail. The
 * second drops the front fields that a Connection header names, reading the
 * options from that untouched tail. The cost of the second pass is
 * fields x options, so the codec's limit on the number of fields bounds it. */
size_t veer_headers_strip_hop_by_hop(veer_header_t *headers, size_t count, bool *te_trailers)
{
    bool any_connection = false;
    size_t kept = 0;

    if (te_trailers != NULL)
        *te_trailers = false;
    for (size_t i = 0; i < count; i++) {
        veer_iov_t name = headers[i].name;
        if (veer_header_is_hop_by_hop(name)) {
            if (veer_header_name_is(name, "connection", 10))
                any_connection = true;
            else if (te_trailers != NULL && veer_header_name_is(name, "te", 2) &&
                     veer_header_list_has_token(headers[i].value, "trailers", 8))
                *te_trailers = true;
            continue;
        }
        if (i != kept) {
            veer_header_t moved = headers[kept];
            headers[kept] = headers[i];
            headers[i] = moved;
        }
        kept++;
    }
    if (!any_connection)
        return kept;

    const veer_header_t *tail = headers + kept;
    size_t tail_count = count - kept;
    size_t out = 0;
    for (size_t i = 0; i < kept; i++) {
        veer_iov_t name = headers[i].name;
        /* HTTP/2 pseudo-headers are never connection options. */
        bool pseudo = name.len > 0 && name.base[0] == ':';
        if (!pseudo && nominated_by_connection(name, tail, tail_count))
            continue;
        headers[out++] = headers[i];
    }
    return out;
}

int veer_http_status_parse(const char *digits, size_t len)
{
    if (len != 3)
        return 0;
    int status = 0;
    for (size_t i = 0; i < 3; i++) {
        if (digits[i] < '0' || digits[i] > '9')
            return 0;
        status = status * 10 + (digits[i] - '0');
    }
    return status >= 100 ? status : 0;
}

int veer_grpc_status_parse(const char *value, size_t len)
{
    int code = 0;
    for (size_t i = 0; i < len && code <= 255; i++)
        code = value[i] >= '0' && value[i] <= '9' ? code * 10 + (value[i] - '0') : 1000;
    return len == 0 || code > 255 ? 2 : code;
}
