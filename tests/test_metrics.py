"""Prometheus metrics (``arda_amazon_bp.metrics``): what imports against the sandbox record,
bounded labels, one set of metrics per registry, the package without prometheus_client,
``docs/metrics.md`` against the registry (table and alerting rules), and gunicorn's
multiprocess mode.

Every app here gets a fresh ``CollectorRegistry``, so tests never see each other's counts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import limits.storage.memory
import pytest
import yaml
from fixtures_app import USER_TOKEN
from fixtures_sandbox import SandboxApp, SandboxHandle
from flask import Flask
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_quota import FakeClock, make_settings

from arda_amazon_bp.credentials import mask
from arda_amazon_bp.metrics import METRICS, NULL_RECORDER, PrometheusRecorder, recorder_for
from arda_amazon_bp.quota import Quota

ROOT = Path(__file__).resolve().parent.parent
METRICS_MD = ROOT / "docs" / "metrics.md"
USER = {"Authorization": f"Bearer {USER_TOKEN}"}
CATALOG_ASIN = "B0C7NTRL01"  # complete: 200
UNKNOWN_ASIN = "B0UNKNOWN1"  # not in the sandbox catalog: 206 with a notice
CREDENTIAL_ID = SandboxHandle.credential().credential_id  # the sandbox's demo credential
CREDENTIAL_LABEL = mask(CREDENTIAL_ID)  # "…0001"


# --- reading an exposition --------------------------------------------------------------


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a text exposition: (name, sorted labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def samples(registry: Any) -> Samples:
    return parse(generate_latest(registry).decode())


def total(found: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over the series whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= set(ls))


def value(registry: Any, name: str, **labels: str) -> float:
    """:func:`total` over ``generate_latest(registry)``."""
    return total(samples(registry), name, **labels)


def import_url(app: Flask, url: str) -> Any:
    return app.test_client().post("/api/amazon/import", json={"url": url}, headers=USER)


def dp(asin: str) -> str:
    return f"https://www.amazon.com/dp/{asin}"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


# --- imports against the sandbox ----------------------------------------------------------


def test_imports_against_the_sandbox_show_up_in_the_exposition(
    sandbox_app: SandboxApp, sandbox: SandboxHandle, registry: CollectorRegistry
) -> None:
    app = sandbox_app("3.1", metrics_registry=registry)

    assert import_url(app, dp(CATALOG_ASIN)).status_code == 200  # miss, one getItems
    assert import_url(app, dp(CATALOG_ASIN)).status_code == 200  # hit
    assert import_url(app, dp(UNKNOWN_ASIN)).status_code == 206  # miss, one getItems
    assert import_url(app, "https://example.com/not-amazon").status_code == 422
    sandbox.fault("status", status=503)
    failed = import_url(app, dp("B0SYN00001"))  # miss, one getItems answered 503
    assert failed.status_code == 502
    batch = app.test_client().post(
        "/api/amazon/import/batch",
        json={"urls": [dp(CATALOG_ASIN), dp("B0SYN00002"), "not a link"]},
        headers=USER,
    )
    assert batch.status_code == 200
    assert [r["status"] for r in batch.get_json()["results"]] == [200, 200, 422]

    assert value(registry, "arda_amazon_imports_total", code="OK") == 4
    assert value(registry, "arda_amazon_imports_total", code="PARTIAL") == 1
    assert value(registry, "arda_amazon_imports_total", code="UNRECOGNIZED_AMAZON_URL") == 2
    assert value(registry, "arda_amazon_imports_total", code="AMAZON_UPSTREAM_UNAVAILABLE") == 1
    assert value(registry, "arda_amazon_imports_total") == 8

    stats = sandbox.stats(calls=False)
    assert stats["total_calls"] == 4
    assert value(registry, "arda_amazon_upstream_calls_total") == stats["total_calls"]
    assert (
        value(
            registry,
            "arda_amazon_upstream_calls_total",
            marketplace="www.amazon.com",
            outcome="server_error",
        )
        == 1
    )
    assert value(registry, "arda_amazon_upstream_calls_total", outcome="ok") == 3
    assert value(registry, "arda_amazon_upstream_call_seconds_count") == stats["total_calls"]
    assert value(registry, "arda_amazon_asins_per_call_sum") == sum(stats["asins_per_call"])
    assert (
        value(registry, "arda_amazon_token_requests_total", outcome="ok")
        == (stats["token_requests"])
    )
    # Hits: the second import and the batch's first link; misses: the four distinct others.
    assert value(registry, "arda_amazon_cache_lookups_total", result="hit") == 2
    assert value(registry, "arda_amazon_cache_lookups_total", result="miss") == 4
    assert value(registry, "arda_amazon_quota_wait_seconds_count") == stats["total_calls"]
    # Every attempt reports its departure, retries included.
    assert (
        value(registry, "arda_amazon_quota_departure_delay_seconds_count") == (stats["total_calls"])
    )
    assert value(registry, "arda_amazon_credential_loads_total", backend="env", outcome="ok") >= 1
    window = {"window": "day", "credential": CREDENTIAL_LABEL}
    assert value(registry, "arda_amazon_quota_limit", **window) == 8640
    assert value(registry, "arda_amazon_quota_remaining", **window) == 8640 - stats["total_calls"]


def test_no_label_value_is_an_asin_a_url_a_request_id_or_a_credential_id(
    sandbox_app: SandboxApp, sandbox: SandboxHandle, registry: CollectorRegistry
) -> None:
    app = sandbox_app("3.1", metrics_registry=registry)
    response = import_url(app, dp(CATALOG_ASIN))
    request_id = response.headers["X-Request-ID"]
    sandbox.fault("associate_not_eligible")
    import_url(app, dp("B0SYN00003"))
    forbidden = (CATALOG_ASIN, "B0SYN00003", "amazon.com/", request_id, CREDENTIAL_ID)
    label_values = {v for (_, labels), _ in samples(registry).items() for _, v in labels}
    assert label_values  # the exposition has labelled series at all
    for text in label_values:
        assert not any(word in text for word in forbidden), text


def test_an_eligibility_loss_is_counted_every_time_though_logged_once(
    sandbox_app: SandboxApp,
    sandbox: SandboxHandle,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = sandbox_app("3.1", metrics_registry=registry)
    sandbox.fault("associate_not_eligible", count=2)
    with caplog.at_level(logging.ERROR, logger="arda_amazon_bp.extension"):
        for asin in ("B0SYN00011", "B0SYN00012"):
            assert import_url(app, dp(asin)).status_code == 502
    logged = [r for r in caplog.records if r.getMessage().startswith("amazon_upstream_event ")]
    assert len(logged) == 1  # AMAZON_UPSTREAM_EVENT_INTERVAL_SECONDS throttles the log line
    assert value(registry, "arda_amazon_upstream_events_total", event="associate_not_eligible") == 2
    assert (
        value(registry, "arda_amazon_upstream_calls_total", outcome="associate_not_eligible") == 2
    )


@pytest.mark.parametrize(
    ("fault", "count", "event"),
    [
        ("invalid_partner_tag", 1, "invalid_partner_tag"),
        ("token_expired", 2, "credentials_rejected"),
    ],
)
def test_the_other_account_events_are_counted_under_their_names(
    sandbox_app: SandboxApp,
    sandbox: SandboxHandle,
    registry: CollectorRegistry,
    fault: str,
    count: int,
    event: str,
) -> None:
    app = sandbox_app("3.1", metrics_registry=registry)
    sandbox.fault(fault, count=count)
    assert import_url(app, dp("B0SYN00021")).status_code == 502
    assert value(registry, "arda_amazon_upstream_events_total", event=event) == 1
    assert value(registry, "arda_amazon_upstream_events_total") == 1


def test_a_credential_backend_failure_is_counted(
    sandbox_app: SandboxApp, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = sandbox_app("3.1", metrics_registry=registry)
    monkeypatch.delenv("AMAZON_CREATORS_CREDENTIAL_SECRET")
    assert import_url(app, dp("B0SYN00031")).status_code == 502
    assert (
        value(registry, "arda_amazon_credential_loads_total", backend="env", outcome="error") >= 1
    )
    assert value(registry, "arda_amazon_credential_loads_total", outcome="ok") == 0


# --- quota -------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """test_quota's fake clock, also for the memory storage's own time.time()."""
    fake = FakeClock()
    monkeypatch.setattr(limits.storage.memory, "time", SimpleNamespace(time=fake.time))
    return fake


def test_quota_waits_and_refusals_are_recorded(
    registry: CollectorRegistry, clock: FakeClock
) -> None:
    quota = Quota(
        make_settings("1/second;8640/day", margin=0.0),
        clock=clock.time,
        sleep=clock.sleep,
        metrics=PrometheusRecorder(registry),
    )
    quota.acquire("k", max_wait=0)
    quota.acquire("k", max_wait=3)  # waits one second on the fake clock
    with pytest.raises(Exception, match="next slot"):
        quota.acquire("k", max_wait=0)
    assert value(registry, "arda_amazon_quota_wait_seconds_count") == 2
    assert value(registry, "arda_amazon_quota_wait_seconds_sum") == pytest.approx(1.0, abs=0.01)
    assert value(registry, "arda_amazon_quota_refusals_total", limit="second") == 1
    quota.penalize("k", 60)
    with pytest.raises(Exception, match="throttled"):
        quota.acquire("k", max_wait=0)
    assert value(registry, "arda_amazon_quota_refusals_total", limit="penalty") == 1


def test_departure_delays_are_recorded(registry: CollectorRegistry, clock: FakeClock) -> None:
    quota = Quota(
        make_settings("1/second;8640/day", margin=0.0),  # recorded even with the check off
        clock=clock.time,
        sleep=clock.sleep,
        metrics=PrometheusRecorder(registry),
    )
    taken = quota.acquire("k", max_wait=0)
    clock.now += 0.2
    quota.sending("k", taken)
    assert value(registry, "arda_amazon_quota_departure_delay_seconds_count") == 1
    assert value(registry, "arda_amazon_quota_departure_delay_seconds_sum") == pytest.approx(0.2)
    assert value(registry, "arda_amazon_quota_departure_delay_seconds_bucket", le="0.15") == 0
    assert value(registry, "arda_amazon_quota_departure_delay_seconds_bucket", le="0.25") == 1


# --- registries ----------------------------------------------------------------------------


def test_apps_sharing_a_registry_share_one_set_of_metrics(
    make_app: Callable[..., Flask], registry: CollectorRegistry
) -> None:
    first = make_app(metrics_registry=registry)
    second = make_app(metrics_registry=registry)  # no duplicate registration
    make_app()  # prometheus_client's default REGISTRY, however many apps use it
    make_app()
    assert first.extensions["arda_amazon_bp"].metrics is second.extensions["arda_amazon_bp"].metrics
    assert recorder_for(registry) is first.extensions["arda_amazon_bp"].metrics
    assert recorder_for() is recorder_for()
    assert recorder_for() is not recorder_for(registry)
    for app in (first, second):
        import_url(app, "https://example.com/x")
    assert value(registry, "arda_amazon_imports_total", code="UNRECOGNIZED_AMAZON_URL") == 2


def test_init_app_takes_the_registry_too(
    creators_env: dict[str, str], registry: CollectorRegistry
) -> None:
    from arda_amazon_bp import AmazonImport

    app = Flask("late")
    AmazonImport().init_app(app, metrics_registry=registry)
    try:
        assert app.extensions["arda_amazon_bp"].metrics is recorder_for(registry)
    finally:
        app.extensions["arda_amazon_bp"].close()


def test_a_name_taken_by_another_library_turns_metrics_off_without_failing(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    Counter("arda_amazon_token_requests_total", "someone else's", registry=registry)
    before = set(samples(registry))
    with caplog.at_level(logging.ERROR, logger="arda_amazon_bp.metrics"):
        assert recorder_for(registry) is NULL_RECORDER
    assert set(samples(registry)) == before  # nothing half-registered
    assert "metrics are off" in caplog.text


def test_labels_outside_their_known_values_become_other(registry: CollectorRegistry) -> None:
    recorder = PrometheusRecorder(registry)
    recorder.import_failed("B0C7NTRL01 free text")
    recorder.upstream_call(
        {"kind": "getItems", "marketplace": "evil.example", "outcome": "x" * 300, "asins": []}
    )
    recorder.upstream_event("https://example.com/")
    recorder.quota_refused("fortnight")
    recorder.quota_window("amzn1.application-oa2-client.0123456789abcdef", "nonsense", 10, 3)
    recorder.credential_load("a backend with spaces", False)
    assert value(registry, "arda_amazon_imports_total", code="other") == 1
    assert value(registry, "arda_amazon_upstream_calls_total", marketplace="other") == 1
    assert value(registry, "arda_amazon_upstream_calls_total", outcome="other") == 1
    assert value(registry, "arda_amazon_upstream_events_total", event="other") == 1
    assert value(registry, "arda_amazon_quota_refusals_total", limit="other") == 1
    assert value(registry, "arda_amazon_quota_remaining", window="other", credential="…cdef") == 3
    assert value(registry, "arda_amazon_credential_loads_total", backend="other") == 1


# --- without prometheus_client -------------------------------------------------------------

_WITHOUT_PROMETHEUS = textwrap.dedent(
    """
    import json, sys

    class Blocker:
        # prometheus_client is not installed, as far as this process can tell.
        def find_spec(self, name, path=None, target=None):
            if name == "prometheus_client" or name.startswith("prometheus_client."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    from flask import Flask
    from arda_amazon_bp import AmazonImport
    from arda_amazon_bp.metrics import NULL_RECORDER

    app = Flask("no-prometheus")
    app.config.update(json.loads(sys.argv[1]))
    AmazonImport(app)
    client = app.test_client()
    answer = client.post("/api/amazon/import", json={"url": sys.argv[2]})
    state = app.extensions["arda_amazon_bp"]
    print(json.dumps({
        "status": answer.status_code,
        "title": (answer.get_json() or {}).get("title"),
        "null": state.metrics is NULL_RECORDER,
        "imported": sorted(m for m in sys.modules if m.startswith("prometheus")),
    }))
    state.close()
    """
)


def test_without_prometheus_client_the_package_imports_and_works(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    sandbox.configure(rate=100)
    config = sandbox.app_config("3.1", backend="env")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMAZON_")}
    for name in sandbox.CREDENTIAL_VARIABLES:
        env[name] = str(config.pop(name))
    config.update(AMAZON_IMPORT_AUTH_DISABLED=True, AMAZON_RATE_MARGIN_SECONDS=0)
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PROMETHEUS, json.dumps(config), dp(CATALOG_ASIN)],
        env=env,
        cwd=tmp_path,  # not the checkout, whose arda_amazon_bp would shadow the installed one
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["title"]
    assert result["null"] is True
    assert result["imported"] == []
    assert sandbox.stats(calls=False)["total_calls"] == 1


# --- docs/metrics.md ----------------------------------------------------------------------


def documented_metrics(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The table after ``<!-- metrics-table -->``: name -> (type, labels)."""
    lines = text.split("<!-- metrics-table -->", 1)[1].strip().splitlines()
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        labels = tuple(re.findall(r"`([a-z_]+)`", cells[2]))
        rows[name] = (cells[1], labels)
    return rows


def registered_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """What a fresh registry really holds after the recorder is created."""
    registry = CollectorRegistry()
    PrometheusRecorder(registry)
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for collector in list(registry._collector_to_names):
        for family in collector.describe():
            name = family.name + ("_total" if family.type == "counter" else "")
            found[name] = (family.type, tuple(getattr(collector, "_labelnames", ())))
    return found


def metrics_table_problems(
    documented: dict[str, tuple[str, tuple[str, ...]]],
    registered: dict[str, tuple[str, tuple[str, ...]]],
) -> list[str]:
    problems = [
        f"{n} is registered but not in docs/metrics.md"
        for n in registered.keys() - documented.keys()
    ]
    problems += [
        f"{n} is documented but not registered" for n in documented.keys() - registered.keys()
    ]
    for name in registered.keys() & documented.keys():
        if registered[name] != documented[name]:
            problems.append(f"{name}: registered {registered[name]}, documented {documented[name]}")
    return problems


def test_every_registered_metric_is_documented_with_its_type_and_labels() -> None:
    registered = registered_metrics()
    assert set(registered) == set(METRICS)
    assert all(name.startswith("arda_amazon_") for name in registered)
    assert metrics_table_problems(documented_metrics(METRICS_MD.read_text()), registered) == []


def test_drift_a_new_or_changed_metric_is_reported() -> None:
    documented = documented_metrics(METRICS_MD.read_text())
    registered = dict(registered_metrics())
    registered["arda_amazon_new_total"] = ("counter", ())
    registered["arda_amazon_imports_total"] = ("counter", ("code", "marketplace"))
    problems = metrics_table_problems(documented, registered)
    assert "arda_amazon_new_total is registered but not in docs/metrics.md" in problems
    assert any(p.startswith("arda_amazon_imports_total: registered") for p in problems)
    del documented["arda_amazon_asins_per_call"]
    assert any(
        "asins_per_call is registered but not" in p
        for p in metrics_table_problems(documented, registered_metrics())
    )


def alerting_rules() -> str:
    """The ``yaml`` block after ``<!-- alerting-rules -->`` in docs/metrics.md."""
    text = METRICS_MD.read_text().split("<!-- alerting-rules -->", 1)[1]
    match = re.search(r"```yaml\n(.*?)\n```", text, re.S)
    assert match, "no yaml block after the alerting-rules marker"
    return match.group(1) + "\n"


#: Series names an expression may use: the metrics and a histogram's derived series.
def series_names() -> set[str]:
    names = set()
    for name, (kind, _, _) in METRICS.items():
        names.add(name)
        if kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


def rule_problems(rules_text: str, known: Iterable[str]) -> list[str]:
    """Structure of a Prometheus rule file, and every arda_amazon_* name in an expr known."""
    document = yaml.safe_load(rules_text)
    problems: list[str] = []
    groups = document.get("groups") if isinstance(document, dict) else None
    if not isinstance(groups, list) or not groups:
        return ["no rule groups"]
    for group in groups:
        for rule in group.get("rules", []):
            if not isinstance(rule.get("alert"), str) or not isinstance(rule.get("expr"), str):
                problems.append(f"rule without alert/expr: {rule}")
                continue
            used = set(re.findall(r"\barda_amazon_[a-z_]+", rule["expr"]))
            if not used:
                problems.append(f"{rule['alert']}: uses no arda_amazon_ metric")
            problems += [f"{rule['alert']}: unknown metric {n}" for n in sorted(used - set(known))]
    return problems


def test_the_alerting_rules_use_only_registered_metrics() -> None:
    rules = alerting_rules()
    assert rule_problems(rules, series_names()) == []
    alerts = {r["alert"] for g in yaml.safe_load(rules)["groups"] for r in g["rules"]}
    assert alerts == {
        "AmazonEligibilityLost",
        "AmazonDailyQuotaLow",
        "AmazonUpstreamUnavailable",
        "AmazonCredentialsFailing",
        "AmazonCallsLeavingLate",
    }


def test_drift_a_rule_with_an_unknown_metric_is_reported() -> None:
    broken = alerting_rules().replace("arda_amazon_upstream_events_total", "arda_amazon_events")
    assert any(
        "unknown metric arda_amazon_events" in p for p in rule_problems(broken, series_names())
    )


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (.ci/run installs it)")
def test_promtool_accepts_the_rules_and_they_fire(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = tmp_path / "arda_amazon.rules.yml"
    rules.write_text(alerting_rules())
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # promtool compares annotations too; the unit tests are about when each alert fires.
    document = yaml.safe_load(alerting_rules())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules.write_text(yaml.safe_dump(document, allow_unicode=True))
    tests = tmp_path / "arda_amazon.rules.test.yml"
    tests.write_text(RULE_TESTS)
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", str(tests)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


#: promtool unit tests: each alert fires on the series that should raise it, and not on
#: healthy ones (https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/).
RULE_TESTS = """\
rule_files: [arda_amazon.rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'arda_amazon_upstream_events_total{event="associate_not_eligible"}'
        values: '0 0 1 1 1'
      - series: 'arda_amazon_quota_remaining{window="day",credential="…0001"}'
        values: '8640 5000 800 700 600'
      - series: 'arda_amazon_quota_limit{window="day",credential="…0001"}'
        values: '8640 8640 8640 8640 8640'
      - series: 'arda_amazon_credential_loads_total{backend="onepassword",outcome="error"}'
        values: '0 0 1 2 3'
    alert_rule_test:
      - eval_time: 4m
        alertname: AmazonEligibilityLost
        exp_alerts:
          - exp_labels: {severity: page, event: associate_not_eligible}
      - eval_time: 1m
        alertname: AmazonDailyQuotaLow
        exp_alerts: []
      - eval_time: 4m
        alertname: AmazonDailyQuotaLow
        exp_alerts:
          - exp_labels: {severity: warning, window: day, credential: "…0001"}
      - eval_time: 4m
        alertname: AmazonCredentialsFailing
        exp_alerts:
          - exp_labels: {severity: warning, backend: onepassword}
  - interval: 1m
    input_series:
      - series: 'arda_amazon_upstream_calls_total{marketplace="www.amazon.com",outcome="ok"}'
        values: '0+90x30'
      - series: 'arda_amazon_upstream_calls_total{marketplace="www.amazon.com",outcome="timeout"}'
        values: '0+10x30'
      - series: 'arda_amazon_upstream_calls_total{marketplace="www.amazon.co.uk",outcome="ok"}'
        values: '0+100x30'
    alert_rule_test:
      - eval_time: 8m
        alertname: AmazonUpstreamUnavailable
        exp_alerts: []
      - eval_time: 20m
        alertname: AmazonUpstreamUnavailable
        exp_alerts:
          - exp_labels: {severity: warning, marketplace: www.amazon.com}
  # Departures: 80 % within 0.05 s, 20 % between 0.15 and 0.25 s (p99 about 0.25 s).
  - interval: 1m
    input_series:
      - series: 'arda_amazon_quota_departure_delay_seconds_bucket{le="0.05"}'
        values: '0+40x40'
      - series: 'arda_amazon_quota_departure_delay_seconds_bucket{le="0.1"}'
        values: '0+40x40'
      - series: 'arda_amazon_quota_departure_delay_seconds_bucket{le="0.15"}'
        values: '0+40x40'
      - series: 'arda_amazon_quota_departure_delay_seconds_bucket{le="0.25"}'
        values: '0+50x40'
      - series: 'arda_amazon_quota_departure_delay_seconds_bucket{le="+Inf"}'
        values: '0+50x40'
    alert_rule_test:
      - eval_time: 12m
        alertname: AmazonCallsLeavingLate
        exp_alerts: []
      - eval_time: 35m
        alertname: AmazonCallsLeavingLate
        exp_alerts:
          - exp_labels: {severity: warning}
  # Healthy departures, all within 0.05 s: no alert however long it lasts.
  - interval: 1m
    input_series:
      - series: 'arda_amazon_quota_departure_delay_seconds_bucket{le="0.05"}'
        values: '0+50x40'
      - series: 'arda_amazon_quota_departure_delay_seconds_bucket{le="+Inf"}'
        values: '0+50x40'
    alert_rule_test:
      - eval_time: 35m
        alertname: AmazonCallsLeavingLate
        exp_alerts: []
"""


# --- gunicorn, two workers, prometheus_client's multiprocess mode --------------------------


@pytest.mark.slow
def test_gunicorn_workers_report_summed_counts_in_multiprocess_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example BFF under gunicorn (2 workers, PROMETHEUS_MULTIPROC_DIR set): /metrics,
    whichever worker answers it, shows the counts of both workers added up."""
    import requests
    from stack import run_stack
    from test_quota_multiprocess import ACCESS_LOG, import_all, serving_workers

    multiproc_dir = tmp_path / "prometheus"
    multiproc_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc_dir))  # gunicorn inherits it
    asins = [f"B0SYN{n:05d}" for n in range(101, 117)]
    config = {
        "AMAZON_RATE_LIMITS": "50/second;8640/day",
        "AMAZON_RATE_MARGIN_SECONDS": 0,
        "AMAZON_MAX_WAITING": 8,  # every thread may wait: this test counts, it does not shed
    }
    with run_stack(
        workers=2, threads=8, rate=50, storage="memory", config=config, gunicorn_args=ACCESS_LOG
    ) as stack:
        served = import_all(stack, asins, timeout=30)
        assert [r.status_code for _, r, _ in served] == [200] * len(asins)
        workers = serving_workers(stack)
        assert len(workers) == 2, stack.logs()[-2000:]  # each worker counted a share only
        stats = stack.sandbox.stats(calls=False)
        scrapes = []
        for _ in range(4):  # answered by either worker: the same totals every time
            with requests.Session() as session:
                response = session.get(stack.bff_url + "/metrics", timeout=10)
            assert response.status_code == 200
            scrapes.append(response.text)

    files = {p.name for p in multiproc_dir.iterdir()}
    assert {f"counter_{pid}.db" for pid in workers} <= files, files
    for text in scrapes:
        found = parse(text)
        assert total(found, "arda_amazon_imports_total", code="OK") == len(asins)
        assert total(found, "arda_amazon_upstream_calls_total") == stats["total_calls"]
        assert (
            total(found, "arda_amazon_token_requests_total", outcome="ok")
            == (stats["token_requests"])
        )
        assert total(found, "arda_amazon_cache_lookups_total", result="miss") == len(asins)
        remaining = [k for k in found if k[0] == "arda_amazon_quota_remaining"]
        assert len(remaining) == 1, remaining  # mostrecent: one series, not one per worker
