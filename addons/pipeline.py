"""Which stages an upstream's profile selects, in the order a request passes them.

Outermost first: cache (a hit needs nothing else), retry (each attempt asks the breaker),
breaker (refuses attempts while open), auth (every attempt carries a current credential),
then the transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .profile import Upstream
from .service import Stage

if TYPE_CHECKING:
    from .gateway import Gateway


def build_stages(upstream: Upstream, gateway: Gateway) -> list[Stage]:
    stages: list[Stage] = []
    return stages
