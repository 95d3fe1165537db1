"""`mitm-ambassador`: check a profile, or start one of mitmproxy's tools with the suite.

    mitm-ambassador check PROFILE
    mitm-ambassador [dump|web|console] [MITM OPTIONS...]    # mitmdump|mitmweb|mitmproxy -s .../ambassador.py

Installed (`pip install .`) this is the `mitm-ambassador` command; in a checkout `./run.sh`
does the same (and more) and calls `python addons/cli.py check PROFILE`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

if not __package__:  # run as a file (python addons/cli.py), its folder first on sys.path
    from ambassador import import_package

    sys.path.pop(0)  # the package's modules are imported as the package, never as top-level names
    import_package()
    __package__ = "mitm_ambassador"

from .profile import PROFILES_DIR, ProfileError, load_profile, resolve_profile_name  # noqa: E402

EXIT_BAD_PROFILE = 2
SCRIPT = Path(__file__).resolve().parent / "ambassador.py"
TOOLS = {"dump": "mitmdump", "web": "mitmweb", "console": "mitmproxy"}
USAGE = f"usage: mitm-ambassador check PROFILE | mitm-ambassador [{'|'.join(TOOLS)}] [MITM OPTIONS...]"


def check(profile: str) -> int:
    """Validate a profile: print `ok`, or the problems and exit 2."""
    try:
        load_profile(resolve_profile_name(profile, PROFILES_DIR))
    except ProfileError as e:
        print(e, file=sys.stderr)
        return EXIT_BAD_PROFILE
    print("ok")
    return 0


def start(tool: str, argv: list[str]) -> int:
    """Replace this process with mitmproxy's tool, the suite loaded as its script."""
    executable = shutil.which(TOOLS[tool], path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if executable is None:
        print(f"mitm-ambassador: {TOOLS[tool]} not found (is mitmproxy installed?)", file=sys.stderr)
        return 1
    os.execv(executable, [executable, "-s", str(SCRIPT), *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        if len(argv) != 2:
            print("usage: mitm-ambassador check PROFILE", file=sys.stderr)
            return EXIT_BAD_PROFILE
        return check(argv[1])
    if argv[:1] and argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    tool = argv[0] if argv[:1] and argv[0] in TOOLS else "dump"
    return start(tool, argv[1:] if argv[:1] == [tool] else argv)


if __name__ == "__main__":
    sys.exit(main())
