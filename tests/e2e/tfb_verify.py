"""A TechEmpower-style verifier for the database endpoints (/db, /queries,
/fortunes, /updates), following /work/shared/tfb-spec.md sections 0-5 and
8: headers, Content-Type patterns, JSON shape and types, the `queries`
clamping cases, and the fortunes body compared the way the toolset does
(html.parser tokens, character references folded) and byte for byte.

Every function raises AssertionError with the offending response.
"""

import email.utils
import html.parser
import json
import re

from client import Conn, request

JSON_CT = re.compile(r"^application/json(; ?charset=(UTF|utf)-8)?$")
HTML_CT = re.compile(r"^text/html; ?charset=(UTF|utf)-8$")

# (parameter text, expected length); 501 is a WARN in the toolset, we hold it to the rule.
QUERY_CASES = [("2", 2), ("0", 1), ("foo", 1), ("501", 500), ("", 1)]

FORTUNES = {
    1: "fortune: No such file or directory",
    2: "A computer scientist is someone who fixes things that aren't broken.",
    3: "After enough decimal places, nobody gives a damn.",
    4: "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1",
    5: "A computer program does what you tell it to do, not what you want it to do.",
    6: "Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom Christaensen",
    7: "Any program that runs right is obsolete.",
    8: "A list is only as strong as its weakest link. \u2014 Donald Knuth",
    9: "Feature: A bug with seniority.",
    10: "Computers make very fast, very accurate mistakes.",
    11: '<script>alert("This should not be displayed in a browser alert box.");</script>',
    12: "\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af",
}

# The spec's normalized body (section 4), line breaks removed.
FORTUNES_BODY = (
    "<!doctype html><html><head><title>Fortunes</title></head><body><table>"
    "<tr><th>id</th><th>message</th></tr>"
    "<tr><td>11</td><td>&lt;script&gt;alert(&quot;This should not be displayed in a browser "
    "alert box.&quot;);&lt;/script&gt;</td></tr>"
    "<tr><td>4</td><td>A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1</td></tr>"
    "<tr><td>5</td><td>A computer program does what you tell it to do, not what you want it to "
    "do.</td></tr>"
    "<tr><td>2</td><td>A computer scientist is someone who fixes things that aren&apos;t "
    "broken.</td></tr>"
    "<tr><td>8</td><td>A list is only as strong as its weakest link. \u2014 Donald Knuth</td></tr>"
    "<tr><td>0</td><td>Additional fortune added at request time.</td></tr>"
    "<tr><td>3</td><td>After enough decimal places, nobody gives a damn.</td></tr>"
    "<tr><td>7</td><td>Any program that runs right is obsolete.</td></tr>"
    "<tr><td>10</td><td>Computers make very fast, very accurate mistakes.</td></tr>"
    "<tr><td>6</td><td>Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom "
    "Christaensen</td></tr>"
    "<tr><td>9</td><td>Feature: A bug with seniority.</td></tr>"
    "<tr><td>1</td><td>fortune: No such file or directory</td></tr>"
    "<tr><td>12</td><td>\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de"
    "\u30fc\u30af</td></tr>"
    "</table></body></html>")

_CHARREFS = {34: "&quot;", 39: "&apos;", 43: "+", 62: "&gt;", 60: "&lt;", 47: "/", 40: "(",
             41: ")"}


class _Normalizer(html.parser.HTMLParser):
    """The toolset's FortuneHTMLParser rules (spec section 4)."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.out = []

    def handle_decl(self, decl):
        self.out.append("<!%s>" % decl.lower())

    def handle_starttag(self, tag, attrs):
        self.out.append("<%s>" % tag.lower())

    def handle_endtag(self, tag):
        self.out.append("</%s>" % tag.lower())

    def handle_data(self, data):
        if data.strip() == "":
            return
        self.out.append(data.replace("'", "&apos;").replace('"', "&quot;").replace(">", "&gt;"))

    def handle_charref(self, name):
        n = int(name[1:], 16) if name[:1] in "xX" else int(name)
        self.out.append(_CHARREFS.get(n, ""))

    def handle_entityref(self, name):
        self.out.append("\u2014" if name == "mdash" else "&%s;" % name)


def normalize_fortunes(body):
    p = _Normalizer()
    p.feed(body)
    p.close()
    return "".join(p.out)


def get(port, target, head=False, accept="application/json,text/html;q=0.9,*/*;q=0.7",
        timeout=15.0):
    with Conn(port, timeout=timeout) as c:
        c.send(request("HEAD" if head else "GET", target, headers=[("Accept", accept)]))
        r, _ = c.read_final(head=head)
        return r


def check_headers(r, ct_re, what):
    assert r.status == 200, f"{what}: status {r.status}: {r!r}"
    for h in ("Server", "Date", "Content-Type"):
        assert r.header(h), f"{what}: no {h} header: {r.raw_head!r}"
    assert r.header("Content-Length") or r.header("Transfer-Encoding"), \
        f"{what}: neither Content-Length nor Transfer-Encoding"
    assert email.utils.parsedate_to_datetime(r.header("Date")), f"{what}: bad Date"
    assert ct_re.match(r.header("Content-Type")), \
        f"{what}: Content-Type {r.header('Content-Type')!r}"


def check_world(obj, what):
    assert isinstance(obj, dict), f"{what}: not an object: {obj!r}"
    assert set(obj) == {"id", "randomNumber"}, f"{what}: keys {sorted(obj)}"
    for k in ("id", "randomNumber"):
        assert type(obj[k]) is int, f"{what}: {k} is not an integer: {obj!r}"
        assert 1 <= obj[k] <= 10000, f"{what}: {k} out of 1..10000: {obj!r}"


def check_db(port):
    r = get(port, "/db")
    check_headers(r, JSON_CT, "/db")
    obj = json.loads(r.body)
    check_world(obj, "/db")
    return obj


def check_query_cases(port, base, head=True):
    """base is e.g. '/queries?queries='; returns {param: rows}. head: also
    HEAD the bare URL (which runs the handler: an update for /updates)."""
    out = {}
    for param, n in QUERY_CASES:
        url = base + param
        r = get(port, url)
        check_headers(r, JSON_CT, url)
        rows = json.loads(r.body)
        assert isinstance(rows, list), f"{url}: not an array: {r.body[:200]!r}"
        assert len(rows) == n, f"{url}: {len(rows)} rows, expected {n}"
        for i, row in enumerate(rows):
            check_world(row, f"{url}[{i}]")
        out[param] = rows
    if head:
        r = get(port, base, head=True)
        assert r.status == 200, f"HEAD {base}: {r!r}"
    return out


def check_fortunes(port):
    r = get(port, "/fortunes",
            accept="text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    check_headers(r, HTML_CT, "/fortunes")
    body = r.body.decode("utf-8")
    assert normalize_fortunes(body) == FORTUNES_BODY, f"/fortunes differs:\n{body}"
    # and byte for byte: the spec's body with the doctype as written
    assert body == FORTUNES_BODY.replace("<!doctype", "<!DOCTYPE"), body
    return body
