"""The mitmproxy addons with mitmproxy's own test context (taddons/tflow)."""

import json

from mitmproxy.addons.serverplayback import ServerPlayback
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow

from addons.admin import AdminEndpoints
from addons.forward import NoDirectUpstream, Router, attached
from addons.profile_manager import ProfileManager
from profiles import profile, upstream


def app_profile(tmp_path):
    return profile(upstream("app", "http://127.0.0.1:9", path_prefix="/app", host="app.internal")).write(tmp_path / "p.yaml")


def test_router_attaches_the_upstream_or_answers_itself(tmp_path):
    manager = ProfileManager()
    router = Router(manager)
    with taddons.context(ServerPlayback(), manager, router) as tctx:
        tctx.configure(manager, ambassador_profile=str(app_profile(tmp_path)))

        routed = tflow.tflow()
        routed.request.host, routed.request.port, routed.request.path = "app.internal", 80, "/v1?x=1"
        router.request(routed)
        service, route = attached(routed)
        assert (service.upstream.name, route.path, routed.response) == ("app", "/v1?x=1", None)
        assert routed.metadata["ambassador"] == {"upstream": "app", "upstream_url": "http://127.0.0.1:9/v1?x=1"}

        foreign = tflow.tflow()
        foreign.request.host, foreign.request.port = "evil.example", 80
        router.request(foreign)
        assert foreign.response.status_code == 403
        assert json.loads(foreign.response.content)["reason"] == "not_allowed"
        assert attached(foreign) is None


def test_status_endpoint(tmp_path):
    manager = ProfileManager()
    admin = AdminEndpoints(manager)
    with taddons.context(ServerPlayback(), manager, admin) as tctx:
        tctx.configure(manager, ambassador_profile=str(app_profile(tmp_path)))
        flow = tflow.tflow()
        flow.request.path = "/_ambassador/status"
        admin.request(flow)
        report = json.loads(flow.response.content)
        assert report["profile"] == str(tmp_path / "p.yaml")
        assert report["upstreams"]["app"]["url"] == "http://127.0.0.1:9"


def test_mitmproxy_never_connects_upstream_itself():
    guard = NoDirectUpstream()
    data = ServerConnectionHookData(server=tflow.tserver_conn(), client=tflow.tclient_conn())
    guard.server_connect(data)
    assert data.server.error

    unanswered = tflow.tflow()
    guard.request(unanswered)
    assert unanswered.response.status_code == 500
    assert json.loads(unanswered.response.content)["reason"] == "internal_error"


def test_a_raising_addon_still_gets_the_flow_answered(tmp_path):
    """The container's children share one error context: the guard and the observer stand
    outside it, so a bug in a child cannot leave a flow unanswered (and so forwarded)."""
    import asyncio

    from mitmproxy.proxy.layers.http import HttpRequestHook

    from addons.suite import AmbassadorAddons

    class Broken:
        def request(self, flow):
            raise RuntimeError("a bug")

    async def run():
        from addons.suite import make_addons

        children = make_addons()
        container = AmbassadorAddons([children[0], Broken(), *children[1:]])
        with taddons.context(ServerPlayback(), container) as tctx:
            tctx.configure(container, ambassador_profile=str(app_profile(tmp_path)))
            flow = tflow.tflow()
            flow.request.host, flow.request.port, flow.request.path = "app.internal", 80, "/x"
            await tctx.master.addons.handle_lifecycle(HttpRequestHook(flow))
            return flow

    flow = asyncio.run(run())
    assert flow.response.status_code == 500
    assert json.loads(flow.response.content)["reason"] == "internal_error"
    assert flow.comment  # the observer annotated it too


def test_unchecked_response_is_the_checked_constructors_response():
    """to_mitm_response skips mitmproxy's run-time type check; the result must be what the
    checked constructor makes, or a mitmproxy upgrade changed the message's make-up."""
    import dataclasses

    from mitmproxy import http
    from multidict import CIMultiDict

    from addons.answers import to_mitm_response
    from addons.exchange import UpstreamResponse

    headers = CIMultiDict([("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")])
    answer = UpstreamResponse(201, "Créé", headers, b"\x00body")
    for version in ("HTTP/1.1", "HTTP/2.0"):
        fast = to_mitm_response(answer, version, "api")
        checked = http.Response(**{f.name: getattr(fast.data, f.name) for f in dataclasses.fields(http.ResponseData)})
        assert fast.get_state() == checked.get_state()
        assert vars(fast).keys() == vars(checked).keys()
        assert fast.headers.get_all("set-cookie") == ["a=1", "b=2"] and fast.headers["X-Ambassador-Upstream"] == "api"
        assert (fast.status_code, fast.reason, fast.content, fast.http_version) == (201, "Créé", b"\x00body", version)


def test_health_endpoint_once_a_profile_is_loaded(tmp_path):
    from addons.suite import AmbassadorAddons, make_addons

    container = AmbassadorAddons(make_addons())
    with taddons.context(ServerPlayback(), container) as tctx:
        early = tflow.tflow()
        early.request.path = "/_ambassador/health"
        container.requestheaders(early)  # no profile yet: the listener may open before it loads
        assert early.response.status_code == 503
        assert json.loads(early.response.content)["reason"] == "not_ready"

        tctx.configure(container, ambassador_profile=str(app_profile(tmp_path)))
        admin = next(child for child in container.children if isinstance(child, AdminEndpoints))
        ready = tflow.tflow()
        ready.request.path = "/_ambassador/health?probe=1"
        admin.request(ready)
        assert ready.response.status_code == 200
        assert json.loads(ready.response.content) == {"status": "ok", "profile": str(tmp_path / "p.yaml")}

        posted = tflow.tflow()
        posted.request.method, posted.request.path = "POST", "/_ambassador/health"
        admin.request(posted)
        assert posted.response.status_code == 400


def test_files_read_by_the_profile_are_part_of_its_signature(tmp_path):
    from addons.profile import load_profile
    from addons.profile_manager import files_signature

    (tmp_path / "key").write_text("one\n")
    keyed = upstream("app", "http://127.0.0.1:9", path_prefix="/app", auth={"type": "header", "name": "X-Key", "value": "${file:key}"})
    loaded = load_profile(profile(keyed).write(tmp_path / "p.yaml"))
    assert loaded.files_read == {tmp_path / "key"}
    before = files_signature((1, 1), loaded)
    (tmp_path / "key").write_text("rotated, and longer\n")
    assert files_signature((1, 1), loaded) != before
    (tmp_path / "key").unlink()
    assert files_signature((1, 1), loaded) == ((1, 1), None)
