"""The shipped alert rules and Grafana dashboard watch series that exist.

An alert on a misspelt or renamed series never fires and never errors: Prometheus just
finds nothing.  So every name and every grouping label in `monitoring/` is checked here
against the metric catalogue (plus a short list of DCGM exporter's series), the rules
go through `promtool check rules` and their own `promtool test rules` suite, and every
dashboard query has to parse as PromQL.  promtool comes with Debian's `prometheus`
package (scripts/install-deps); without it these tests fail rather than skip, because
a skipped check here is exactly how a broken alert would ship.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ds01d.rules.metric_catalogue import BY_NAME, exposed_names

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "monitoring" / "prometheus" / "ds01d-alerts.yml"
RULE_TESTS = REPO / "monitoring" / "prometheus" / "ds01d-alerts.test.yml"
DASHBOARD = REPO / "monitoring" / "grafana" / "ds01d-dashboard.json"

#: DCGM exporter's labels on its per-GPU series (ds01d's unit labels use the same names).
DCGM_LABELS = frozenset({"Hostname", "gpu", "UUID", "GPU_I_ID", "GPU_I_PROFILE", "modelName"})
#: Series from other exporters that the dashboard or rules may read, with their labels.
#: Kept to what is used (a test says so), so it cannot grow into a way around the catalogue.
EXTERNAL_SERIES: dict[str, frozenset[str]] = {
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": DCGM_LABELS,
    "DCGM_FI_DEV_POWER_USAGE": DCGM_LABELS,
}
SEVERITIES = {"info", "warning", "critical"}

# -- reading names out of PromQL ----------------------------------------------------------

FUNCTIONS = frozenset("""
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg
    delta deriv end exp floor histogram_quantile holt_winters hour idelta increase irate label_join
    label_replace last_over_time ln log10 log2 max_over_time min_over_time minute month pi
    predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort
    sort_desc sqrt start stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector
    year
""".split())
AGGREGATIONS = frozenset("avg bottomk count count_values group max min quantile stddev stdvar sum topk".split())
#: Keywords followed by a parenthesised list of label names (group_left/right's may be absent).
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"})

_STRING = r""""(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`"""
_TOKEN = re.compile(rf"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>{_STRING})
  | (?P<variable>\$\{{[^}}]*\}}|\$\w+|\[\[\w+\]\])          # Grafana's $var, ${{var}}, [[var]]
  | (?P<matchers>\{{(?:{_STRING}|[^}}"'`])*\}})              # {{label="value", ...}}: no names inside
  | (?P<range>\[[^\]]*\])                                    # [5m], [$__range], [1h:1m]
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))           # offset 5m, 1h30m
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punct>[(),]|[-+*/%^=!<>~@]+)
""", re.VERBOSE)


def tokens(expr: str) -> list[tuple[str, str]]:
    """The identifiers and brackets of `expr`; strings, matchers, ranges, numbers and Grafana
    variables are dropped, so a label value or a `3.6e6` can never read as a series name."""
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r} in {expr!r}")
        if m.lastgroup in ("ident", "punct"):
            out.append((m.lastgroup, m.group()))
        pos = m.end()
    return out


def scan(expr: str) -> tuple[set[str], set[str]]:
    """(series names, labels named in by/without/on/ignoring/group_left/group_right) of `expr`.

    An identifier followed by `(` must be a function or aggregation we know: an unknown one
    is an error rather than a guess, so a typo like `rat(` cannot hide a series name."""
    toks = tokens(expr)
    names: set[str] = set()
    labels: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else None
        word = text.lower()
        if kind != "ident" or word in KEYWORDS or word in AGGREGATIONS:  # `sum by (x) (...)`
            i += 1
        elif word in LABEL_LISTS:
            i += 1
            if following == "(":
                close = next((j for j in range(i + 1, len(toks)) if toks[j][1] == ")"), None)
                if close is None:
                    raise ValueError(f"unclosed {text}( in {expr!r}")
                labels |= {t for k, t in toks[i + 1:close] if k == "ident"}
                i = close + 1
        elif following == "(":
            if word not in FUNCTIONS:
                raise ValueError(f"unknown PromQL function {text}() in {expr!r}")
            i += 1
        else:
            names.add(text)
            i += 1
    return names, labels


def known_series() -> set[str]:
    return exposed_names() | set(EXTERNAL_SERIES)


def unknown_series(expr: str) -> set[str]:
    """Series names in `expr` that neither ds01d nor the listed exporters export."""
    return scan(expr)[0] - known_series()


def labels_of(names: set[str]) -> set[str]:
    """Every label the named series carry (catalogue specs, or the external list's)."""
    out: set[str] = set()
    for name in names:
        out |= set(BY_NAME[name].labels) if name in BY_NAME else set(EXTERNAL_SERIES.get(name, ()))
    return out


# -- the files ----------------------------------------------------------------------------

def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(panels: list[dict]) -> Iterator[dict]:
    """Every panel, those inside collapsed rows included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(where, expr, legend) for every panel target and every query variable."""
    out = []
    for panel in all_panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['id']} {panel['title']!r}", target.get("expr", ""),
                        target.get("legendFormat", "")))
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
            assert m, f"variable {var['name']}: expected label_values(series, label), got {query!r}"
            out.append((f"variable {var['name']}", m.group(1), "{{" + m.group(2) + "}}"))
    return out


def every_expr() -> list[tuple[str, str]]:
    return [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()] + \
           [(where, expr) for where, expr, _ in dashboard_queries()]


def as_promql(expr: str) -> str:
    """A dashboard expr with Grafana's variables replaced by something PromQL accepts."""
    for var, value in {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}.items():
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def promtool() -> str:
    """promtool's path; where it is missing, a failure and not a skip (the module's docstring says why)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run scripts/install-deps "
                    "(it installs Debian's prometheus package, which has promtool)")
    return path


# -- the checker checks -------------------------------------------------------------------

def test_the_checker_flags_a_made_up_series():
    assert unknown_series("sum(rate(ds01_nonexistent_total[5m])) > 0") == {"ds01_nonexistent_total"}
    assert unknown_series("ds01_stops_total / ignoring(rule) ds01_nonexistent_total") == {"ds01_nonexistent_total"}


def test_the_checker_reads_names_not_labels_strings_numbers_or_variables():
    names, labels = scan('sum by (user, state) (increase(ds01_user_gpu_seconds_total{user=~"$user", '
                         'state="ds01_fake_in_a_string"}[$__range] offset 1h30m)) / 3.6e6 '
                         '* on(Hostname) group_left(version) ds01_build_info > bool 0x10')
    assert names == {"ds01_user_gpu_seconds_total", "ds01_build_info"}
    assert labels == {"user", "state", "Hostname", "version"}
    assert scan("sum(ds01_queue_length) by (Hostname) and ds01_nvml_up")[1] == {"Hostname"}
    assert scan("ds01_gpu_container_info * on(gpu) group_left ds01_gpu_activity_ratio")[0] == \
        {"ds01_gpu_container_info", "ds01_gpu_activity_ratio"}


def test_the_checker_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="unknown PromQL function rat"):
        scan("rat(ds01_stops_total[5m])")
    with pytest.raises(ValueError, match="unclosed"):
        scan("sum by (user ds01_user_memory_bytes")


# -- names and labels -----------------------------------------------------------------------

EXPRS = every_expr()
EXPR_IDS = [f"{where} #{n}" for n, (where, _) in enumerate(EXPRS)]


@pytest.mark.parametrize(("where", "expr"), EXPRS, ids=EXPR_IDS)
def test_every_series_exists(where, expr):
    names = scan(expr)[0]
    assert names, f"{where}: reads no series at all: {expr!r}"
    assert not names - known_series(), \
        f"{where} reads {sorted(names - known_series())}, which nothing exports: {expr!r}"


@pytest.mark.parametrize(("where", "expr"), EXPRS, ids=EXPR_IDS)
def test_every_grouping_label_is_on_the_series(where, expr):
    names, labels = scan(expr)
    missing = labels - labels_of(names)
    assert not missing, f"{where} groups or joins on {sorted(missing)}, which none of {sorted(names)} carries"


def test_every_legend_label_is_on_the_series():
    for where, expr, legend in dashboard_queries():
        used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        missing = used - labels_of(scan(expr)[0])
        assert not missing, f"{where}: the legend shows {sorted(missing)}, which its query's series lack"


def test_the_external_list_holds_only_what_is_used():
    used = set().union(*(scan(expr)[0] for _, expr in every_expr()))
    assert not set(EXTERNAL_SERIES) - used, f"unused in EXTERNAL_SERIES: {sorted(set(EXTERNAL_SERIES) - used)}"


def test_every_dashboard_query_parses_as_promql(tmp_path):
    """Grafana would only show an error on the panel; promtool parses them all here."""
    rules = [{"record": f"dashboard_check:query_{i}", "expr": as_promql(expr)}
             for i, (_, expr, _) in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the alert rules ------------------------------------------------------------------------

def test_promtool_accepts_the_rules():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_promtool_tests():
    """Run from the rules' folder: the test file names its rule file relatively."""
    result = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_says_how_bad_and_what_in_words():
    for rule in alert_rules():
        name = rule.get("alert")
        assert name, f"a rule without an alert name: {rule}"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        shown = set(re.findall(r"\$labels\.(\w+)", annotations["summary"] + annotations["description"]))
        missing = shown - labels_of(scan(rule["expr"])[0])
        assert not missing, f"{name}'s annotations show {sorted(missing)}, which its series lack"


def test_every_alert_has_a_case_that_fires_and_one_that_must_not():
    cases = [case for group in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
             for case in group.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"no test where {rule['alert']} fires"
        assert any(not case.get("exp_alerts") for case in mine), f"no test where {rule['alert']} stays quiet"
        for case in mine:
            for alert in case.get("exp_alerts") or []:
                assert alert.get("exp_labels") and alert.get("exp_annotations"), \
                    f"{rule['alert']} at {case['eval_time']}: give the labels and annotations it fires with"


# -- the dashboard --------------------------------------------------------------------------

def test_the_dashboard_has_its_variables():
    dash = dashboard()
    assert dash["schemaVersion"] >= 36
    variables = {var["name"]: var for var in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    host = variables["Hostname"]
    assert host["type"] == "query" and host["multi"]
    assert host["query"]["query"] == "label_values(ds01_build_info, Hostname)"
    assert variables["user"]["type"] == "query"


def test_every_panel_has_an_id_a_place_and_queries():
    seen: set[int] = set()
    for panel in all_panels(dashboard()["panels"]):
        assert panel.get("type") and panel.get("title"), panel
        assert isinstance(panel.get("id"), int) and panel["id"] not in seen, f"duplicate or missing id: {panel}"
        seen.add(panel["id"])
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        assert len({t["refId"] for t in targets}) == len(targets), f"panel {panel['title']!r}: refIds repeat"
        for target in targets:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r}: a target without expr"
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
