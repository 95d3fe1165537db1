"""Changing the profile of a running ambassador: file edits, the
`ambassador_profile` option from mitmweb's options editor, commands, and refusals."""

import json
import threading
import time
import urllib.request

import pytest

from harness import Ambassador, FakeUpstream, Received, Reply, free_port
from profiles import Profile, profile, upstream


def named(name):
    def handler(req: Received) -> Reply:
        if req.path.endswith("/slow"):
            return Reply.json({"served_by": name}, delay=1.5)
        return Reply.json({"served_by": name, "path": req.path})

    return handler


def profile_for(origin, timeout="5s", prefix="/app") -> Profile:
    return profile(upstream("app", origin.url, path_prefix=prefix, timeout=timeout))


@pytest.fixture
def origins():
    with FakeUpstream(named("one")) as one, FakeUpstream(named("two")) as two:
        yield one, two


def served_by(amb, path="/app/x"):
    status, payload = amb.get_json(path)
    return payload.get("served_by") if status == 200 else payload.get("reason")


def test_edit_of_the_loaded_file_is_picked_up(tmp_path, origins):
    one, two = origins
    live = tmp_path / "live.yaml"
    profile_for(one).write(live)
    with Ambassador(tmp_path, live) as amb:
        assert served_by(amb) == "one"
        mark = len(amb.lines)
        profile_for(two).write(live)
        amb.wait_for_log(r"profile .*live\.yaml loaded", timeout=10, start=mark)
        assert served_by(amb) == "two"


def test_broken_edit_is_refused_and_the_running_profile_stays(tmp_path, origins):
    one, _ = origins
    live = tmp_path / "live.yaml"
    profile_for(one).write(live)
    with Ambassador(tmp_path, live) as amb:
        mark = len(amb.lines)
        profile_for(one, timeout="soon").write(live)
        m = amb.wait_for_log(r"upstreams\.app\.timeout: must be a duration", timeout=10, start=mark)
        assert str(live) in m.string
        assert "refused" in amb.output and "Traceback" not in amb.output
        assert served_by(amb) == "one"
        assert amb.status()["profile"] == str(live)


def test_requests_in_flight_during_a_swap_complete(tmp_path, origins):
    one, two = origins
    live = tmp_path / "live.yaml"
    profile_for(one).write(live)
    with Ambassador(tmp_path, live) as amb:
        results = []
        slow = threading.Thread(target=lambda: results.append(amb.get_json("/app/slow")))
        slow.start()
        deadline = time.monotonic() + 5
        while not one.received and time.monotonic() < deadline:
            time.sleep(0.02)  # until the slow request has reached the old upstream
        mark = len(amb.lines)
        profile_for(two, timeout="4s").write(live)
        amb.wait_for_log(r"profile .* loaded", timeout=10, start=mark)
        assert served_by(amb) == "two"
        slow.join(10)
        assert results == [(200, {"served_by": "one"})]



class MitmwebAPI:
    """mitmweb's REST API as its options editor and command bar use it."""

    def __init__(self, port: int, token: str):
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Cookie": "_mitmproxy_xsrf=test",
            "X-XSRFToken": "test",
            "Content-Type": "application/json",
        }

    def call(self, method: str, path: str, payload) -> tuple[int, str]:
        req = urllib.request.Request(self.base + path, json.dumps(payload).encode(), self.headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


@pytest.fixture
def web(tmp_path, origins):
    one, two = origins
    first = tmp_path / "first.yaml"
    second = tmp_path / "second.yaml"
    broken = tmp_path / "broken.yaml"
    profile_for(one).write(first)
    profile_for(two).write(second)
    profile_for(two, prefix="app").write(broken)
    web_port = free_port()
    amb = Ambassador(
        tmp_path, first, "--set", f"web_port={web_port}", "--set", "web_open_browser=false",
        "--set", "web_password=test-token", command=("web",),
    )
    with amb:
        amb.wait_for_log(r"Web server listening")
        yield amb, MitmwebAPI(web_port, "test-token"), second, broken


def test_options_editor_swaps_the_profile(web):
    amb, api, second, broken = web
    assert served_by(amb) == "one"
    status, body = api.call("PUT", "/options", {"ambassador_profile": str(second)})
    assert status == 200, body
    assert served_by(amb) == "two"
    assert amb.status()["profile"] == str(second)

    # A name being typed is refused as it goes, without a logged refusal per keystroke.
    mark = len(amb.lines)
    for partial in (str(second)[:-9], str(second)[:-4]):
        status, body = api.call("PUT", "/options", {"ambassador_profile": partial})
        assert status == 400 and "no profile at" in body, body
    typed = len(amb.lines)

    status, body = api.call("PUT", "/options", {"ambassador_profile": str(broken)})
    assert status == 400
    assert "upstreams.app.match.path_prefix: must start with '/'" in body and str(broken) in body
    amb.wait_for_log(r"profile refused, keeping the running one", start=mark)  # logged too, not only shown
    assert not any("refused" in line for line in amb.lines[mark:typed])
    assert served_by(amb) == "two"
    assert amb.status()["profile"] == str(second)


def test_profile_command_from_the_command_bar(web):
    amb, api, second, broken = web
    status, body = api.call("POST", "/commands/ambassador.profile", {"arguments": [str(second)]})
    assert status == 200, body
    assert served_by(amb) == "two"
    mark = len(amb.lines)
    status, body = api.call("POST", "/commands/ambassador.profile", {"arguments": [str(broken)]})
    assert "must start with '/'" in body
    amb.wait_for_log(r"profile refused, keeping the running one", start=mark)
    assert served_by(amb) == "two"
    status, body = api.call("POST", "/commands/ambassador.reload", {"arguments": []})
    assert status == 200, body
    assert served_by(amb) == "two"
