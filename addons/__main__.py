"""Entry point: `python -m addons dump|web [MITM OPTIONS]` and `python -m addons check PROFILE`.

`dump` and `web` are mitmdump and mitmweb with the ambassador's addons registered before
the command line is parsed, so `--set ambassador_profile=...` is a real, validated option,
the listener defaults to loopback, and a broken profile stops start-up with exit status 2.
"""

from __future__ import annotations

import sys

EXIT_BAD_PROFILE = 2


def check(argv: list[str]) -> int:
    from .profile import PROFILES_DIR, ProfileError, load_profile, resolve_profile_name

    if len(argv) != 1:
        print("usage: run.sh check PROFILE", file=sys.stderr)
        return EXIT_BAD_PROFILE
    try:
        load_profile(resolve_profile_name(argv[0], PROFILES_DIR))
    except ProfileError as e:
        print(e, file=sys.stderr)
        return EXIT_BAD_PROFILE
    print("ok")
    return 0


def refuse_broken_profile(argv: list[str]) -> bool:
    """Validate the profile given as `--set ambassador_profile=...` before mitmproxy is imported
    (seconds on a busy machine), so that a broken one stops start-up at once (SPEC: within 5 s)."""
    from .profile import PROFILES_DIR, ProfileError, load_profile, resolve_profile_name

    option = "ambassador_profile="
    given = [value for flag, value in zip(argv, argv[1:]) if flag == "--set" and value.startswith(option)]
    given += [arg.removeprefix("--set=") for arg in argv if arg.startswith("--set=" + option)]
    if not given:
        return False
    try:
        load_profile(resolve_profile_name(given[-1].removeprefix(option), PROFILES_DIR))
    except ProfileError as e:
        print(f"ambassador: {e}", file=sys.stderr)
        return True
    return False


def serve(tool: str, argv: list[str]) -> int:
    if refuse_broken_profile(argv):
        return EXIT_BAD_PROFILE
    from mitmproxy.tools import cmdline, main

    from .ambassador import AmbassadorAddons

    if tool == "web":
        from mitmproxy.tools.web.master import WebMaster as Base

        make_parser = cmdline.mitmweb
        tool_defaults = {
            # The flow list shows what the ambassador did to each flow (operations.ExchangeObserver).
            "web_columns": ["tls", "icon", "path", "method", "status", "size", "time", "comment"],
            # mitmweb's own default, 8081, is where ./run.sh starts the bundled demo service.
            "web_port": 8082,
        }
    else:
        from mitmproxy.tools.dump import DumpMaster as Base

        make_parser = cmdline.mitmdump
        # operations.ExchangeObserver logs one line per exchange instead of the dumper's flow
        # printout; `--set flow_detail=N` (or -v) brings the dumper back.
        tool_defaults = {"flow_detail": 0}

    ambassador = AmbassadorAddons()

    class AmbassadorMaster(Base):
        def __init__(self, options, **kwargs):
            super().__init__(options, **kwargs)
            self.addons.add(ambassador)
            # Defaults for a sidecar: loopback only; a dead upstream must still reach our hooks;
            # request bodies are held in memory whole, so bound them (413 beyond).
            options.update(listen_host="127.0.0.1", connection_strategy="lazy", body_size_limit="64m", **tool_defaults)

    sys.argv[0] = "ambassador"
    try:
        main.run(AmbassadorMaster, make_parser, argv)
    except SystemExit as e:
        if e.code and ambassador.manager.refused_at_startup:
            return EXIT_BAD_PROFILE  # the profile was refused at start-up; mitmproxy printed why
        raise
    return 0


def main(argv: list[str]) -> int:
    commands = {"check": check, "dump": lambda a: serve("dump", a), "web": lambda a: serve("web", a)}
    if not argv or argv[0] not in commands:
        print(f"usage: python -m addons {{{'|'.join(commands)}}} ...", file=sys.stderr)
        return EXIT_BAD_PROFILE
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
