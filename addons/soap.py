"""REST to SOAP: `POST {prefix}/{Operation}` with a JSON object becomes a SOAP call.

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


def soap_action(template: str, namespace: str, operation: str) -> str:
    """The action of an operation without a WSDL: the profile's template filled in. A namespace
    ending in '/' or '#' is not followed by another '/' (`http://x/ns/` + `Op`)."""
    if namespace.endswith(("/", "#")):
        template = template.replace("{namespace}/", "{namespace}")
    return template.replace("{namespace}", namespace).replace("{operation}", operation)


def wrap_body(version: SoapVersion, body_element: bytes) -> bytes:
    """The SOAP envelope around an already serialised Body element (made from the WSDL)."""
    env = quoteattr(version.envelope_ns)
    return b"".join((
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap={env}><soap:Body>'.encode(),
        body_element,
        b"</soap:Body></soap:Envelope>",
    ))


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


def parse_answer(body: bytes, operation: Any = None) -> Any | Fault:
    """The JSON value of the Body's element (`{Operation}Response`), or the Fault it holds.

    With the WSDL's `operation` (wsdl.WsdlOperation) the value is typed by its schema, else
    leaves are strings unless the answer gives their xsi:type."""
    if operation is None:
        try:
            root = defusedxml.ElementTree.fromstring(body, forbid_dtd=True)
        except defusedxml.DefusedXmlException as e:
            raise NotSoap(f"the answer declares a DTD or entities, which are refused ({type(e).__name__})") from None
        except ParseError as e:
            raise NotSoap(f"the answer is not XML ({e})") from None
    else:
        try:
            root = operation.parse(body)
        except ValueError as e:
            raise NotSoap(f"the answer is not XML, or declares a DTD or entities, which are refused ({e})") from None
    env, _, local = root.tag[1:].partition("}")
    if local != "Envelope" or env not in ENVELOPE_NAMESPACES:
        raise NotSoap(f"the answer is XML but not a SOAP envelope (root element {_local(root.tag)!r})")
    body_el = root.find(f"{{{env}}}Body")
    content = next(iter(_elements(body_el)), None) if body_el is not None else None
    if content is None:
        raise NotSoap("the SOAP envelope has an empty or missing Body")
    if content.tag == f"{{{env}}}Fault":
        return _fault(content)
    if operation is None:
        return _to_json(content)
    try:
        return operation.read(content)
    except ValueError as e:
        raise NotSoap(str(e)) from None


def _elements(parent: Element) -> list[Element]:
    """The child elements, without the processing instructions lxml keeps."""
    return [child for child in parent if isinstance(child.tag, str)]


def _fault(fault: Element) -> Fault:
    by_name = {_local(child.tag): child for child in _elements(fault)}
    if "Code" in by_name:  # SOAP 1.2: Code/Value (Subcode/Value...), Reason/Text, Detail
        text = next((el for el in _elements(by_name.get("Reason", [])) if _local(el.tag) == "Text"), None)
        code, detail = _fault_code_12(by_name["Code"]), by_name.get("Detail")
    else:  # SOAP 1.1: faultcode, faultstring, detail
        code_el, text, detail = by_name.get("faultcode"), by_name.get("faultstring"), by_name.get("detail")
        code = (code_el.text or "").strip() if code_el is not None else None
    return Fault(
        code=code,
        string=(text.text or "").strip() if text is not None else None,
        detail=_to_json(detail) if detail is not None else None,
    )


def _fault_code_12(code: Element) -> str | None:
    """`Sender/Bad`: the local names of Code/Value and of each nested Subcode/Value, joined by '/'."""
    names = []
    level: Element | None = code
    for _ in range(MAX_DEPTH):  # subcodes nest; a hostile answer could nest them without end
        if level is None:
            break
        children = {_local(el.tag): el for el in _elements(level)}
        value = children.get("Value")
        if value is not None:
            names.append((value.text or "").strip().rpartition(":")[2])
        level = children.get("Subcode")
    return "/".join(names) if names else None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _to_json(element: Element) -> Any:
    """Children become an object (repeated names a list); a leaf its text, typed by xsi:type."""
    children = _elements(element)
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
        self.wsdl = upstream.soap.schema  # wsdl.Wsdl, read when the profile loaded; or None

    async def __call__(self, request: UpstreamRequest, call_next: Handler) -> UpstreamResponse:
        if request.method != "POST":
            return await call_next(request)
        operation = self.operation_of(request.path)
        request.notes["soap"] = operation
        described = self.wsdl.operations[operation] if self.wsdl else None
        return self.from_soap(await call_next(self.to_soap(request, operation, described)), described)

    def operation_of(self, path: str) -> str:
        only_path = path.partition("?")[0]
        rest = only_path[len(self.upstream.url.base_path):]
        operation = rest[1:]
        if not rest.startswith("/") or not NCNAME_RE.match(operation):
            raise self.bad_request(f"call a SOAP operation as POST {{prefix}}/{{Operation}}, got path {rest or '/'!r}")
        if self.wsdl and operation not in self.wsdl.operations:
            known = ", ".join(sorted(self.wsdl.operations)[:20])
            raise AmbassadorError("no_route", f"the WSDL of upstream {self.upstream.name} has no operation {operation} (it has {known})", self.upstream.name)
        return operation

    def to_soap(self, request: UpstreamRequest, operation: str, described: Any = None) -> UpstreamRequest:
        """The SOAP call; with the WSDL's `described` operation, checked against its schema."""
        try:
            fields = json.loads(request.body)
        except (ValueError, RecursionError):
            raise self.bad_request(f"the body of a SOAP call ({operation}) must be a JSON object; it is not valid JSON") from None
        if not isinstance(fields, dict):
            raise self.bad_request(f"the body of a SOAP call ({operation}) must be a JSON object, got {type(fields).__name__}")
        try:
            if described is None:
                envelope = build_envelope(self.policy, operation, fields)
                action = soap_action(self.policy.action, self.policy.namespace, operation)
            else:
                envelope = wrap_body(self.version, described.body_xml(described.fields(fields)))
                action = described.action
        except (BadBody, ValueError) as e:  # the WSDL's refusals are ValueErrors naming the field
            raise self.bad_request(f"SOAP call {operation}: {e}") from None
        except RecursionError:
            raise self.bad_request(f"SOAP call {operation}: the JSON body nests too deeply") from None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in REPLACED_REQUEST_HEADERS)
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

    def from_soap(self, answer: UpstreamResponse, described: Any = None) -> UpstreamResponse:
        name = self.upstream.name
        try:
            xml = bounded.decoded(answer.body, answer.headers.get("Content-Encoding", ""))
        except bounded.TooLarge:
            raise bounded.too_large(name, "a SOAP answer") from None
        except bounded.Undecodable as e:
            raise AmbassadorError("upstream_error", f"upstream {name} answered a SOAP answer that cannot be decoded: {e}", name) from None
        try:
            result = parse_answer(xml, described)
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
