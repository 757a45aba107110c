#!/usr/bin/python3
"""bench/plot.py — PNG charts of benchmark results, drawn by gnuplot.

    bench/plot.py --compare bench/results/S-core.json --c1m bench/results/S-c1m.json \
                  --idle bench/results/S-idle-memory.json --out DIR [--prefix P]

Reads the JSON that bench/compare, bench/c1m and bench/idle-memory write and
draws, for each file given:

  compare  P compare-rps.png       req/s per scenario and server (median, min–max)
           P compare-cpu.png       requests per server CPU-second, likewise
  c1m      P c1m-memory.png        user-space bytes per idle connection against
                                   connections held, one line per server (log
                                   scale), with the 256 B target
           P c1m-p99.png           /plaintext p99 against connections held, with
                                   the 10 ms target
  idle     P idle-memory.png       user-space bytes per idle connection per server

Prints the path of every chart written, one per line. Python 3 standard
library and gnuplot (pngcairo) only; the data and script of each chart go to
a temporary directory that is removed afterwards.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

SIZE = "960,480"
FONT = "sans,11"
# One colour per server, the same in every chart.
COLOURS = {"myriad": "#d62728", "ceiling": "#7f7f7f", "nginx": "#2ca02c",
           "h2o": "#9467bd", "node": "#1f77b4", "haproxy": "#ff7f0e"}


def colour(name, i):
    fallback = ["#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    return COLOURS.get(name, fallback[i % len(fallback)])


def gnuplot(script, workdir):
    path = os.path.join(workdir, "chart.gp")
    with open(path, "w") as f:
        f.write(script)
    out = subprocess.run(["gnuplot", path], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        sys.exit("plot.py: gnuplot failed: %s" % out.stderr.strip())


def header(png, title, ylabel):
    return "\n".join([
        "set terminal pngcairo size %s font '%s' noenhanced" % (SIZE, FONT),
        "set output '%s'" % png,
        "set title '%s'" % title.replace("'", "''"),
        "set ylabel '%s'" % ylabel,
        "set grid ytics lc rgb '#dddddd'",
        "set key top right",
        "set border 3", "set xtics nomirror", "set ytics nomirror", ""])


def bars(png, title, ylabel, groups, series, values, workdir, logscale=False):
    """Clustered bars: groups on x, one bar per series, with min–max error bars.

    values[(group, series)] = (median, min, max) or None.
    """
    data = os.path.join(workdir, "bars.dat")
    with open(data, "w") as f:
        for g in groups:
            row = ['"%s"' % g]
            for s in series:
                v = values.get((g, s))
                row += ["%g %g %g" % v if v else "NaN NaN NaN"]
            f.write(" ".join(row) + "\n")
    plots = []
    for i, s in enumerate(series):
        col = 2 + 3 * i
        plots.append("'%s' using %d:%d:%d%s title '%s' lc rgb '%s'" % (
            data, col, col + 1, col + 2, ":xtic(1)" if i == 0 else "", s, colour(s, i)))
    script = header(png, title, ylabel) + "\n".join([
        "set style data histograms",
        "set style histogram errorbars gap 2 lw 1",
        "set style fill solid 0.85 border -1",
        "set boxwidth 0.9",
        "set yrange [%s:*]" % ("1" if logscale else "0"),
        "set logscale y" if logscale else "",
        "set format y '%.1s%c'",
        "plot " + ", ".join(plots), ""])
    gnuplot(script, workdir)


def lines(png, title, ylabel, series, workdir, logscale=False, target=None):
    """One line per series: (label, server, [(x, y), ...], dashed); x in connections.

    A series takes its server's colour; dashed lines are the secondary measure.
    """
    plots = []
    servers = []
    for i, (label, server, points, dashed) in enumerate(series):
        if server not in servers:
            servers.append(server)
        if not points:
            continue
        data = os.path.join(workdir, "line-%d.dat" % i)
        with open(data, "w") as f:
            for x, y in points:
                f.write("%g %g\n" % (x / 1000.0, y))
        plots.append("'%s' using 1:2 title '%s' with linespoints lw %s pt %d %s lc rgb '%s'"
                     % (data, label, "1.5" if dashed else "2", 6 if dashed else 7,
                        "dt 3" if dashed else "dt 1", colour(server, servers.index(server))))
    if not plots:
        return False
    if target:
        plots.append("%g title 'target %g' with lines dt 2 lw 1.5 lc rgb '#444444'"
                     % (target, target))
    script = header(png, title, ylabel) + "\n".join([
        "set xlabel 'idle connections held (thousands)'",
        "set xrange [0:*]",
        "set logscale y" if logscale else "set yrange [0:*]",
        "set key outside right top",
        "plot " + ", ".join(plots), ""])
    gnuplot(script, workdir)
    return True


def spread_tuple(s):
    return (s["median"], s["min"], s["max"]) if s else None


def plot_compare(path, out, prefix, workdir):
    with open(path) as f:
        doc = json.load(f)
    summary = doc["summary"]
    servers = doc["meta"]["config"]["servers"]
    scenarios = [s["name"] for s in doc["meta"]["config"]["scenarios"] if s["name"] in summary]
    written = []
    for key, name, title, ylabel in (
            ("rps", "compare-rps.png", "Requests per second (single server core, wrk -t1 -c256)",
             "requests/s"),
            ("req_per_cpu_s", "compare-cpu.png", "Requests per server CPU-second",
             "requests per CPU-second")):
        values = {(sc, sv): spread_tuple(summary[sc].get(sv, {}).get(key))
                  for sc in scenarios for sv in servers}
        png = os.path.join(out, prefix + name)
        bars(png, title, ylabel, scenarios, servers, values, workdir)
        written.append(png)
    return written


def plot_c1m(path, out, prefix, workdir):
    with open(path) as f:
        doc = json.load(f)
    mem, p99 = [], []
    for r in doc["results"]:
        name = r["server"]
        ok = [p for p in r["steps"] if p.get("user_rss_bytes_per_conn") is not None]
        mem.append((name, name, [(p["held"], max(p["user_rss_bytes_per_conn"], 1))
                                 for p in ok], False))
        points = ([r["baseline"]] if r.get("baseline") else []) + r["steps"]
        for key, label, dashed in (("wrk_paced", name + " paced", False),
                                   ("wrk", name + " saturated", True)):
            p99.append((label, name, [(p["held"], p[key]["p99_ms"]) for p in points
                                      if key in p and p[key]["p99_ms"] is not None], dashed))
    written = []
    png = os.path.join(out, prefix + "c1m-memory.png")
    if lines(png, "User-space memory per idle connection (%d processes per server)"
             % doc["meta"]["config"]["workers"], "bytes per connection (log)", mem, workdir,
             logscale=True, target=256):
        written.append(png)
    png = os.path.join(out, prefix + "c1m-p99.png")
    if lines(png, "/plaintext p99 (wrk -t2 -c64; paced 6.4k req/s, and saturated) "
             "beside the idle connections",
             "p99 latency (ms, log)", p99, workdir, logscale=True, target=10):
        written.append(png)
    return written


def plot_idle(path, out, prefix, workdir):
    with open(path) as f:
        doc = json.load(f)
    rs = [r for r in doc["results"] if r.get("rss_bytes_per_conn") is not None]
    if not rs:
        return []
    servers = [r["server"] for r in rs]
    values = {("idle connection", r["server"]): (max(r["rss_bytes_per_conn"], 1),) * 3
              for r in rs}
    png = os.path.join(out, prefix + "idle-memory.png")
    bars(png, "User-space bytes per idle keep-alive connection (%d per server)"
         % doc["meta"]["config"]["n"], "bytes (log)", ["idle connection"], servers, values,
         workdir, logscale=True)
    return [png]


def main():
    p = argparse.ArgumentParser(description="Draw PNG charts of bench results with gnuplot.")
    p.add_argument("--compare", help="a bench/compare JSON (…-core.json)")
    p.add_argument("--c1m", help="a bench/c1m JSON")
    p.add_argument("--idle", help="a bench/idle-memory JSON")
    p.add_argument("--out", required=True, help="directory for the PNG files")
    p.add_argument("--prefix", default="", help="prefix of every file name")
    a = p.parse_args()
    if not shutil.which("gnuplot"):
        sys.exit("plot.py: gnuplot is not installed (apt-get install gnuplot-nox)")
    os.makedirs(a.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="bench-plot-")
    written = []
    try:
        if a.compare:
            written += plot_compare(a.compare, a.out, a.prefix, workdir)
        if a.c1m:
            written += plot_c1m(a.c1m, a.out, a.prefix, workdir)
        if a.idle:
            written += plot_idle(a.idle, a.out, a.prefix, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
