"""Commands that act on a feature of one upstream (`ambassador.breaker.open billing`). Each
feature's addon holds its own commands on this base (auth.py, breaker_addon.py, cache/cache_addon.py,
limit.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from mitmproxy import exceptions

log = logging.getLogger("ambassador")


class UpstreamCommands:
    """The base of a feature's mitmproxy commands that act on one upstream's stage by name.

    mitmproxy commands are synchronous, the stages' operations are not (their state may live
    in Redis). A command starts a coroutine operation as an eager task: what needs no I/O (a
    local breaker) is done before the command returns, and a failure then is the command's
    error; the rest, and operations the stage runs as its own task (cache clear), finish in
    the background and their outcome is logged.
    """

    def __init__(self, manager):
        self.manager = manager
        self.pending: set[asyncio.Task] = set()

    def _stage(self, name: str, section: str):
        services = self.manager.gateway.services
        service = services.get(name)
        if service is None:
            raise exceptions.CommandError(f"no upstream {name!r}; the profile has: {', '.join(sorted(services))}")
        stage = service.stage(section)
        if stage is None:
            raise exceptions.CommandError(f"upstream {name!r} has no {section} (no `{section}:` section in its profile)")
        return stage

    def _run(self, operation: Awaitable, what: str) -> None:
        if asyncio.iscoroutine(operation):
            task = asyncio.Task(operation, loop=asyncio.get_running_loop(), eager_start=True)
        else:
            task = asyncio.ensure_future(operation)  # a stage that already started its task
        if task.done():
            if error := task.exception():
                raise exceptions.CommandError(f"{what} failed: {error}")
            log.warning("%s by command", what)
            return
        self.pending.add(task)
        task.add_done_callback(lambda t: self._finished(t, what))

    def _finished(self, task: asyncio.Task, what: str) -> None:
        self.pending.discard(task)
        if task.cancelled():
            return
        if error := task.exception():
            log.error("%s by command failed: %s", what, error)
        else:
            log.warning("%s by command", what)

    async def done(self) -> None:
        await asyncio.gather(*self.pending, return_exceptions=True)  # _finished logs the outcomes
