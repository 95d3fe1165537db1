"""REST to SOAP with a WSDL, through the real ambassador, against a real schema-validating SOAP
service (spyne, tests/spyne_server.py) under SOAP 1.1 and 1.2."""

import json
import time
import urllib.request

import pytest

from harness import Ambassador, FakeUpstream, Reply
from profiles import profile, upstream
from spyne_server import NS, SpyneService
from webui import WebAmbassador


@pytest.fixture(scope="module")
def services():
    with SpyneService("1.1") as s11, SpyneService("1.2") as s12:
        yield {"1.1": s11, "1.2": s12}


@pytest.fixture(scope="module")
def amb(services, tmp_path_factory):
    folder = tmp_path_factory.mktemp("soapwsdl")
    (folder / "legacy").mkdir()
    # 1.1 reads its WSDL from a file beside the profile, 1.2 from the service's URL.
    (folder / "legacy" / "orders.wsdl").write_bytes(urllib.request.urlopen(services["1.1"].url + "?wsdl").read())
    wsdl_services = profile(
        upstream("orders", services["1.1"].url, path_prefix="/orders", soap={"namespace": NS, "wsdl": "legacy/orders.wsdl"}),
        upstream(
            "orders12", services["1.2"].url, path_prefix="/orders12",
            soap={"namespace": NS, "version": "1.2", "wsdl": f"{services['1.2'].url}?wsdl"},
        ),
        upstream("bare", services["1.1"].url, path_prefix="/bare", soap={"namespace": NS, "action": "{operation}"}),
    )
    with Ambassador(folder, wsdl_services) as a:
        yield a


def post(amb, path: str, payload) -> tuple[int, dict]:
    status, _, raw = amb.request("POST", path, {"Content-Type": "application/json"}, json.dumps(payload).encode())
    return status, json.loads(raw)


# Fields in another order than the schema's (id, region, express): the service refuses those.
CALL = {"express": True, "region": "EU", "id": 5}


@pytest.mark.parametrize("prefix, version", [("/orders", "1.1"), ("/orders12", "1.2")])
def test_answer_typed_by_the_schema_fields_in_its_order(amb, services, prefix, version):
    status, payload = post(amb, f"{prefix}/GetOrder", CALL)
    assert status == 200, payload
    assert payload == {
        "GetOrderResult": {
            "id": 5,
            "total": 12.5,
            "paid": True,
            "customer": {"name": "customer in EU", "vip": True},
            "lines": {"Line": [{"sku": "A-1", "qty": 3}]},  # a list of one stays a list
            "tags": ["first"],
        }
    }
    arrival = services[version].received[-1]
    if version == "1.1":
        assert arrival.soap_action == '"GetOrder"'  # the WSDL's, not {namespace}/{operation}
    else:
        assert arrival.soap_action is None and 'action="GetOrder"' in arrival.content_type


def test_without_a_wsdl_the_fields_go_as_sent_and_come_back_as_strings(amb, services):
    status, payload = post(amb, "/bare/GetOrder", {"id": 5, "region": "EU", "express": True})
    assert status == 200, payload
    assert payload["GetOrderResult"]["id"] == "5" and payload["GetOrderResult"]["tags"] == "first"
    assert services["1.1"].received[-1].soap_action == '"GetOrder"'  # the action: template
    status, payload = post(amb, "/bare/GetOrder", CALL)  # the order the schema refuses
    assert status == 502 and payload["reason"] == "soap_fault"


@pytest.mark.parametrize("body, field", [
    ({"id": "five", "region": "EU", "express": True}, "GetOrder.id"),
    ({"id": 5, "region": "EU", "express": "yes"}, "GetOrder.express"),
    ({"id": 5, "region": "EU"}, "GetOrder.express"),
    ({"id": 5, "region": "EU", "express": True, "rush": True}, "GetOrder.rush"),
])
@pytest.mark.parametrize("prefix, version", [("/orders", "1.1"), ("/orders12", "1.2")])
def test_a_request_the_schema_refuses_is_400_naming_the_field_without_contact(amb, services, prefix, version, body, field):
    before = len(services[version].received)
    status, payload = post(amb, f"{prefix}/GetOrder", body)
    assert status == 400 and payload["reason"] == "bad_request"
    assert field in payload["error"]
    assert len(services[version].received) == before


def test_an_operation_the_wsdl_lacks_is_404_without_contact(amb, services):
    before = len(services["1.1"].received)
    status, payload = post(amb, "/orders/DeleteOrder", {"id": 5})
    assert status == 404 and payload["reason"] == "no_route" and "DeleteOrder" in payload["error"]
    assert len(services["1.1"].received) == before


def test_soap_12_fault_carries_the_subcode(amb):
    status, payload = post(amb, "/orders12/GetOrder", {"id": 0, "region": "EU", "express": False})
    assert status == 502 and payload["reason"] == "soap_fault"
    assert payload["faultcode"] == "Sender/Bad"
    assert payload["faultstring"] == "order 0 does not exist"



# --- a profile naming a WSDL by URL, swapped in while running ------------------------------------


def with_orders(plain: FakeUpstream, service: SpyneService, wsdl_url: str):
    return profile(
        upstream("plain", plain.url, path_prefix="/plain"),
        upstream("orders", service.url, path_prefix="/orders", soap={"namespace": NS, "wsdl": wsdl_url}),
    )


def test_a_wsdl_url_of_a_new_profile_is_fetched_without_holding_up_requests(services, tmp_path):
    wsdl = urllib.request.urlopen(services["1.1"].url + "?wsdl").read()
    slow = Reply(200, [("Content-Type", "text/xml")], wsdl, delay=2.0)
    with FakeUpstream(lambda req: slow) as wsdl_server, FakeUpstream() as plain:
        with WebAmbassador(tmp_path, profile(upstream("plain", plain.url, path_prefix="/plain"))) as amb:
            second = with_orders(plain, services["1.1"], f"{wsdl_server.url}/orders.wsdl").write(tmp_path / "second.yaml")
            start = len(amb.lines)
            asked = time.monotonic()
            assert "error" not in amb.command("ambassador.profile", str(second))
            assert amb.get("/plain/x")[0] == 200
            # Both answered while the WSDL was still on its way (2 s): nothing waited for it.
            assert time.monotonic() - asked < 1.5
            assert amb.status()["profile"] == str(amb.profile_path)  # the running one, meanwhile
            amb.wait_for_log(r"profile .*second\.yaml loaded", start=start)
            assert post(amb, "/orders/GetOrder", CALL)[0] == 200
            assert wsdl_server.received[0].path == "/orders.wsdl"


def test_a_new_profile_whose_wsdl_url_fails_is_refused_and_the_option_set_back(services, tmp_path):
    with FakeUpstream(lambda req: Reply(404, body=b"gone", delay=0.5)) as wsdl_server, FakeUpstream() as plain:
        with WebAmbassador(tmp_path, profile(upstream("plain", plain.url, path_prefix="/plain"))) as amb:
            second = with_orders(plain, services["1.1"], f"{wsdl_server.url}/orders.wsdl").write(tmp_path / "second.yaml")
            start = len(amb.lines)
            assert amb.web_request("PUT", "/options", {"ambassador_profile": str(second)})[0] == 200
            amb.wait_for_log(r"upstreams\.orders\.soap\.wsdl: cannot read the WSDL", start=start)
            assert amb.status()["profile"] == str(amb.profile_path)
            status, options = amb.web_request("GET", "/options")
            assert status == 200 and options["ambassador_profile"]["value"] == str(amb.profile_path)
            assert amb.get("/plain/x")[0] == 200
