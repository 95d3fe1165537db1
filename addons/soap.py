"""REST to SOAP: `POST {prefix}/{Operation}` with a JSON object becomes a SOAP call (SPEC 8).

The stage is the outermost one of its upstream (see pipeline.py): the cache, retry, breaker and
auth stages below it handle the real SOAP exchange as it goes over the wire, so retries and the
breaker judge the upstream's own HTTP status, and the client sees JSON either way.

Answers are parsed with defusedxml and any DTD is refused: a legacy service (or whoever sits in
its place) cannot make the ambassador read local files or expand entity bombs.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

import defusedxml
import defusedxml.ElementTree
from multidict import CIMultiDict

from . import bounded
from .errors import AmbassadorError
from .exchange import UpstreamRequest, UpstreamResponse
from .profile import SoapPolicy, Upstream
from .service import Handler

XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_DEPTH = 64  # nesting of the JSON body; deeper documents are refused, not recursed into


@dataclass(frozen=True)
class SoapVersion:
    envelope_ns: str
    content_type: str
    action_in_header: bool  # 1.1: SOAPAction header; 1.2: action parameter of the content type


VERSIONS = {
    "1.1": SoapVersion("http://schemas.xmlsoap.org/soap/envelope/", "text/xml; charset=utf-8", True),
    "1.2": SoapVersion("http://www.w3.org/2003/05/soap-envelope", "application/soap+xml; charset=utf-8", False),
}
ENVELOPE_NAMESPACES = {v.envelope_ns for v in VERSIONS.values()}

# XML names without a colon (NCName), and the characters XML 1.0 cannot carry at all.
NCNAME_RE = re.compile(r"[^\W\d][\w.\-]*\Z")
NOT_XML_CHAR_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

INTEGER_TYPES = frozenset(
    "int integer long short byte unsignedInt unsignedLong unsignedShort unsignedByte "
    "nonNegativeInteger nonPositiveInteger positiveInteger negativeInteger".split()
)
FLOAT_TYPES = frozenset({"decimal", "float", "double"})
# Request headers describing a body that the envelope replaces, or an encoding we would have to undo.
REPLACED_REQUEST_HEADERS = frozenset({"content-type", "content-encoding", "soapaction", "accept-encoding"})
REPLACED_RESPONSE_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


class BadBody(ValueError):
    """The client's JSON cannot be expressed as the operation's XML."""


def soap_action(namespace: str, operation: str) -> str:
    """The conventional action URI of an operation: the namespace, '/', the operation."""
    return namespace + operation if namespace.endswith(("/", "#")) else f"{namespace}/{operation}"


def build_envelope(policy: SoapPolicy, operation: str, fields: dict) -> bytes:
    """The SOAP envelope calling `operation` with one (namespace-qualified) element per field."""
    env = VERSIONS[policy.version].envelope_ns
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<soap:Envelope xmlns:soap={quoteattr(env)} xmlns:xsi="{XSI}" xmlns:ns={quoteattr(policy.namespace)}>',
        f"<soap:Body><ns:{operation}>",
    ]
    _append_fields(parts, fields, 1)
    parts.append(f"</ns:{operation}></soap:Body></soap:Envelope>")
    return "".join(parts).encode("utf-8")


def _append_fields(parts: list[str], fields: dict, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BadBody(f"the JSON body nests deeper than {MAX_DEPTH} levels")
    for name, value in fields.items():
        if not NCNAME_RE.match(name):
            raise BadBody(f"{name!r} is not a valid XML element name")
        for item in value if isinstance(value, list) else [value]:
            _append_element(parts, name, item, depth)


def _append_element(parts: list[str], name: str, value: Any, depth: int) -> None:
    if value is None:
        parts.append(f'<ns:{name} xsi:nil="true"/>')
        return
    parts.append(f"<ns:{name}>")
    if isinstance(value, dict):
        _append_fields(parts, value, depth + 1)
    elif isinstance(value, list):
        raise BadBody(f"{name!r}: a list inside a list has no XML form (lists become repeated elements)")
    else:
        parts.append(_xml_text(value))
    parts.append(f"</ns:{name}>")


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if NOT_XML_CHAR_RE.search(value):
        raise BadBody("the JSON body has characters XML cannot carry (control characters or lone surrogates)")
    return escape(value)


# --- the answer ------------------------------------------------------------------------


class NotSoap(ValueError):
    """The upstream's answer is not a SOAP envelope."""


@dataclass(frozen=True)
class Fault:
    code: str | None
    string: str | None
    detail: Any


def parse_answer(body: bytes) -> Any | Fault:
    """The JSON value of the Body's element (`{Operation}Response`), or the Fault it holds."""
    try:
        root = defusedxml.ElementTree.fromstring(body, forbid_dtd=True)
    except defusedxml.DefusedXmlException as e:
        raise NotSoap(f"the answer declares a DTD or entities, which are refused ({type(e).__name__})") from None
    except ParseError as e:
        raise NotSoap(f"the answer is not XML ({e})") from None
    env, _, local = root.tag[1:].partition("}")
    if local != "Envelope" or env not in ENVELOPE_NAMESPACES:
        raise NotSoap(f"the answer is XML but not a SOAP envelope (root element {_local(root.tag)!r})")
    body_el = root.find(f"{{{env}}}Body")
    content = next(iter(body_el), None) if body_el is not None else None
    if content is None:
        raise NotSoap("the SOAP envelope has an empty or missing Body")
    if content.tag == f"{{{env}}}Fault":
        return _fault(content)
    return _to_json(content)


def _fault(fault: Element) -> Fault:
    by_name = {_local(child.tag): child for child in fault}
    if "Code" in by_name:  # SOAP 1.2: Code/Value, Reason/Text, Detail
        value = next((el for el in by_name["Code"] if _local(el.tag) == "Value"), None)
        text = next((el for el in by_name.get("Reason", []) if _local(el.tag) == "Text"), None)
        detail = by_name.get("Detail")
        code, string = value, text
    else:  # SOAP 1.1: faultcode, faultstring, detail
        code, string, detail = by_name.get("faultcode"), by_name.get("faultstring"), by_name.get("detail")
    return Fault(
        code=(code.text or "").strip() if code is not None else None,
        string=(string.text or "").strip() if string is not None else None,
        detail=_to_json(detail) if detail is not None else None,
    )


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _to_json(element: Element) -> Any:
    """Children become an object (repeated names a list); a leaf its text, typed by xsi:type."""
    children = list(element)
    if not children:
        if element.get(f"{{{XSI}}}nil") in ("true", "1"):
            return None
        return _typed(element.text or "", element.get(f"{{{XSI}}}type"))
    result: dict[str, Any] = {}
    repeated: set[str] = set()
    for child in children:
        name, value = _local(child.tag), _to_json(child)
        if name in repeated:
            result[name].append(value)
        elif name in result:
            result[name] = [result[name], value]
            repeated.add(name)
        else:
            result[name] = value
    return result


def _typed(text: str, xsi_type: str | None) -> Any:
    kind = xsi_type.rpartition(":")[2] if xsi_type else None
    try:
        if kind in INTEGER_TYPES:
            return int(text)
        if kind in FLOAT_TYPES:
            return float(text)
    except ValueError:
        return text
    if kind == "boolean" and text.strip() in ("true", "false", "1", "0"):
        return text.strip() in ("true", "1")
    return text


# --- the stage -------------------------------------------------------------------------


class SoapStage:
    """Translates `POST .../{Operation}` JSON calls; other methods pass through (e.g. `GET ?wsdl`)."""

    name = "soap"

    def __init__(self, upstream: Upstream):
        self.upstream = upstream
        self.policy = upstream.soap
        self.version = VERSIONS[upstream.soap.version]

    async def __call__(self, request: UpstreamRequest, call_next: Handler) -> UpstreamResponse:
        if request.method != "POST":
            return await call_next(request)
        operation = self.operation_of(request.path)
        request.notes["soap"] = operation
        return self.from_soap(await call_next(self.to_soap(request, operation)))

    def operation_of(self, path: str) -> str:
        only_path = path.partition("?")[0]
        rest = only_path[len(self.upstream.url.base_path):]
        operation = rest[1:]
        if not rest.startswith("/") or not NCNAME_RE.match(operation):
            raise self.bad_request(f"call a SOAP operation as POST {{prefix}}/{{Operation}}, got path {rest or '/'!r}")
        return operation

    def to_soap(self, request: UpstreamRequest, operation: str) -> UpstreamRequest:
        try:
            fields = json.loads(request.body)
        except (ValueError, RecursionError):
            raise self.bad_request(f"the body of a SOAP call ({operation}) must be a JSON object; it is not valid JSON") from None
        if not isinstance(fields, dict):
            raise self.bad_request(f"the body of a SOAP call ({operation}) must be a JSON object, got {type(fields).__name__}")
        try:
            envelope = build_envelope(self.policy, operation, fields)
        except BadBody as e:
            raise self.bad_request(f"SOAP call {operation}: {e}") from None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in REPLACED_REQUEST_HEADERS)
        action = soap_action(self.policy.namespace, operation)
        if self.version.action_in_header:
            headers["Content-Type"] = self.version.content_type
            headers["SOAPAction"] = f'"{action}"'
        else:
            headers["Content-Type"] = f'{self.version.content_type}; action="{action}"'
        headers["Accept"] = self.version.content_type.partition(";")[0]
        query = request.path.partition("?")[2]
        return dataclasses.replace(
            request,
            path=(self.upstream.url.base_path or "/") + (f"?{query}" if query else ""),
            headers=headers,
            body=envelope,
            max_body=bounded.MAX_BODY,  # the answer is parsed whole
        )

    def from_soap(self, answer: UpstreamResponse) -> UpstreamResponse:
        name = self.upstream.name
        try:
            xml = bounded.decoded(answer.body, answer.headers.get("Content-Encoding", ""))
        except bounded.TooLarge:
            raise bounded.too_large(name, "a SOAP answer") from None
        except bounded.Undecodable as e:
            raise AmbassadorError("upstream_error", f"upstream {name} answered a SOAP answer that cannot be decoded: {e}", name) from None
        try:
            result = parse_answer(xml)
        except RecursionError:
            raise AmbassadorError("upstream_error", f"upstream {name} answered XML nested too deeply to convert", name) from None
        except NotSoap as e:
            kind = answer.headers.get("Content-Type", "no content type")
            raise AmbassadorError(
                "upstream_error", f"upstream {name} answered HTTP {answer.status} ({kind}), not a SOAP envelope: {e}", name
            ) from None
        status = answer.status
        if isinstance(result, Fault):
            status = 502
            result = {
                "error": f"SOAP fault from upstream {name}: {result.string or result.code}",
                "reason": "soap_fault",
                "upstream": name,
                "faultcode": result.code,
                "faultstring": result.string,
                "detail": result.detail,
            }
        try:
            body = json.dumps(result).encode()
        except RecursionError:
            raise AmbassadorError("upstream_error", f"upstream {name} answered XML nested too deeply to convert", name) from None
        headers = CIMultiDict((k, v) for k, v in answer.headers.items() if k.lower() not in REPLACED_RESPONSE_HEADERS)
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(body))
        return UpstreamResponse(status, "Bad Gateway" if status == 502 else answer.reason, headers, body)

    def bad_request(self, message: str) -> AmbassadorError:
        return AmbassadorError("bad_request", message, self.upstream.name)
