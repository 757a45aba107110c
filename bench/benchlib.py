"""benchlib — what bench/compare and bench/idle-memory share.

Starting the servers under test (myriad, the ceiling, nginx, node) on free
loopback ports, pinned to one CPU; reading their CPU time and memory from
/proc, summed over each server's whole process tree; stopping exactly the
processes we started, by PID; installing missing Debian packages; building
the small C helpers; describing the machine.

Python 3 standard library only. Nothing here sends a byte anywhere but
127.0.0.1.
"""

import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

ALL_SERVERS = ("myriad", "ceiling", "nginx", "h2o", "node")

# command -> Debian package that provides it
PACKAGES = {
    "wrk": "wrk",
    "nginx": "nginx-light",
    "node": "nodejs",
    "h2o": "h2o",
    "cc": "gcc",
    "taskset": "util-linux",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


# ---------------------------------------------------------------- set-up

def ensure_commands(commands):
    """Install the Debian packages for missing commands, as root only.

    Not root: print the apt-get command and exit 1, as the README promises.
    """
    missing = [c for c in commands if shutil.which(c) is None]
    if not missing:
        return
    pkgs = sorted({PACKAGES[c] for c in missing})
    cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + pkgs
    if os.geteuid() != 0:
        log("missing commands: %s" % " ".join(missing))
        log("install them with:  sudo apt-get update && sudo %s" % " ".join(cmd))
        sys.exit(1)
    log("installing %s" % " ".join(pkgs))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(cmd, check=True, env=env)
    still = [c for c in commands if shutil.which(c) is None]
    if still:
        sys.exit("still missing after install: %s" % " ".join(still))


def build_c(source, out):
    """Compile one helper with cc -O2 and warnings as errors."""
    cmd = ["cc", "-std=gnu17", "-O2", "-Wall", "-Wextra", "-Werror",
           "-o", out, source]
    subprocess.run(cmd, check=True)
    return cmd


def free_port():
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_workdir(kind):
    """bench/results/tmp/<stamp>-<kind>/ (ignored by git) for logs and configs."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(BENCH_DIR, "results", "tmp", "%s-%s-%d" % (stamp, kind, os.getpid()))
    os.makedirs(path)
    return path


def cpu_list():
    return sorted(os.sched_getaffinity(0))


def pick_cpus():
    """(server CPU, client CPU): SERVER_CPU/CLIENT_CPU or 1 and 0.

    With one usable CPU both share it (and the report says so).
    """
    cpus = cpu_list()
    server = os.environ.get("SERVER_CPU") or str(cpus[1] if len(cpus) > 1 else cpus[0])
    client = os.environ.get("CLIENT_CPU") or str(cpus[0])
    return server, client


def install_signal_handlers():
    """SIGTERM/SIGHUP end the run like Ctrl-C, so `finally` blocks stop servers."""
    def to_exit(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, to_exit)


# ---------------------------------------------------------------- /proc

def read_stat(pid):
    """/proc/PID/stat as a dict, or None if the process is gone.

    The command name is in parentheses and may contain spaces, so fields are
    split after the last ')'.
    """
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = data[data.rindex(")") + 2:].split()
    return {
        "pid": pid,
        "ppid": int(rest[1]),
        "utime": int(rest[11]),      # clock ticks, all threads
        "stime": int(rest[12]),
        "starttime": int(rest[19]),  # ticks after boot: tells PID reuse apart
    }


def all_stats():
    """pid -> stat dict for every process on the machine."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st:
                stats[st["pid"]] = st
    return stats


def tree_pids(root, stats=None):
    """root and all its descendants, found through the ppid links."""
    stats = stats if stats is not None else all_stats()
    children = {}
    for st in stats.values():
        children.setdefault(st["ppid"], []).append(st["pid"])
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def cpu_ticks(stats, pids):
    return sum(stats[p]["utime"] + stats[p]["stime"] for p in pids if p in stats)


class CpuSnapshot:
    """CPU ticks of every process at one instant, to diff server vs others."""

    def __init__(self):
        self.t = time.monotonic()
        self.stats = all_stats()
        self.percpu = percpu_ticks()

    def key(self, pid):
        st = self.stats[pid]
        return (pid, st["starttime"])

    def ticks_by_proc(self):
        return {self.key(p): s["utime"] + s["stime"] for p, s in self.stats.items()}


_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def percpu_ticks():
    """cpu number -> ticks per state, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"^cpu(\d+)\s+(.*)$", line)
            if m:
                out[m.group(1)] = [int(x) for x in m.group(2).split()[:len(_CPU_FIELDS)]]
    return out


def percpu_delta(before, after, cpus):
    """Seconds each of `cpus` spent per state between two snapshots.

    With tick-based accounting (CONFIG_IRQ_TIME_ACCOUNTING unset) softirq
    ticks are charged to no process, so this is where the kernel's network
    work that process CPU times miss shows up.
    """
    out = {}
    for cpu in cpus:
        if cpu in before.percpu and cpu in after.percpu:
            out[cpu] = {name: round((a - b) / CLK_TCK, 2) for name, a, b in
                        zip(_CPU_FIELDS, after.percpu[cpu], before.percpu[cpu])}
    return out


def cpu_delta(before, after, server_pid, exclude_pids=()):
    """(server CPU-s, other processes' CPU-s, server pids) between snapshots.

    Server = the process tree under server_pid in either snapshot (a process
    that started and ended between them is missed: none should). Others =
    every other process that lived through both, minus exclude_pids (the load
    generator), i.e. the noise from the rest of the machine.
    """
    pids = set(tree_pids(server_pid, before.stats)) | set(tree_pids(server_pid, after.stats))
    b, a = before.ticks_by_proc(), after.ticks_by_proc()
    server = other = 0
    for key, ticks in a.items():
        if key not in b:
            continue  # started during the run: unknown baseline
        d = ticks - b[key]
        if key[0] in pids:
            server += d
        elif key[0] not in exclude_pids and key[0] != os.getpid():
            other += d
    # a server process that ended during the run still spent its ticks
    for key, ticks in b.items():
        if key[0] in pids and key not in a:
            log("warning: server process %d exited during the run" % key[0])
    return server / CLK_TCK, other / CLK_TCK, sorted(pids)


def memory_kb(pids):
    """Sum of Rss and Pss (KiB) over pids, from smaps_rollup (else status)."""
    rss = pss = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                text = f.read()
            rss += int(re.search(r"^Rss:\s+(\d+) kB", text, re.M).group(1))
            pss += int(re.search(r"^Pss:\s+(\d+) kB", text, re.M).group(1))
        except (FileNotFoundError, ProcessLookupError, AttributeError):
            try:
                with open("/proc/%d/status" % pid) as f:
                    m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
                if m:
                    rss += int(m.group(1))
                    pss += int(m.group(1))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return {"rss_kb": rss, "pss_kb": pss}


# ---------------------------------------------------------------- servers

def raise_nofile():
    """preexec_fn: the hard fd limit for the child (e.g. 20000 here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nofile_hard():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


class Server:
    """One server under test: how to start it, its process, its log."""

    def __init__(self, name, argv, workdir, port, note=""):
        self.name = name
        self.argv = argv
        self.port = port
        self.note = note
        self.log_path = os.path.join(workdir, "%s.log" % name)
        self.proc = None
        self.command = None

    def start(self, cpu):
        """Start pinned to `cpu` (taskset execs the server: same PID)."""
        self.command = ["taskset", "-c", cpu] + self.argv
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=logf,
            stderr=subprocess.STDOUT, preexec_fn=raise_nofile,
            start_new_session=True, cwd=ROOT)
        logf.close()

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout=15.0):
        """Wait until GET /plaintext answers 200; False if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                resp = http_exchange(self.port, ["/plaintext"], timeout=1.0)
                if resp and resp[0]["status"] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self):
        """SIGTERM the server, then SIGKILL whatever of its tree remains.

        Only PIDs we saw in its process tree, still with the start time we
        saw, are signalled: never a process we did not start.
        """
        if self.proc is None:
            return
        stats = all_stats()
        tree = [(p, stats[p]["starttime"]) for p in tree_pids(self.proc.pid, stats)]
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            left = [(p, t) for p, t in tree if (read_stat(p) or {}).get("starttime") == t]
            if not left:
                break
            time.sleep(0.1)
        for pid, start in tree:
            st = read_stat(pid)
            if st and st["starttime"] == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None


def nginx_temp_paths(prefix):
    """temp-path directives for the modules this nginx was built with."""
    out = subprocess.run(["nginx", "-V"], capture_output=True, text=True)
    info = out.stdout + out.stderr
    lines = []
    for mod in ("proxy", "fastcgi", "uwsgi", "scgi"):
        if "--without-http_%s_module" % mod not in info:
            lines.append("    %s_temp_path %s/%s;" % (mod, prefix, mod))
    return "\n".join(lines)


def nginx_user_line():
    """As root, run the workers as root too (the invoking user), not nobody."""
    if os.geteuid() != 0:
        return ""
    import grp
    import pwd
    return "user %s %s;" % (pwd.getpwuid(os.geteuid()).pw_name,
                            grp.getgrgid(os.getegid()).gr_name)


def write_nginx_conf(workdir, port, workers):
    prefix = os.path.join(workdir, "nginx")
    os.makedirs(prefix, exist_ok=True)
    with open(os.path.join(BENCH_DIR, "peers", "nginx", "nginx.conf")) as f:
        text = f.read()
    nofile = nofile_hard()
    values = {
        "USER": nginx_user_line(),
        "WORKERS": str(workers),
        "NOFILE": str(nofile),
        # Above the fd limit on purpose: nginx closes idle keep-alive
        # connections once fewer than 1/16 of worker_connections are free,
        # which would cut bench/idle-memory short at ~19000 of 20000.
        "WORKER_CONNECTIONS": str(nofile + nofile // 4),
        "PREFIX": prefix,
        "TEMP_PATHS": nginx_temp_paths(prefix),
        "PORT": str(port),
        "REUSEPORT": " reuseport" if workers > 1 else "",
    }
    for key, value in values.items():
        text = text.replace("@%s@" % key, value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        sys.exit("nginx.conf template: unknown placeholders %s" % leftover)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(text)
    return prefix, conf


def write_h2o_conf(workdir, port, workers):
    """h2o's configuration and its two body files under workdir/h2o/."""
    prefix = os.path.join(workdir, "h2o")
    os.makedirs(prefix, exist_ok=True)
    for name, body in (("plaintext.txt", EXPECTED["/plaintext"][0]),
                       ("message.json", EXPECTED["/json"][0])):
        with open(os.path.join(prefix, name), "wb") as f:
            f.write(body)
    with open(os.path.join(BENCH_DIR, "peers", "h2o", "h2o.conf")) as f:
        text = f.read()
    user = ""
    if os.geteuid() == 0:
        import pwd
        user = "user: %s" % pwd.getpwuid(os.geteuid()).pw_name
    values = {"USER": user, "WORKERS": str(workers), "MAX_CONNECTIONS": str(nofile_hard()),
              "PREFIX": prefix, "PORT": str(port)}
    for key, value in values.items():
        text = text.replace("@%s@" % key, value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        sys.exit("h2o.conf template: unknown placeholders %s" % leftover)
    conf = os.path.join(prefix, "h2o.conf")
    with open(conf, "w") as f:
        f.write(text)
    return conf


def myriad_bin():
    path = os.environ.get("MYRIAD_BIN") or os.path.join(ROOT, "build", "release", "myriad")
    return os.path.abspath(path)


def select_servers(default=ALL_SERVERS):
    """Names from SERVERS (comma or space separated), in the canonical order."""
    raw = os.environ.get("SERVERS", "")
    names = [n for n in re.split(r"[,\s]+", raw) if n] or list(default)
    bad = [n for n in names if n not in ALL_SERVERS]
    if bad:
        sys.exit("unknown server(s) %s; choose from %s" % (bad, ", ".join(ALL_SERVERS)))
    return [n for n in ALL_SERVERS if n in names]


def needed_commands(names):
    need = {"taskset"}
    if "ceiling" in names:
        need.add("cc")
    if "nginx" in names:
        need.add("nginx")
    if "node" in names:
        need.add("node")
    if "h2o" in names:
        need.add("h2o")
    return need


def make_server(name, workdir, workers, ceiling_bin=None):
    """A Server for `name` with `workers` server processes, or (None, reason)."""
    port = free_port()
    if name == "myriad":
        binary = myriad_bin()
        if not os.access(binary, os.X_OK):
            return None, "no executable at %s (build it with make, or set MYRIAD_BIN)" % binary
        argv = [binary, "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]
        return Server(name, argv, workdir, port), ""
    if name == "ceiling":
        if workers != 1:
            return None, "the ceiling server is single-threaded (workers=1 only)"
        argv = [ceiling_bin, "--host", HOST, "--port", str(port)]
        return Server(name, argv, workdir, port), ""
    if name == "nginx":
        prefix, conf = write_nginx_conf(workdir, port, workers)
        argv = ["nginx", "-p", prefix + "/", "-c", conf, "-e", "stderr"]
        return Server(name, argv, workdir, port, note="master + %d worker(s)" % workers), ""
    if name == "h2o":
        conf = write_h2o_conf(workdir, port, workers)
        argv = ["h2o", "-m", "worker", "-c", conf]
        return Server(name, argv, workdir, port, note="one process, %d thread(s)" % workers), ""
    if name == "node":
        argv = ["node", os.path.join(BENCH_DIR, "peers", "node", "server.js"),
                "--host", HOST, "--port", str(port)]
        if workers > 1:
            argv += ["--cluster", str(workers)]
        return Server(name, argv, workdir, port), ""
    raise ValueError(name)


# ---------------------------------------------------------------- HTTP check

def _parse_responses(data, want):
    """Parse up to `want` HTTP/1.1 responses with Content-Length bodies."""
    out, pos = [], 0
    while len(out) < want:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return out, False
        head = data[pos:end].decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        body_start = end + 4
        if len(data) < body_start + length:
            return out, False
        out.append({"status": status, "headers": headers,
                    "body": data[body_start:body_start + length]})
        pos = body_start + length
    return out, True


def http_exchange(port, paths, timeout=3.0):
    """Send GETs for `paths` in one write (pipelined); return parsed responses."""
    req = b"".join(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % p.encode() for p in paths)
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(req)
        data = b""
        while True:
            got, complete = _parse_responses(data, len(paths))
            if complete:
                return got
            chunk = s.recv(65536)
            if not chunk:
                return got
            data += chunk


EXPECTED = {
    "/plaintext": (b"Hello, World!", "text/plain"),
    "/json": (b'{"message":"Hello, World!"}', "application/json"),
}


def check_server(server):
    """Check both endpoints, pipelined, before measuring. Returns problems."""
    paths = ["/plaintext", "/json", "/plaintext"]
    problems = []
    try:
        resps = http_exchange(server.port, paths)
    except OSError as e:
        return ["request failed: %s" % e]
    if len(resps) != len(paths):
        return ["%d of %d pipelined responses received" % (len(resps), len(paths))]
    for path, r in zip(paths, resps):
        body, ctype = EXPECTED[path]
        if r["status"] != 200:
            problems.append("%s: status %d" % (path, r["status"]))
        if path == "/json":
            try:
                ok = json.loads(r["body"]) == {"message": "Hello, World!"}
            except ValueError:
                ok = False
        else:
            ok = r["body"] == body
        if not ok:
            problems.append("%s: body %r" % (path, r["body"][:60]))
        if not r["headers"].get("content-type", "").startswith(ctype):
            problems.append("%s: content-type %r" % (path, r["headers"].get("content-type")))
        for h in ("server", "date"):
            if h not in r["headers"]:
                problems.append("%s: no %s header" % (path, h.capitalize()))
    return problems


# ---------------------------------------------------------------- machine

def _first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def machine_info():
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            model = m.group(1).strip() if m else None
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[:3]
    commit = _first_line(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "usable_cpus": cpu_list(),
        "memory_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "loadavg_at_start": loadavg,
        "nofile_hard_limit": nofile_hard(),
        "myriad_commit": commit if commit and re.fullmatch(r"[0-9a-f]+", commit) else None,
        "versions": {
            "nginx": _first_line(["nginx", "-v"]),
            "node": _first_line(["node", "--version"]),
            "h2o": _first_line(["h2o", "--version"]),
            "wrk": _first_line(["wrk", "-v"]),
            "gcc": _first_line(["cc", "--version"]),
            "python": platform.python_version(),
            "myriad": (_first_line([myriad_bin(), "--version"])
                       if os.access(myriad_bin(), os.X_OK) else None),
        },
    }
