"""Which stages an upstream's profile selects, in the order a request passes them.

Outermost first: soap (JSON in and out for the client; every stage below handles the SOAP
exchange as it goes over the wire), cache (a hit needs nothing else), retry (each attempt asks the breaker),
breaker (refuses attempts while open, before they wait for the limit), limit (every attempt
that goes is a request to the partner: it waits for rate, quota and concurrency like any),
auth (every attempt carries a current credential; token fetches are not paced), then the transport.
"""

from __future__ import annotations

from functools import partial

from .auth import auth_stage
from .breaker import breaker_stage
from .cache import CacheStage, make_store
from .limit import limit_stage
from .profile import Profile, Upstream
from .retry import RetryStage
from .service import Stage, deadline_of
from .soap import SoapStage


def build_stages(upstream: Upstream, profile: Profile) -> list[Stage]:
    stages: list[Stage] = []
    deadline = partial(deadline_of, upstream)
    if upstream.soap:  # outermost: the stages below handle the SOAP exchange as it is on the wire
        stages.append(SoapStage(upstream))
    if upstream.cache:
        stages.append(CacheStage(upstream, make_store(upstream, profile.state)))
    if upstream.retry:
        stages.append(RetryStage(upstream.name, upstream.retry, deadline))
    if upstream.breaker:
        stages.append(breaker_stage(upstream, profile.state))
    if upstream.limit:
        stages.append(limit_stage(upstream, profile.state, deadline))
    if upstream.auth:
        stages.append(auth_stage(upstream, deadline))
    return stages
