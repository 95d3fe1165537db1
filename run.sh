#!/usr/bin/env bash
# mitm-ambassador: set up and run. See README.md.
#   ./run.sh [PROFILE] [MITM OPTIONS...]           run under mitmdump
#   ./run.sh web [PROFILE] [MITM OPTIONS...]       run under mitmweb
#   ./run.sh record FILE [PROFILE] [MITM OPTIONS...]
#   ./run.sh replay FILE [PROFILE] [MITM OPTIONS...]
#   ./run.sh check PROFILE
#   ./run.sh test [PYTEST ARGS...]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.ambassador-stamp"

die() { echo "run.sh: $*" >&2; exit 1; }

python_ok() { # a Python >= 3.12 that actually runs (pyenv shims fail without PYENV_VERSION)
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

find_python() {
    local candidate root
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3; do
        [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate" && { command -v "$candidate"; return; }
    done
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    for candidate in $(ls -d "$root"/versions/3.1[2-9]*/bin/python3 /usr/local/bin/python3.1[2-9] 2>/dev/null | sort -rV); do
        python_ok "$candidate" && { echo "$candidate"; return; }
    done
    die "no Python >= 3.12 found. Install one (e.g. 'apt-get install python3.12 python3.12-venv', or 'pyenv install 3.12') or point PYTHON at it: PYTHON=/path/to/python3.12 ./run.sh"
}

venv_current() {
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(sha256sum < "$ROOT/pyproject.toml")" ]] && python_ok "$VENV/bin/python"
}

ensure_venv() { # create or refresh .venv when pyproject.toml changes
    venv_current && return
    if command -v flock >/dev/null 2>&1; then # one installer at a time; the others wait and reuse
        exec 9>"$ROOT/.venv.lock"
        flock 9
        venv_current && { exec 9>&-; return; }
    fi
    if ! [[ -x "$VENV/bin/python" ]] || ! python_ok "$VENV/bin/python"; then
        local python
        python=$(find_python)
        echo "run.sh: creating $VENV with $python" >&2
        rm -rf "$VENV"
        "$python" -m venv "$VENV" || die "could not create the virtual environment (on Debian: apt-get install python3-venv)"
    fi
    echo "run.sh: installing dependencies from pyproject.toml" >&2
    mapfile -t deps < <("$VENV/bin/python" - "$ROOT/pyproject.toml" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
EOF
)
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${deps[@]}" 2>&1 \
        | grep -v "^WARNING: Location .* is ignored" >&2 || true
    "$VENV/bin/python" -c 'import mitmproxy, aiohttp, yaml, pytest' 2>/dev/null \
        || die "installing dependencies failed (see above)"
    sha256sum < "$ROOT/pyproject.toml" > "$STAMP"
    exec 9>&- 2>/dev/null || true
}

ensure_test_tools() { # what the end-to-end tests need from the system; installed where we can (root + apt)
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the mitmweb UI test
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: installing ${missing[*]} for the tests" >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
            || die "could not install ${missing[*]}"
    else
        die "the tests need ${missing[*]}: install them (Debian: sudo apt-get install ${missing[*]})"
    fi
}

profile_arg() { # PROFILE: the first argument unless it is an option, else a --set ambassador_profile=, else default
    if [[ $# -gt 0 && "$1" != -* ]]; then echo "$1"; return; fi
    local previous="" arg found="default"
    for arg in "$@"; do
        [[ "$previous" == "--set" && "$arg" == ambassador_profile=* ]] && found=${arg#ambassador_profile=}
        [[ "$arg" == --set=ambassador_profile=* ]] && found=${arg#--set=ambassador_profile=}
        previous=$arg
    done
    echo "$found"
}

is_default_profile() {
    [[ "$("$VENV/bin/python" -c 'import sys; from pathlib import Path; from addons.profile import resolve_profile_name; print(resolve_profile_name(sys.argv[1], Path(sys.argv[2])).resolve())' "$1" "$ROOT/profiles")" \
        == "$ROOT/profiles/default.yaml" ]]
}

serve() { # serve dump|web PROFILE [OPTIONS...]
    local tool=$1 profile=$2
    shift 2
    local args=(-m addons "$tool" --set "ambassador_profile=$profile" "$@")
    if printf '%s\n' "$@" | grep -q '^\(--set=\)\{0,1\}ambassador_profile='; then
        args=(-m addons "$tool" "$@")  # given as a mitmproxy option: passed on unchanged
    fi
    if [[ "${AMBASSADOR_NO_DEMO:-}" != 1 ]] && is_default_profile "$profile"; then
        # The default profile fronts the bundled demo legacy service: start it alongside.
        "$VENV/bin/python" -m demo.legacy_service --port "${DEMO_PORT:-8081}" &
        local demo=$!
        trap 'kill "$demo" 2>/dev/null || true' EXIT
        "$VENV/bin/python" "${args[@]}" &
        local ambassador=$!
        trap 'kill -TERM "$ambassador" 2>/dev/null || true' INT TERM
        local status=0
        wait "$ambassador" || status=$?
        wait "$ambassador" 2>/dev/null || true  # wait returns early when a trap ran
        exit "$status"
    fi
    exec "$VENV/bin/python" "${args[@]}"
}

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
ensure_venv

command=${1:-}
case "$command" in
    test)
        shift
        ensure_test_tools
        cd "$ROOT"
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    check)
        [[ $# -eq 2 ]] || die "usage: ./run.sh check PROFILE"
        exec "$VENV/bin/python" -m addons check "$2"
        ;;
    web)
        shift
        profile=$(profile_arg "$@"); [[ $# -gt 0 && "$1" != -* ]] && shift
        serve web "$profile" "$@"
        ;;
    record)
        [[ $# -ge 2 ]] || die "usage: ./run.sh record FILE [PROFILE] [MITM OPTIONS...]"
        file=$2; shift 2
        profile=$(profile_arg "$@"); [[ $# -gt 0 && "$1" != -* ]] && shift
        # The ambassador's own endpoints (status, metrics) are not recorded: replay answers them live.
        serve dump "$profile" --save-stream-file "$file" \
            --set 'save_stream_filter=!~u "://[^/]+/_ambassador([/?]|$)"' "$@"
        ;;
    replay)
        [[ $# -ge 2 ]] || die "usage: ./run.sh replay FILE [PROFILE] [MITM OPTIONS...]"
        file=$2; shift 2
        [[ -f "$file" ]] || die "no recording at $file (make one with ./run.sh record $file)"
        profile=$(profile_arg "$@"); [[ $# -gt 0 && "$1" != -* ]] && shift
        AMBASSADOR_NO_DEMO=1 serve dump "$profile" --server-replay "$file" \
            --set server_replay_reuse=true --set server_replay_ignore_host=true \
            --set server_replay_ignore_port=true "$@"
        ;;
    *)
        profile=$(profile_arg "$@"); [[ $# -gt 0 && "$1" != -* ]] && shift
        serve dump "$profile" "$@"
        ;;
esac
