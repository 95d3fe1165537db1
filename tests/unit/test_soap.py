"""The SOAP translation as plain Python: envelopes built, answers parsed safely."""

import asyncio
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from multidict import CIMultiDict

from addons.errors import AmbassadorError
from addons.exchange import UpstreamRequest, UpstreamResponse
from addons.profile import SoapPolicy, parse_profile
from addons.soap import Fault, NotSoap, SoapStage, build_envelope, parse_answer, soap_action

NS = "urn:example:legacy"
DEFAULT_ACTION = SoapPolicy.action
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"


def upstream(version="1.1", url="http://legacy.example/ws/endpoint"):
    profile = parse_profile(
        {"upstreams": {"legacy": {"url": url, "match": {"path_prefix": "/legacy"}, "soap": {"namespace": NS, "version": version}}}},
        Path("/tmp/p.yaml"),
    )
    return profile.upstreams["legacy"]


def test_envelope_escapes_text_and_nests():
    xml = build_envelope(SoapPolicy(NS), "Save", {"note": "a<b & \"c\" ]]>", "n": 1.5, "ok": False, "in": {"deep": {"x": "y"}}})
    root = ET.fromstring(xml)
    assert root.tag == f"{{{SOAP11}}}Envelope"
    op = root.find(f"{{{SOAP11}}}Body/{{{NS}}}Save")
    assert op.find(f"{{{NS}}}note").text == 'a<b & "c" ]]>'
    assert op.find(f"{{{NS}}}n").text == "1.5"
    assert op.find(f"{{{NS}}}ok").text == "false"
    assert op.find(f"{{{NS}}}in/{{{NS}}}deep/{{{NS}}}x").text == "y"


def test_namespace_is_an_attribute_value_escaped_properly():
    xml = build_envelope(SoapPolicy('http://x/"q"&<'), "Op", {})
    assert ET.fromstring(xml).find(f"{{{SOAP11}}}Body")[0].tag == '{http://x/"q"&<}Op'


def test_soap_12_envelope_namespace():
    assert ET.fromstring(build_envelope(SoapPolicy(NS, "1.2"), "Op", {})).tag == f"{{{SOAP12}}}Envelope"


def test_action_convention():
    assert soap_action(DEFAULT_ACTION, "http://a/ns", "Op") == "http://a/ns/Op"
    assert soap_action(DEFAULT_ACTION, "http://a/ns/", "Op") == "http://a/ns/Op"
    assert soap_action("urn:legacy#{operation}", "http://a/ns", "Op") == "urn:legacy#Op"
    assert soap_action("{operation}", "http://a/ns", "Op") == "Op"


def envelope(env, inner):
    return f'<e:Envelope xmlns:e="{env}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><e:Body>{inner}</e:Body></e:Envelope>'.encode()


def test_answer_single_and_repeated_elements_and_types():
    answer = parse_answer(envelope(SOAP11, """<OpResponse xmlns="urn:x"><a>1</a><a>2</a><a>3</a><b/>
        <n xsi:type="xs:long">-7</n><f xsi:type="double">x</f><nil xsi:nil="true"/></OpResponse>"""))
    assert answer == {"a": ["1", "2", "3"], "b": "", "n": -7, "f": "x", "nil": None}


def test_faults_of_both_versions():
    f11 = parse_answer(envelope(SOAP11, "<e:Fault><faultcode>e:Server</faultcode><faultstring>boom</faultstring></e:Fault>"))
    assert f11 == Fault("e:Server", "boom", None)
    f12 = parse_answer(envelope(SOAP12, "<e:Fault><e:Code><e:Value>e:Sender</e:Value></e:Code><e:Reason><e:Text>bad</e:Text></e:Reason><e:Detail><why>x</why></e:Detail></e:Fault>"))
    assert f12 == Fault("Sender", "bad", {"why": "x"})


def test_soap_12_fault_code_carries_the_subcodes_by_local_name():
    code = "<e:Code><e:Value>e:Sender</e:Value><e:Subcode><e:Value>m:Bad</e:Value><e:Subcode><e:Value>Worse</e:Value></e:Subcode></e:Subcode></e:Code>"
    fault = parse_answer(envelope(SOAP12, f'<e:Fault xmlns:m="urn:m">{code}<e:Reason><e:Text>no</e:Text></e:Reason></e:Fault>'))
    assert fault == Fault("Sender/Bad/Worse", "no", None)


def test_soap_12_subcodes_nested_without_end_are_bounded():
    code = "<e:Code><e:Value>e:Sender</e:Value>" + "<e:Subcode><e:Value>x</e:Value>" * 200 + "</e:Subcode>" * 200 + "</e:Code>"
    fault = parse_answer(envelope(SOAP12, f"<e:Fault>{code}</e:Fault>"))
    assert fault.code.count("/") < 100


@pytest.mark.parametrize("body, problem", [
    (b"", "not XML"),
    (b"{\"json\": true}", "not XML"),
    (b"<a><b></a>", "not XML"),
    (b"<Envelope/>", "not a SOAP envelope"),
    (envelope(SOAP11, ""), "empty or missing Body"),
    (b'<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><e>&x;</e>', "DTD"),
    (b'<!DOCTYPE e [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><e>&b;</e>', "DTD"),
    (b'<!DOCTYPE e SYSTEM "http://127.0.0.1:1/evil.dtd"><e/>', "DTD"),
])
def test_hostile_or_broken_answers(body, problem):
    with pytest.raises(NotSoap, match=problem):
        parse_answer(body)


def run(stage, request, answer):
    seen = []

    async def call_next(r):
        seen.append(r)
        return answer

    result = asyncio.run(stage(request, call_next))
    return result, seen


def test_stage_sends_to_the_endpoint_with_headers_and_keeps_other_headers():
    stage = SoapStage(upstream("1.2"))
    request = UpstreamRequest("POST", "/ws/endpoint/GetThing?trace=1", CIMultiDict({"Content-Type": "application/json", "Accept-Encoding": "gzip", "X-Keep": "1"}), b'{"id": 3}')
    ok = UpstreamResponse(200, "OK", CIMultiDict({"Content-Type": "application/soap+xml", "X-Cache": "MISS", "Content-Length": "99"}), envelope(SOAP12, "<GetThingResponse><v>3</v></GetThingResponse>"))
    result, seen = run(stage, request, ok)
    sent = seen[0]
    assert sent.path == "/ws/endpoint?trace=1"
    assert sent.headers["Content-Type"] == f'application/soap+xml; charset=utf-8; action="{NS}/GetThing"'
    assert "SOAPAction" not in sent.headers and "Accept-Encoding" not in sent.headers
    assert sent.headers["X-Keep"] == "1"
    assert sent.notes["soap"] == "GetThing" and request.notes["soap"] == "GetThing"
    assert result.status == 200 and json.loads(result.body) == {"v": "3"}
    assert result.headers["X-Cache"] == "MISS"  # what inner stages report stays
    assert result.headers["Content-Length"] == str(len(result.body))


def test_stage_passes_other_methods_through():
    stage = SoapStage(upstream())
    request = UpstreamRequest("GET", "/ws/endpoint?wsdl", CIMultiDict(), b"")
    answer = UpstreamResponse(200, "OK", CIMultiDict({"Content-Type": "text/xml"}), b"<definitions/>")
    result, seen = run(stage, request, answer)
    assert seen == [request] and result is answer


def test_stage_refuses_deep_json():
    stage = SoapStage(upstream())
    deep = {}
    node = deep
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    request = UpstreamRequest("POST", "/ws/endpoint/Op", CIMultiDict(), json.dumps(deep).encode())
    with pytest.raises(AmbassadorError, match="nests deeper") as e:
        run(stage, request, None)
    assert e.value.reason == "bad_request"
