"""Which stages an upstream's profile selects, in the order a request passes them.

Outermost first: fallback (the answer when nothing below could give one: it comes after the
cache's stale copy, the retries and the failover URLs), soap (JSON in and out for the client;
every stage below handles the SOAP exchange as it goes over the wire), cache (a hit needs
nothing else), retry (each attempt asks the breaker), hedge (each copy is an attempt of its
own through the stages below: it goes to a URL the breaker admits, counts against the limit,
carries a credential), failover (each URL in turn), breaker (one per URL; refuses attempts
while open, before they wait for the limit), limit (every attempt that goes is a request to
the partner: it waits for rate, quota and concurrency like any), auth (every attempt carries a
current credential; token fetches are not paced), then the transport of the attempt's URL.
"""

from __future__ import annotations

from functools import partial

from .auth import auth_stage
from .breaker import breaker_stage
from .cache import CacheStage, make_store
from .failover import FailoverStage
from .fallback import FallbackStage
from .hedge import HedgeStage
from .limit import limit_stage
from .profile import BreakerPolicy, Profile, Upstream
from .retry import RetryStage
from .service import Stage, deadline_of
from .soap import SoapStage


def build_stages(upstream: Upstream, profile: Profile) -> list[Stage]:
    stages: list[Stage] = []
    deadline = partial(deadline_of, upstream)
    # What a failed attempt is, to hedging, failover and fallback alike: the breaker's view.
    failure_statuses = (upstream.breaker or BreakerPolicy()).failure_statuses
    if upstream.fallback:
        stages.append(FallbackStage(upstream.name, upstream.fallback, failure_statuses))
    if upstream.soap:  # the stages below handle the SOAP exchange as it is on the wire
        stages.append(SoapStage(upstream))
    if upstream.cache:
        stages.append(CacheStage(upstream, make_store(upstream, profile.state)))
    if upstream.retry:
        stages.append(RetryStage(upstream.name, upstream.retry, deadline))
    if upstream.hedge:
        stages.append(HedgeStage(upstream.name, upstream.hedge, failure_statuses))
    breaker = breaker_stage(upstream, profile.state) if upstream.breaker else None
    if upstream.failover:
        stages.append(FailoverStage(upstream, failure_statuses, deadline, breaker))
    if breaker:
        stages.append(breaker)
    if upstream.limit:
        stages.append(limit_stage(upstream, profile.state, deadline))
    if upstream.auth:
        stages.append(auth_stage(upstream, deadline))
    return stages
