/* Unit tests for src/http/json.c: byte-exact output for every value type,
 * punctuation through nesting, string escaping and UTF-8 repair, number
 * formatting at the limits, sticky errors, growth and allocation failure.
 * A small strict JSON checker (below) confirms larger outputs parse.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Allocation failure injection: the n-th allocation from now fails. */
static long alloc_fail_in = -1;
static void *failing_realloc(void *p, size_t n)
{
    if (alloc_fail_in >= 0 && alloc_fail_in-- == 0)
        return NULL;
    return realloc(p, n);
}
#define json_realloc failing_realloc
#include "http/json.c"

/* ---- a strict RFC 8259 syntax checker, for tests only ---------------------- */

typedef struct cursor {
    const char *p, *end;
} cursor;

static bool check_value(cursor *c, int depth);

static bool check_lit(cursor *c, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
        return false;
    c->p += n;
    return true;
}

static bool check_string(cursor *c)
{
    if (c->p >= c->end || *c->p++ != '"')
        return false;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p++;
        if (ch == '"')
            return true;
        if (ch < 0x20)
            return false;
        if (ch == '\\') {
            if (c->p >= c->end)
                return false;
            char e = *c->p++;
            if (e == 'u') {
                for (int i = 0; i < 4; i++)
                    if (c->p >= c->end || !strchr("0123456789abcdefABCDEF", *c->p++))
                        return false;
            } else if (!strchr("\"\\/bfnrt", e) || !e) {
                return false;
            }
        }
    }
    return false;
}

static bool check_number(cursor *c)
{
    const char *s = c->p;
    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (c->p >= c->end)
        return false;
    if (*c->p == '0') {
        c->p++;
    } else if (*c->p >= '1' && *c->p <= '9') {
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
            c->p++;
    } else {
        return false;
    }
    if (c->p < c->end && *c->p == '.') {
        const char *d = ++c->p;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
            c->p++;
        if (c->p == d)
            return false;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        const char *d = c->p;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
            c->p++;
        if (c->p == d)
            return false;
    }
    return c->p > s;
}

static bool check_container(cursor *c, int depth, bool object)
{
    char close = object ? '}' : ']';
    c->p++;
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return true;
    }
    for (;;) {
        if (object && (!check_string(c) || c->p >= c->end || *c->p++ != ':'))
            return false;
        if (!check_value(c, depth + 1) || c->p >= c->end)
            return false;
        char ch = *c->p++;
        if (ch == close)
            return true;
        if (ch != ',')
            return false;
    }
}

static bool check_value(cursor *c, int depth)
{
    if (depth > 64 || c->p >= c->end)
        return false;
    switch (*c->p) {
    case '{': return check_container(c, depth, true);
    case '[': return check_container(c, depth, false);
    case '"': return check_string(c);
    case 't': return check_lit(c, "true");
    case 'f': return check_lit(c, "false");
    case 'n': return check_lit(c, "null");
    default:  return check_number(c);
    }
}

/* True if w's output is exactly one JSON value, compact, nothing after. */
static bool parses(const myr_json *w)
{
    cursor c = { w->data, w->data + w->len };
    return w->len > 0 && check_value(&c, 0) && c.p == c.end;
}

/* ---- helpers ------------------------------------------------------------------ */

static void assert_output(const myr_json *w, const char *want)
{
    assert_int_equal(myr_json_error(w), 0);
    if (w->len != strlen(want) || memcmp(w->data, want, w->len) != 0)
        fail_msg("got  %.*s\nwant %s", (int)w->len, w->data, want);
    assert_true(parses(w));
}

/* The JSON text of one string value. */
static void assert_string_json(const char *in, size_t n, const char *want)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_strn(&w, in, n);
    assert_output(&w, want);
    myr_json_free(&w);
}

static void assert_double_json(double v, const char *want)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_double(&w, v);
    assert_output(&w, want);
    myr_json_free(&w);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_techempower(void **state)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_obj_begin(&w);
    myr_json_key(&w, "message");
    myr_json_str(&w, "Hello, World!");
    myr_json_obj_end(&w);
    assert_output(&w, "{\"message\":\"Hello, World!\"}");
    assert_int_equal(w.cap, JSON_MIN_CAP);
    myr_json_free(&w);
    assert_null(w.data);
    assert_int_equal(w.len, 0);
    assert_int_equal(w.cap, 0);
}

static void test_all_value_types(void **state)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_obj_begin(&w);
    myr_json_key(&w, "s");      myr_json_str(&w, "x");
    myr_json_keyn(&w, "nXX", 1); myr_json_strn(&w, "abc", 2);
    myr_json_key(&w, "i");      myr_json_int(&w, -42);
    myr_json_key(&w, "u");      myr_json_uint(&w, 42);
    myr_json_key(&w, "d");      myr_json_double(&w, 2.5);
    myr_json_key(&w, "t");      myr_json_bool(&w, true);
    myr_json_key(&w, "f");      myr_json_bool(&w, false);
    myr_json_key(&w, "z");      myr_json_null(&w);
    myr_json_key(&w, "absent"); myr_json_str(&w, NULL);
    myr_json_key(&w, "");       myr_json_str(&w, "");
    myr_json_key(&w, "o");      myr_json_obj_begin(&w); myr_json_obj_end(&w);
    myr_json_key(&w, "a");      myr_json_arr_begin(&w); myr_json_arr_end(&w);
    myr_json_obj_end(&w);
    assert_output(&w, "{\"s\":\"x\",\"n\":\"ab\",\"i\":-42,\"u\":42,\"d\":2.5,"
                      "\"t\":true,\"f\":false,\"z\":null,\"absent\":null,"
                      "\"\":\"\",\"o\":{},\"a\":[]}");
    myr_json_free(&w);

    /* Scalars stand alone at the top level too. */
    myr_json_init(&w);
    myr_json_int(&w, 7);
    assert_output(&w, "7");
    myr_json_free(&w);
    myr_json_init(&w);
    myr_json_null(&w);
    assert_output(&w, "null");
    myr_json_free(&w);
}

static void test_nesting(void **state)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_arr_begin(&w);
    myr_json_int(&w, 1);
    myr_json_arr_begin(&w);
    myr_json_arr_begin(&w);
    myr_json_arr_end(&w);
    myr_json_obj_begin(&w);
    myr_json_key(&w, "k");
    myr_json_arr_begin(&w);
    myr_json_null(&w);
    myr_json_obj_begin(&w);
    myr_json_obj_end(&w);
    myr_json_arr_end(&w);
    myr_json_key(&w, "k2");
    myr_json_int(&w, 2);
    myr_json_obj_end(&w);
    myr_json_arr_end(&w);
    myr_json_str(&w, "end");
    myr_json_arr_end(&w);
    assert_output(&w, "[1,[[],{\"k\":[null,{}],\"k2\":2}],\"end\"]");
    assert_int_equal(w.depth, 0);
    myr_json_free(&w);
}

static void test_max_depth(void **state)
{
    myr_json w;
    myr_json_init(&w);
    for (int i = 0; i < JSON_MAX_DEPTH; i++) {
        if (i % 2)
            myr_json_arr_begin(&w);
        else {
            myr_json_obj_begin(&w);
            myr_json_key(&w, "k");
        }
    }
    myr_json_int(&w, 0);
    for (int i = JSON_MAX_DEPTH - 1; i >= 0; i--) {
        if (i % 2)
            myr_json_arr_end(&w);
        else
            myr_json_obj_end(&w);
    }
    assert_int_equal(myr_json_error(&w), 0);
    assert_true(parses(&w));
    assert_int_equal(w.len, JSON_MAX_DEPTH * 2 + (JSON_MAX_DEPTH / 2) * 4 + 1);
    myr_json_free(&w);

    /* One deeper is an error, and it sticks. */
    myr_json_init(&w);
    for (int i = 0; i <= JSON_MAX_DEPTH; i++)
        myr_json_arr_begin(&w);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    assert_int_equal(w.depth, JSON_MAX_DEPTH);
    size_t len = w.len;
    myr_json_arr_end(&w);
    myr_json_int(&w, 1);
    assert_int_equal(w.len, len);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);
    assert_int_equal(myr_json_error(&w), 0);
}

static void test_escapes(void **state)
{
    assert_string_json("a\"b\\c/d", 7, "\"a\\\"b\\\\c/d\"");
    assert_string_json("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
    assert_string_json("\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\"");
    assert_string_json("a\0b", 3, "\"a\\u0000b\"");
    /* U+2028 / U+2029 are escaped for <script> embedding. */
    assert_string_json("x\xe2\x80\xa8y\xe2\x80\xa9", 8, "\"x\\u2028y\\u2029\"");
    assert_string_json("\xe2\x80\xa7\xe2\x80\xaa", 6, "\"\xe2\x80\xa7\xe2\x80\xaa\"");
    /* Every control character, each alone and in the middle of a long run
     * (the eight-at-a-time scan must still stop on it). */
    for (int c = 0; c < 0x20; c++) {
        char in[40], want[64], esc[8];
        switch (c) {
        case '\n': strcpy(esc, "\\n"); break;
        case '\r': strcpy(esc, "\\r"); break;
        case '\t': strcpy(esc, "\\t"); break;
        case '\b': strcpy(esc, "\\b"); break;
        case '\f': strcpy(esc, "\\f"); break;
        default:   snprintf(esc, sizeof esc, "\\u%04x", c);
        }
        memset(in, 'a', sizeof in);
        in[21] = (char)c;
        snprintf(want, sizeof want, "\"%.21s%s%.18s\"", in, esc, in + 22);
        assert_string_json(in, sizeof in, want);
    }
    /* Quotes and backslashes deep in a long run, at each word offset. */
    for (int at = 8; at < 16; at++) {
        for (int k = 0; k < 2; k++) {
            char in[24], want[40];
            memset(in, 'b', sizeof in);
            in[at] = k ? '\\' : '"';
            snprintf(want, sizeof want, "\"%.*s\\%c%.*s\"", at, in, in[at],
                     (int)sizeof in - at - 1, in + at + 1);
            assert_string_json(in, sizeof in, want);
        }
    }
    /* Every printable ASCII byte but '"' and '\\' passes unchanged. */
    char all[96];
    size_t n = 0;
    for (int c = 0x20; c < 0x80; c++)
        if (c != '"' && c != '\\')
            all[n++] = (char)c;
    char want[128];
    snprintf(want, sizeof want, "\"%.*s\"", (int)n, all);
    assert_string_json(all, n, want);
}

static void test_utf8_valid(void **state)
{
    const char *ok[] = {
        "\xc2\x80", "\xdf\xbf",                     /* 2-byte ends */
        "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbf",
        "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf",     /* U+10000, U+10FFFF */
        "h\xc3\xa9llo w\xc3\xb6rld \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80!",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        char want[128];
        snprintf(want, sizeof want, "\"%s\"", ok[i]);
        assert_string_json(ok[i], strlen(ok[i]), want);
    }
}

#define FFFD "\xef\xbf\xbd"

static void test_utf8_invalid(void **state)
{
    struct { const char *in; const char *want; } cases[] = {
        { "\x80", "\"" FFFD "\"" },                         /* lone continuation */
        { "a\xbf" "b", "\"a" FFFD "b\"" },
        { "\xc0\xaf", "\"" FFFD FFFD "\"" },                /* overlong '/' */
        { "\xc1\xbf", "\"" FFFD FFFD "\"" },
        { "\xe0\x80\xaf", "\"" FFFD FFFD FFFD "\"" },       /* overlong, 3 bytes */
        { "\xf0\x80\x80\xaf", "\"" FFFD FFFD FFFD FFFD "\"" },
        { "\xed\xa0\x80", "\"" FFFD FFFD FFFD "\"" },       /* U+D800 */
        { "\xed\xbf\xbf", "\"" FFFD FFFD FFFD "\"" },       /* U+DFFF */
        { "\xf4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"" },   /* U+110000 */
        { "\xf5\x80", "\"" FFFD FFFD "\"" },
        { "\xff\xfe", "\"" FFFD FFFD "\"" },
        /* Truncated sequences: the maximal subpart becomes one U+FFFD. */
        { "\xc3", "\"" FFFD "\"" },
        { "\xe6\x97", "\"" FFFD "\"" },
        { "\xf0\x9f\x98", "\"" FFFD "\"" },
        { "\xf0\x9f\x98" "a", "\"" FFFD "a\"" },
        { "\xe6\x97\xe6\x97\xa5", "\"" FFFD "\xe6\x97\xa5\"" },
        { "\xc3\"", "\"" FFFD "\\\"\"" },
        { "ok\xe2\x80", "\"ok" FFFD "\"" },                 /* truncated U+2028 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_string_json(cases[i].in, strlen(cases[i].in), cases[i].want);

    /* Only len bytes are read: a sequence cut by len is truncated even if
     * the bytes after it would complete it. */
    assert_string_json("\xe6\x97\xa5", 2, "\"" FFFD "\"");
}

static void test_integers(void **state)
{
    myr_json w;
    myr_json_init(&w);
    myr_json_arr_begin(&w);
    myr_json_int(&w, 0);
    myr_json_int(&w, -1);
    myr_json_int(&w, 9);
    myr_json_int(&w, 10);
    myr_json_int(&w, 99);
    myr_json_int(&w, 100);
    myr_json_int(&w, -1234567);
    myr_json_int(&w, INT64_MAX);
    myr_json_int(&w, INT64_MIN);
    myr_json_uint(&w, 0);
    myr_json_uint(&w, UINT64_MAX);
    myr_json_uint(&w, 10000000000000000000u);
    myr_json_arr_end(&w);
    assert_output(&w, "[0,-1,9,10,99,100,-1234567,9223372036854775807,"
                      "-9223372036854775808,0,18446744073709551615,"
                      "10000000000000000000]");
    myr_json_free(&w);

    /* Against printf for a spread of values. */
    uint64_t x = 1;
    for (int i = 0; i < 2000; i++) {
        char want[32], got[32];
        int64_t v = (int64_t)x;
        snprintf(want, sizeof want, "%" PRId64, v);
        got[format_i64(got, v)] = '\0';
        assert_string_equal(got, want);
        snprintf(want, sizeof want, "%" PRIu64, x);
        got[format_u64(got, x)] = '\0';
        assert_string_equal(got, want);
        x = x * 6364136223846793005u + 1442695040888963407u;
        x >>= (unsigned)i % 60;         /* all magnitudes */
    }
}

static void test_doubles(void **state)
{
    assert_double_json(0.5, "0.5");
    assert_double_json(1e300, "1e+300");
    assert_double_json(-0.0, "-0");
    assert_double_json(0.0, "0");
    assert_double_json(NAN, "null");
    assert_double_json(INFINITY, "null");
    assert_double_json(-INFINITY, "null");
    assert_double_json(3.0, "3");
    assert_double_json(-2.0, "-2");
    assert_double_json(0.1, "0.1");
    assert_double_json(0.1 + 0.2, "0.30000000000000004");
    assert_double_json(1.0 / 3, "0.3333333333333333");
    assert_double_json(-1.5e-7, "-1.5e-07");
    assert_double_json(1e21, "1e+21");
    assert_double_json(9007199254740991.0, "9007199254740991");
    assert_double_json(9007199254740992.0, "9007199254740992");
    assert_double_json(DBL_MAX, "1.7976931348623157e+308");
    assert_double_json(DBL_MIN, "2.2250738585072014e-308");
    assert_double_json(5e-324, "5e-324");

    /* Every output reads back as the same double. */
    uint64_t bits = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 20000; i++) {
        double v;
        bits ^= bits << 13;
        bits ^= bits >> 7;
        bits ^= bits << 17;
        memcpy(&v, &bits, sizeof v);
        if (!isfinite(v))
            continue;
        char buf[NUM_MAX + 1];
        size_t n = format_double(buf, v);
        buf[n] = '\0';
        double back = strtod(buf, NULL);
        if (memcmp(&back, &v, sizeof v) != 0)
            fail_msg("%a printed as %s", v, buf);
        myr_json w;
        myr_json_init(&w);
        myr_json_double(&w, v);
        assert_true(parses(&w));
        myr_json_free(&w);
    }
}

static void test_locale_decimal_point(void **state)
{
    /* A program may run under a locale whose decimal point is ','. */
    const char *names[] = { "de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "C.UTF-8" };
    const char *used = NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names && !used; i++)
        if (setlocale(LC_NUMERIC, names[i]))
            used = names[i];
    assert_double_json(0.1 + 0.2, "0.30000000000000004");
    assert_double_json(-1.5e-7, "-1.5e-07");
    setlocale(LC_NUMERIC, "C");
    /* The rewrite itself, with a multi-byte point (U+066B). */
    char buf[] = "1\xd9\xab" "25e-07";
    assert_int_equal(c_locale_point(buf, strlen(buf)), 8);
    assert_memory_equal(buf, "1.25e-07", 8);
    (void)used;
}

static void test_misuse(void **state)
{
    myr_json w;

    myr_json_init(&w);                  /* value where a key belongs */
    myr_json_obj_begin(&w);
    myr_json_int(&w, 1);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    myr_json_init(&w);                  /* key outside an object */
    myr_json_arr_begin(&w);
    myr_json_key(&w, "k");
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    myr_json_init(&w);                  /* key at the top level */
    myr_json_key(&w, "k");
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    myr_json_init(&w);                  /* two keys in a row */
    myr_json_obj_begin(&w);
    myr_json_key(&w, "a");
    myr_json_key(&w, "b");
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    myr_json_init(&w);                  /* end without begin */
    myr_json_obj_end(&w);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    myr_json_init(&w);
    myr_json_arr_end(&w);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    myr_json_init(&w);                  /* mismatched ends */
    myr_json_arr_begin(&w);
    myr_json_obj_end(&w);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    myr_json_init(&w);
    myr_json_obj_begin(&w);
    myr_json_arr_end(&w);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    myr_json_init(&w);                  /* object closed after a key */
    myr_json_obj_begin(&w);
    myr_json_key(&w, "a");
    myr_json_obj_end(&w);
    assert_int_equal(w.error, -EINVAL);           /* sticky, not just unfinished */
    assert_int_equal(w.depth, 1);
    myr_json_free(&w);

    myr_json_init(&w);                  /* two top-level values */
    myr_json_obj_begin(&w);
    myr_json_obj_end(&w);
    myr_json_int(&w, 1);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    myr_json_init(&w);                  /* NULL key */
    myr_json_obj_begin(&w);
    myr_json_key(&w, NULL);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    /* Unfinished documents are reported at the end, but are not sticky
     * errors while being written. */
    myr_json_init(&w);
    myr_json_obj_begin(&w);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_key(&w, "a");
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_int(&w, 1);
    myr_json_obj_end(&w);
    assert_output(&w, "{\"a\":1}");
    myr_json_free(&w);

    /* The first error sticks and nothing more is written. */
    myr_json_init(&w);
    myr_json_arr_begin(&w);
    myr_json_key(&w, "k");
    size_t len = w.len;
    myr_json_int(&w, 1);
    myr_json_str(&w, "x");
    myr_json_arr_end(&w);
    assert_int_equal(w.len, len);
    assert_int_equal(myr_json_error(&w), -EINVAL);
    myr_json_free(&w);

    /* An empty writer is no error (and no allocation). */
    myr_json_init(&w);
    assert_int_equal(myr_json_error(&w), 0);
    assert_null(w.data);
    myr_json_free(&w);
}

static void test_large_array(void **state)
{
    enum { N = 100000 };
    myr_json w;
    myr_json_init(&w);
    myr_json_arr_begin(&w);
    for (int i = 0; i < N; i++)
        myr_json_int(&w, i);
    myr_json_arr_end(&w);
    assert_int_equal(myr_json_error(&w), 0);
    assert_true(parses(&w));
    /* Count the commas and check each element in order. */
    size_t commas = 0;
    for (size_t i = 0; i < w.len; i++)
        commas += w.data[i] == ',';
    assert_int_equal(commas, N - 1);
    char *p = w.data + 1;
    for (int i = 0; i < N; i++) {
        char *e;
        long v = strtol(p, &e, 10);
        assert_int_equal(v, i);
        assert_true(*e == (i == N - 1 ? ']' : ','));
        p = e + 1;
    }
    /* Geometric growth: a power-of-two multiple of the first capacity. */
    assert_true(w.cap >= w.len);
    assert_int_equal(w.cap % JSON_MIN_CAP, 0);
    assert_int_equal(__builtin_popcountl(w.cap / JSON_MIN_CAP), 1);
    myr_json_free(&w);

    /* Objects of strings in an array, to mix the paths. */
    myr_json_init(&w);
    myr_json_arr_begin(&w);
    for (int i = 0; i < 1000; i++) {
        myr_json_obj_begin(&w);
        myr_json_key(&w, "id");
        myr_json_int(&w, i);
        myr_json_key(&w, "name\n");
        myr_json_str(&w, "caf\xc3\xa9 \"x\"");
        myr_json_obj_end(&w);
    }
    myr_json_arr_end(&w);
    assert_int_equal(myr_json_error(&w), 0);
    assert_true(parses(&w));
    myr_json_free(&w);
}

static void test_long_strings(void **state)
{
    /* A long string grows the buffer mid-copy; escapes near the end too. */
    enum { N = 100000 };
    char *s = malloc(N);
    assert_non_null(s);
    for (size_t i = 0; i < N; i++)
        s[i] = (char)('a' + i % 26);
    s[N - 2] = '\n';
    s[N - 1] = '\x80';
    myr_json w;
    myr_json_init(&w);
    myr_json_strn(&w, s, N);
    assert_int_equal(myr_json_error(&w), 0);
    assert_int_equal(w.len, 2 + (N - 2) + 2 + 3);
    assert_memory_equal(w.data + 1, s, N - 2);
    assert_memory_equal(w.data + 1 + N - 2, "\\n" FFFD "\"", 6);
    myr_json_free(&w);

    /* Worst case: every byte becomes six. */
    memset(s, 1, N);
    myr_json_init(&w);
    myr_json_strn(&w, s, N);
    assert_int_equal(w.len, 2 + 6 * (size_t)N);
    assert_true(parses(&w));
    myr_json_free(&w);
    free(s);
}

/* Every allocation may fail: the error is -ENOMEM, sticky, leak-free. */
static void test_out_of_memory(void **state)
{
    int failures = 0;
    for (long k = 0;; k++) {
        myr_json w;
        myr_json_init(&w);
        alloc_fail_in = k;
        myr_json_arr_begin(&w);
        for (int i = 0; i < 200; i++) {
            myr_json_str(&w, "0123456789");
            myr_json_int(&w, i);
        }
        myr_json_arr_end(&w);
        bool failed = alloc_fail_in < 0;
        alloc_fail_in = -1;
        if (!failed) {
            assert_int_equal(myr_json_error(&w), 0);
            assert_true(parses(&w));
            myr_json_free(&w);
            break;
        }
        assert_int_equal(myr_json_error(&w), -ENOMEM);
        assert_true(w.len <= w.cap);
        failures++;
        myr_json_free(&w);
    }
    assert_true(failures >= 3);
}

/* Informal throughput, printed for the record; the bound is only there to
 * catch a pathological slowdown. */
static void test_throughput(void **state)
{
    enum { ITER = 200000 };
    struct timespec t0, t1;
    myr_json w;
    size_t bytes = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < ITER; i++) {
        myr_json_init(&w);
        myr_json_obj_begin(&w);
        myr_json_key(&w, "message");
        myr_json_str(&w, "Hello, World!");
        myr_json_obj_end(&w);
        bytes += w.len;
        myr_json_free(&w);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / ITER;
    assert_int_equal(bytes, (size_t)ITER * 27);
    print_message("techempower object incl. malloc/free: %.1f ns\n", ns);

    enum { LEN = 1 << 20 };
    char *s = malloc(LEN);
    assert_non_null(s);
    for (size_t i = 0; i < LEN; i++) {
        char c = (char)(' ' + i % 95);      /* printable ASCII */
        s[i] = c == '"' || c == '\\' ? 'x' : c;
    }
    myr_json_init(&w);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    myr_json_arr_begin(&w);
    for (int i = 0; i < 64; i++)
        myr_json_strn(&w, s, LEN);
    myr_json_arr_end(&w);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("ASCII string throughput: %.0f MB/s\n", 64.0 * LEN / sec / 1e6);
    assert_int_equal(myr_json_error(&w), 0);
    myr_json_free(&w);
    free(s);
    assert_true(ns < 100000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_techempower),
        cmocka_unit_test(test_all_value_types),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_max_depth),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_invalid),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_doubles),
        cmocka_unit_test(test_locale_decimal_point),
        cmocka_unit_test(test_misuse),
        cmocka_unit_test(test_large_array),
        cmocka_unit_test(test_long_strings),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
