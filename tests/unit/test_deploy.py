"""deploy/ and docker-compose.yml, checked without Docker: the services are wired to each
other and to the files they need, every metric the dashboard and the alerts use is one the
code exports, and promtool accepts the Prometheus config, the rules, their unit tests and
every dashboard query."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from executor.config import WorkerSettings
from executor.infra.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "orderstream.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus; "
    ".ci/run installs it where it runs as root)")
METRICS_PORT = WorkerSettings().metrics_port


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    services: dict[str, Any] = load(ROOT / "docker-compose.yml")["services"]
    return services


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the repo) of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            out[container] = host
    return out


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"]]


# -- compose ------------------------------------------------------------------------------


def test_compose_has_every_service_and_the_demo_only_under_its_profile() -> None:
    services = compose()
    assert set(services) == {"redis", "executor", "postgres", "archive", "prometheus",
                             "grafana", "demo"}
    assert services["demo"]["profiles"] == ["demo"]
    assert all("profiles" not in s for name, s in services.items() if name != "demo")


def test_workers_scale_without_clashing_ids_or_ports() -> None:
    executor = compose()["executor"]
    env = executor["environment"]
    # A fixed consumer name, container name or hostname would be shared by every replica.
    assert "ORDERSTREAM_CONSUMER" not in env
    assert "container_name" not in executor and "hostname" not in executor
    assert "ports" not in executor, "a published port clashes as soon as there are two"
    assert executor["expose"] == [env["ORDERSTREAM_METRICS_PORT"]] == [str(METRICS_PORT)]
    assert urllib.parse.urlsplit(env["REDIS_URL"]).hostname == "redis"
    assert executor["depends_on"]["redis"]["condition"] == "service_healthy"
    assert executor["stop_signal"] == "SIGTERM"


def test_the_archive_sets_itself_up_then_runs_against_the_compose_postgres() -> None:
    services = compose()
    archive, postgres = services["archive"], services["postgres"]
    assert archive["command"] == ["orderstream archive --init && exec orderstream archive"]
    url = urllib.parse.urlsplit(archive["environment"]["ORDERSTREAM_ARCHIVE_URL"])
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "postgresql", "postgres", 5432, "/" + postgres["environment"]["POSTGRES_DB"])
    assert url.username == postgres["environment"]["POSTGRES_USER"]
    # One password for both, from the environment (a default for a local trial only).
    assert "${ARCHIVE_DB_PASSWORD:-orderstream}" in archive["environment"][
        "ORDERSTREAM_ARCHIVE_URL"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "${ARCHIVE_DB_PASSWORD:-orderstream}"
    assert {k: v["condition"] for k, v in archive["depends_on"].items()} == {
        "redis": "service_healthy", "postgres": "service_healthy"}
    assert archive["healthcheck"] == {"disable": True}
    assert "ports" not in postgres
    assert urllib.parse.urlsplit(archive["environment"]["REDIS_URL"]).hostname == "redis"


def test_every_mounted_file_exists_and_redis_runs_the_deploy_config() -> None:
    services = compose()
    for name, service in services.items():
        for host in mounts(service).values():
            assert (ROOT / host).exists(), f"{name} mounts {host}, which is not in the repo"
    redis = services["redis"]
    conf = mounts(redis)
    assert conf[redis["command"][1]] == "./deploy/redis.conf"


def test_prometheus_scrapes_every_worker_replica_and_loads_the_rules() -> None:
    prometheus = compose()["prometheus"]
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"]
                       if a.startswith("--config.file="))
    mounted = mounts(prometheus)
    assert mounted[config_path] == "./deploy/prometheus.yml"
    config = load(DEPLOY / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "orderstream"]
    (sd,) = job["dns_sd_configs"]  # one A record per replica of the service
    assert sd["names"] == ["executor"] and sd["type"] == "A" and sd["port"] == METRICS_PORT
    # Rule files are relative to the config file: mounted at the same relative place.
    config_dir = Path(config_path).parent
    for rule_file in config["rule_files"]:
        in_container = str(config_dir / Path(rule_file).parent)
        assert (ROOT / mounted[in_container] / Path(rule_file).name).exists()


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    grafana = compose()["grafana"]
    mounted = mounts(grafana)
    provisioning = ROOT / mounted["/etc/grafana/provisioning"]
    (source,) = load(provisioning / "datasources" / "prometheus.yml")["datasources"]
    url = urllib.parse.urlsplit(source["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    assert "127.0.0.1:9090:9090" in compose()["prometheus"]["ports"]
    (provider,) = load(provisioning / "dashboards" / "orderstream.yml")["providers"]
    dashboards = provider["options"]["path"]
    assert (ROOT / mounted[dashboards] / "orderstream.json").exists()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards}/orderstream.json"
    # Every panel and query asks the provisioned datasource.
    dash = json.loads(DASHBOARD.read_text())
    uids = {p["datasource"]["uid"] for p in dash["panels"] if "datasource" in p}
    uids |= {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}


def test_dashboard_is_well_formed_and_covers_what_operators_watch() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "orderstream"
    exprs = " ".join(dashboard_exprs())
    for needed in ("orderstream_requests_total", "orderstream_request_latency_seconds_bucket",
                   "orderstream_consumer_group_lag", "orderstream_circuit_state",
                   "orderstream_rate_limit_used", "orderstream_rate_limit_cap",
                   "orderstream_position_quantity", "orderstream_trading_state",
                   "orderstream_open_orders", "orderstream_broker_request_seconds_bucket",
                   "orderstream_step_seconds_bucket", 'reason_code=~"risk_denied:.*"',
                   "orderstream_background_errors_total",
                   "orderstream_emulator_triggered_total",
                   "orderstream_emulator_no_price_total"):
        assert needed in exprs, needed
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(orderstream_request_latency" in exprs


def test_the_worker_image_is_slim_non_root_and_has_no_build_tools() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert all(lines[i].split()[1] == "python:3.11-slim" for i in stages)
    final = lines[stages[-1]:]
    user = next(line.split()[1] for line in final if line.startswith("USER "))
    assert user not in ("root", "0")
    assert not any(re.search(r"apt-get|gcc|build-essential", line) for line in final)
    assert any(line.startswith("ENTRYPOINT") and "orderstream" in line for line in final)
    assert f"EXPOSE {METRICS_PORT}" in final


def test_the_image_installs_only_what_the_locks_pin() -> None:
    """Every pip install in the image checks hashes against a lock, or installs our own
    wheel without resolving; every file it copies passes .dockerignore."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    installs = re.findall(r"pip (?:install|wheel)[^&\n]*", text)
    assert len(installs) >= 3
    for line in installs:
        assert "--require-hashes" in line or "--no-deps" in line, line
        lock = re.search(r"-r (\S+)", line)
        if lock:
            assert Path(lock.group(1)).name in {"runtime.lock", "build.lock"}, line
    allowed = {line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert path.rstrip("/") in allowed, f"{path} is copied but .dockerignore drops it"
            assert (ROOT / path).exists(), path


# -- metric names -------------------------------------------------------------------------


def exported_names() -> set[str]:
    """Every sample name the worker's registry can export, children or not."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",),
                "histogram": ("_bucket", "_count", "_sum", "_created")}
    return {family.name + suffix for family in Metrics().registry.collect()
            for suffix in suffixes[family.type]}


def used_names(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in re.findall(r"\borderstream_[a-z0-9_]+", e)}


def test_every_metric_the_dashboard_and_alerts_use_is_exported() -> None:
    exported = exported_names()
    assert "orderstream_requests_total" in exported
    assert "orderstream_worker_info" in exported
    dashboard = used_names(dashboard_exprs())
    alerts = used_names([r["expr"] for r in alert_rules()])
    assert len(dashboard) > 20 and len(alerts) > 8
    assert dashboard - exported == set()
    assert alerts - exported == set()


def test_the_alerts_asked_for_exist() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {"OrderstreamWorkerDown", "OrderstreamLagGrowing", "OrderstreamDeadLetters",
            "OrderstreamCircuitOpen", "OrderstreamErrorRate", "OrderstreamRateLimitNearCap",
            "OrderstreamTradingHalted", "OrderstreamEmulatorNoPrice"} <= names
    tested = load(DEPLOY / "prometheus" / "alerts_test.yml")
    fired = {t["alertname"] for case in tested["tests"] for t in case["alert_rule_test"]
             if t["exp_alerts"]}
    assert fired == names, "every alert has a promtool test where it fires"


# -- promtool -----------------------------------------------------------------------------


def promtool(*args: str, cwd: Path = DEPLOY) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@needs_promtool
def test_promtool_accepts_the_config_and_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert f"SUCCESS: {len(alert_rules())} rules found" in promtool(
        "check", "rules", "prometheus/alerts.yml")


@needs_promtool
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "prometheus/alerts_test.yml")


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in promtool("check", "rules", str(path))
