"""A SOAP upstream's WSDL, read with zeep: the operations, their SOAPAction, and their messages
built and read by the schema.

zeep only reads the WSDL (and the schemas it imports, bounded in time and size) and makes and
reads XML; it never calls the service: the ambassador's own transport sends every SOAP call.
Answers are parsed with entities, DTDs and external references refused.
"""

from __future__ import annotations

import base64
import datetime
import decimal
from dataclasses import dataclass
from typing import Any

import zeep
import zeep.exceptions
import zeep.helpers
import zeep.loader
import zeep.wsdl
from lxml import etree
from zeep.wsdl.bindings.soap import Soap11Binding, Soap12Binding
from zeep.xsd.types.builtins import Boolean, Decimal, Double, Float, Integer
from zeep.xsd.types.complex import ComplexType
from zeep.xsd.types.simple import AnySimpleType

WSDL_TIMEOUT = 10.0  # seconds for each document (the WSDL, each schema it imports)
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024  # each such document
BINDINGS = {"1.1": Soap11Binding, "1.2": Soap12Binding}
SETTINGS = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True, xml_huge_tree=False)


class WsdlError(ValueError):
    """The WSDL cannot be read or has no binding for the SOAP version."""


class DoesNotFit(ValueError):
    """A JSON request the operation's schema does not accept; the message names the field."""


class WsdlTransport(zeep.Transport):
    """Fetches the WSDL and its imported schemas, each bounded in time and size."""

    def __init__(self):
        super().__init__(timeout=WSDL_TIMEOUT)

    def _load_remote_data(self, url):
        with self.session.get(url, timeout=self.load_timeout, stream=True) as response:
            response.raise_for_status()
            data = response.raw.read(MAX_DOCUMENT_BYTES + 1, decode_content=True)
        if len(data) > MAX_DOCUMENT_BYTES:
            raise WsdlError(f"{url} is larger than {MAX_DOCUMENT_BYTES} bytes")
        return data


@dataclass(frozen=True)
class Wsdl:
    location: str
    operations: dict[str, WsdlOperation]


def load_wsdl(location: str, version: str) -> Wsdl:
    """Read the WSDL at `location` (a file or an http(s) URL); blocking: call it off the event loop."""
    try:
        document = zeep.wsdl.Document(location, WsdlTransport(), settings=SETTINGS)
    except Exception as e:  # zeep, lxml, requests and the file system each raise their own
        raise WsdlError(f"cannot read the WSDL {location}: {type(e).__name__}: {e}") from None
    kind = BINDINGS[version]
    bindings = [port.binding for service in document.services.values() for port in service.ports.values()]
    binding = next((b for b in bindings if isinstance(b, kind)), None)
    if binding is None:
        raise WsdlError(f"the WSDL {location} has no SOAP {version} binding (check soap.version)")
    operations = {}
    for name, operation in binding.all().items():
        action = operation.soapaction or ""
        if any(c == '"' or c == "\\" or not c.isprintable() for c in action):
            raise WsdlError(f"the WSDL {location} gives operation {name} a soapAction no header can carry: {action!r}")
        operations[name] = WsdlOperation(name, action, operation.input.body, operation.output.body, document.types)
    return Wsdl(location, operations)


@dataclass(frozen=True)
class WsdlOperation:
    name: str
    action: str
    request: Any  # zeep Element of the Body's request element
    answer: Any  # zeep Element of the Body's answer element
    schema: Any  # zeep Schema, for reading the answer

    def fields(self, body: dict) -> dict:
        """The JSON body checked against the request element and converted to schema values."""
        return _complex(self.request.type, body, self.name)

    def body_xml(self, fields: dict) -> bytes:
        """The request element, its children in the schema's order; DoesNotFit if one is missing."""
        holder = etree.Element("holder")
        try:
            self.request.render(holder, self.request(**fields))
        except zeep.exceptions.ValidationError as e:
            raise DoesNotFit(f"{'.'.join(e.path) if e.path else self.name}: {e.message}") from None
        return etree.tostring(holder[0], encoding="utf-8")

    def parse(self, body: bytes) -> etree._Element:
        """An answer's XML, DTDs, entities and external references refused; ValueError if not XML."""
        try:
            return zeep.loader.parse_xml(body, None, settings=SETTINGS)
        except zeep.exceptions.Error as e:
            raise ValueError(f"{type(e).__name__}: {e}") from None

    def read(self, content: etree._Element) -> Any:
        """The answer element as JSON values typed by the schema; ValueError if it does not fit."""
        if content.tag != self.answer.qname.text:
            raise ValueError(f"the answer holds {content.tag}, the WSDL's {self.name} answers {self.answer.qname.text}")
        try:
            value = self.answer.parse(content, self.schema)
        except zeep.exceptions.Error as e:
            raise ValueError(f"the answer does not fit the WSDL: {e}") from None
        return _json_ready(zeep.helpers.serialize_object(value, dict))


# --- JSON to schema values -------------------------------------------------------------


def _complex(kind: Any, value: Any, path: str) -> dict:
    if not isinstance(kind, ComplexType):
        raise DoesNotFit(f"{path}: the schema's type is not a structure of fields")
    if not isinstance(value, dict):
        raise DoesNotFit(f"{path}: must be an object, got {_json_kind(value)}")
    elements = dict(kind.elements)
    converted = {}
    for name, item in value.items():
        field_path = f"{path}.{name}"
        element = elements.get(name)
        if element is None:
            raise DoesNotFit(f"{field_path}: not a field of {path} (the schema has {', '.join(elements) or 'none'})")
        if isinstance(item, list):
            if not element.accepts_multiple:
                raise DoesNotFit(f"{field_path}: the schema allows one value, got a list")
            converted[name] = [_value(element, one, f"{field_path}[{i}]") for i, one in enumerate(item)]
        else:
            converted[name] = _value(element, item, field_path)
    return converted


def _value(element: Any, value: Any, path: str) -> Any:
    if value is None:
        return None  # zeep refuses it where the element is required and not nillable
    kind = element.type
    if isinstance(kind, ComplexType):
        return _complex(kind, value, path)
    if isinstance(kind, AnySimpleType):
        return _simple(kind, value, path)
    return value


def _simple(kind: AnySimpleType, value: Any, path: str) -> Any:
    type_name = kind.qname.localname if kind.qname is not None else "a simple type"
    if isinstance(kind, Boolean):
        if isinstance(value, bool):
            return value
    elif isinstance(kind, Integer):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isascii():
            try:
                return int(value)
            except ValueError:
                pass
    elif isinstance(kind, (Decimal, Float, Double)):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return decimal.Decimal(str(value)) if isinstance(kind, Decimal) else float(value)
    elif isinstance(value, str):
        try:
            kind.pythonvalue(value)  # the lexical form is the schema's (dates, durations...)
        except (ValueError, TypeError, ArithmeticError):
            raise DoesNotFit(f"{path}: {value!r} is not a valid {type_name}") from None
        return value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DoesNotFit(f"{path}: must be {_article(type_name)}, got {_json_kind(value)}")


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _article(type_name: str) -> str:
    return f"an {type_name}" if type_name[:1] in "aeiou" else f"a {type_name}"


# --- schema values to JSON -------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and value.as_tuple().exponent >= 0 else float(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value
