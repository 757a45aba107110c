"""PostgreSQL servers for the end-to-end tests: a primary, streaming
replicas (pg_basebackup -R) and independent clusters (shards), each on a
free loopback port with its data and unix socket in a temporary directory.

PostgreSQL refuses to run as root: as root, every server command runs as
the `postgres` user (runuser), and the temporary directory is made
traversable for it. Every wait is bounded; stop() and the module-level
cleanup stop only the servers started here, through pg_ctl on their own
data directories.

    with pg.Workspace() as ws:
        primary = ws.primary()                 # initdb + TFB role/database
        replica = ws.replica(primary)
        shard = ws.primary(name="shard1")
        primary.url                            # postgres://benchmarkdbuser:...@127.0.0.1:PORT/hello_world
        primary.psql("SELECT 1")               # as the superuser, in hello_world
"""

import os
import shutil
import subprocess
import tempfile
import time

from client import free_port

PGBIN = "/usr/lib/postgresql/15/bin"
USER, PASSWORD, DBNAME = "benchmarkdbuser", "benchmarkdbpass", "hello_world"
TIMEOUT = 60

CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sock}'
max_connections = 300
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = replica
max_wal_senders = 10
hot_standby = on
hot_standby_feedback = on
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
logging_collector = off
log_min_messages = warning
"""

HBA = """
local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


def _as_pg(argv):
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + argv
    return argv


def _run(argv, timeout=TIMEOUT, check=True):
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(argv), p.returncode, p.stdout,
                                                       p.stderr))
    return p


def _chown_pg(path):
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


class Server:
    """One PostgreSQL server (primary or replica) with its own data dir."""

    def __init__(self, ws, name):
        self.ws = ws
        self.name = name
        self.dir = os.path.join(ws.dir, name)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = free_port()
        os.makedirs(self.dir)
        _chown_pg(self.dir)
        self.running = False

    @property
    def url(self):
        return "postgres://%s:%s@127.0.0.1:%d/%s" % (USER, PASSWORD, self.port, DBNAME)

    def configure(self):
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(CONF.format(port=self.port, sock=self.dir))

    def start(self):
        _run(_as_pg([PGBIN + "/pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
                     "start"]), timeout=70)
        self.running = True

    def stop(self, mode="fast"):
        if self.running:
            _run(_as_pg([PGBIN + "/pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60",
                         "stop"]), timeout=70, check=False)
        self.running = False

    def psql(self, sql, db=DBNAME, check=True):
        """Runs sql as the superuser; returns the rows, '|'-separated lines."""
        p = _run(["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                  "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql], check=check)
        return p.stdout.strip()

    def statements(self, pattern):
        """calls summed over pg_stat_statements entries whose query matches
        the regular expression pattern (case-insensitive), on this server."""
        out = self.psql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                        "WHERE query ~* '%s' AND query !~* 'pg_stat_statements'"
                        % pattern.replace("'", "''"))
        return int(out or 0)

    def reset_statements(self):
        self.psql("SELECT pg_stat_statements_reset()")


class Workspace:
    """A temporary directory holding servers; stops them all on exit."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="myriad-pg-")
        os.chmod(self.dir, 0o755)
        self.servers = []
        self._template = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for s in reversed(self.servers):
            try:
                s.stop("immediate")
            except Exception:   # noqa: BLE001 - keep stopping the others
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def _initdb(self):
        """One initdb per workspace; later clusters copy its data dir."""
        if self._template is None:
            self._template = os.path.join(self.dir, "template")
            os.makedirs(self._template)
            _chown_pg(self._template)
            _run(_as_pg([PGBIN + "/initdb", "-D", self._template, "-U", "postgres",
                         "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]), timeout=120)
            with open(os.path.join(self._template, "pg_hba.conf"), "w") as f:
                f.write(HBA)
        return self._template

    def primary(self, name="primary"):
        """A new cluster with the TechEmpower role and database (empty)."""
        s = Server(self, name)
        _run(["cp", "-a", self._initdb(), s.data])
        s.configure()
        self.servers.append(s)
        s.start()
        s.psql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (USER, PASSWORD), db="postgres")
        s.psql("CREATE DATABASE %s OWNER %s" % (DBNAME, USER), db="postgres")
        s.psql("CREATE EXTENSION pg_stat_statements")
        return s

    def replica(self, primary, name="replica"):
        """A hot standby streaming from primary."""
        s = Server(self, name)
        _run(_as_pg([PGBIN + "/pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
                     "-U", "postgres", "-D", s.data, "-R", "-X", "stream", "-c", "fast",
                     "--no-sync"]),
             timeout=120)
        s.configure()   # appended: its port wins over the primary's
        self.servers.append(s)
        s.start()
        return s


def wait_until(pred, timeout=10.0, step=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
