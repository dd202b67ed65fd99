"""docker-compose.yml, its Prometheus and Grafana configs, the dashboard and the Dockerfile, checked statically.

No Docker engine is needed: commands are resolved against the click tree (never invoked), scrape targets
against the services' own flags, and every metric a dashboard panel queries against the metrics our code
registers with prometheus_client.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from streams.cli import main

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose" / "compose-spec.json"
PROMETHEUS_CONFIG = ROOT / "deploy" / "compose" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "compose" / "grafana" / "provisioning"
DASHBOARD = ROOT / "deploy" / "grafana" / "streams.json"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

IMAGE = "streams:0.1.0"
REQUIRED_SERVICES = {
    "kafka",
    "redis",
    "registry",
    "init",
    "worker",
    "bridge",
    "celery",
    "console",
    "prometheus",
    "grafana",
}
SCALABLE = ("worker", "bridge")  # `docker compose up --scale worker=3` must work
AFTER_INIT = ("worker", "bridge", "celery")
# What each scraped service listens on: its compose service, and the flags that set host and port.
SCRAPED = {
    "worker": ("--web-host", "--web-port"),
    "bridge": ("--metrics-host", "--metrics-port"),
    "registry": ("--host", "--port"),
    "console": ("--host", "--port"),
}
# Series Prometheus makes itself, and the target labels it (and our relabelling) attaches.
PROMETHEUS_SERIES: dict[str, set[str]] = {"up": set()}
TARGET_LABELS = {"job", "instance", "service"}
GRAFANA_VARIABLES = {"$__rate_interval", "$__interval", "$__range"}


# --- loading -------------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


@cache
def prometheus_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    return loaded


@cache
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def streams_services() -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in services().items() if spec.get("image") == IMAGE}


def argv_lists(spec: dict[str, Any]) -> list[list[str]]:
    """The command lines a service runs: the image's ENTRYPOINT ["streams"] unless overridden, plus `command`.

    A `sh -c` entrypoint is split on `&&` into its commands.
    """
    entrypoint = spec.get("entrypoint", ["streams"])
    command = spec.get("command", [])
    entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
    command = shlex.split(command) if isinstance(command, str) else list(command)
    if entrypoint[:2] == ["sh", "-c"]:
        script = " ".join([*entrypoint[2:], *command])
        assert not re.search(r"[;|]|\|\||\$\(", script), f"keep `sh -c` to commands joined by &&: {script!r}"
        return [shlex.split(part) for part in script.split("&&")]
    return [entrypoint + command]


def resolve(argv: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """Walk `streams ...` down the click tree: the command, its path, and the arguments left for it."""
    assert argv[0] == "streams", argv
    command: click.Command = main
    path, rest = ["streams"], argv[1:]
    while isinstance(command, click.Group):
        assert rest, f"`{' '.join(path)}` is a group; name one of {command.list_commands(click.Context(command))}"
        name = rest.pop(0)
        context = click.Context(command)  # the root loads its commands on first use: ask it, not .commands
        found = command.get_command(context, name)
        assert found is not None, f"`{' '.join(path)}` has no subcommand {name!r}: {command.list_commands(context)}"
        command, path = found, [*path, name]
    return command, path, rest


def option_values(argv: list[str]) -> dict[str, str]:
    """`--flag value` pairs of one command line (flags without values are left out)."""
    return {
        flag: value for flag, value in itertools.pairwise(argv) if flag.startswith("--") and not value.startswith("-")
    }


def service_option(service: str, flag: str) -> str:
    for argv in argv_lists(services()[service]):
        if flag in argv:
            return option_values(argv)[flag]
    raise AssertionError(f"service {service} does not pass {flag}")


def bind_mounts(service: str) -> dict[str, str]:
    """Container path -> host path (relative to the compose file) of a service's bind mounts."""
    mounts = {}
    for volume in services()[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = source
    return mounts


def host_path(source: str) -> Path:
    return (COMPOSE_FILE.parent / source).resolve()


# --- the compose file ----------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(compose())]
    assert errors == []
    # The schema is strict enough to catch a misspelt key.
    broken = {"services": {"worker": {"image": IMAGE, "comand": ["worker"]}}}
    assert not validator.is_valid(broken)


def test_every_service_is_declared() -> None:
    assert set(services()) >= REQUIRED_SERVICES
    assert set(streams_services()) == {"registry", "init", "worker", "bridge", "celery", "console"}


@pytest.mark.parametrize("service", SCALABLE)
def test_scalable_services_have_no_fixed_name_or_host_port(service: str) -> None:
    spec = services()[service]
    assert "container_name" not in spec
    assert "ports" not in spec, "a fixed host port makes `--scale` fail; Prometheus scrapes inside the network"


def test_streams_services_build_the_image_the_manifests_run() -> None:
    project_version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert f"streams:{project_version}" == IMAGE
    for name, spec in streams_services().items():
        assert host_path(spec["build"]["context"]) == ROOT, name
        assert (ROOT / spec["build"].get("dockerfile", "Dockerfile")) == DOCKERFILE, name
    manifests = (ROOT / "deploy" / "kubernetes" / "base").glob("*.yaml")
    images = {match for path in manifests for match in re.findall(r"image: (streams:\S+)", path.read_text())}
    assert images == {IMAGE}


def test_streams_commands_exist_in_the_cli() -> None:
    checked = []
    for name, spec in streams_services().items():
        for argv in argv_lists(spec):
            if argv[0] != "streams":
                continue
            command, path, rest = resolve(argv)
            known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            unknown = sorted({arg.split("=")[0] for arg in rest if arg.startswith("-")} - known)
            assert not unknown, f"{name}: `{' '.join(path)}` has no option(s) {unknown}"
            # Parsing (not invoking) also checks the values: ports in range, choices, required options.
            command.make_context(" ".join(path), list(rest))
            checked.append(" ".join(path))
    assert sorted(checked) == [
        "streams bridge",
        "streams console",
        "streams registry serve",
        "streams schemas apply",
        "streams topics apply",
        "streams worker",
    ]


def test_a_wrong_command_is_caught() -> None:
    with pytest.raises(AssertionError, match="no subcommand 'wroker'"):
        resolve(["streams", "wroker"])
    command, _, rest = resolve(["streams", "worker", "--web-port", "6066"])
    assert command.name == "worker"
    assert rest == ["--web-port", "6066"]
    with pytest.raises(click.BadParameter):
        resolve(["streams", "bridge"])[0].make_context("bridge", ["--metrics-port", "99999"])


def test_init_runs_once_before_the_services_that_need_topics_and_schemas() -> None:
    init = services()["init"]
    assert [argv[:3] for argv in argv_lists(init)] == [["streams", "topics", "apply"], ["streams", "schemas", "apply"]]
    assert init["restart"] == "no"
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["depends_on"]["registry"]["condition"] in {"service_started", "service_healthy"}
    for name in AFTER_INIT:
        assert services()[name]["depends_on"]["init"]["condition"] == "service_completed_successfully", name


def test_healthy_conditions_have_healthchecks() -> None:
    for name, spec in services().items():
        depends_on = spec.get("depends_on", {})
        if isinstance(depends_on, list):  # the short form waits for nothing but the start
            continue
        for dependency, condition in depends_on.items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services()[dependency], f"{name} waits for {dependency} to be healthy"


def test_settings_point_at_the_compose_services() -> None:
    kafka = services()["kafka"]["environment"]
    internal = {listener.split("://")[1] for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    registry_port = service_option("registry", "--port")
    assert option_values(argv_lists(services()["registry"])[0])["--host"] == "0.0.0.0"  # noqa: S104
    for name, spec in streams_services().items():
        env = spec["environment"]
        assert env["STREAMS_KAFKA_BOOTSTRAP_SERVERS"] in internal, name
        assert env["STREAMS_SCHEMA_REGISTRY_URL"] == f"http://registry:{registry_port}", name
        redis = urlsplit(env["STREAMS_REDIS_URL"])
        assert (redis.scheme, redis.hostname) == ("redis", "redis"), name
        assert env["STREAMS_CATALOG_PATH"] == "/app/topics.yaml", name


def test_streams_variables_are_settings() -> None:
    from streams.bridge.reference_tasks import CelerySettings  # noqa: PLC0415
    from streams.console.settings import ConsoleSettings  # noqa: PLC0415
    from streams.settings import Settings  # noqa: PLC0415

    known = {f"STREAMS_{field.upper()}" for field in Settings.model_fields}
    known |= {f"STREAMS_CELERY_{field.upper()}" for field in CelerySettings.model_fields}
    known |= {f"STREAMS_CONSOLE_{field.upper()}" for field in ConsoleSettings.model_fields}
    for name, spec in streams_services().items():
        unknown = {key for key in spec["environment"] if key.startswith("STREAMS_")} - known
        assert not unknown, f"{name}: {sorted(unknown)} are not settings (streams/settings.py)"


def test_celery_worker_consumes_every_bridge_queue() -> None:
    from streams.bridge.routes import load_bridge  # noqa: PLC0415
    from streams.catalog import load_catalog  # noqa: PLC0415

    (argv,) = argv_lists(services()["celery"])
    assert argv[0] == "celery"
    module = argv[argv.index("-A") + 1]
    queues = set(argv[argv.index("-Q") + 1].split(","))
    config = load_bridge(load_catalog(ROOT / "topics.yaml", "local"))
    # The bridge checks at startup that this app registers the routes' tasks (tests/bridge/test_commands.py).
    assert config.celery_app == module
    assert queues == set(config.queues)
    assert {route.queue for route in config.routes} <= queues


# --- Prometheus ----------------------------------------------------------------------------------------


def prometheus_port() -> int:
    for arg in services()["prometheus"].get("command", []):
        if arg.startswith("--web.listen-address="):
            return int(arg.rsplit(":", 1)[1])
    return 9090


def test_prometheus_reads_this_config() -> None:
    spec = services()["prometheus"]
    config_path = next(arg.split("=", 1)[1] for arg in spec["command"] if arg.startswith("--config.file="))
    assert host_path(bind_mounts("prometheus")[config_path]) == PROMETHEUS_CONFIG


@pytest.mark.parametrize("service", sorted(SCRAPED))
def test_prometheus_scrapes_every_replica_where_it_listens(service: str) -> None:
    host_flag, port_flag = SCRAPED[service]
    assert service_option(service, host_flag) == "0.0.0.0"  # noqa: S104 - reachable from Prometheus
    port = int(service_option(service, port_flag))
    jobs = [
        job
        for job in prometheus_config()["scrape_configs"]
        if any(service in sd["names"] for sd in job.get("dns_sd_configs", []))
    ]
    assert len(jobs) == 1, f"one job must resolve the compose service {service}"
    (sd,) = jobs[0]["dns_sd_configs"]
    assert sd["names"] == [service]
    assert sd.get("type", "SRV") == "A", "compose DNS answers A records, one per replica"
    assert sd["port"] == port
    assert jobs[0].get("metrics_path", "/metrics") == "/metrics"


# --- Grafana -------------------------------------------------------------------------------------------


def provisioning(kind: str) -> list[dict[str, Any]]:
    files = sorted((GRAFANA_PROVISIONING / kind).glob("*.yaml"))
    assert files, f"no Grafana {kind} provisioning files"
    return [yaml.safe_load(path.read_text(encoding="utf-8")) for path in files]


def test_grafana_mounts_the_provisioning_and_dashboards() -> None:
    mounts = bind_mounts("grafana")
    assert host_path(mounts["/etc/grafana/provisioning"]) == GRAFANA_PROVISIONING
    (provider,) = [provider for config in provisioning("dashboards") for provider in config["providers"]]
    assert provider["type"] == "file"
    dashboards_dir = provider["options"]["path"]
    assert host_path(mounts[dashboards_dir]) == DASHBOARD.parent
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/{DASHBOARD.name}"


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    datasources = [source for config in provisioning("datasources") for source in config["datasources"]]
    (prometheus,) = [source for source in datasources if source["type"] == "prometheus"]
    url = urlsplit(prometheus["url"])
    assert (url.hostname, url.port) == ("prometheus", prometheus_port())
    assert prometheus["isDefault"] is True


# --- the dashboard -------------------------------------------------------------------------------------

_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_NAME = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")


def _blank_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    expr = _blank_strings(expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = _GROUPING.sub(" ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)
    return {name for name in _NAME.findall(expr) if name not in _PROMQL_WORDS}


def label_uses(expr: str) -> tuple[set[str], set[str]]:
    """Labels named in selectors' matchers and in by/without/on/ignoring clauses."""
    expr = _blank_strings(expr)
    matched = {label for _, body in _SELECTOR.findall(expr) for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body)}
    grouped = {label.strip() for body in _GROUPING.findall(expr) for label in body.split(",") if label.strip()}
    return matched, grouped


@cache
def registered_metrics() -> dict[str, frozenset[str]]:
    """Every series name our code exposes -> its labels, from the prometheus_client registries themselves.

    The worker serves the registry of its AgentMetrics (every hosted agent's, the audit chain's included), the
    schema registry that of its RegistryMetrics; each bridge serves the registry of its BridgeMetrics.
    """
    from streams.bridge.metrics import BridgeMetrics  # noqa: PLC0415
    from streams.observability import AgentMetrics, RegistryMetrics  # noqa: PLC0415

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    exposed: dict[str, frozenset[str]] = {}
    registries: tuple[CollectorRegistry, ...] = (
        AgentMetrics().registry,
        RegistryMetrics().registry,
        BridgeMetrics().registry,
    )
    for registry in registries:
        collectors = set(registry._names_to_collectors.values())  # private: prometheus_client lists no collectors
        for collector in collectors:
            if not isinstance(collector, MetricWrapperBase):
                continue
            labels = frozenset(collector._labelnames)
            for family in collector.describe():
                for suffix in suffixes[family.type]:
                    exposed[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return {name: labels for name, labels in exposed.items() if name.startswith("streams_")}


def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included."""
    return [panel for item in items for panel in (item, *panels(item.get("panels", [])))]


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of every query variable."""
    found = [
        (f"panel {panel['title']!r}", target["expr"])
        for panel in panels(dashboard()["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            selector = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            found.append((f"variable ${variable['name']}", selector.group(1) if selector else query))
    return found


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (agent, le) (rate(streams_agent_end_to_end_seconds_bucket"
        '{agent=~"$agent", outcome!="x(y)"}[$__rate_interval]))) / on(job) group_left sum(up offset 5m)'
    )
    assert metric_names(expr) == {"streams_agent_end_to_end_seconds_bucket", "up"}
    assert label_uses(expr) == ({"agent", "outcome"}, {"agent", "le", "job"})
    assert metric_names("sum(rate(streams_agent_event_total[5m])) > 0") == {"streams_agent_event_total"}


def test_our_metrics_are_found_in_the_registries() -> None:
    metrics = registered_metrics()
    assert metrics["streams_agent_events_total"] == {"agent", "outcome"}
    assert metrics["streams_agent_end_to_end_seconds_bucket"] == {"agent", "le"}
    assert "streams_agent_events" not in metrics  # a counter is exposed with _total only
    assert metrics["streams_bridge_paused_partitions"] == set()
    assert "streams_audit_entries_total" in metrics


def test_dashboard_queries_only_metrics_our_code_exports() -> None:
    metrics = {**registered_metrics(), **PROMETHEUS_SERIES}
    assert queries()
    for where, expr in queries():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - set(metrics)
        assert not unknown, f"{where}: {sorted(unknown)} are not exported by streams (expr {expr!r})"
        labels = set().union(*(metrics[name] for name in names)) | TARGET_LABELS
        matched, grouped = label_uses(expr)
        assert matched | grouped <= labels, f"{where}: labels {sorted((matched | grouped) - labels)} unknown"


def test_dashboard_jobs_are_prometheus_jobs() -> None:
    jobs = {job["job_name"] for job in prometheus_config()["scrape_configs"]}
    for where, expr in queries():
        for value in re.findall(r'job=~?"([^"]*)"', expr):
            assert set(value.split("|")) <= jobs, f"{where}: job {value!r} is not in {PROMETHEUS_CONFIG.name}"


def test_dashboard_variables_are_defined() -> None:
    defined = {f"${variable['name']}" for variable in dashboard()["templating"]["list"]} | GRAFANA_VARIABLES
    for where, expr in queries():
        used = set(re.findall(r"\$\w+", expr))
        assert used <= defined, f"{where}: undefined variable(s) {sorted(used - defined)}"


def test_dashboard_model() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert board["uid"]
    ids = [panel["id"] for panel in panels(board["panels"])]
    assert len(ids) == len(set(ids))
    for panel in panels(board["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in {"${datasource}", "$datasource"}, panel["title"]
            assert panel["targets"], panel["title"]


def panel_exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], " ".join(target["expr"] for target in panel.get("targets", [])))
        for panel in panels(dashboard()["panels"])
    ]


REQUIRED_PANELS = {
    "throughput per agent": r"sum by \(agent\) \(rate\(streams_agent_events_total",
    "consumer lag": r"streams_agent_consumer_lag_records",
    "DLQ rate": r"rate\(streams_agent_dlq_total",
    "violations by rule": r"sum by \(rule\) \((?:rate|increase)\(streams_validation_violations_total",
    "bridge in-flight": r"streams_bridge_inflight_tasks",
    "bridge paused partitions": r"streams_bridge_paused_partitions",
    "end-to-end latency p50 and p99": r"histogram_quantile\(0\.5, .*streams_agent_end_to_end_seconds_bucket.*"
    r"histogram_quantile\(0\.99, .*streams_agent_end_to_end_seconds_bucket",
}


@pytest.mark.parametrize("subject", sorted(REQUIRED_PANELS))
def test_dashboard_has_a_panel_for(subject: str) -> None:
    matching = [title for title, exprs in panel_exprs() if re.search(REQUIRED_PANELS[subject], exprs)]
    assert matching, f"no panel shows {subject}"


# --- the image -----------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(instruction, arguments) per build stage, line continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), args.strip()))
    return stages


def test_dockerfile_runtime_stage_matches_the_manifests() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage with Rust and a slim runtime stage"
    runtime = stages[-1]
    args = dict(runtime)
    assert args["WORKDIR"] == "/app"
    assert json.loads(args["ENTRYPOINT"]) == ["streams"]
    user = args["USER"].split(":")[0]
    assert user.isdigit(), "Kubernetes' runAsNonRoot needs a numeric USER"
    assert int(user) != 0
    copies = [value for instruction, value in runtime if instruction == "COPY"]
    assert "topics.yaml ./" in copies
    assert "schemas/ ./schemas/" in copies
    assert "STREAMS_CATALOG_PATH=/app/topics.yaml" in args["ENV"].split()
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text(encoding="utf-8"))
    assert base
    assert base.group(1).startswith("python:3.11-slim")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parents = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in parents):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_the_build_inputs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        value.split()[0]
        for stage in dockerfile_stages()
        for instruction, value in stage
        if instruction == "COPY" and "--from" not in value
    ]
    for source in copied:
        assert not dockerignored(source.rstrip("/"), patterns), f"COPY {source} but .dockerignore drops it"
    for kept in (
        "streams/cli.py",
        "streams/_native/Cargo.toml",
        "streams/_native/Cargo.lock",
        "streams/_native/src/lib.rs",
        "schemas/invoice.created.avsc",
    ):
        assert not dockerignored(kept, patterns), kept
    for dropped in (
        ".venv/bin/python",
        ".streams/local/state.json",
        "streams/_native/target/release/x.so",
        "streams/__pycache__/cli.cpython-311.pyc",
        "streams/_avro_native.abi3.so",
        "tests/conftest.py",
    ):
        assert dockerignored(dropped, patterns), dropped
