/* unit.h — the harness every C unit test runner here shares (test_parsers,
 * test_session, test_proxy). Include it once, in the runner's one file.
 *
 * No framework: each TEST is a function, registered before main runs; CHECK
 * records a failure (with file, line and expression) and lets the test go
 * on. A test passes when none of its checks failed. UNIT_MAIN runs them:
 * `runner -v` names every test that passes, `runner NAME` runs the tests
 * whose name contains NAME. The last line is "N passed, N failed"; the exit
 * status is non-zero when any test failed. */
#ifndef LUAWS_SPEC_UNIT_H
#define LUAWS_SPEC_UNIT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int checks_failed;          /* in the current test */
static const char *test_name;

#define CHECK(cond) check_at((cond), #cond, __FILE__, __LINE__, NULL)
#define CHECKF(cond, ...) check_at((cond), #cond, __FILE__, __LINE__, __VA_ARGS__)

static bool check_at(bool ok, const char *expr, const char *file, int line, const char *fmt, ...)
{
    if (ok) return true;
    checks_failed++;
    fprintf(stderr, "  FAIL %s: %s:%d: %s", test_name, file, line, expr);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs(" — ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    return false;
}

typedef struct test {
    const char *name;
    void (*fn)(void);
} test;

#define MAX_TESTS 256
static test tests[MAX_TESTS];
static int ntests;

#define TEST(name)                                                         \
    static void name(void);                                                \
    __attribute__((constructor)) static void register_##name(void)        \
    {                                                                      \
        if (ntests < MAX_TESTS) tests[ntests++] = (test){#name, name};     \
    }                                                                      \
    static void name(void)

static int unit_main(int argc, char **argv)
{
    bool verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    const char *only = argc > 1 && !verbose ? argv[1] : NULL;
    int passed = 0, failed = 0;
    for (int i = 0; i < ntests; i++) {
        if (only && !strstr(tests[i].name, only)) continue;
        test_name = tests[i].name;
        checks_failed = 0;
        tests[i].fn();
        if (checks_failed) {
            failed++;
            fprintf(stderr, "not ok %s (%d failed checks)\n", tests[i].name, checks_failed);
        } else {
            passed++;
            if (verbose) printf("ok %s\n", tests[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
