"""A strict parser of the Prometheus text exposition format, version 0.0.4,
for the end-to-end tests of /metrics (tests/e2e/test_metrics.py), next to
`promtool check metrics`.

It accepts exactly what the format allows and raises FormatError (an
AssertionError) naming the line for anything else: a malformed line, a
bad escape, a TYPE after the family's first sample or given twice, a
family whose samples are not contiguous, a repeated series, a histogram
whose buckets are not cumulative, lack +Inf, or disagree with _count.

    fams = parse(text)
    fams["myriad_http_requests_total"].value(method="GET", status="2xx")
"""

import math
import re

__all__ = ["FormatError", "Family", "parse"]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_NAME_RE = re.compile(_NAME + r"$")
_HELP_RE = re.compile(r"# HELP (" + _NAME + r")(?: (.*))?$")
_TYPE_RE = re.compile(r"# TYPE (" + _NAME + r") (counter|gauge|histogram|summary|untyped)$")
_SAMPLE_RE = re.compile(r"(" + _NAME + r")(\{.*\})? ([^ ]+)(?: (-?[0-9]+))?$")
_LABEL_RE = re.compile(r"(" + _LABEL + r')="((?:[^"\\\n]|\\[\\"n])*)"')
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")


class FormatError(AssertionError):
    pass


class Family:
    def __init__(self, name):
        self.name = name
        self.type = "untyped"
        self.help = None
        self.samples = []          # (sample name, {label: value}, float)

    def series(self, suffix="", **labels):
        """Samples named name+suffix whose labels include `labels`."""
        want = self.name + suffix
        return [(lb, v) for n, lb, v in self.samples
                if n == want and all(lb.get(k) == str(x) for k, x in labels.items())]

    def value(self, suffix="", **labels):
        """The value of the one sample matching exactly these labels."""
        want = {k: str(v) for k, v in labels.items()}
        hits = [v for n, lb, v in self.samples if n == self.name + suffix and lb == want]
        if len(hits) != 1:
            raise AssertionError(f"{self.name}{suffix}{want}: {len(hits)} samples "
                                 f"(have {self.samples[:8]}...)")
        return hits[0]

    def total(self, suffix="", **labels):
        """Sum over the samples that include `labels`."""
        return sum(v for _, v in self.series(suffix, **labels))


def _unescape(s, quote):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(s):
            raise FormatError(f"dangling backslash in {s!r}")
        n = s[i + 1]
        if n == "\\":
            out.append("\\")
        elif n == "n":
            out.append("\n")
        elif n == '"' and quote:
            out.append('"')
        elif quote:
            raise FormatError(f"bad escape \\{n} in {s!r}")
        else:   # HELP: any other backslash is literal
            out.append("\\" + n)
        i += 2
    return "".join(out)


def _float(s, where):
    if s in ("NaN", "+Inf", "-Inf"):
        return float(s.replace("Inf", "inf"))
    if not _FLOAT_RE.match(s):
        raise FormatError(f"{where}: bad value {s!r}")
    return float(s)


def _labels(text, where):
    if text is None:
        return {}
    body = text[1:-1]
    out, pos = {}, 0
    while pos < len(body):
        m = _LABEL_RE.match(body, pos)
        if not m:
            raise FormatError(f"{where}: bad label set {text!r}")
        name, value = m.group(1), _unescape(m.group(2), True)
        if name in out:
            raise FormatError(f"{where}: label {name} repeated")
        out[name] = value
        pos = m.end()
        if pos < len(body):
            if body[pos] != ",":
                raise FormatError(f"{where}: expected ',' in {text!r}")
            pos += 1
    return out


def _family_of(sample, fams):
    """The declared family a sample name belongs to."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample[:-len(suffix)] if sample.endswith(suffix) else None
        if base and base in fams and fams[base].type in ("histogram", "summary"):
            return base
    return sample


def _check_histogram(f):
    groups = {}
    for name, lb, v in f.samples:
        key = tuple(sorted((k, x) for k, x in lb.items() if k != "le"))
        g = groups.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if name == f.name + "_bucket":
            if "le" not in lb:
                raise FormatError(f"{f.name}: bucket without le: {lb}")
            g["buckets"].append((_float(lb["le"], f.name), v))
        elif name == f.name + "_sum":
            g["sum"] = v
        elif name == f.name + "_count":
            g["count"] = v
        else:
            raise FormatError(f"{f.name}: unexpected sample {name} in a histogram")
    for key, g in groups.items():
        bs = g["buckets"]
        if not bs or bs[-1][0] != math.inf:
            raise FormatError(f"{f.name}{dict(key)}: no +Inf bucket last")
        if [b for b, _ in bs] != sorted(b for b, _ in bs):
            raise FormatError(f"{f.name}{dict(key)}: le not ascending")
        counts = [c for _, c in bs]
        if counts != sorted(counts):
            raise FormatError(f"{f.name}{dict(key)}: buckets not cumulative: {counts}")
        if g["count"] is None or g["sum"] is None or g["count"] != counts[-1]:
            raise FormatError(f"{f.name}{dict(key)}: _count/_sum missing or != +Inf bucket")


def parse(text):
    """Returns {family name: Family}. Raises FormatError."""
    if not text.endswith("\n"):
        raise FormatError("the exposition must end with a newline")
    fams, done, current, seen = {}, set(), None, set()
    for no, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {no}: {line[:120]!r}"
        if line == "":
            continue
        if line.startswith("#"):
            m = _HELP_RE.match(line) if line.startswith("# HELP ") else None
            t = _TYPE_RE.match(line) if line.startswith("# TYPE ") else None
            if line.startswith("# HELP ") and not m or line.startswith("# TYPE ") and not t:
                raise FormatError(f"{where}: malformed HELP/TYPE line")
            name = (m or t).group(1) if (m or t) else None
            if name is None:
                continue   # a plain comment
            if name in done or (name in fams and fams[name].samples):
                raise FormatError(f"{where}: HELP/TYPE after the family's samples")
            f = fams.setdefault(name, Family(name))
            if m:
                if f.help is not None:
                    raise FormatError(f"{where}: second HELP for {name}")
                f.help = _unescape(m.group(2) or "", False)
            else:
                if f.type != "untyped" or getattr(f, "_typed", False):
                    raise FormatError(f"{where}: second TYPE for {name}")
                f.type, f._typed = t.group(2), True
            if current and current != name:
                done.add(current)
            current = name
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise FormatError(f"{where}: malformed sample")
        sample, labels = m.group(1), _labels(m.group(2), where)
        value = _float(m.group(3), where)
        fam = _family_of(sample, fams)
        if fam in done:
            raise FormatError(f"{where}: samples of {fam} are not contiguous")
        if current and current != fam:
            done.add(current)
        current = fam
        f = fams.setdefault(fam, Family(fam))
        key = (sample, tuple(sorted(labels.items())))
        if key in seen:
            raise FormatError(f"{where}: series repeated")
        seen.add(key)
        if f.type == "counter" and (sample != fam or value < 0):
            raise FormatError(f"{where}: counter sample must be {fam} and >= 0")
        f.samples.append((sample, labels, value))
    for f in fams.values():
        if f.type == "histogram":
            _check_histogram(f)
    return fams
