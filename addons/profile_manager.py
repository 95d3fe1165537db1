"""The running profile: loaded at start-up, swapped on `--set ambassador_profile=...`, from
mitmweb's options editor or the `ambassador.reload` / `ambassador.profile` commands, and
reloaded when its file (or a file its `${file:...}` reads) changes. A profile that fails
validation is refused and the running one stays; at start-up the ambassador stops instead."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from mitmproxy import command, ctx, exceptions

from . import metrics
from .defaults import body_size_limit, refuse_start
from .gateway import Gateway
from .profile import PROFILES_DIR, NeedsNetwork, Profile, ProfileError, load_profile, resolve_profile_name

log = logging.getLogger("ambassador")

DEFAULT_PROFILE = PROFILES_DIR / "default.yaml"
WATCH_INTERVAL = 1.0


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def files_signature(profile_signature: tuple[int, int] | None, profile: Profile) -> tuple:
    """What the watcher compares: the profile file's signature (taken before it was read), then
    those of the files its `${file:...}` read, so that a rotated secret reloads the profile."""
    return (profile_signature, *(_signature(file) for file in sorted(profile.files_read)))


class ProfileManager:
    """Holds the running gateway; loads, swaps and watches the profile."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self.loaded_signature: tuple | None = None  # files_signature() of the running profile
        self.refused_signature: tuple | None = None
        self.reported_missing = False  # the profile file is gone (logged once)
        self.watcher: asyncio.Task | None = None
        self.refused_at_startup = False
        self.swaps = 0  # swaps asked for: a profile loading in the background installs only if still the last
        self.loading: set[asyncio.Task] = set()  # profiles loading in the background

    def load(self, loader):
        loader.add_option(
            "ambassador_profile",
            str,
            str(DEFAULT_PROFILE),
            "The ambassador's profile: a YAML file, or a name under profiles/ (prod -> profiles/prod.yaml).",
        )

    def configure(self, updated):
        if "body_size_limit" in updated and self.gateway:
            self.gateway.set_body_limit(body_size_limit())
        if "ambassador_profile" not in updated or self.refused_at_startup:
            return  # after a refusal at start-up, mitmproxy rolls the option back while exiting
        path = resolve_profile_name(ctx.options.ambassador_profile, PROFILES_DIR).resolve()
        if self.gateway and path == self.gateway.profile.path and self.current_signature() == self.loaded_signature:
            return  # unchanged, e.g. the option being rolled back after a refused swap
        if self.gateway and self.watcher is not None and not path.is_file():
            # Most likely a name still being typed in mitmweb's options editor: refused, but
            # not logged as a refusal on every keystroke; the editor shows why.
            raise exceptions.OptionsError(f"no profile at {path}; keeping {self.gateway.profile.path}")
        try:
            self.swap(path)
        except ProfileError as e:
            if not self.gateway or self.watcher is None:  # still starting: `running` has not come
                self.refused_at_startup = True
                refuse_start(str(e))
                return
            self.refused(e)
            raise exceptions.OptionsError(f"profile refused, keeping the running one:\n{e}") from None

    def swap(self, path: Path) -> None:
        """Load `path` and make it the running profile; raises ProfileError and keeps the old one.

        Once the ambassador runs, a profile that names a document to fetch (a WSDL by URL) is
        loaded in a thread instead: waiting on the network here would hold up every request.
        It is installed, or refused and the option set back, when the fetch is done."""
        self.swaps += 1
        signature = _signature(path)
        try:
            profile = load_profile(path, fetch=self.watcher is None)
        except NeedsNetwork as e:
            log.warning("profile %s names %s: fetching in the background, the running profile stays meanwhile", path, ", ".join(e.urls))
            task = asyncio.get_running_loop().create_task(self.load_fetching(path, signature, self.swaps))
            self.loading.add(task)
            task.add_done_callback(self.loading.discard)
            return
        self.install(profile, files_signature(signature, profile))

    async def load_fetching(self, path: Path, signature: tuple[int, int] | None, swap: int) -> None:
        try:
            profile = await asyncio.to_thread(load_profile, path)
        except ProfileError as e:
            if swap == self.swaps:  # not overtaken by another swap meanwhile
                self.refused(e)
                if path != self.gateway.profile.path:
                    ctx.options.update(ambassador_profile=str(self.gateway.profile.path))
            return
        if swap == self.swaps:
            self.install(profile, files_signature(signature, profile))

    def current_signature(self) -> tuple:
        profile = self.gateway.profile
        return files_signature(_signature(profile.path), profile)

    def refused(self, error: ProfileError) -> None:
        metrics.PROFILE_RELOADS.labels("refused").inc()
        log.warning("profile refused, keeping the running one:\n%s", error)

    def install(self, profile: Profile, signature: tuple) -> None:
        previous = self.gateway
        path = profile.path
        gateway = Gateway(profile, previous)
        gateway.set_body_limit(body_size_limit())
        self.gateway = gateway
        self.loaded_signature = signature
        self.refused_signature = None
        if previous:
            gateway.retire_replaced(previous)
            metrics.PROFILE_RELOADS.labels("loaded").inc()
            log.warning("profile %s loaded", path)
        else:
            log.info("profile %s loaded", path)

    def running(self):
        self.watcher = asyncio.get_running_loop().create_task(self.watch())

    def done(self):
        if self.watcher:
            self.watcher.cancel()
        for task in self.loading:
            task.cancel()

    async def watch(self) -> None:
        """Pick up edits of the loaded profile file, and of the files it reads, by themselves."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if not self.gateway:
                continue
            path = self.gateway.profile.path
            signature = self.current_signature()
            if signature[0] is None:
                if not self.reported_missing:
                    self.reported_missing = True
                    log.warning("profile %s is gone; keeping the loaded one", path)
                continue
            self.reported_missing = False
            if signature in (self.loaded_signature, self.refused_signature):
                continue
            try:
                # Reading and validating off the loop: requests go on meanwhile.
                profile = await asyncio.to_thread(load_profile, path)
                if path == self.gateway.profile.path:  # not swapped for another one meanwhile
                    self.install(profile, files_signature(signature[0], profile))
            except ProfileError as e:
                self.refused_signature = signature
                self.refused(e)

    @command.command("ambassador.reload")
    def reload(self) -> None:
        """Reload the running profile from its file."""
        assert self.gateway
        try:
            self.swap(self.gateway.profile.path)
        except ProfileError as e:
            self.refused(e)
            raise exceptions.CommandError(str(e)) from None

    @command.command("ambassador.profile")
    def profile(self, path: str) -> None:
        """Switch to another profile (a YAML path or a name under profiles/)."""
        try:
            ctx.options.update(ambassador_profile=path)
        except exceptions.OptionsError as e:
            raise exceptions.CommandError(str(e)) from None
