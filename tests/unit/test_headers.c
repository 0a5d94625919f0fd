/* test_headers.c - hop-by-hop set, name and value byte rules, and the
 * forwarding sanitizer (Connection-nominated fields, TE: trailers). */
#include "headers.h"

#include <stdio.h>
#include <string.h>

#include "check.h"

/* Bytes with embedded NULs need an explicit length. */
#define IOV_BYTES(s) ((veer_iov_t){(s), sizeof(s) - 1})

/* The names of headers[0..count), joined with ',' for one compare. */
static const char *names_of(const veer_header_t *headers, size_t count)
{
    static char buf[512];
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < count && off + headers[i].name.len + 2 < sizeof(buf); i++) {
        if (i > 0)
            buf[off++] = ',';
        memcpy(buf + off, headers[i].name.base, headers[i].name.len);
        off += headers[i].name.len;
        buf[off] = '\0';
    }
    return buf;
}

static void test_hop_by_hop_set(void)
{
    static const char *const hop[] = {
        "connection", "Connection", "CONNECTION", "keep-alive", "Keep-Alive", "proxy-connection",
        "Proxy-Connection", "te", "TE", "Te", "transfer-encoding", "Transfer-Encoding",
        "TRANSFER-ENCODING", "upgrade", "Upgrade", "uPGRADE",
    };
    static const char *const end_to_end[] = {
        "proxy-authenticate", "Proxy-Authorization", "content-length", "host", "trailer",
        "connectio", "connections", "t", "tee", "x-connection", "keep-alive ", "", ":authority",
    };
    int wrong = 0;
    for (size_t i = 0; i < N_ELEMS(hop); i++) {
        if (!veer_header_is_hop_by_hop(iov_str(hop[i]))) {
            fprintf(stderr, "  not hop-by-hop: %s\n", hop[i]);
            wrong++;
        }
    }
    CHECK(wrong == 0);
    wrong = 0;
    for (size_t i = 0; i < N_ELEMS(end_to_end); i++) {
        if (veer_header_is_hop_by_hop(iov_str(end_to_end[i]))) {
            fprintf(stderr, "  wrongly hop-by-hop: '%s'\n", end_to_end[i]);
            wrong++;
        }
    }
    CHECK(wrong == 0);

    CHECK(veer_header_name_is(iov_str("Content-Type"), "content-type", 12));
    CHECK(veer_header_name_is(iov_str("content-type"), "content-type", 12));
    CHECK(!veer_header_name_is(iov_str("content-typ"), "content-type", 12));
    CHECK(!veer_header_name_is(iov_str("content-types"), "content-type", 12));
    CHECK(!veer_header_name_is(iov_str("content_type"), "content-type", 12));
    CHECK(veer_header_name_is(iov_str(""), "", 0));
}

static void test_name_valid(void)
{
    static const struct {
        veer_iov_t name;
        bool valid;
    } table[] = {
        {VEER_IOV_LIT("content-type"), true},
        {VEER_IOV_LIT("X-Custom_Header.1"), true},
        {VEER_IOV_LIT("!#$%&'*+-.^_`|~"), true},
        {VEER_IOV_LIT("azAZ09"), true},
        {VEER_IOV_LIT("a"), true},
        {VEER_IOV_LIT(""), false},
        {VEER_IOV_LIT("content type"), false},
        {VEER_IOV_LIT("content-type:"), false},
        {VEER_IOV_LIT(":authority"), false},
        {VEER_IOV_LIT("x\ty"), false},
        {VEER_IOV_LIT("x\r"), false},
        {VEER_IOV_LIT("x\n"), false},
        {IOV_BYTES("x\0y"), false},
        {VEER_IOV_LIT("x\x7f"), false},
        {VEER_IOV_LIT("caf\xc3\xa9"), false},
        {VEER_IOV_LIT("a\"b"), false},
        {VEER_IOV_LIT("a(b)"), false},
        {VEER_IOV_LIT("a,b"), false},
        {VEER_IOV_LIT("a/b"), false},
        {VEER_IOV_LIT("a;b"), false},
        {VEER_IOV_LIT("a<b>"), false},
        {VEER_IOV_LIT("a=b"), false},
        {VEER_IOV_LIT("a?b"), false},
        {VEER_IOV_LIT("a@b"), false},
        {VEER_IOV_LIT("a[b]"), false},
        {VEER_IOV_LIT("a\\b"), false},
        {VEER_IOV_LIT("a{b}"), false},
    };
    int wrong = 0;
    for (size_t i = 0; i < N_ELEMS(table); i++) {
        if (veer_header_name_valid(table[i].name) != table[i].valid) {
            fprintf(stderr, "  name row %zu: expected %s\n", i, table[i].valid ? "valid" : "invalid");
            wrong++;
        }
    }
    CHECK(wrong == 0);

    /* Every byte: exactly the 77 tchars of RFC 9110 §5.6.2 are legal. */
    int legal = 0;
    for (int c = 0; c < 256; c++) {
        char byte = (char)c;
        legal += veer_header_name_valid((veer_iov_t){&byte, 1});
    }
    CHECK(legal == 26 + 26 + 10 + 15);
}

static void test_value_valid(void)
{
    static const struct {
        veer_iov_t value;
        bool valid;
    } table[] = {
        {VEER_IOV_LIT(""), true},
        {VEER_IOV_LIT("application/json; charset=utf-8"), true},
        {VEER_IOV_LIT("a\tb"), true},                  /* HTAB is fine */
        {VEER_IOV_LIT("\t leading and trailing \t"), true},
        {VEER_IOV_LIT("caf\xc3\xa9"), true},           /* obs-text */
        {VEER_IOV_LIT("\x80\xff"), true},
        {VEER_IOV_LIT("~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./"), true},
        {VEER_IOV_LIT("a\rb"), false},                 /* bare CR */
        {VEER_IOV_LIT("a\nb"), false},                 /* bare LF */
        {VEER_IOV_LIT("a\r\nX-Injected: 1"), false},
        {VEER_IOV_LIT("\r"), false},
        {VEER_IOV_LIT("trailing\n"), false},
        {IOV_BYTES("a\0b"), false},                    /* NUL */
        {IOV_BYTES("\0"), false},
        {VEER_IOV_LIT("a\x7f"), false},                /* DEL */
        {VEER_IOV_LIT("\x01"), false},
        {VEER_IOV_LIT("\x1b[31m"), false},
        {VEER_IOV_LIT("\x0b"), false},
        {VEER_IOV_LIT("\x0c"), false},
        {VEER_IOV_LIT("\x1f"), false},
    };
    int wrong = 0;
    for (size_t i = 0; i < N_ELEMS(table); i++) {
        if (veer_header_value_valid(table[i].value) != table[i].valid) {
            fprintf(stderr, "  value row %zu: expected %s\n", i, table[i].valid ? "valid" : "invalid");
            wrong++;
        }
    }
    CHECK(wrong == 0);

    /* Every byte: all but the 32 C0 controls other than HTAB, and DEL. */
    int legal = 0;
    for (int c = 0; c < 256; c++) {
        char byte = (char)c;
        legal += veer_header_value_valid((veer_iov_t){&byte, 1});
    }
    CHECK(legal == 256 - 31 - 1);
}

static void test_list_has_token(void)
{
    CHECK(veer_header_list_has_token(iov_str("close"), "close", 5));
    CHECK(veer_header_list_has_token(iov_str("Keep-Alive, Close"), "close", 5));
    CHECK(veer_header_list_has_token(iov_str(" ,, close ,"), "close", 5));
    CHECK(veer_header_list_has_token(iov_str("gzip;q=0.5, Trailers"), "trailers", 8));
    CHECK(veer_header_list_has_token(iov_str("trailers ;q=1"), "trailers", 8));
    CHECK(!veer_header_list_has_token(iov_str("closed, x-close"), "close", 5));
    CHECK(!veer_header_list_has_token(iov_str(""), "close", 5));
    CHECK(!veer_header_list_has_token(iov_str("clo se"), "close", 5));
}

static void test_strip_fixed_set(void)
{
    /* Each hop-by-hop name, in mixed case, among end-to-end fields whose
     * order must survive. */
    veer_header_t h[] = {
        HDR("Host", "example.com"),
        HDR("CONNECTION", "keep-alive"),
        HDR("accept", "*/*"),
        HDR("Keep-Alive", "timeout=5"),
        HDR("Proxy-Connection", "keep-alive"),
        HDR("x-a", "1"),
        HDR("Te", "gzip"),
        HDR("Transfer-Encoding", "chunked"),
        HDR("UpGrade", "websocket"),
        HDR("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        HDR("x-b", "2"),
    };
    bool te_trailers = true;
    size_t n = veer_headers_strip_hop_by_hop(h, N_ELEMS(h), &te_trailers);
    CHECK(n == 5);
    CHECK(strcmp(names_of(h, n), "Host,accept,x-a,Proxy-Authorization,x-b") == 0);
    CHECK(iov_is(h[0].value, "example.com") && iov_is(h[4].value, "2"));
    CHECK(!te_trailers); /* cleared: TE was "gzip" */

    /* Nothing to strip: unchanged, and an empty list is fine. */
    veer_header_t plain[] = {HDR("a", "1"), HDR("b", "2")};
    CHECK(veer_headers_strip_hop_by_hop(plain, 2, NULL) == 2);
    CHECK(strcmp(names_of(plain, 2), "a,b") == 0);
    CHECK(veer_headers_strip_hop_by_hop(NULL, 0, &te_trailers) == 0 && !te_trailers);

    /* Only hop-by-hop fields: nothing left. */
    veer_header_t only_hop[] = {HDR("te", "trailers"), HDR("connection", "close"), HDR("upgrade", "h2c")};
    CHECK(veer_headers_strip_hop_by_hop(only_hop, 3, &te_trailers) == 0 && te_trailers);
}

static void test_strip_connection_options(void)
{
    /* Connection: close, X-Foo removes x-foo (any case), keeps the rest. */
    veer_header_t h[] = {
        HDR("x-foo", "1"),
        HDR("host", "h"),
        HDR("connection", "close, X-Foo"),
        HDR("X-FOO", "2"),
        HDR("x-foobar", "3"),
        HDR("close", "4"),
    };
    size_t n = veer_headers_strip_hop_by_hop(h, N_ELEMS(h), NULL);
    CHECK(n == 2);
    CHECK(strcmp(names_of(h, n), "host,x-foobar") == 0);

    /* Several Connection headers, before and after the fields they name,
     * odd whitespace and empty list elements. */
    veer_header_t multi[] = {
        HDR("x-keep-1", "a"),
        HDR("Connection", " x-one ,\tx-two"),
        HDR("x-one", "1"),
        HDR("x-keep-2", "b"),
        HDR("x-three", "3"),
        HDR("x-two", "2"),
        HDR("connection", ",,X-Three ,"),
        HDR("x-keep-3", "c"),
        HDR("x-four", "4"),
    };
    n = veer_headers_strip_hop_by_hop(multi, N_ELEMS(multi), NULL);
    CHECK(n == 4);
    CHECK(strcmp(names_of(multi, n), "x-keep-1,x-keep-2,x-keep-3,x-four") == 0);
    CHECK(iov_is(multi[0].value, "a") && iov_is(multi[1].value, "b") && iov_is(multi[2].value, "c"));

    /* Connection can name a hop-by-hop field too, and a pseudo-header is never
     * a connection option. */
    veer_header_t pseudo[] = {
        HDR(":authority", "h"), HDR("connection", ":authority, keep-alive, upgrade"),
        HDR("keep-alive", "5"), HDR("upgrade", "h2c"), HDR("x", "y"),
    };
    n = veer_headers_strip_hop_by_hop(pseudo, N_ELEMS(pseudo), NULL);
    CHECK(n == 2 && strcmp(names_of(pseudo, n), ":authority,x") == 0);

    /* An empty Connection header names nothing. */
    veer_header_t empty[] = {HDR("connection", ""), HDR("x", "y"), HDR("", "z")};
    n = veer_headers_strip_hop_by_hop(empty, N_ELEMS(empty), NULL);
    CHECK(n == 2 && iov_is(empty[0].name, "x") && empty[1].name.len == 0);
}

static void test_te_trailers(void)
{
    static const struct {
        const char *te;
        bool trailers;
    } table[] = {
        {"trailers", true},
        {"Trailers", true},
        {"gzip, trailers", true},
        {"trailers, deflate;q=0.5", true},
        {" gzip ;q=1 ,\tTRAILERS ", true},
        {"gzip", false},
        {"trailer", false},
        {"x-trailers", false},
        {"", false},
    };
    int wrong = 0;
    for (size_t i = 0; i < N_ELEMS(table); i++) {
        veer_header_t h[] = {HDR("x", "1"), {VEER_IOV_LIT("te"), iov_str(table[i].te)}};
        bool te_trailers = !table[i].trailers;
        size_t n = veer_headers_strip_hop_by_hop(h, 2, &te_trailers);
        if (n != 1 || te_trailers != table[i].trailers) {
            fprintf(stderr, "  TE '%s': n=%zu te_trailers=%d\n", table[i].te, n, te_trailers);
            wrong++;
        }
    }
    CHECK(wrong == 0);

    /* Across several TE headers, any one listing trailers sets it. */
    veer_header_t two[] = {HDR("TE", "gzip"), HDR("a", "1"), HDR("te", "trailers")};
    bool te_trailers = false;
    CHECK(veer_headers_strip_hop_by_hop(two, 3, &te_trailers) == 1 && te_trailers);
    /* "trailers" in some other field does not count. */
    veer_header_t elsewhere[] = {HDR("connection", "trailers"), HDR("x-te", "trailers")};
    CHECK(veer_headers_strip_hop_by_hop(elsewhere, 2, &te_trailers) == 1 && !te_trailers);
}

/* :status (h2call) and the status line's code (prober) */
static void test_http_status_parse(void)
{
    CHECK(veer_http_status_parse("200", 3) == 200);
    CHECK(veer_http_status_parse("503", 3) == 503);
    CHECK(veer_http_status_parse("999", 3) == 999);
    CHECK(veer_http_status_parse("099", 3) == 0); /* below 100 */
    CHECK(veer_http_status_parse("20", 2) == 0);
    CHECK(veer_http_status_parse("2000", 4) == 0);
    CHECK(veer_http_status_parse("2x0", 3) == 0);
    CHECK(veer_http_status_parse(" 20", 3) == 0);
}

/* grpc-status as a gRPC client reads it: the exchange and h2call agree */
static void test_grpc_status_parse(void)
{
    CHECK(veer_grpc_status_parse("0", 1) == 0);
    CHECK(veer_grpc_status_parse("14", 2) == 14);
    CHECK(veer_grpc_status_parse("255", 3) == 255);
    CHECK(veer_grpc_status_parse("256", 3) == 2);  /* out of range: UNKNOWN */
    CHECK(veer_grpc_status_parse("", 0) == 2);
    CHECK(veer_grpc_status_parse("1a", 2) == 2);
    CHECK(veer_grpc_status_parse("-1", 2) == 2);
    CHECK(veer_grpc_status_parse("00000000000000000000007", 23) == 7);
    CHECK(veer_grpc_status_parse("99999999999999999999", 20) == 2); /* no overflow */
}

int main(void)
{
    test_http_status_parse();
    test_grpc_status_parse();
    test_hop_by_hop_set();
    test_name_valid();
    test_value_valid();
    test_list_has_token();
    test_strip_fixed_set();
    test_strip_connection_options();
    test_te_trailers();
    return check_summary("test_headers");
}
