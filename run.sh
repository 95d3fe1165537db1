#!/usr/bin/env bash
# mitm-ambassador: set up and run (README.md). Each command makes or refreshes .venv first.
#
#   ./run.sh [PROFILE] [MITM OPTIONS...]              run under mitmdump (default: profiles/default.yaml
#                                                     in front of the bundled demo service)
#   ./run.sh web [PROFILE] [MITM OPTIONS...]          run under mitmweb (UI on http://127.0.0.1:8082)
#   ./run.sh record FILE [PROFILE] [MITM OPTIONS...]  run and save every flow to FILE, secrets redacted
#   ./run.sh replay FILE [PROFILE] [MITM OPTIONS...]  answer from FILE, contacting no upstream
#   ./run.sh check PROFILE                            validate a profile: `ok` or its problems
#   ./run.sh test [PYTEST ARGS...]                    run the tests
#   ./run.sh help                                     this text
#
# PROFILE: a YAML file, or a name under profiles/ (prod -> profiles/prod.yaml). MITM OPTIONS go to
# mitmproxy unchanged (--listen-port 9090, --set name=value, ...). These are mitmproxy's own tools
# with the suite as their script: .venv/bin/mitmdump -s addons/ambassador.py works the same.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.ambassador-dependencies"  # what the last install was made from

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

dependencies() { # the dependency lines of pyproject.toml: a change there refreshes .venv
    sed -n '/^dependencies = \[/,/^]/p; /^test = \[/,/^]/p' "$ROOT/pyproject.toml"
}

venv_current() {
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(dependencies)" ]] && python_ok "$VENV/bin/python"
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
    dependencies > "$STAMP"
    exec 9>&- || true
}

ensure_test_tools() { # what the end-to-end tests need from the system; installed where we can (root + apt)
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)  # joins the test Redis Cluster
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

option_value() { # option_value DEFAULT NAMES... -- ARGS...: the last value given for one of NAMES (--name V, --name=V, --set name=V)
    local value=$1 names=() previous="" arg name
    shift
    while [[ $# -gt 0 && "$1" != -- ]]; do names+=("$1"); shift; done
    shift
    for arg in "$@"; do
        for name in "${names[@]}"; do
            case "$name" in
                --*) [[ "$previous" == "$name" ]] && value=$arg; [[ "$arg" == "$name="* ]] && value=${arg#"$name="} ;;
                -?) [[ "$previous" == "$name" ]] && value=$arg ;;
                *) [[ "$previous" == --set && "$arg" == "$name="* ]] && value=${arg#"$name="}
                   [[ "$arg" == "--set=$name="* ]] && value=${arg#"--set=$name="} ;;
            esac
        done
        previous=$arg
    done
    echo "$value"
}

port_in_use() { # something already listens on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

require_free_port() { # require_free_port PORT WHAT HOW-TO-CHANGE
    port_in_use "$1" && die "port $1 ($2) is already in use: stop what listens there, or $3"
    return 0
}

is_default_profile() {
    local path=$1
    [[ -n "$path" && "$path" != */* && "$path" != *.yaml && "$path" != *.yml ]] && path="$ROOT/profiles/$path.yaml"
    [[ "$(realpath -m "$path")" == "$ROOT/profiles/default.yaml" ]]
}

SCRIPT="$ROOT/addons/ambassador.py"

serve() { # serve mitmdump|mitmweb PROFILE [OPTIONS...]: mitmproxy's own tool with the suite as its script
    local tool=$1 profile=$2
    shift 2
    local args=(-s "$SCRIPT")
    # mitmproxy opens its listeners before it loads scripts: name loopback before they open.
    [[ "$(option_value "" --listen-host -- "$@")" == "" ]] && args+=(--listen-host 127.0.0.1)
    # mitmweb's own 8081 is the demo service's
    [[ "$tool" == mitmweb && "$(option_value "" --web-port web_port -- "$@")" == "" ]] && args+=(--web-port 8082)
    printf '%s\n' "$@" | grep -q '^\(--set=\)\{0,1\}ambassador_profile=' || args+=(--set "ambassador_profile=$profile")
    local port
    port=$(option_value 8080 --listen-port -p listen_port -- "$@")
    require_free_port "$port" "the ambassador's listener" "give another with --listen-port PORT"
    if [[ "$tool" == mitmweb ]]; then
        port=$(option_value 8082 --web-port web_port -- "$@")
        require_free_port "$port" "mitmweb's UI" "give another with --web-port PORT"
    fi
    if [[ "${AMBASSADOR_NO_DEMO:-}" != 1 ]] && is_default_profile "$profile"; then
        # The default profile fronts the bundled demo legacy service: start it alongside, and
        # stop both when either ends.
        local demo_port=${DEMO_PORT:-8081}
        require_free_port "$demo_port" "the demo service of the default profile" "start it with DEMO_PORT=PORT"
        "$VENV/bin/python" "$ROOT/demo/legacy_service.py" --port "$demo_port" &
        local demo=$!
        trap 'kill "$demo" 2>/dev/null || true' EXIT
        until port_in_use "$demo_port"; do
            kill -0 "$demo" 2>/dev/null || die "the demo service could not start on port $demo_port"
            sleep 0.05
        done
        "$VENV/bin/$tool" "${args[@]}" "$@" &
        local ambassador=$!
        trap 'kill -TERM "$ambassador" 2>/dev/null || true' INT TERM
        local status=0
        wait -n "$ambassador" "$demo" || status=$?
        if kill -0 "$ambassador" 2>/dev/null; then
            echo "run.sh: the demo service stopped; stopping the ambassador" >&2
            kill -TERM "$ambassador" 2>/dev/null
            wait "$ambassador" 2>/dev/null
            status=1
        fi
        wait "$ambassador" 2>/dev/null || true  # wait returns early when a trap ran
        exit "$status"
    fi
    exec "$VENV/bin/$tool" "${args[@]}" "$@"
}

usage() {
    sed -n '2,/^set -euo/p' "$ROOT/run.sh" | sed -e '/^set -euo/d' -e 's/^#\( \|$\)//'
}

command=${1:-}
[[ "$command" == help || "$command" == -h || "$command" == --help ]] && { usage; exit 0; }
ensure_venv

case "$command" in
    test)
        shift
        ensure_test_tools
        cd "$ROOT"
        exec "$VENV/bin/python" -m pytest "$@"  # pyproject.toml puts the root and tests/ on its path
        ;;
    check)
        [[ $# -eq 2 ]] || die "usage: ./run.sh check PROFILE"
        exec "$VENV/bin/python" "$ROOT/addons/cli.py" check "$2"
        ;;
    web)
        shift
        profile=$(profile_arg "$@"); [[ $# -gt 0 && "$1" != -* ]] && shift
        serve mitmweb "$profile" "$@"
        ;;
    record)
        [[ $# -ge 2 ]] || die "usage: ./run.sh record FILE [PROFILE] [MITM OPTIONS...]"
        file=$2; shift 2
        profile=$(profile_arg "$@"); [[ $# -gt 0 && "$1" != -* ]] && shift
        # The ambassador's own endpoints (status, metrics) are not recorded: replay answers them live.
        serve mitmdump "$profile" --save-stream-file "$file" \
            --set 'save_stream_filter=!~u "://[^/]+/_ambassador([/?]|$)"' "$@"
        ;;
    replay)
        [[ $# -ge 2 ]] || die "usage: ./run.sh replay FILE [PROFILE] [MITM OPTIONS...]"
        file=$2; shift 2
        [[ -f "$file" ]] || die "no recording at $file (make one with ./run.sh record $file)"
        profile=$(profile_arg "$@"); [[ $# -gt 0 && "$1" != -* ]] && shift
        AMBASSADOR_NO_DEMO=1 serve mitmdump "$profile" --set "ambassador_replay=$file" "$@"
        ;;
    *)
        profile=$(profile_arg "$@"); [[ $# -gt 0 && "$1" != -* ]] && shift
        serve mitmdump "$profile" "$@"
        ;;
esac
