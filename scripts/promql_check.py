#!/usr/bin/env python3
"""Runs every PromQL expression of k8s/ against a running Prometheus and reports which return no data.

The expressions (one place that finds them, scripts/k8s_check.py uses it too):
- the Grafana dashboard, k8s/grafana/tickmesh-dashboard.json: every panel target, and the series of
  each label_values() variable;
- the rules, k8s/alerts/tickmesh-rules.yaml: every `expr`;
- prometheus-adapter's rules, k8s/overlays/dev/monitoring/prometheus-adapter.yaml: each seriesQuery
  and metricsQuery.

Each is sent to /api/v1/query as an instant query at the current time, after these rewrites:
- Dashboard variables select everything: $namespace and $service become .*, $__rate_interval 1m
  (so Prometheus must have scraped each target at least twice in the last minute).
- The adapter's templates are filled in as the adapter does for all the pods of all namespaces:
  <<.Series>> is the series' name, <<.LabelMatchers>> `label=~".+"` for each label of its resource
  overrides, <<.GroupBy>> the label of the `pod` resource.
- An alert is quiet on a healthy mesh, so its expression returns nothing there by design; what
  must exist is its input. So a top-level trailing comparison against a number (`x > 0.05`,
  `x == 0`, `x > (14.4 * 0.001)`) is removed, and each operand of a top-level `and`, `or` or
  `unless` is queried on its own.
- A recording rule's name is replaced by its expression, so the Prometheus need not evaluate
  these rules.
Exemplars are not checked.

Exits 0 when every expression returned data, 1 with one line per expression that did not (or that
Prometheus refused), 2 when Prometheus cannot be reached.

Usage: .venv/bin/python scripts/promql_check.py --prometheus http://127.0.0.1:9090
       .venv/bin/python scripts/promql_check.py --list
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

try:
    import yaml
except ImportError as e:  # pragma: no cover - a setup problem, said plainly
    sys.exit(f"promql_check: {e}; install scripts/requirements-test.txt into .venv (scripts/test.sh --install-only)")

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "k8s" / "grafana" / "tickmesh-dashboard.json"
RULES = ROOT / "k8s" / "alerts" / "tickmesh-rules.yaml"
ADAPTER = ROOT / "k8s" / "overlays" / "dev" / "monitoring" / "prometheus-adapter.yaml"

# The values the dashboard's variables take here: everything. These are the only variables its
# expressions may use (scripts/k8s_check.py holds the dashboard to that).
DASHBOARD_VALUES = {"namespace": ".*", "service": ".*", "__rate_interval": "1m"}


# ---------------------------------------------------------------------------------------------
# A PromQL tokenizer: enough to find the top level of an expression and the metric names in it
# ---------------------------------------------------------------------------------------------


class Token(NamedTuple):
    kind: str
    text: str
    start: int
    end: int


TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)                                    # PromQL comments run to the line's end
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)(?![\w.])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<variable>\$\{[^}]*\}|\$\w+)                            # Grafana's, before substitution
  | (?P<template><<[^>]*>>)                                    # prometheus-adapter's, likewise
  | (?P<ident>[A-Za-z_][\w:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=@])
  | (?P<punct>[(){}\[\],:])
""", re.X)

COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
SET_OPERATORS = {"and", "or", "unless"}
# Keywords that take a parenthesised list of label names, which are not metrics.
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = SET_OPERATORS | GROUPING | {"bool", "offset", "inf", "nan"}
OPENING, CLOSING = "({[", ")}]"


def tokenize(expr: str) -> list[Token]:
    """The tokens of `expr`, without whitespace and comments; ValueError on what PromQL cannot hold."""
    tokens, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot read the expression at offset {pos}: {expr[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        if kind != "space":
            if kind == "ident" and m.group().lower() in ("inf", "nan"):
                kind = "number"
            tokens.append(Token(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return tokens


def depths(tokens: list[Token]) -> Iterator[tuple[int, Token, int]]:
    """(index, token, nesting depth) of each token; a bracket counts as inside what it opens or closes."""
    depth = 0
    for i, t in enumerate(tokens):
        if t.kind == "punct" and t.text in OPENING:
            depth += 1
            yield i, t, depth
        elif t.kind == "punct" and t.text in CLOSING:
            yield i, t, depth
            depth -= 1
        else:
            yield i, t, depth


def closing(tokens: list[Token], i: int) -> int:
    """The index of the bracket that closes the one at `i`."""
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].kind == "punct" and tokens[j].text in OPENING:
            depth += 1
        elif tokens[j].kind == "punct" and tokens[j].text in CLOSING:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced brackets")


def one_line(expr: str) -> str:
    """`expr` on one line: each run of whitespace or comments outside strings becomes one space."""
    tokens = tokenize(expr)
    out = []
    for prev, t in zip([None, *tokens], tokens):
        if prev is not None and t.start > prev.end:
            out.append(" ")
        out.append(t.text)
    return "".join(out)


def unwrap(expr: str) -> str:
    """`expr` without parentheses around all of it: `((a > 1))` -> `a > 1`."""
    while True:
        tokens = tokenize(expr)
        if len(tokens) < 2 or tokens[0].text != "(" or closing(tokens, 0) != len(tokens) - 1:
            return expr.strip()
        expr = expr[tokens[0].end:tokens[-1].start]


def split_set_operators(expr: str) -> list[str]:
    """The operands of the top-level `and`, `or` and `unless` of `expr` (just `expr` when it has none).

    These bind more loosely than any other operator, so each operand is a whole expression. The
    vector matching after the operator (`and on (pod)`) belongs to neither operand and is dropped.
    """
    tokens = tokenize(expr)
    parts, start, skip_to = [], 0, -1
    for i, t, depth in depths(tokens):
        if i <= skip_to:
            continue
        if depth == 0 and t.kind == "ident" and t.text.lower() in SET_OPERATORS:
            parts.append(expr[start:t.start])
            j = i + 1
            if j + 1 < len(tokens) and tokens[j].text.lower() in ("on", "ignoring") and tokens[j + 1].text == "(":
                j = closing(tokens, j + 1) + 1
            skip_to = j - 1
            start = tokens[j].start if j < len(tokens) else len(expr)
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def strip_threshold(expr: str) -> str | None:
    """`expr` without its top-level trailing comparison against a number, or None when it has none.

    `rate(x[5m]) > 0.05` -> `rate(x[5m])`; `x == 0` -> `x`; `x > (14.4 * 0.001)` -> `x`. Not a
    comparison inside brackets or strings, not one against another vector (`a > b`), and not a
    `bool` one, which returns 0 or 1 for every series rather than filtering them.
    """
    tokens = tokenize(expr)
    last = None
    for i, t, depth in depths(tokens):
        if depth == 0 and t.kind == "op" and t.text in COMPARISONS:
            last = i
    if last is None:
        return None
    rest = tokens[last + 1:]
    constant = all(t.kind == "number" or (t.kind == "op" and t.text in "+-*/%^") or
                   (t.kind == "punct" and t.text in "()") for t in rest)
    if not constant or not any(t.kind == "number" for t in rest):
        return None
    return expr[:tokens[last].start].rstrip()


def alert_inputs(expr: str) -> list[str]:
    """What must return data for an alert to be able to fire: its operands without their thresholds."""
    parts = split_set_operators(unwrap(expr))
    if len(parts) > 1:
        return [q for p in parts for q in alert_inputs(p)]
    stripped = strip_threshold(parts[0])
    return [unwrap(stripped)] if stripped is not None else [parts[0]]


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects: identifiers that are not functions, keywords or labels."""
    tokens = tokenize(expr)
    names, i = set(), 0
    while i < len(tokens):
        t = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if t.kind == "punct" and t.text == "{":
            i = closing(tokens, i) + 1  # label matchers
            continue
        if t.kind == "ident":
            word = t.text.lower()
            if word in GROUPING and following is not None and following.text == "(":
                i = closing(tokens, i + 1) + 1  # a list of label names
                continue
            # A function or an aggregation: `rate(`, `sum(`, `sum by (`.
            called = following is not None and (following.text == "(" or following.text.lower() in ("by", "without"))
            if word not in KEYWORDS and not called:
                names.add(t.text)
        i += 1
    return names


def expand_recorded(expr: str, recorded: dict[str, str], depth: int = 0) -> str:
    """`expr` with each bare reference to a recording rule replaced by the rule's expression."""
    if depth > 10:
        raise ValueError("recording rules refer to each other in a loop")
    tokens = tokenize(expr)
    out = expr
    for i in reversed(range(len(tokens))):
        t = tokens[i]
        followed_by_matchers = i + 1 < len(tokens) and tokens[i + 1].text == "{"
        if t.kind == "ident" and t.text in recorded and not followed_by_matchers:
            inner = expand_recorded(recorded[t.text].strip(), recorded, depth + 1)
            out = f"{out[:t.start]}({inner}){out[t.end:]}"
    return out


# ---------------------------------------------------------------------------------------------
# Where the expressions are
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One expression to send: where it is, what is written there, and what is sent."""

    source: str
    written: str
    query: str


VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def dashboard_variables(text: str) -> set[str]:
    """The Grafana variables `text` uses ($name, ${name} or ${name:format})."""
    return {a or b for a, b in VARIABLE.findall(text)}


def substitute_dashboard(text: str) -> str:
    """`text` with the dashboard's variables given values that select everything; others stay."""
    return VARIABLE.sub(lambda m: DASHBOARD_VALUES.get(m.group(1) or m.group(2), m.group(0)), text)


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def dashboard_queries(path: Path = DASHBOARD) -> list[Query]:
    dash = json.loads(path.read_text())
    where = path.relative_to(ROOT)
    out = []
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        text = q.get("query", "") if isinstance(q, dict) else str(q or "")
        # label_values(<series>, <label>): what must exist is the series.
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", text, re.S)
        if m:
            out.append(Query(f"{where} variable ${v.get('name')}", text, substitute_dashboard(m.group(1))))
    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append(Query(f"{where} panel {p.get('title')!r} target {t.get('refId')}", t["expr"],
                                 substitute_dashboard(t["expr"])))
    return out


def rules(path: Path = RULES) -> list[dict[str, Any]]:
    """The rules of a Prometheus rules file, in order."""
    doc = yaml.safe_load(path.read_text()) or {}
    return [r for g in doc.get("groups", []) for r in g.get("rules", [])]


def recorded(path: Path = RULES) -> dict[str, str]:
    """Recording rule name -> its expression."""
    return {r["record"]: str(r["expr"]) for r in rules(path) if "record" in r}


def rules_queries(path: Path = RULES) -> list[Query]:
    where = path.relative_to(ROOT)
    records = recorded(path)
    out = []
    for r in rules(path):
        expr = str(r.get("expr", ""))
        if "record" in r:
            out.append(Query(f"{where} record {r['record']}", expr, expand_recorded(expr, records)))
            continue
        inputs = alert_inputs(expr)
        for n, i in enumerate(inputs, 1):
            part = f" (input {n} of {len(inputs)})" if len(inputs) > 1 else ""
            out.append(Query(f"{where} alert {r.get('alert')}{part}", expr, expand_recorded(i, records)))
    return out


def adapter_queries(path: Path = ADAPTER) -> list[Query]:
    where = path.relative_to(ROOT)
    out = []
    for n, rule in enumerate((yaml.safe_load(path.read_text()) or {}).get("rules", []), 1):
        series = str(rule.get("seriesQuery", ""))
        name = rule.get("name", {}).get("as") or f"rule {n}"
        out.append(Query(f"{where} {name} seriesQuery", series, series))
        overrides = rule.get("resources", {}).get("overrides", {})
        names = sorted(metric_names(series))
        filled = str(rule.get("metricsQuery", ""))
        filled = filled.replace("<<.Series>>", names[0] if len(names) == 1 else "<<.Series>>")
        filled = filled.replace("<<.LabelMatchers>>", ",".join(f'{label}=~".+"' for label in overrides))
        pod_label = next((label for label, r in overrides.items() if r.get("resource") == "pod"), "pod")
        filled = filled.replace("<<.GroupBy>>", pod_label)
        out.append(Query(f"{where} {name} metricsQuery", str(rule.get("metricsQuery", "")), filled))
    return out


def collect() -> list[Query]:
    """Every expression of the dashboard, the rules and the adapter, ready to send."""
    return dashboard_queries() + rules_queries() + adapter_queries()


# ---------------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------------


class Unreachable(Exception):
    """Prometheus did not answer at all."""


def api(prometheus: str, path: str, params: dict[str, str] | None, timeout: float) -> dict[str, Any]:
    """The JSON answer of the HTTP API; a refused query's answer too (it says why)."""
    url = prometheus.rstrip("/") + path
    # POST: the longer expressions (the rules, expanded) would strain a URL.
    data = urllib.parse.urlencode(params).encode() if params is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        # 400 (bad_data) and 422 (execution) carry Prometheus's reason in the body.
        try:
            return json.load(e)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"status": "error", "errorType": f"HTTP {e.code}", "error": e.reason}
    except (urllib.error.URLError, OSError) as e:
        raise Unreachable(f"{url}: {getattr(e, 'reason', e)}") from e
    except json.JSONDecodeError as e:
        raise Unreachable(f"{url}: not Prometheus's HTTP API ({e})") from e


def run(prometheus: str, queries: list[Query], timeout: float) -> int:
    try:
        info = api(prometheus, "/api/v1/status/buildinfo", None, timeout)
    except Unreachable as e:
        print(f"promql_check: cannot reach Prometheus: {e}", file=sys.stderr)
        return 2
    version = info.get("data", {}).get("version", "?")
    print(f"promql_check: {len(queries)} expressions against {prometheus} (Prometheus {version})")
    failed = 0
    for q in queries:
        try:
            answer = api(prometheus, "/api/v1/query", {"query": q.query}, timeout)
        except Unreachable as e:
            print(f"promql_check: lost Prometheus: {e}", file=sys.stderr)
            return 2
        if answer.get("status") != "success":
            failed += 1
            print(f"ERROR    {q.source}: {answer.get('errorType')}: {answer.get('error')}: {one_line(q.query)}",
                  file=sys.stderr)
            continue
        data = answer.get("data", {})
        kind, result = data.get("resultType"), data.get("result")
        if kind in ("vector", "matrix") and not result:
            failed += 1
            print(f"NO DATA  {q.source}: {one_line(q.query)}", file=sys.stderr)
        else:
            print(f"ok       {q.source} ({len(result) if kind in ('vector', 'matrix') else kind})")
    if failed:
        print(f"promql_check: FAILED: {failed} of {len(queries)} expressions returned no data or were refused (see above)",
              file=sys.stderr)
        return 1
    print(f"promql_check: ok: all {len(queries)} expressions returned data")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", metavar="URL", help="Prometheus to query, e.g. http://127.0.0.1:9090")
    parser.add_argument("--list", action="store_true", help="print the expressions as they would be sent, query nothing")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    args = parser.parse_args()
    try:
        queries = collect()
    except (OSError, ValueError, yaml.YAMLError, KeyError) as e:
        print(f"promql_check: cannot collect the expressions: {e}", file=sys.stderr)
        return 1
    if args.list:
        for q in queries:
            print(f"{q.source}:\n    {one_line(q.query)}")
        return 0
    if not args.prometheus:
        parser.error("--prometheus URL is needed (or --list)")
    return run(args.prometheus, queries, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
