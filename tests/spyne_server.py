"""A real SOAP service for the tests: spyne, validating every request against its own schema.

`SpyneService("1.1")` / `SpyneService("1.2")` serves an orders service on 127.0.0.1 (wsgiref in a
thread), its WSDL at `{url}?wsdl`, and records each request it receives (SOAPAction, content
type, the envelope) so a test can tell what reached it, or that nothing did.

spyne 2.14 (the latest) predates Python 3.13 in two places, both outside what it serves: it
imports `cgi` (the `legacy-cgi` package provides it again) and its bundled `six` registers
`six.moves` with the import hooks Python 3.12 removed. `SixMovesFinder` answers those imports
through the bundled six's own loader; nothing of spyne itself is changed.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import logging
import threading
from dataclasses import dataclass
from decimal import Decimal as PyDecimal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class SixMovesFinder:
    """`spyne.util.six.moves.*` through the bundled six's loader (its `find_module` is gone)."""

    PREFIX = "spyne.util.six.moves"

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.PREFIX or fullname.startswith(self.PREFIX + "."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return sys.modules["spyne.util.six"]._importer.load_module(spec.name)

    def exec_module(self, module):
        pass


if not any(isinstance(finder, SixMovesFinder) for finder in sys.meta_path):
    sys.meta_path.append(SixMovesFinder())

from spyne import Application, Array, Boolean, ComplexModel, Decimal, Fault, Integer, ServiceBase, Unicode, rpc  # noqa: E402
from spyne.protocol.soap import Soap11, Soap12  # noqa: E402
from spyne.server.wsgi import WsgiApplication  # noqa: E402

NS = "http://legacy.example.com/orders"
logging.getLogger("spyne").setLevel(logging.CRITICAL)  # it logs each Fault it sends with a traceback


class Customer(ComplexModel):
    __namespace__ = NS
    name = Unicode
    vip = Boolean


class Line(ComplexModel):
    __namespace__ = NS
    sku = Unicode
    qty = Integer


class Order(ComplexModel):
    __namespace__ = NS
    id = Integer
    total = Decimal
    paid = Boolean
    customer = Customer
    lines = Array(Line)
    tags = Unicode(max_occurs="unbounded")


class OrderService(ServiceBase):
    @rpc(Integer(min_occurs=1, nillable=False), Unicode(min_occurs=1, nillable=False), Boolean(min_occurs=1, nillable=False), _returns=Order)
    def GetOrder(ctx, id, region, express):
        if id == 0:
            raise Fault(faultcode="Client.Bad", faultstring="order 0 does not exist")
        return Order(
            id=id,
            total=PyDecimal("12.50"),
            paid=express,
            customer=Customer(name=f"customer in {region}", vip=True),
            lines=[Line(sku="A-1", qty=3)],  # a list of one
            tags=["first"],  # a list of one
        )


@dataclass
class Arrival:
    soap_action: str | None
    content_type: str | None
    body: bytes


class SpyneService:
    """The orders service for SOAP `version` ("1.1" or "1.2"), with `received` requests."""

    def __init__(self, version: str):
        protocol = Soap11 if version == "1.1" else Soap12
        app = Application([OrderService], tns=NS, in_protocol=protocol(validator="lxml"), out_protocol=protocol())
        self.wsgi = WsgiApplication(app)
        self.received: list[Arrival] = []
        self.server: WSGIServer | None = None

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            self.received.append(Arrival(environ.get("HTTP_SOAPACTION"), environ.get("CONTENT_TYPE"), body))
            environ["wsgi.input"] = io.BytesIO(body)
        return self.wsgi(environ, start_response)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/orders"

    def __enter__(self) -> "SpyneService":
        self.server = make_server("127.0.0.1", 0, self, handler_class=QuietHandler)
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass
