#!/usr/bin/env bash
# The test command of Gatehouse: ./tests/run.sh (from anywhere).
#
# Steps, in order: rustfmt check, cfn-lint of template.yaml, SAM's transform of it (and cfn-lint
# of what it expands to), clippy, the lean check of the deployed functions, then every test of the
# workspace with three moto servers (DynamoDB, Secrets Manager, IAM, EventBridge, SQS) on
# 127.0.0.1: one open, one for the load test alone, and one that enforces IAM. The Python tools live in a project-local .venv, installed on the first run;
# the standards OpenID Provider the Haravan tests run against (tests/op, Node) in
# tests/op/node_modules, likewise; Chromium and chromedriver for the console's browser test, with
# apt when missing.
# Every step runs even if an earlier one failed; the script exits non-zero if any did.
# The tests run under a time limit, GATEHOUSE_TEST_LIMIT seconds (2700 unless set): past it,
# tests/watchdog.py names the tests still running, prints their stacks and stops them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MOTO_VERSION=5.2.5
CFN_LINT_VERSION=1.58.0
SAM_TRANSLATOR_VERSION=1.115.0
VENV=.venv
PY=$VENV/bin/python
TARGET_DIR=${CARGO_TARGET_DIR:-target}

header() { printf '\n==> %s\n' "$*"; }

# --- Python tools ------------------------------------------------------------------------------
# (Re)create the venv if missing or broken (e.g. its Python was removed), then install the pinned
# versions only when they are not already there, so that a second run costs no pip call.
if ! "$PY" -c '' 2>/dev/null; then
    header "creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
missing=$("$PY" - "$MOTO_VERSION" "$CFN_LINT_VERSION" "$SAM_TRANSLATOR_VERSION" <<'EOF'
import sys
from importlib import metadata, util
want = {"moto": sys.argv[1], "cfn-lint": sys.argv[2], "aws-sam-translator": sys.argv[3]}
out = []
for name, version in want.items():
    try:
        ok = metadata.version(name) == version
    except metadata.PackageNotFoundError:
        ok = False
    if name == "moto":
        ok = ok and all(util.find_spec(m) for m in ("flask", "flask_cors"))  # the [server] extra
        name = "moto[server]"
    if not ok:
        out.append(f"{name}=={version}")
print(" ".join(out))
EOF
)
if [ -n "$missing" ]; then
    header "installing into $VENV: $missing"
    # shellcheck disable=SC2086  # word splitting wanted: one argument per requirement
    "$PY" -m pip install --quiet --disable-pip-version-check $missing
fi

# --- the standards OP ---------------------------------------------------------------------------
# panva's oidc-provider (tests/op), which tests/it/op.rs starts for Haravan's flows; installed
# from the lock file when node_modules is missing or older than it (npm writes its own copy of
# the lock, node_modules/.package-lock.json, on every install).
OP_DIR=tests/op
if [ ! -f "$OP_DIR/node_modules/.package-lock.json" ] \
    || [ "$OP_DIR/package-lock.json" -nt "$OP_DIR/node_modules/.package-lock.json" ]; then
    if ! command -v npm >/dev/null; then
        echo "error: npm (Node 20 or later) is needed for the standards OP in $OP_DIR" >&2
        exit 1
    fi
    header "installing the standards OP: npm ci --prefix $OP_DIR"
    npm ci --prefix "$OP_DIR" --no-audit --no-fund
fi

# --- the browser --------------------------------------------------------------------------------
# The console's browser test (tests/it/console.rs) drives headless Chromium through chromedriver:
# Debian's chromium and chromium-driver, installed with apt when missing (as root, or through
# sudo -n when that works); otherwise the run stops here saying what to install. The test finds
# them by GATEHOUSE_CHROMIUM and GATEHOUSE_CHROMEDRIVER, and GATEHOUSE_REQUIRE_BROWSER makes it
# fail, not skip, without them.
CHROMIUM=${GATEHOUSE_CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${GATEHOUSE_CHROMEDRIVER:-/usr/bin/chromedriver}
if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ]; then
    browser_help="install Debian's chromium and chromium-driver (apt-get install -y --no-install-recommends chromium chromium-driver), or set GATEHOUSE_CHROMIUM and GATEHOUSE_CHROMEDRIVER"
    if [ "$(id -u)" = 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        echo "error: the console's browser test needs $CHROMIUM and $CHROMEDRIVER, and this user can install neither (not root, no passwordless sudo): $browser_help" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null; then
        echo "error: the console's browser test needs $CHROMIUM and $CHROMEDRIVER, and there is no apt-get here: $browser_help" >&2
        exit 1
    fi
    header "installing chromium and chromium-driver (apt)"
    apt_install() {
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends chromium chromium-driver
    }
    # A fresh machine's package lists may be missing or stale: update once, then try again.
    if ! apt_install; then
        "${as_root[@]}" apt-get update -q
        apt_install
    fi
    if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ]; then
        echo "error: after installing, $CHROMIUM or $CHROMEDRIVER is still missing: $browser_help" >&2
        exit 1
    fi
fi
export GATEHOUSE_CHROMIUM=$CHROMIUM
export GATEHOUSE_CHROMEDRIVER=$CHROMEDRIVER
export GATEHOUSE_REQUIRE_BROWSER=1

# --- moto servers ------------------------------------------------------------------------------
# Three: the one every DynamoDB and Secrets Manager test uses, which allows every call, and one that
# enforces IAM (INITIAL_NO_AUTH_ACTION_COUNT, see tests/moto_iam_admin.py), on which
# tests/it/iam.rs runs each function under its template policy, and one for the load test.
mkdir -p "$TARGET_DIR"
free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
MOTO_PIDS=()
stop_moto() {
    local pid
    for pid in "${MOTO_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_moto EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_moto PORT LOG [VAR=VALUE...]: starts moto server on 127.0.0.1:PORT with the given
# environment and waits until it answers HTTP (any status), at most 30 s.
start_moto() {
    local port=$1 log=$2
    shift 2
    header "starting moto server on 127.0.0.1:$port${*:+ ($*)} (log: $log)"
    # moto's server, with DynamoDB requests serialized (see tests/moto_server.py).
    env "$@" "$PY" tests/moto_server.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    local pid=$!
    MOTO_PIDS+=("$pid")
    if ! "$PY" - "$port" "$pid" <<'EOF'
import os, sys, time, urllib.error, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("moto server exited during start-up")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit("moto server did not answer within 30 s")
EOF
    then
        echo "error: moto server on 127.0.0.1:$port is not usable; the end of $log:" >&2
        tail -n 20 "$log" >&2 || true
        exit 1
    fi
}

MOTO_LOG=$TARGET_DIR/moto.log
PORT=$(free_port)
start_moto "$PORT" "$MOTO_LOG"
# One for the load test alone (tests/it/load.rs): its 2,000 deliveries through an 8 s hang are
# timed, and moto serves one request at a time, so the other tests' requests must not queue
# before them.
LOAD_MOTO_LOG=$TARGET_DIR/moto-load.log
LOAD_PORT=$(free_port)
start_moto "$LOAD_PORT" "$LOAD_MOTO_LOG"
export GATEHOUSE_LOAD_ENDPOINT_URL=http://127.0.0.1:$LOAD_PORT
IAM_MOTO_LOG=$TARGET_DIR/moto-iam.log
IAM_PORT=$(free_port)
start_moto "$IAM_PORT" "$IAM_MOTO_LOG" INITIAL_NO_AUTH_ACTION_COUNT=3
# The admin principal, made in the three unauthenticated requests; its keys come back as exports.
if ! iam_admin=$("$PY" tests/moto_iam_admin.py "http://127.0.0.1:$IAM_PORT"); then
    echo "error: could not create the admin principal of the IAM-enforcing moto; the end of $IAM_MOTO_LOG:" >&2
    tail -n 20 "$IAM_MOTO_LOG" >&2 || true
    exit 1
fi
eval "$iam_admin"
export GATEHOUSE_IAM_ENDPOINT_URL=http://127.0.0.1:$IAM_PORT

# What the Rust tests use to reach moto (GATEHOUSE_IAM_* above for the enforcing one);
# GATEHOUSE_REQUIRE_MOTO makes them fail, not skip, when either cannot be reached. Nothing from
# the caller's AWS configuration may leak in.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export GATEHOUSE_REQUIRE_MOTO=1

# --- the steps ---------------------------------------------------------------------------------
failed=()
step() {
    local name=$1
    shift
    header "$name: $*"
    if ! "$@"; then
        failed+=("$name")
    fi
}

step fmt cargo fmt --all -- --check
step cfn-lint "$VENV/bin/cfn-lint" template.yaml
# cfn-lint does not run SAM's transform, which is where a deploy can still be refused: run it
# (tests/sam_transform.py, with its checks of what it generates), then lint what it expands to.
sam_transform() {
    local out=$TARGET_DIR/template.transformed.json
    "$PY" tests/sam_transform.py template.yaml "$out" && "$VENV/bin/cfn-lint" "$out"
}
step sam-transform sam_transform
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# The functions as `sam build` resolves them (`cargo lambda build --release --bin <Binary>` at the
# root, the default members) and as `-p gatehouse-functions` does: no SQLite in what is deployed.
# Its dependencies only: a feature the tests turn on elsewhere in the workspace must not leak in.
lean() {
    local how deps
    for how in "" "-p gatehouse-functions"; do
        # shellcheck disable=SC2086
        deps=$(cargo tree --locked $how -e normal,build --target all --prefix none -f '{p}') || return 1
        if grep -E '^(rusqlite|libsqlite3-sys) ' <<<"$deps"; then
            echo "the deployed functions (cargo tree $how) link SQLite" >&2
            return 1
        fi
    done
    echo "the deployed functions link no SQLite ($(wc -l <<<"$deps") dependency lines)"
    # And such a build, with no table named, refuses to start and says which variable it needs,
    # instead of looking for a store it does not have.
    cargo build --locked -p gatehouse-functions --bin haravan-webhooks || return 1
    local out status=0
    out=$(env -i PATH="$PATH" AWS_LAMBDA_RUNTIME_API=127.0.0.1:9 AWS_LAMBDA_FUNCTION_NAME=haravan-webhooks \
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128 AWS_LAMBDA_FUNCTION_VERSION=1 \
        GATEHOUSE_DATA_DIR="$TARGET_DIR/lean-data" "$TARGET_DIR/debug/haravan-webhooks" 2>&1) || status=$?
    if [ "$status" = 0 ] || ! grep -q '"configuration `TABLE_NAME`: is unset, and this build has no embedded store' <<<"$out" \
        || [ -e "$TARGET_DIR/lean-data" ]; then
        echo "a function built for deployment, without TABLE_NAME, must refuse to start (status $status):" >&2
        echo "$out" >&2
        return 1
    fi
    echo "without TABLE_NAME it refuses to start: $(grep -o 'configuration `TABLE_NAME`[^"]*' <<<"$out" | head -1)"
}
step lean lean
# cargo test closes on the doc-test runs, which have no tests; the summed total is printed last
# so that the run's closing line counts every test.
run_tests() {
    local log=$TARGET_DIR/test-output.log
    local status=0
    # The operator command's own test (tests/it/admin.rs) runs the built binary, which cargo
    # test does not build (its package has no tests of its own).
    cargo build --locked -p gatehouse-admin || return 1
    GATEHOUSE_ADMIN_BIN=$(cd "$TARGET_DIR" && pwd)/debug/gatehouse-admin
    export GATEHOUSE_ADMIN_BIN
    # Under a time limit (tests/watchdog.py): a test that hangs fails the run, named, with its
    # stack, instead of holding it until CI stops it from outside with nothing said.
    "$PY" tests/watchdog.py "${GATEHOUSE_TEST_LIMIT:-2700}" "$log" -- cargo test --workspace --locked || status=$?
    "$PY" - "$log" <<'EOF'
import re, sys
passed = failed = 0
for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed", open(sys.argv[1]).read()):
    passed += int(m.group(1)); failed += int(m.group(2))
print(f"\ntests: {passed} passed, {failed} failed")
EOF
    return "$status"
}
step test run_tests

if [ ${#failed[@]} -gt 0 ]; then
    echo >&2
    echo "FAILED steps: ${failed[*]}" >&2
    exit 1
fi
