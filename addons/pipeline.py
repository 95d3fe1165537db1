"""Which stages an upstream's profile selects, in the order a request passes them.

Outermost first: soap (JSON in and out for the client; every stage below handles the SOAP
exchange as it goes over the wire), cache (a hit needs nothing else), retry (each attempt asks the breaker),
breaker (refuses attempts while open), auth (every attempt carries a current credential),
then the transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .auth import auth_stage
from .breaker import breaker_stage
from .cache import CacheStage, make_store
from .profile import Upstream
from .retry import RetryStage
from .service import Stage
from .soap import SoapStage

if TYPE_CHECKING:
    from .gateway import Gateway


def build_stages(upstream: Upstream, gateway: Gateway) -> list[Stage]:
    stages: list[Stage] = []
    if upstream.soap:  # outermost: the stages below handle the SOAP exchange as it is on the wire
        stages.append(SoapStage(upstream))
    if upstream.cache:
        stages.append(CacheStage(upstream, make_store(upstream, gateway.profile.state)))
    if upstream.retry:
        stages.append(RetryStage(upstream.name, upstream.retry, lambda r: gateway.services[upstream.name].deadline_of(r)))
    if upstream.breaker:
        stages.append(breaker_stage(upstream, gateway.profile.state))
    if upstream.auth:
        stages.append(auth_stage(upstream, gateway.profile.path, lambda r: gateway.services[upstream.name].deadline_of(r)))
    return stages
