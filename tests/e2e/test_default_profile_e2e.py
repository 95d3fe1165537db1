"""`./run.sh` with no profile: the default profile in front of the bundled demo legacy service."""

import json
import socket
import time

from harness import ROOT, Ambassador, free_port
from profiles import profile, upstream



def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_run_sh_without_a_profile_fronts_the_demo_service(tmp_path):
    demo_port = free_port()
    amb = Ambassador(tmp_path, None, env={"DEMO_PORT": str(demo_port)})
    with amb:
        deadline = time.monotonic() + 15
        while not port_open(demo_port) and time.monotonic() < deadline:
            time.sleep(0.05)  # the demo service starts beside the ambassador
        status, headers, body = amb.get("/legacy/health")
        assert status == 200 and json.loads(body) == {"status": "ok"}
        assert headers["X-Ambassador-Upstream"] == "legacy"
        statuses = {amb.get("/legacy/customers/42")[0] for _ in range(5)}
        assert statuses <= {200, 503, 504} and 200 in statuses  # the demo is slow and sometimes fails
        assert amb.status()["profile"] == str(ROOT / "profiles" / "default.yaml")
    deadline = time.monotonic() + 10
    while port_open(demo_port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not port_open(demo_port), "the demo service outlived the ambassador"


def test_listener_defaults_to_loopback(tmp_path):
    amb = Ambassador(tmp_path, None, env={"DEMO_PORT": str(free_port())})
    with amb:
        m = amb.wait_for_log(r"listening at ([\d.]+):\d+")
        assert m.group(1) == "127.0.0.1"



def test_profile_given_as_a_mitmproxy_option(tmp_path):
    path = profile(upstream("app", "http://127.0.0.1:9", path_prefix="/app")).write(tmp_path / "p.yaml")
    with Ambassador(tmp_path, None, "--set", f"ambassador_profile={path}") as amb:
        assert amb.status()["profile"] == str(path)
