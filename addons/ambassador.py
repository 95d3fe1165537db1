"""The mitm-ambassador suite for mitmproxy's own tools, from any working directory:

    .venv/bin/mitmdump  -s addons/ambassador.py --set ambassador_profile=prod
    .venv/bin/mitmweb   -s addons/ambassador.py --set ambassador_profile=prod
    .venv/bin/mitmproxy -s addons/ambassador.py --set ambassador_profile=prod

mitmproxy runs a script as a lone module (`__mitmproxy_script__.ambassador`) with only the
script's folder on `sys.path`, and only while loading it: the suite's modules, which import each
other as one package, cannot be imported from here as they are. So this script imports the
folder that holds it as the package `mitm_ambassador` (its installed name, which claims no
generic top-level name), and hands mitmproxy the suite's addons.
"""

import importlib.util
import sys
from pathlib import Path

PACKAGE = "mitm_ambassador"


def import_package(folder: Path = Path(__file__).resolve().parent):
    """The suite's package: the one already imported (installed, or an earlier load of this
    script), else this script's own folder."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    return sys.modules[PACKAGE]


if __name__.startswith("__mitmproxy_script__."):  # loaded by mitmproxy (`-s`), not imported
    import_package()
    from mitm_ambassador.suite import AmbassadorAddons

    addons = [AmbassadorAddons()]
