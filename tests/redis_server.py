"""Real, throw-away redis-servers on free 127.0.0.1 ports, for tests of the shared state.

    with RedisServer(tmp_path) as redis:   # redis.url -> redis://127.0.0.1:PORT/0
        redis.kill()                       # Redis down mid-test
        redis.start()                      # back, on the same port (empty: nothing is saved)

    with TlsRedisServer(tmp_path, password="s3cret") as redis:
        redis.url                          # rediss://:s3cret@127.0.0.1:PORT/0?ssl_ca_certs=...

    with RedisCluster(tmp_path) as cluster:   # three primaries, all slots assigned
        cluster.url                        # redis+cluster://127.0.0.1:PORT (one node; the others are discovered)
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import trustme

from harness import free_port

START_WITHIN = 10  # seconds


def _executable(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server redis-tools; ./run.sh test does it)")
    return found


class RedisServer:
    scheme = "redis"

    def __init__(self, folder: Path, *extra: str):
        self.folder = folder
        self.argv = [_executable("redis-server"), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", str(folder), *extra]
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/0"

    def port_args(self) -> list[str]:
        return ["--port", str(self.port)]

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=1)

    def ask(self, command: bytes) -> bytes:
        """One inline command over a fresh connection; the start of the reply."""
        with self.connect() as s:
            s.sendall(command + b"\r\n")
            return s.recv(4096)

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen([*self.argv, *self.port_args()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_WITHIN
        while True:
            try:
                if self.ask(b"PING").startswith((b"+PONG", b"-NOAUTH")):
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


class TlsRedisServer(RedisServer):
    """TLS only (no plain port), certificates from a trustme CA; `url` carries the CA file and
    the password (if any), as a profile's `state` would."""

    scheme = "rediss"

    def __init__(self, folder: Path, password: str | None = None):
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file, cert_file, key_file = folder / "redis-ca.pem", folder / "redis-cert.pem", folder / "redis-key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        extra = ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
                 "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"]
        self.password = password
        super().__init__(folder, *extra, *(["--requirepass", password] if password else []))

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"rediss://{credentials}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"

    def port_args(self) -> list[str]:
        return ["--port", "0", "--tls-port", str(self.port)]

    def connect(self) -> socket.socket:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context.wrap_socket(super().connect(), server_hostname="127.0.0.1")


class RedisCluster:
    """Three cluster-enabled redis-servers joined by `redis-cli --cluster create`, no replicas."""

    def __init__(self, folder: Path, size: int = 3):
        self.nodes = []
        for i in range(size):
            node_folder = folder / f"node{i}"
            node_folder.mkdir()
            self.nodes.append(RedisServer(node_folder, "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                                          "--cluster-config-file", str(node_folder / "nodes.conf")))

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> "RedisCluster":
        for node in self.nodes:
            node.start()
        subprocess.run(
            [_executable("redis-cli"), "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )
        deadline = time.monotonic() + START_WITHIN
        while not all(b"cluster_state:ok" in node.ask(b"CLUSTER INFO") for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the redis cluster did not become ready")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> "RedisCluster":
        try:
            return self.start()
        except BaseException:
            self.kill()
            raise

    def __exit__(self, *exc) -> None:
        self.kill()
