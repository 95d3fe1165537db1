"""REST to SOAP through the real ambassador, against a SOAP service that checks what it gets."""

import json
import xml.etree.ElementTree as ET

import pytest

from harness import Ambassador, FakeUpstream, Received, Reply
from profiles import profile, upstream

NS = "http://legacy.example.com/ns"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def envelope(env_ns: str, body_xml: str) -> bytes:
    return (
        f'<?xml version="1.0"?><s:Envelope xmlns:s="{env_ns}" xmlns:xsi="{XSI}" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        f"<s:Body>{body_xml}</s:Body></s:Envelope>"
    ).encode()


class SoapService:
    """A SOAP 1.1 or 1.2 service: refuses envelopes that are wrong for its version, else answers
    `{Operation}Response` echoing the fields it received (so the test sees what arrived)."""

    def __init__(self, version: str):
        self.version = version
        self.env_ns = SOAP11 if version == "1.1" else SOAP12
        self.special: dict[str, Reply] = {}

    def __call__(self, req: Received) -> Reply:
        problems = self.check(req)
        if problems:
            return Reply(400, [("Content-Type", "text/plain")], "; ".join(problems).encode())
        root = ET.fromstring(req.body)
        operation = next(iter(root.find(f"{{{self.env_ns}}}Body")))
        name = operation.tag.split("}")[1]
        if name in self.special:
            return self.special[name]
        fields = "".join(ET.tostring(child, encoding="unicode") for child in operation)
        kind = "text/xml" if self.version == "1.1" else "application/soap+xml"
        return Reply(200, [("Content-Type", f"{kind}; charset=utf-8")], envelope(self.env_ns, f'<r:{name}Response xmlns:r="{NS}">{fields}</r:{name}Response>'))

    def check(self, req: Received) -> list[str]:
        problems = []
        if req.method != "POST" or req.path != "/soap/endpoint":
            problems.append(f"wrong request line {req.method} {req.path}")
        try:
            root = ET.fromstring(req.body)
        except ET.ParseError as e:
            return problems + [f"not XML: {e}"]
        if root.tag != f"{{{self.env_ns}}}Envelope":
            problems.append(f"wrong envelope {root.tag}")
        body = root.find(f"{{{self.env_ns}}}Body")
        operation = next(iter(body)) if body is not None else None
        if operation is None or not operation.tag.startswith(f"{{{NS}}}"):
            problems.append("the operation is not in the target namespace")
            return problems
        name = operation.tag.split("}")[1]
        content_type = req.header("Content-Type") or ""
        if self.version == "1.1":
            if not content_type.startswith("text/xml") or req.header("SOAPAction") != f'"{NS}/{name}"':
                problems.append(f"wrong 1.1 headers: {content_type!r}, SOAPAction {req.header('SOAPAction')!r}")
        else:
            if not content_type.startswith("application/soap+xml") or f'action="{NS}/{name}"' not in content_type:
                problems.append(f"wrong 1.2 content type {content_type!r}")
            if req.header("SOAPAction") is not None:
                problems.append("SOAP 1.2 has no SOAPAction header")
        return problems


class Overloaded(SoapService):
    """Answers 503 (no envelope) to every other request: what retries are for."""

    def __init__(self):
        super().__init__("1.1")
        self.calls = 0

    def __call__(self, req: Received) -> Reply:
        self.calls += 1
        if self.calls % 2:
            return Reply(503, [("Content-Type", "text/plain")], b"busy")
        return super().__call__(req)


@pytest.fixture(scope="module")
def services():
    s11, s12, busy = SoapService("1.1"), SoapService("1.2"), Overloaded()
    with FakeUpstream(s11) as up11, FakeUpstream(s12) as up12, FakeUpstream(busy) as upbusy:
        yield {"1.1": (s11, up11), "1.2": (s12, up12), "busy": (busy, upbusy)}


@pytest.fixture(scope="module")
def amb(services, tmp_path_factory):
    soap_services = profile(
        upstream("legacy", f"{services['1.1'][1].url}/soap/endpoint", path_prefix="/legacy", soap={"namespace": NS}),
        upstream(
            "legacy12", f"{services['1.2'][1].url}/soap/endpoint", path_prefix="/legacy12", timeout="5s",
            soap={"namespace": NS, "version": "1.2"},
        ),
        upstream(
            "busy", f"{services['busy'][1].url}/soap/endpoint", path_prefix="/busy", soap={"namespace": NS},
            retry={"attempts": 3, "backoff": "10ms", "methods": ["POST"]},
        ),
    )
    with Ambassador(tmp_path_factory.mktemp("soap"), soap_services) as a:
        yield a


def post(amb, path: str, payload) -> tuple[int, dict, object]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, headers, raw = amb.request("POST", path, {"Content-Type": "application/json"}, body)
    return status, headers, json.loads(raw)


CALL = {
    "customerId": 42,
    "name": "Ada <Lovelace> & \"Co\"",
    "address": {"street": "1 Main St", "city": "Zürich"},
    "tags": ["gold", "early"],
    "active": True,
    "note": None,
}


@pytest.mark.parametrize("version, prefix", [("1.1", "/legacy"), ("1.2", "/legacy12")])
def test_json_call_becomes_an_envelope_and_the_response_comes_back_as_json(amb, services, version, prefix):
    status, headers, payload = post(amb, f"{prefix}/GetCustomer", CALL)
    assert status == 200, payload
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Ambassador-Upstream"] == ("legacy" if version == "1.1" else "legacy12")
    # Text stays text (no xsi:type in the answer); nested objects nest; repeated elements are lists.
    assert payload == {
        "customerId": "42",
        "name": 'Ada <Lovelace> & "Co"',
        "address": {"street": "1 Main St", "city": "Zürich"},
        "tags": ["gold", "early"],
        "active": "true",
        "note": None,
    }
    received = services[version][1].received[-1]
    operation = next(iter(ET.fromstring(received.body).find(f"{{{services[version][0].env_ns}}}Body")))
    assert operation.tag == f"{{{NS}}}GetCustomer"
    assert [child.tag for child in operation] == [f"{{{NS}}}{n}" for n in ("customerId", "name", "address", "tags", "tags", "active", "note")]
    assert operation.find(f"{{{NS}}}note").get(f"{{{XSI}}}nil") == "true"


def test_typed_response_values_and_repeated_elements(amb, services):
    s11, _ = services["1.1"]
    s11.special["GetOrders"] = Reply(200, [("Content-Type", "text/xml")], envelope(SOAP11, f"""
      <GetOrdersResponse xmlns="{NS}"><count xsi:type="xsd:int">2</count><total xsi:type="xsd:decimal">10.5</total>
      <paid xsi:type="xsd:boolean">false</paid><order><id>1</id></order><order><id>2</id></order></GetOrdersResponse>"""))
    status, _, payload = post(amb, "/legacy/GetOrders", {"customer": 1})
    assert status == 200
    assert payload == {"count": 2, "total": 10.5, "paid": False, "order": [{"id": "1"}, {"id": "2"}]}


def test_soap_11_fault_becomes_502_json(amb, services):
    s11, _ = services["1.1"]
    s11.special["Explode"] = Reply(500, [("Content-Type", "text/xml")], envelope(SOAP11, """
      <s:Fault><faultcode>s:Client</faultcode><faultstring>customer 7 does not exist</faultstring>
      <detail><code>E404</code></detail></s:Fault>"""))
    status, headers, payload = post(amb, "/legacy/Explode", {"id": 7})
    assert status == 502
    assert payload["faultcode"] == "s:Client"
    assert payload["faultstring"] == "customer 7 does not exist"
    assert payload["reason"] == "soap_fault" and payload["upstream"] == "legacy"
    assert payload["detail"] == {"code": "E404"}


def test_soap_12_fault_becomes_502_json(amb, services):
    s12, _ = services["1.2"]
    s12.special["Explode"] = Reply(500, [("Content-Type", "application/soap+xml")], envelope(SOAP12, """
      <s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code>
      <s:Reason><s:Text xml:lang="en">database down</s:Text></s:Reason></s:Fault>"""))
    status, _, payload = post(amb, "/legacy12/Explode", {})
    assert status == 502
    assert (payload["faultcode"], payload["faultstring"]) == ("Receiver", "database down")


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b"null", b"{not json", b""])
def test_a_body_that_is_not_a_json_object_is_refused_without_contact(amb, services, body):
    before = len(services["1.1"][1].received)
    status, _, payload = post(amb, "/legacy/GetCustomer", body)
    assert status == 400
    assert payload["reason"] == "bad_request" and "JSON object" in payload["error"]
    assert len(services["1.1"][1].received) == before


@pytest.mark.parametrize("path, payload", [
    ("/legacy/Get%20Customer", {}),
    ("/legacy/a/b", {}),
    ("/legacy", {}),
    ("/legacy/GetCustomer", {"bad name": 1}),
    ("/legacy/GetCustomer", {"x": [[1, 2]]}),
    ("/legacy/GetCustomer", {"x": "bell \u0007"}),
])
def test_calls_that_have_no_xml_form_are_refused_without_contact(amb, services, path, payload):
    before = len(services["1.1"][1].received)
    status, _, answer = post(amb, path, payload)
    assert status == 400, answer
    assert answer["reason"] == "bad_request"
    assert len(services["1.1"][1].received) == before


def test_an_answer_that_is_not_xml_is_a_clear_502(amb, services):
    s11, _ = services["1.1"]
    s11.special["Html"] = Reply(200, [("Content-Type", "text/html")], b"<html><body>Oops</p></html>")
    status, _, payload = post(amb, "/legacy/Html", {})
    assert status == 502
    assert payload["reason"] == "upstream_error"
    assert "not a SOAP envelope" in payload["error"] and "not XML" in payload["error"]


def test_xml_that_is_not_an_envelope_is_a_clear_502(amb, services):
    s11, _ = services["1.1"]
    s11.special["Plain"] = Reply(200, [("Content-Type", "text/xml")], b"<result>1</result>")
    status, _, payload = post(amb, "/legacy/Plain", {})
    assert status == 502 and "not a SOAP envelope" in payload["error"]


def test_external_entities_in_the_answer_are_refused(amb, services, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    s11, _ = services["1.1"]
    s11.special["Xxe"] = Reply(200, [("Content-Type", "text/xml")], (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
        f'<s:Envelope xmlns:s="{SOAP11}"><s:Body><XxeResponse><v>&x;</v></XxeResponse></s:Body></s:Envelope>'
    ).encode())
    status, _, raw = amb.request("POST", "/legacy/Xxe", {"Content-Type": "application/json"}, b"{}")
    assert status == 502
    assert b"TOP-SECRET-CONTENT" not in raw
    assert "DTD" in json.loads(raw)["error"]


def test_entity_expansion_bombs_are_refused(amb, services):
    entities = '<!ENTITY a0 "lol">' + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
    s11, _ = services["1.1"]
    s11.special["Bomb"] = Reply(200, [("Content-Type", "text/xml")], (
        f'<?xml version="1.0"?><!DOCTYPE r [{entities}]>'
        f'<s:Envelope xmlns:s="{SOAP11}"><s:Body><BombResponse><v>&a9;</v></BombResponse></s:Body></s:Envelope>'
    ).encode())
    status, _, payload = post(amb, "/legacy/Bomb", {})
    assert status == 502 and payload["reason"] == "upstream_error"
    # The ambassador is still fine afterwards.
    status, _, _ = post(amb, "/legacy/GetCustomer", {"customerId": 1})
    assert status == 200


def test_other_methods_pass_through_untranslated(amb, services):
    s11, up = services["1.1"]
    before = len(up.received)
    status, _, _ = amb.get("/legacy?wsdl")
    assert len(up.received) == before + 1
    assert up.received[-1].method == "GET" and up.received[-1].path == "/soap/endpoint?wsdl"


def test_retries_see_the_real_soap_exchange(amb, services):
    # The stages below the SOAP stage handle the exchange on the wire: the 503 (not an
    # envelope) is retried, the same envelope is sent again, and the client gets the JSON.
    busy, up = services["busy"]
    before = len(up.received)
    status, headers, payload = post(amb, "/busy/GetCustomer", {"customerId": 3})
    assert status == 200, payload
    assert payload == {"customerId": "3"}
    assert headers["X-Ambassador-Attempts"] == "2"
    first, second = up.received[before:]
    assert first.body == second.body and second.header("SOAPAction") == f'"{NS}/GetCustomer"'
