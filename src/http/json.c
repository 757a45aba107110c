/* json — a streaming JSON writer that appends compact text to one buffer.
 *
 * Handlers build a response body with myr_json_obj_begin/key/str/...; the
 * bytes go straight into w->data, which myr_respond_json (elsewhere) sends.
 * There is no document tree: the writer keeps only what it needs to place
 * punctuation, in the myr_json struct itself:
 *
 *   depth       number of open containers; 0 is the top level
 *   first       bit d set: the container at depth d has no member yet, so
 *               its next member needs no comma
 *   in_object   bit d set: the container at depth d is an object, so its
 *               members alternate key, value
 *   want_value  a key has been written and its value comes next
 *
 * Bit 0 of both masks is never set: the top level holds exactly one value,
 * and "a value has been written there" is simply len > 0.
 *
 * Errors are sticky: the first misuse (-EINVAL) or failed allocation
 * (-ENOMEM) is kept in w->error and every later call does nothing, so a
 * handler writes its whole document and checks once at the end.
 *
 * Strings are the hot path (the TechEmpower JSON test is one short string):
 * runs of bytes that need no escaping are found eight at a time and copied
 * with memcpy; only quotes, backslashes, control characters and non-ASCII
 * bytes take the slow path, where UTF-8 is validated and each ill-formed
 * subsequence becomes U+FFFD.
 */
#include "http/json.h"

#include <assert.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tests replace the allocator to exercise -ENOMEM. */
#ifndef json_realloc
#define json_realloc realloc
#endif

static_assert(JSON_MAX_DEPTH < 64, "each depth needs its own bit in first/in_object");

/* Longest text a number can take: "-9223372036854775808" is 20 bytes, and
 * "%.17g" of a double at most 24 ("-2.2250738585072014e-308"). */
#define NUM_MAX 32

/* ---- buffer ---------------------------------------------------------------- */

static void set_error(myr_json *w, int err)
{
    if (!w->error)
        w->error = err;
}

/* Grows data so that n more bytes fit. Geometric (doubling) so a long
 * document costs amortised O(1) per byte. False with -ENOMEM on failure;
 * data is then unchanged. */
static bool grow(myr_json *w, size_t n)
{
    size_t need = w->len + n;
    if (need < w->len) {
        set_error(w, -ENOMEM);
        return false;
    }
    size_t cap = w->cap ? w->cap : JSON_MIN_CAP;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = json_realloc(w->data, cap);
    if (!p) {
        set_error(w, -ENOMEM);
        return false;
    }
    w->data = p;
    w->cap = cap;
    return true;
}

static inline bool reserve(myr_json *w, size_t n)
{
    if (__builtin_expect(w->cap - w->len >= n, 1))
        return true;
    return grow(w, n);
}

/* Appends bytes that were reserved already. */
static inline void put(myr_json *w, const void *p, size_t n)
{
    memcpy(w->data + w->len, p, n);
    w->len += n;
}

/* ---- punctuation ----------------------------------------------------------- */

static inline uint64_t depth_bit(const myr_json *w)
{
    return (uint64_t)1 << w->depth;
}

/* Checks that a value may come next, reserves room for a separator and n
 * more bytes, writes the separator and returns where the value goes (the
 * caller advances w->len past what it writes). NULL on error. */
static char *value_room(myr_json *w, size_t n)
{
    if (w->error)
        return NULL;
    uint64_t bit = depth_bit(w);
    bool comma = false;
    if (w->in_object & bit) {
        if (!w->want_value)
            goto misuse;                /* a value where a key belongs */
    } else if (w->depth == 0) {
        if (w->len > 0)
            goto misuse;                /* a second top-level value */
    } else {
        comma = !(w->first & bit);
    }
    if (!reserve(w, n + 1))
        return NULL;
    w->want_value = false;
    w->first &= ~bit;
    char *p = w->data + w->len;
    if (comma)
        *p++ = ',';
    w->len = (size_t)(p - w->data);
    return p;
misuse:
    set_error(w, -EINVAL);
    return NULL;
}

/* Appends a fixed token (true, false, null, a formatted number) as a value. */
static void put_value(myr_json *w, const char *s, size_t n)
{
    if (value_room(w, n))
        put(w, s, n);
}

/* ---- strings --------------------------------------------------------------- */

/* 1 for bytes copied as they are: printable ASCII except '"' and '\\'. */
static const uint8_t plain[256] = {
    [0x20 ... 0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0x7f] = 1,
};

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* True if any byte of x is < 0x20, '"', '\\' or >= 0x80. Exact, not
 * approximate: each test below flags a byte only if some byte qualifies
 * (the classic "has zero byte" trick with its high bits masked by ~x). */
static inline bool word_needs_escape(uint64_t x)
{
    uint64_t ctl = (x - ONES * 0x20) & ~x;
    uint64_t q   = x ^ (ONES * '"');
    uint64_t bs  = x ^ (ONES * '\\');
    uint64_t quo = (q - ONES) & ~q;
    uint64_t bsl = (bs - ONES) & ~bs;
    return ((ctl | quo | bsl) & HIGHS) || (x & HIGHS);
}

/* Length of the run of plain bytes at the start of s[0..n). */
static size_t plain_run(const unsigned char *s, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        if (word_needs_escape(x))
            break;
    }
    while (i < n && plain[s[i]])
        i++;
    return i;
}

/* Returns the length (2..4) of the well-formed UTF-8 sequence starting at
 * s[0] (a byte >= 0x80), or minus the length (1..3) of its maximal ill-formed
 * subpart, which is replaced by one U+FFFD (Unicode 15, §3.9, "U+FFFD
 * Substitution of Maximal Subparts"). The second-byte ranges exclude
 * overlong forms (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and code
 * points past U+10FFFF (F4 90..); C0, C1 and F5..FF never start a sequence. */
static int utf8_sequence(const unsigned char *s, size_t n)
{
    unsigned c = s[0], lo = 0x80, hi = 0xbf;
    int len;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return -1;
    }
    if (n < 2 || s[1] < lo || s[1] > hi)
        return -1;
    for (int k = 2; k < len; k++)
        if ((size_t)k >= n || (s[k] & 0xc0) != 0x80)
            return -k;
    return len;
}

/* Writes the escape for one byte that plain[] rejects, or for the UTF-8
 * sequence it starts. Returns the input bytes consumed (>= 1). */
static size_t escape_one(myr_json *w, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!reserve(w, 6))
        return n;
    unsigned c = s[0];
    char e[6] = { '\\', 0, '0', '0', 0, 0 };
    switch (c) {
    case '"':  e[1] = '"';  put(w, e, 2); return 1;
    case '\\': e[1] = '\\'; put(w, e, 2); return 1;
    case '\n': e[1] = 'n';  put(w, e, 2); return 1;
    case '\r': e[1] = 'r';  put(w, e, 2); return 1;
    case '\t': e[1] = 't';  put(w, e, 2); return 1;
    case '\b': e[1] = 'b';  put(w, e, 2); return 1;
    case '\f': e[1] = 'f';  put(w, e, 2); return 1;
    }
    if (c < 0x20) {
        e[1] = 'u';
        e[4] = hex[c >> 4];
        e[5] = hex[c & 15];
        put(w, e, 6);
        return 1;
    }
    int len = utf8_sequence(s, n);
    if (len < 0) {
        put(w, "\xef\xbf\xbd", 3);
        return (size_t)-len;
    }
    /* U+2028 and U+2029 are valid JSON but end a line in JavaScript source
     * before ES2019: escaped so the output can be embedded in a <script>. */
    if (len == 3 && c == 0xe2 && s[1] == 0x80 && (s[2] == 0xa8 || s[2] == 0xa9)) {
        put(w, s[2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
        return 3;
    }
    put(w, s, (size_t)len);
    return (size_t)len;
}

/* Appends s[0..n) as a quoted, escaped JSON string. */
static void put_string(myr_json *w, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    /* Enough for the common case of nothing to escape; escapes reserve more. */
    if (!reserve(w, n + 2))
        return;
    put(w, "\"", 1);
    size_t i = 0;
    while (i < n) {
        size_t run = plain_run(s + i, n - i);
        if (run) {
            if (!reserve(w, run))
                return;
            put(w, s + i, run);
            i += run;
            if (i == n)
                break;
        }
        i += escape_one(w, s + i, n - i);
        if (w->error)
            return;
    }
    if (reserve(w, 1))
        put(w, "\"", 1);
}

/* ---- numbers --------------------------------------------------------------- */

static const char digit_pairs[200] =
    "0001020304050607080910111213141516171819"
    "2021222324252627282930313233343536373839"
    "4041424344454647484950515253545556575859"
    "6061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Writes v in decimal at out (room for 20 bytes); returns the length.
 * Two digits per division halves the divisions of a plain loop. */
static size_t format_u64(char *out, uint64_t v)
{
    char tmp[20];
    char *t = tmp + sizeof tmp;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        t -= 2;
        memcpy(t, digit_pairs + 2 * r, 2);
    }
    if (v >= 10) {
        t -= 2;
        memcpy(t, digit_pairs + 2 * v, 2);
    } else {
        *--t = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof tmp - t);
    memcpy(out, t, n);
    return n;
}

static size_t format_i64(char *out, int64_t v)
{
    if (v >= 0)
        return format_u64(out, (uint64_t)v);
    out[0] = '-';
    /* Negate in unsigned arithmetic: -INT64_MIN overflows int64_t. */
    return 1 + format_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

/* snprintf writes the locale's decimal point (',' in de_DE, even several
 * bytes in some locales). Rewrites buf in place with '.'; returns the new
 * length. */
static size_t c_locale_point(char *buf, size_t n)
{
    size_t o = 0;
    bool in_point = false;
    for (size_t i = 0; i < n; i++) {
        char c = buf[i];
        bool numeric = (c >= '0' && c <= '9') || c == '-' || c == '+' ||
                       c == 'e' || c == 'E';
        if (numeric)
            buf[o++] = c;
        else if (!in_point)
            buf[o++] = '.';
        in_point = !numeric;
    }
    return o;
}

/* Writes a finite double as the first of %.15g, %.16g, %.17g that reads
 * back as the same value; 17 digits always do. That is the shortest form
 * for a normal double: 15-digit decimals are spaced wider than doubles, so
 * if some decimal of 15 or fewer digits reads back as v, it is the 15-digit
 * decimal nearest to v, which is what %.15g prints (with trailing zeros
 * dropped). Integers of magnitude below 2^53 skip printf and are written
 * whole. Returns the length. */
static size_t format_double(char *buf, double v)
{
    if (v == 0)
        return signbit(v) ? (memcpy(buf, "-0", 2), 2) : (buf[0] = '0', 1);
    if (fabs(v) < 9007199254740992.0 && v == trunc(v))
        return format_i64(buf, (int64_t)v);
    /* Subnormals carry fewer than 15 digits of precision, so there the
     * shortest form may be much shorter ("5e-324"): search from 1. */
    int n = 0;
    for (int prec = fabs(v) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
        n = snprintf(buf, NUM_MAX, "%.*g", prec, v);
        if (prec == 17 || strtod(buf, NULL) == v)
            break;
    }
    assert(n > 0 && n < NUM_MAX);
    return c_locale_point(buf, (size_t)n);
}

/* ---- public API -------------------------------------------------------------- */

void myr_json_init(myr_json *w)
{
    *w = (myr_json){ 0 };
}

void myr_json_free(myr_json *w)
{
    free(w->data);
    myr_json_init(w);
}

int myr_json_error(const myr_json *w)
{
    if (w->error)
        return w->error;
    /* An unclosed container (or a key still waiting for its value, which
     * implies one) would send broken JSON: report it too, so one check at
     * the end catches it. */
    if (w->depth > 0)
        return -EINVAL;
    return 0;
}

static void open_container(myr_json *w, char c, bool object)
{
    if (!w->error && w->depth >= JSON_MAX_DEPTH) {
        set_error(w, -EINVAL);
        return;
    }
    char *p = value_room(w, 1);
    if (!p)
        return;
    *p = c;
    w->len++;
    w->depth++;
    uint64_t bit = depth_bit(w);
    w->first |= bit;
    if (object)
        w->in_object |= bit;
    else
        w->in_object &= ~bit;
}

static void close_container(myr_json *w, char c, bool object)
{
    if (w->error)
        return;
    uint64_t bit = depth_bit(w);
    if (w->depth == 0 || !(w->in_object & bit) != !object || w->want_value) {
        set_error(w, -EINVAL);
        return;
    }
    if (!reserve(w, 1))
        return;
    put(w, &c, 1);
    w->first &= ~bit;
    w->in_object &= ~bit;
    w->depth--;
}

void myr_json_obj_begin(myr_json *w) { open_container(w, '{', true); }
void myr_json_obj_end(myr_json *w)   { close_container(w, '}', true); }
void myr_json_arr_begin(myr_json *w) { open_container(w, '[', false); }
void myr_json_arr_end(myr_json *w)   { close_container(w, ']', false); }

void myr_json_keyn(myr_json *w, const char *key, size_t len)
{
    if (w->error)
        return;
    uint64_t bit = depth_bit(w);
    if (!(w->in_object & bit) || w->want_value || (!key && len)) {
        set_error(w, -EINVAL);
        return;
    }
    if (!(w->first & bit)) {
        if (!reserve(w, 1))
            return;
        put(w, ",", 1);
    }
    w->first &= ~bit;
    put_string(w, key ? key : "", len);
    if (reserve(w, 1)) {
        put(w, ":", 1);
        w->want_value = true;
    }
}

void myr_json_key(myr_json *w, const char *key)
{
    if (!key) {
        set_error(w, -EINVAL);
        return;
    }
    myr_json_keyn(w, key, strlen(key));
}

/* A NULL string is written as null: an absent optional field needs no
 * special case in the handler. */
void myr_json_strn(myr_json *w, const char *s, size_t len)
{
    if (!s) {
        myr_json_null(w);
        return;
    }
    if (value_room(w, 0))
        put_string(w, s, len);
}

void myr_json_str(myr_json *w, const char *s)
{
    myr_json_strn(w, s, s ? strlen(s) : 0);
}

void myr_json_int(myr_json *w, int64_t v)
{
    char *p = value_room(w, NUM_MAX);
    if (p)
        w->len += format_i64(p, v);
}

void myr_json_uint(myr_json *w, uint64_t v)
{
    char *p = value_room(w, NUM_MAX);
    if (p)
        w->len += format_u64(p, v);
}

void myr_json_double(myr_json *w, double v)
{
    if (!isfinite(v)) {
        myr_json_null(w);           /* JSON has no NaN or Infinity */
        return;
    }
    char buf[NUM_MAX];
    put_value(w, buf, format_double(buf, v));
}

void myr_json_bool(myr_json *w, bool v)
{
    if (v)
        put_value(w, "true", 4);
    else
        put_value(w, "false", 5);
}

void myr_json_null(myr_json *w)
{
    put_value(w, "null", 4);
}
