"""What a sidecar needs from mitmproxy, set when the suite loads into any of its tools.

mitmproxy's own defaults suit an interception proxy: listen on every interface, connect to the
server as soon as a client connects, hold bodies of any size, print every flow. The ambassador
sits beside its app: it listens on loopback, lets its own hooks see every request (a dead
upstream must reach them, not close the client's connection), bounds the bodies it holds in
memory, and logs one line per exchange (`operations.ExchangeObserver`) instead of the dumper's
printout. Options the user set (`--listen-host`, `--set ...`, the confdir's config.yaml) win:
only options still at mitmproxy's default are changed.

mitmproxy may start opening its listeners before it loads scripts, and a changed
`listen_host` alone does not move them: when they came up on another address than the one
now in force, `running` restarts them (under `mitmdump -s` the listener moves to loopback a
moment after start-up; `./run.sh` passes `--listen-host 127.0.0.1` itself, so it never moves).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from mitmproxy import ctx, exceptions
from mitmproxy.utils import human

log = logging.getLogger("ambassador")

EXIT_BAD_PROFILE = 2

# option: (mitmproxy's default, the ambassador's)
SIDECAR_DEFAULTS = {
    "listen_host": ("", "127.0.0.1"),
    "connection_strategy": ("eager", "lazy"),
    "body_size_limit": (None, "64m"),
    "flow_detail": (1, 0),  # mitmdump's dumper; -v still shows flows
    # mitmweb's flow list shows what the ambassador did to each flow (its comment).
    "web_columns": (
        ["tls", "icon", "path", "method", "status", "size", "time"],
        ["tls", "icon", "path", "method", "status", "size", "time", "comment"],
    ),
}


def sidecar_changes(current: dict) -> dict:
    """The options to change: those present (each tool has its own) and still at mitmproxy's default."""
    return {
        name: ours
        for name, (theirs, ours) in SIDECAR_DEFAULTS.items()
        if name in current and current[name] == theirs
    }


class SidecarDefaults:
    def __init__(self) -> None:
        self.rebinding: asyncio.Task | None = None

    def load(self, loader) -> None:
        options = loader.master.options
        current = {name: getattr(options, name) for name in SIDECAR_DEFAULTS if name in options}
        if changes := sidecar_changes(current):
            options.update(**changes)

    def running(self) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is None or not ctx.options.listen_host:
            return
        stray = [s for s in proxyserver.servers if s.is_running and not bound_to(s.listen_addrs, ctx.options.listen_host)]
        if stray:
            self.rebinding = asyncio.get_running_loop().create_task(rebind(stray))

    async def done(self) -> None:
        if self.rebinding:
            await self.rebinding


def bound_to(addresses, host: str) -> bool:
    """Whether a listener's addresses are all on `host` (an all-interfaces one is not)."""
    return bool(addresses) and all(address[0] == host for address in addresses)


async def rebind(servers) -> None:
    for server in servers:
        await server.stop()
        await server.start()
        log.info("listener moved to %s", ", ".join(f"{a[0]}:{a[1]}" for a in server.listen_addrs))


def body_size_limit() -> int | None:
    """mitmproxy's body_size_limit in bytes: it bounds the upstreams' answers too."""
    if "body_size_limit" not in ctx.options:
        return None  # mitmproxy's proxy server addon defines it; a bare test context has none
    return human.parse_size(ctx.options.body_size_limit)



def refuse_start(problem: str) -> None:
    """What the ambassador was started with is refused: stop with the problem and exit status 2.

    Under mitmproxy's tools the suite is a script, loaded once the event loop runs: an
    OptionsError from it would only unload the script (and leave a proxy without the
    ambassador running). SystemExit raised by a loop callback ends `asyncio.run` instead.
    Without a running loop (the command line being parsed, unit tests) the OptionsError is
    the refusal.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise exceptions.OptionsError(problem) from None
    print(f"ambassador: {problem}", file=sys.stderr, flush=True)
    loop.call_soon(sys.exit, EXIT_BAD_PROFILE)
