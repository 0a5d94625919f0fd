/* check.h - the assertions every unit test shares: CHECK and its variants
 * count each check, report a failure with file:line (and the values where
 * they are cheap to print) and carry on, so one run lists every broken check;
 * check_summary() prints the totals and gives main() its exit code. */
#ifndef VEER_TEST_CHECK_H
#define VEER_TEST_CHECK_H

#include "http.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int checks, failures;

#define CHECK(expr)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(expr)) {                                                               \
            failures++;                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); \
        }                                                                            \
    } while (0)

/* A NULL `actual` fails (and prints as "(null)"); `expected` is never NULL. */
#define CHECK_STR(actual, expected) check_str(__FILE__, __LINE__, #actual, (actual), (expected))
#define CHECK_CONTAINS(haystack, needle) \
    check_contains(__FILE__, __LINE__, #haystack, (haystack), (needle))
#define CHECK_NEAR(actual, expected, tolerance) \
    check_near(__FILE__, __LINE__, #actual, (actual), (expected), (tolerance))

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define HDR(n, v) {VEER_IOV_LIT(n), VEER_IOV_LIT(v)}

static inline void check_str(const char *file, int line, const char *text, const char *actual,
                             const char *expected)
{
    checks++;
    if (actual != NULL && strcmp(actual, expected) == 0)
        return;
    failures++;
    fprintf(stderr, "%s:%d: CHECK_STR failed: %s is \"%s\", want \"%s\"\n", file, line, text,
            actual ? actual : "(null)", expected);
}

static inline void check_contains(const char *file, int line, const char *text, const char *haystack,
                                  const char *needle)
{
    checks++;
    if (haystack != NULL && strstr(haystack, needle) != NULL)
        return;
    failures++;
    fprintf(stderr, "%s:%d: CHECK_CONTAINS failed: %s does not contain \"%s\": \"%s\"\n", file, line,
            text, needle, haystack ? haystack : "(null)");
}

static inline void check_near(const char *file, int line, const char *text, double actual,
                              double expected, double tolerance)
{
    checks++;
    if (actual - expected <= tolerance && expected - actual <= tolerance)
        return;
    failures++;
    fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s is %.9g, want %.9g +- %.9g\n", file, line, text,
            actual, expected, tolerance);
}

static inline veer_iov_t iov_str(const char *s)
{
    return (veer_iov_t){s, strlen(s)};
}

static inline bool iov_is(veer_iov_t v, const char *s)
{
    return v.len == strlen(s) && memcmp(v.base, s, v.len) == 0;
}

/* Prints "<name>: N checks, M failed"; returns main()'s exit code. */
static inline int check_summary(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, checks, failures);
    return failures == 0 ? 0 : 1;
}

#endif
