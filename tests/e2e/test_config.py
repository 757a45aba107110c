"""Command line, environment and config file: --help, --version, rejection
of bad flags and values (one stderr line naming the flag, exit 2, no
server started), the config file format, and the precedence
flag > environment > config file > default."""

import re
import subprocess

import pytest

from client import Conn, free_port, get, HOST
from conftest import clean_env, myriad_bin

PLAINTEXT = b"Hello, World!"


def run(args, env=None, timeout=10, cwd=None):
    """Runs the binary to completion. A server that starts instead of
    rejecting its arguments runs into the timeout, which fails the test."""
    try:
        return subprocess.run([myriad_bin(), *args], env=clean_env(env), cwd=cwd,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"myriad {' '.join(args)} did not exit within {timeout}s "
                    f"(did it start serving instead of rejecting?)", pytrace=False)


def stderr_lines(p):
    return [l for l in p.stderr.decode("utf-8", "replace").splitlines() if l.strip()]


def serves_on(port):
    with Conn(port) as c:
        c.send(get("/plaintext"))
        return c.read_response().body == PLAINTEXT


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"]])
def test_help(args):
    p = run(args)
    assert p.returncode == 0, p
    out = p.stdout.decode()
    assert re.search(r"(?i)usage", out), out
    assert "--port" in out and "--max-body" in out


@pytest.mark.parametrize("args", [["--version"], ["serve", "--version"]])
def test_version(args):
    p = run(args)
    assert p.returncode == 0, p
    assert p.stdout.decode().startswith("myriad 0.1.0"), p.stdout


BAD = [
    (["--port", "70000"], "--port"),
    (["--port", "abc"], "--port"),
    (["--port", "-1"], "--port"),
    (["--port", ""], "--port"),
    (["--port"], "--port"),                       # missing value
    (["--max-body", "-1"], "--max-body"),
    (["--max-body", "10x"], "--max-body"),
    (["--max-body", "k"], "--max-body"),
    (["--idle-timeout", "5x"], "--idle-timeout"),
    (["--header-timeout", "-1s"], "--header-timeout"),
    (["--write-timeout", "abc"], "--write-timeout"),
    (["--max-connections", "abc"], "--max-connections"),
    (["--max-headers", "12z"], "--max-headers"),
    (["--max-request-line", "-5"], "--max-request-line"),
    (["--workers", "lots"], "--workers"),
    (["--bogus-flag"], "--bogus-flag"),
    (["--bogus-flag", "1"], "--bogus-flag"),
]


@pytest.mark.parametrize("args,name", BAD, ids=[" ".join(a) or "empty" for a, _ in BAD])
def test_bad_flag(args, name):
    port = free_port()
    p = run(["serve", "--host", HOST, "--port", str(port)] + args
            if args[0] != "--port" else ["serve", "--host", HOST] + args)
    lines = stderr_lines(p)
    assert p.returncode == 2, f"exit {p.returncode}, stderr {p.stderr!r}"
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert name in lines[0], f"stderr does not name {name}: {lines[0]!r}"


def test_missing_config_file(tmp_path):
    path = str(tmp_path / "nope.conf")
    p = run(["serve", "--config", path])
    lines = stderr_lines(p)
    assert p.returncode == 2
    assert len(lines) == 1 and "nope.conf" in lines[0], lines


@pytest.mark.parametrize("body,lineno", [
    ("# comment\n\nport abc\n", 3),
    ("port 8080\nmax-body 1m\nbogus-key 1\n", 3),
    ("\n\n\n\nidle-timeout 5x\n", 5),
    ("port\n", 1),
])
def test_bad_config_line(tmp_path, body, lineno):
    cfg = tmp_path / "bad.conf"
    cfg.write_text(body)
    p = run(["serve", "--config", str(cfg)])
    lines = stderr_lines(p)
    assert p.returncode == 2, p
    assert len(lines) == 1, lines
    assert "bad.conf" in lines[0], lines[0]
    assert re.search(rf"(:{lineno}\b|line {lineno}\b)", lines[0]), \
        f"line number {lineno} not named: {lines[0]!r}"


def test_bad_env_value():
    p = run(["serve", "--host", HOST], env={"MYRIAD_PORT": "abc"})
    lines = stderr_lines(p)
    assert p.returncode == 2
    assert len(lines) == 1 and re.search(r"(?i)port", lines[0]), lines


def test_config_file(tmp_path, start_server):
    port = free_port()
    cfg = tmp_path / "myriad.conf"
    cfg.write_text(f"# the port\nport {port}\n\n# a comment\nhost {HOST}\n"
                   f"max-body 10\n")
    srv = start_server("--config", str(cfg), port=port, pass_addr=False)
    assert serves_on(port)
    with Conn(port) as c:     # max-body from the file applies
        c.send(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n" + b"a" * 11)
        assert c.read_response().status == 413
    assert srv.alive()


def test_env_port(start_server):
    port = free_port()
    start_server("--host", HOST, env={"MYRIAD_PORT": str(port)}, port=port, pass_addr=False)
    assert serves_on(port)


def test_env_size_and_duration(start_server):
    srv = start_server(env={"MYRIAD_MAX_BODY": "2k", "MYRIAD_HEADER_TIMEOUT": "1500ms"})
    with Conn(srv.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2049\r\n\r\n")
        assert c.read_response().status == 413
    with Conn(srv.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n" + b"b" * 2048)
        assert c.read_response().status == 200


def test_flag_beats_env(start_server):
    flag_port, env_port = free_port(), free_port()
    start_server("--host", HOST, "--port", str(flag_port),
                 env={"MYRIAD_PORT": str(env_port)}, port=flag_port, pass_addr=False)
    assert serves_on(flag_port)
    with pytest.raises(ConnectionRefusedError):
        Conn(env_port)


def test_env_beats_config(tmp_path, start_server):
    cfg_port, env_port = free_port(), free_port()
    cfg = tmp_path / "c.conf"
    cfg.write_text(f"port {cfg_port}\n")
    start_server("--host", HOST, "--config", str(cfg), env={"MYRIAD_PORT": str(env_port)},
                 port=env_port, pass_addr=False)
    assert serves_on(env_port)
    with pytest.raises(ConnectionRefusedError):
        Conn(cfg_port)


def test_flag_beats_config(tmp_path, start_server):
    cfg_port, flag_port = free_port(), free_port()
    cfg = tmp_path / "c.conf"
    cfg.write_text(f"port {cfg_port}\nmax-body 10\n")
    srv = start_server("--config", str(cfg), "--max-body", "20", port=flag_port)
    assert serves_on(flag_port)
    with Conn(srv.port) as c:
        c.send(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n" + b"c" * 15)
        assert c.read_response().status == 200


@pytest.mark.parametrize("flags", [
    ["--idle-timeout", "1h", "--body-timeout", "2m", "--header-timeout", "10",
     "--write-timeout", "250ms"],
    ["--max-body", "3g", "--max-header-bytes", "32768", "--max-request-line", "4096"],
    ["--workers", "1", "--max-connections", "100", "--max-headers", "50"],
])
def test_valid_values_start(start_server, flags):
    srv = start_server(*flags)
    assert serves_on(srv.port)


def test_max_request_line_flag(start_server):
    srv = start_server("--max-request-line", "100")
    with Conn(srv.port) as c:
        c.send(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 414
        c.expect_eof(timeout=3)


def test_max_header_bytes_and_headers_flags(start_server):
    srv = start_server("--max-header-bytes", "1024", "--max-headers", "5")
    with Conn(srv.port) as c:
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 1100 + b"\r\n\r\n")
        assert c.read_response().status == 431
        c.expect_eof(timeout=3)
    with Conn(srv.port) as c:
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n" +
               b"".join(b"X-%d: v\r\n" % i for i in range(5)) + b"\r\n")
        assert c.read_response().status == 431
        c.expect_eof(timeout=3)
    with Conn(srv.port) as c:
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n" +
               b"".join(b"X-%d: v\r\n" % i for i in range(4)) + b"\r\n")
        assert c.read_response().status == 200


def test_sigterm_exit_zero(start_server):
    srv = start_server()
    assert serves_on(srv.port)
    problems = srv.stop()
    assert not problems, "\n".join(problems)
    assert srv.returncode == 0
