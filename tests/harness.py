"""Real parts for end-to-end tests: the ambassador started through ./run.sh, and scripted
HTTP upstreams on 127.0.0.1.

    with FakeUpstream(handler) as up:            # handler(req) -> Reply
        with Ambassador(tmp_path, profile(upstream("billing", up.url, path_prefix="/billing"))) as amb:
            status, headers, body = amb.get("/billing/x")

(`profile` and `upstream` from profiles.py.)
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from profiles import Profile

ROOT = Path(__file__).resolve().parent.parent
RUN_SH = ROOT / "run.sh"
START_TIMEOUT = 30.0
EARLY_ANSWER_READS_AFTER = 0.3  # seconds a raw upstream that answered early waits before reading on


@dataclass
class Received:
    """A request as the upstream received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay: float = 0.0  # seconds before answering
    close: bool = False  # drop the connection without answering

    @staticmethod
    def json(payload, status: int = 200, headers: list[tuple[str, str]] | None = None, delay: float = 0.0) -> "Reply":
        return Reply(status, [("Content-Type", "application/json"), *(headers or [])], json.dumps(payload).encode(), delay)


def echo(req: Received) -> Reply:
    """Answer with what was received, as JSON."""
    return Reply.json(
        {"method": req.method, "path": req.path, "headers": req.headers, "body": req.body.decode("latin-1")}
    )


class Switch:
    """A handler whose answer the test switches (`switch.reply = ...`), counting requests."""

    def __init__(self):
        self.reply = Reply(200, body=b"ok")
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, req: Received) -> Reply:
        with self.lock:
            self.count += 1
        return self.reply


SERVER_POLL = 0.02  # seconds


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of concurrent connections is not dropped (5 by default)


class FakeUpstream:
    """A real HTTP/1.1 server on 127.0.0.1 playing a legacy or partner service."""

    def __init__(self, handler: Callable[[Received], Reply] = echo, port: int = 0):
        self.handler = handler
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with upstream.lock:
                    upstream.connections.add(self.connection)

            def finish(self):
                with upstream.lock:
                    upstream.connections.discard(self.connection)
                super().finish()

            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Received(self.command, self.path, list(self.headers.items()), body)
                with upstream.lock:
                    upstream.received.append(req)
                reply = upstream.handler(req)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.close:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(reply.status)
                names = {k.lower() for k, _ in reply.headers}
                for k, v in reply.headers:
                    self.send_header(k, v)
                if "content-length" not in names and reply.status not in (204, 304) and self.command != "HEAD":
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD" and reply.status not in (204, 304):
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_one

        self.server = _Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # Polled often: stopping waits for the next poll, and tests stop many servers.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(SERVER_POLL,), daemon=True)

    def __enter__(self) -> "FakeUpstream":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        """Go away for real: stop listening and drop kept-alive connections too."""
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Ambassador:
    """`./run.sh PROFILE --listen-port PORT` as a subprocess, with its output collected."""

    def __init__(
        self, tmp_path: Path, profile: Profile | str | Path | None, *args: str, command: tuple[str, ...] = (), env: dict | None = None
    ):
        """`profile`: a `profiles.Profile`, YAML text, a path, or None for run.sh's default profile."""
        self.tmp_path = tmp_path
        if profile is None:
            self.profile_path = None
        elif isinstance(profile, Profile):
            self.profile_path = profile.write(tmp_path / f"profile-{time.monotonic_ns()}.yaml")
        elif isinstance(profile, str) and "\n" in profile:
            self.profile_path = tmp_path / f"profile-{time.monotonic_ns()}.yaml"
            self.profile_path.write_text(profile)
        else:
            self.profile_path = Path(profile)
        confdir = tmp_path / "mitmproxy-conf"
        confdir.mkdir(exist_ok=True)
        profile_arg = [str(self.profile_path)] if self.profile_path else []
        self.port = free_port()
        self.argv = [str(RUN_SH), *command, *profile_arg, "--listen-port", str(self.port), "--set", f"confdir={confdir}", *args]
        self.env = {**os.environ, **(env or {})}
        self.cwd: Path | None = None
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Ambassador":
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, cwd=self.cwd, start_new_session=True
        )
        threading.Thread(target=self._collect, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():  # ready once the status endpoint answers, whatever the verbosity
            if self.proc.poll() is not None:
                self.proc.wait()
                time.sleep(0.2)  # let the collector take the last lines
                raise AssertionError(f"ambassador exited ({self.proc.returncode}) during start-up:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"ambassador not answering within {START_TIMEOUT}s:\n{self.output}")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/_ambassador/status")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def _collect(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    @property
    def output(self) -> str:
        with self.changed:
            return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match:
        """Wait until a line (from index `start` on) matches; fails if the process exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[start:]:
                    if m := regex.search(line):
                        return m
                if self.proc.poll() is not None:
                    self.changed.wait(0.5)  # let the collector take the last lines
                    if any(regex.search(line) for line in self.lines[start:]):
                        continue
                    raise AssertionError(f"ambassador exited ({self.proc.returncode}) before /{pattern}/:\n{self.output}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no /{pattern}/ within {timeout}s:\n" + "\n".join(self.lines))
                self.changed.wait(min(remaining, 0.2))

    def peak_rss_kib(self) -> int:
        """The ambassador process's peak resident memory so far (VmHWM), in KiB."""
        return proc_status_kib(self.pid, "VmHWM")

    @property
    def pid(self) -> int:
        """The process serving: run.sh execs it, except beside the demo service (then its child)."""
        assert self.proc
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for kid in children.read_text().split() if children.exists() else []:
            try:
                if b"legacy_service" not in Path(f"/proc/{kid}/cmdline").read_bytes():
                    return int(kid)
            except OSError:
                continue
        return self.proc.pid

    def raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Send raw bytes to the listener and read until it closes (or `timeout`)."""
        return raw_exchange(self.port, data, timeout)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "Ambassador":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- talking to it ---------------------------------------------------------------

    def request(
        self, method: str, path: str, headers: dict | list | None = None, body: bytes | None = None, timeout: float = 30
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            items = list(headers.items() if isinstance(headers, dict) else (headers or []))
            conn.putrequest(method, path, skip_accept_encoding=True, skip_host=any(k.lower() == "host" for k, _ in items))
            for k, v in items:
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def get(self, path: str, headers: dict | None = None, **kw) -> tuple[int, http.client.HTTPMessage, bytes]:
        return self.request("GET", path, headers, **kw)

    def get_json(self, path: str, headers: dict | None = None) -> tuple[int, dict]:
        status, _, body = self.get(path, headers)
        return status, json.loads(body)

    def status(self) -> dict:
        status, payload = self.get_json("/_ambassador/status")
        assert status == 200, payload
        return payload


class StockTool(Ambassador):
    """mitmproxy's own tool (`mitmdump`, `mitmweb`) with `-s addons/ambassador.py`, as a user
    runs it: from another working directory, without PYTHONPATH, without run.sh."""

    def __init__(self, tmp_path: Path, profile: Profile | str | Path | None, *args: str, tool: str = "mitmdump", env: dict | None = None):
        super().__init__(tmp_path, profile, *args, env=env)
        confdir = tmp_path / "mitmproxy-conf"
        profile_option = ["--set", f"ambassador_profile={self.profile_path}"] if self.profile_path else []
        self.argv = [
            str(ROOT / ".venv" / "bin" / tool), "-s", str(ROOT / "addons" / "ambassador.py"),
            "--listen-port", str(self.port), "--set", f"confdir={confdir}", *profile_option, *args,
        ]
        self.env.pop("PYTHONPATH", None)
        self.cwd = tmp_path


def listening_addresses(port: int) -> list[str]:
    """The local addresses with a TCP listener on `port`, as /proc/net/tcp{,6} write them
    (`0100007F` is 127.0.0.1)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, local_port = local.split(":")
                if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                    found.append(address)
    return found


class TlsHangUp:
    """A TLS server that hangs up right after the handshake, with no alert: how some servers
    refuse a missing client certificate. `context` holds its certificate."""

    def __init__(self, context: ssl.SSLContext):
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.unwrap()  # handshake done, then hang up at once
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self.listener.close()


class RawUpstream:
    """A TCP server on 127.0.0.1 that answers every connection with `script(sock)`."""

    def __init__(self, script):
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        with conn:
            conn.recv(65536)
            try:
                self.script(conn)
            except OSError:
                pass

    def close(self):
        self.listener.close()


class KeepAliveRawUpstream:
    """A raw-socket HTTP/1.1 server on 127.0.0.1 serving any number of requests per connection,
    each answered with the bytes `answer(request)` returns, misbehaviour included.

    `answer` gets a `Received`. With `body_read=False` the answer comes right after the request's
    head, before its body is read, and the rest is discarded until the peer closes. `send(index, data)` writes more on connection `index` later;
    `closed[index]` is set once the ambassador closes that connection.
    """

    def __init__(self, answer, body_read: bool = True):
        self.answer = answer
        self.body_read = body_read
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.connections: list[socket.socket] = []
        self.closed: list[threading.Event] = []
        self.received: list[Received] = []
        self.answered = threading.Condition(self.lock)  # notified after each answer is sent
        threading.Thread(target=self.serve, daemon=True).start()

    @property
    def accepted(self) -> int:
        with self.lock:
            return len(self.connections)

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections.append(conn)
                self.closed.append(threading.Event())
                index = len(self.connections) - 1
            threading.Thread(target=self.handle, args=(conn, index), daemon=True).start()

    def handle(self, conn: socket.socket, index: int):
        pending = b""
        try:
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                head, _, pending = pending.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
                req = Received(method, path, headers, b"")
                if self.body_read:
                    length = int(req.header("Content-Length") or 0)
                    while len(pending) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        pending += chunk
                    req.body, pending = pending[:length], pending[length:]
                with self.lock:
                    self.received.append(req)
                conn.sendall(self.answer(req))
                with self.answered:
                    self.answered.notify_all()
                if not self.body_read:
                    # Answered early, and slow to read the rest (discarded until the peer
                    # closes): the answer is complete while the request is still being sent.
                    time.sleep(EARLY_ANSWER_READS_AFTER)
                    while conn.recv(65536):
                        pass
                    return
        except OSError:
            pass
        finally:
            self.closed[index].set()
            conn.close()

    def send(self, index: int, data: bytes) -> None:
        with self.lock:
            conn = self.connections[index]
        conn.sendall(data)

    def close(self):
        self.listener.close()
        with self.lock:
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes (what an HTTP client would refuse to send) and read until the peer closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def proc_status_kib(pid: int, field: str) -> int:
    """A memory figure (VmRSS, VmHWM...) of a process from /proc, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sh(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RUN_SH), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
