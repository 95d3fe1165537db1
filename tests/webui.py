"""The ambassador under mitmweb (`./run.sh web`), for the mitmweb and admin command tests."""

from __future__ import annotations

import http.client
import json
import secrets
from pathlib import Path

from harness import ROOT, Ambassador, free_port
from profiles import Profile


class WebAmbassador(Ambassador):
    """`./run.sh web PROFILE` with its UI on a free port; `token` is the UI's auth token."""

    def __init__(self, tmp_path: Path, profile: Profile | str | Path, *args: str, **kw):
        self.web_port = free_port()
        super().__init__(
            tmp_path, profile, "--set", "web_open_browser=false", "--set", f"web_port={self.web_port}", *args,
            command=("web",), **kw,
        )
        self.token: str | None = None

    def start(self) -> "WebAmbassador":
        super().start()
        m = self.wait_for_log(rf"Web server listening at http://127\.0\.0\.1:{self.web_port}/\?token=(\w+)")
        self.token = m.group(1)
        return self

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/?token={self.token}"

    def web_request(self, method: str, path: str, payload=None) -> tuple[int, object]:
        """A call to mitmweb's REST API, as its UI makes it (auth token, XSRF cookie and header)."""
        xsrf = secrets.token_hex(16)
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=30)
        try:
            body = json.dumps(payload).encode() if payload is not None else None
            headers = {
                "Authorization": f"Bearer {self.token}",
                "Cookie": f"_mitmproxy_xsrf={xsrf}",
                "X-XSRFToken": xsrf,
                "Content-Type": "application/json",
            }
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()

    def command(self, name: str, *arguments: str) -> dict:
        """Run a mitmproxy command the way mitmweb's command bar does; {"value": ...} or {"error": ...}."""
        status, answer = self.web_request("POST", f"/commands/{name}", {"arguments": list(arguments)})
        assert status == 200, (status, answer)
        return answer

    def flows(self) -> list[dict]:
        status, flows = self.web_request("GET", "/flows")
        assert status == 200
        return flows


class PlainMitmweb(WebAmbassador):
    """mitmproxy's own mitmweb, without the ambassador's addons, showing a flow file (`-r FILE`)."""

    def __init__(self, tmp_path: Path, flow_file: Path):
        super().__init__(tmp_path, flow_file)
        confdir = tmp_path / "mitmproxy-conf"
        self.argv = [
            str(ROOT / ".venv" / "bin" / "mitmweb"), "--rfile", str(flow_file), "--listen-host", "127.0.0.1",
            "--listen-port", str(self.port), "--set", f"confdir={confdir}", "--set", "web_open_browser=false",
            "--set", f"web_port={self.web_port}",
        ]

    def answers(self) -> bool:
        return True  # no ambassador here to ask; start() waits for the UI's log line instead
