"""Deployment files: compose stack, Dockerfile, Kubernetes manifests, Prometheus configs.

Nothing here needs Docker or a cluster: the files are parsed and cross-checked against
each other and against kpimon's own configuration loader. Every file a deployment file
refers to must exist in the repository (one test case per reference, so a missing file
is named in the test id).
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from kpimon import sim
from kpimon.config import _ALIASES, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
COMPOSE_PROMETHEUS = COMPOSE_DIR / "prometheus.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
K8S = DEPLOY / "k8s"
K8S_PROMETHEUS = K8S / "prometheus.yml"
# What a user applies: `kubectl apply -k deploy/` and, to try out, `... -k deploy/k8s/kafka`.
KUSTOMIZE_ENTRY_POINTS = (DEPLOY, K8S / "kafka")
GRAFANA = REPO / "grafana"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
KPIMON_PORT = 6066


# --- loading ---------------------------------------------------------------------------


def rel(path: Path) -> str:
    """`path` relative to the repository, for messages and test ids."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def load_yaml(path: Path) -> Any:
    """The single YAML document in `path`."""
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose `${VAR:-default}` interpolation with an empty host environment."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "",
                                  value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@cache
def compose() -> dict[str, Any]:
    """compose.yaml with YAML merge keys applied and `${...}` resolved to defaults."""
    data = interpolate(load_yaml(COMPOSE_FILE))
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    """The compose services by name."""
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def kpimon_services() -> dict[str, dict[str, Any]]:
    """Compose services that run the `kpimon` command (the image's entrypoint)."""
    return {n: s for n, s in services().items()
            if s.get("image", "").startswith("kpimon:") and "entrypoint" not in s}


def env_mapping(environment: Any) -> dict[str, str]:
    """A compose `environment` (mapping or list of NAME=VALUE) as a dict."""
    if environment is None:
        return {}
    if isinstance(environment, dict):
        return {k: "" if v is None else str(v) for k, v in environment.items()}
    return dict(item.partition("=")[::2] for item in environment)


@dataclass(frozen=True)
class Mount:
    """One compose volume entry in short syntax."""

    source: str
    target: str

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))

    @property
    def host_path(self) -> Path:
        return (COMPOSE_DIR / self.source).resolve()


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    """The volumes of a compose service."""
    result = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            result.append(Mount(str(entry.get("source", "")), str(entry["target"])))
        else:
            source, _, rest = str(entry).partition(":")
            result.append(Mount(source, rest.split(":")[0]))
    return result


def container_ports(service: Mapping[str, Any]) -> set[int]:
    """Ports a compose service's container listens on (`expose` and published)."""
    ports = {int(p) for p in service.get("expose", [])}
    for entry in service.get("ports", []):
        ports.add(int(str(entry).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        word, _, args = text.partition(" ")
        result.append((word.upper(), args.strip()))
    return result


def dockerfile_env() -> dict[str, str]:
    """The ENV values of the final image."""
    env: dict[str, str] = {}
    for word, args in dockerfile_instructions():
        if word == "FROM":
            env = {}
        elif word == "ENV":
            env.update(item.partition("=")[::2] for item in shlex.split(args))
    return env


# --- kustomize -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A file a deployment file refers to."""

    origin: Path
    what: str
    path: Path

    def __str__(self) -> str:
        return f"{rel(self.origin)}: {self.what} {rel(self.path)}"


def kustomization_file(directory: Path) -> Path:
    """The kustomization file of a kustomize directory."""
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            return directory / name
    return directory / "kustomization.yaml"


def generator_files(entry: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(key, relative path) of a configMapGenerator/secretGenerator entry's files."""
    for item in entry.get("files", []):
        key, sep, path = str(item).partition("=")
        yield (key, path) if sep else (Path(item).name, item)
    for item in entry.get("envs", []):
        yield "", str(item)


@cache
def kustomizations() -> tuple[Path, ...]:
    """Every kustomization directory reachable from the entry points."""
    seen: list[Path] = []
    todo = list(KUSTOMIZE_ENTRY_POINTS)
    while todo:
        directory = todo.pop(0).resolve()
        if directory in seen or not kustomization_file(directory).is_file():
            continue
        seen.append(directory)
        data = load_yaml(kustomization_file(directory)) or {}
        for item in [*data.get("resources", []), *data.get("components", [])]:
            if (directory / item).is_dir():
                todo.append(directory / item)
    return tuple(seen)


def kustomize_references() -> list[Reference]:
    """Resources, components and generator files of every kustomization."""
    refs = [Reference(DEPLOY, "entry point", kustomization_file(d))
            for d in KUSTOMIZE_ENTRY_POINTS]
    for directory in kustomizations():
        origin = kustomization_file(directory)
        data = load_yaml(origin) or {}
        for item in data.get("resources", []):
            path = directory / item
            refs.append(Reference(origin, "resource", kustomization_file(path)
                                  if path.is_dir() else path))
        for item in data.get("components", []):
            refs.append(Reference(origin, "component", kustomization_file(directory / item)))
        for kind in ("configMapGenerator", "secretGenerator"):
            for entry in data.get(kind, []):
                for _, path in generator_files(entry):
                    refs.append(Reference(origin, f"{kind} {entry['name']}", directory / path))
    return refs


@cache
def generated_configmaps() -> dict[str, dict[str, Path]]:
    """configMapGenerator name -> {key: file}."""
    result: dict[str, dict[str, Path]] = {}
    for directory in kustomizations():
        data = load_yaml(kustomization_file(directory)) or {}
        for entry in data.get("configMapGenerator", []):
            files = {key: directory / path for key, path in generator_files(entry)}
            result.setdefault(entry["name"], {}).update(files)
    return result


@cache
def k8s_documents() -> tuple[tuple[Path, dict[str, Any]], ...]:
    """(file, document) of every Kubernetes object in the kustomize resources."""
    docs: list[tuple[Path, dict[str, Any]]] = []
    for directory in kustomizations():
        data = load_yaml(kustomization_file(directory)) or {}
        for item in data.get("resources", []):
            path = directory / item
            if path.is_file():
                with path.open(encoding="utf-8") as fh:
                    docs.extend((path, doc) for doc in yaml.safe_load_all(fh) if doc)
    return tuple(docs)


def k8s_objects(*kinds: str) -> list[dict[str, Any]]:
    """The Kubernetes objects of the given kinds (all without kinds)."""
    return [doc for _, doc in k8s_documents() if not kinds or doc.get("kind") in kinds]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    """The one object of `kind` named `name`."""
    found = [d for d in k8s_objects(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a workload."""
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Init and regular containers of a workload."""
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def secret_keys(name: str) -> set[str]:
    """Keys of the example Secret `name`."""
    secret = k8s_object("Secret", name)
    return set(secret.get("stringData") or {}) | set(secret.get("data") or {})


def secret_value(name: str, key: str) -> str | None:
    """A value of the example Secret (None when the key is absent)."""
    secret = k8s_object("Secret", name)
    value = (secret.get("stringData") or {}).get(key)
    return None if value is None else str(value)


def kpimon_workload() -> dict[str, Any]:
    """The kpimon worker StatefulSet."""
    return k8s_object("StatefulSet", "kpimon-worker")


def kpimon_container() -> dict[str, Any]:
    """The worker container of the StatefulSet."""
    (container,) = [c for c in containers(kpimon_workload()) if c["image"].startswith("kpimon")]
    return container


def k8s_worker_env() -> dict[str, str]:
    """The worker's environment, secrets taken from the example Secret."""
    env: dict[str, str] = {}
    for item in kpimon_container().get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        value = secret_value(ref["name"], ref["key"])
        if value is not None:
            env[item["name"]] = value
    return env


# --- settings --------------------------------------------------------------------------


def setting_problem(name: str) -> str | None:
    """Why `name` is not a variable kpimon reads (None when it is one)."""
    if name == "KPIMON_CONFIG" or name in _ALIASES:
        return None
    section, sep, key = name.removeprefix("KPIMON_").lower().partition("__")
    if not sep:
        return f"{name}: not KPIMON_CONFIG, a short form or KPIMON_<SECTION>__<KEY>"
    field = Settings.model_fields.get(section)
    if field is None:
        return f"{name}: no section [{section}] (one of {', '.join(Settings.model_fields)})"
    model = field.annotation
    if isinstance(model, type) and issubclass(model, BaseModel) and key not in model.model_fields:
        return f"{name}: no key {key!r} in [{section}]"
    return None


def kpimon_env_names() -> list[tuple[str, str]]:
    """(where, NAME) of every KPIMON_* variable the deployment files set."""
    found: list[tuple[str, str]] = []
    for name in dockerfile_env():
        found.append(("Dockerfile", name))
    for service_name, service in services().items():
        found.extend((f"compose {service_name}", n)
                     for n in env_mapping(service.get("environment")))
    example = COMPOSE_DIR / "kpimon.env.example"
    for line in example.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#?\s*(KPIMON_\w+)=", line)
        if match:
            found.append((rel(example), match.group(1)))
    for path, doc in k8s_documents():
        if doc.get("kind") in WORKLOAD_KINDS:
            for container in containers(doc):
                found.extend((f"{rel(path)} {container['name']}", item["name"])
                             for item in container.get("env", []))
    return [(where, name) for where, name in found if name.startswith("KPIMON_")]


def compose_settings(service_name: str) -> tuple[Path, Settings]:
    """The config file a compose kpimon service reads, and the settings it loads."""
    service = kpimon_services()[service_name]
    env = {**dockerfile_env(), **env_mapping(service.get("environment"))}
    config = env.get("KPIMON_CONFIG")
    assert config, f"{service_name}: no KPIMON_CONFIG (Dockerfile ENV or environment)"
    sources = [m.host_path for m in mounts(service) if m.is_bind and m.target == config]
    assert sources, f"{service_name}: nothing is mounted at KPIMON_CONFIG={config}"
    environ = {k: v for k, v in env.items() if k.startswith("KPIMON_") and k != "KPIMON_CONFIG"}
    return sources[0], load_settings(sources[0], environ)


def k8s_settings() -> tuple[Path, Settings]:
    """The k8s worker's config file (from its ConfigMap) and the settings it loads."""
    env = k8s_worker_env()
    config = Path(env.pop("KPIMON_CONFIG"))
    mount = next(m for m in kpimon_container()["volumeMounts"]
                 if Path(m["mountPath"]) == config.parent)
    volume = next(v for v in pod_spec(kpimon_workload())["volumes"] if v["name"] == mount["name"])
    path = generated_configmaps()[volume["configMap"]["name"]][config.name]
    return path, load_settings(path, env)


# --- references ------------------------------------------------------------------------


def compose_references() -> list[Reference]:
    """Bind mounts, build contexts, Dockerfiles and required env files of compose.yaml."""
    refs: list[Reference] = []
    for name, service in services().items():
        for mount in mounts(service):
            if mount.is_bind:
                refs.append(Reference(COMPOSE_FILE, f"{name} mounts", mount.host_path))
        build = service.get("build")
        if build:
            context = COMPOSE_DIR / (build if isinstance(build, str) else build["context"])
            refs.append(Reference(COMPOSE_FILE, f"{name} build context", context.resolve()))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get(
                "dockerfile", "Dockerfile")
            refs.append(Reference(COMPOSE_FILE, f"{name} dockerfile",
                                  (context / dockerfile).resolve()))
        for entry in service.get("env_file", []):
            path, required = (entry, True) if isinstance(entry, str) else (
                entry["path"], entry.get("required", True))
            if required:
                refs.append(Reference(COMPOSE_FILE, f"{name} env_file", COMPOSE_DIR / path))
    return refs


def dockerfile_copy_sources() -> list[Reference]:
    """Sources of the Dockerfile's COPY/ADD from the build context."""
    refs = []
    for word, args in dockerfile_instructions():
        if word not in ("COPY", "ADD"):
            continue
        parts = shlex.split(args)
        if any(p.startswith("--from") for p in parts):
            continue
        sources = [p for p in parts if not p.startswith("--")][:-1]
        refs.extend(Reference(DOCKERFILE, word, REPO / s) for s in sources)
    return refs


def dockerignored(relative: str) -> str | None:
    """The .dockerignore pattern that keeps `relative` out of the build context, if any."""
    patterns = [p.strip().lstrip("/") for p in DOCKERIGNORE.read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = Path(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "negated .dockerignore patterns are not handled here"
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern) or (
                pattern.startswith("**/")
                and fnmatch.fnmatchcase(Path(candidate).name, pattern[3:])
            ):
                return pattern
    return None


ALL_REFERENCES = [*compose_references(), *dockerfile_copy_sources(), *kustomize_references()]


def test_reference_lists_are_not_empty() -> None:
    """The reference walkers found the files they are meant to find."""
    kinds = {r.what.split()[-1] for r in ALL_REFERENCES}
    assert {"mounts", "context", "dockerfile", "COPY", "resource", "point"} <= kinds
    assert any("configMapGenerator" in r.what for r in ALL_REFERENCES)


@pytest.mark.parametrize("ref", ALL_REFERENCES, ids=str)
def test_referenced_file_exists(ref: Reference) -> None:
    """Every file a compose file, the Dockerfile or a kustomization names exists."""
    assert ref.path.exists(), f"{ref}: missing"


@pytest.mark.parametrize("ref", dockerfile_copy_sources(), ids=str)
def test_dockerfile_sources_are_in_the_build_context(ref: Reference) -> None:
    """.dockerignore keeps nothing out that the Dockerfile copies."""
    pattern = dockerignored(rel(ref.path))
    assert pattern is None, f"{ref} is excluded by .dockerignore pattern {pattern!r}"


# --- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_kpimon_image() -> None:
    """python:3.11-slim, `pip install .` with what it needs, non-root, kpimon, port 6066."""
    steps = dockerfile_instructions()
    bases = [args.split()[0] for word, args in steps if word == "FROM"]
    assert bases and all(b == "python:3.11-slim" for b in bases), bases
    assert any(word == "RUN" and "pip install ." in args for word, args in steps)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    copied = {rel(r.path) for r in dockerfile_copy_sources()}
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed |= {p.rstrip("*") for p in packages}
    assert needed <= copied, f"pip install . needs {sorted(needed - copied)}"
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM"):]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert ("ENTRYPOINT", '["kpimon"]') in final
    exposed = {int(p) for word, args in final if word == "EXPOSE" for p in args.split()}
    assert KPIMON_PORT in exposed


def test_dockerfile_default_config_path_is_the_mounted_one() -> None:
    """Compose mounts its kpimon.toml where the image's KPIMON_CONFIG points."""
    config = dockerfile_env()["KPIMON_CONFIG"]
    for name, service in kpimon_services().items():
        targets = {m.target for m in mounts(service)}
        assert config in targets, f"{name} does not mount a config file at {config}"


# --- compose ---------------------------------------------------------------------------


def test_compose_has_the_production_services() -> None:
    """Kafka, topic creation, two workers, simulator (demo only) and monitoring."""
    names = set(services())
    assert {"kafka", "kafka-init", "worker-1", "worker-2", "simulator", "prometheus",
            "alertmanager", "grafana"} <= names
    profiled = {n for n, s in services().items() if s.get("profiles")}
    assert profiled == {"simulator"}
    assert services()["simulator"]["profiles"] == ["demo"]
    assert services()["kafka"]["image"].startswith("apache/kafka:")
    assert services()["kafka-init"].get("restart") == "no"


@pytest.mark.parametrize("name", ["worker-1", "worker-2"])
def test_compose_worker_state_health_and_config(name: str) -> None:
    """Each worker: own named volume at data_dir, /readyz healthcheck on http.port."""
    service = services()[name]
    _, settings = compose_settings(name)
    assert service["command"] == ["worker"]
    data = [m for m in mounts(service) if m.target == settings.worker.data_dir]
    assert len(data) == 1 and not data[0].is_bind, f"{name}: no named volume at data_dir"
    assert data[0].source in compose()["volumes"]
    others = [s for n, s in services().items() if n != name]
    assert all(data[0].source not in {m.source for m in mounts(s)} for s in others)
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"//127\.0\.0\.1:(\d+)/readyz", test)
    assert match, f"{name}: healthcheck does not ask /readyz: {test}"
    assert int(match.group(1)) == settings.http.port
    assert settings.http.host == "0.0.0.0"
    assert settings.http.port in container_ports(service)
    needs = service["depends_on"]["kafka-init"]["condition"]
    assert needs == "service_completed_successfully"


def test_compose_topics_match_the_worker_configuration() -> None:
    """kafka-init creates kpimon's topics with its partition count, KPI topic compacted."""
    _, settings = compose_settings("worker-1")
    init = services()["kafka-init"]
    entrypoint = init["entrypoint"]
    script = next(p for p in entrypoint if p.endswith("create_topics.py"))
    copies = [a for w, a in dockerfile_instructions() if w == "COPY" and a.endswith(script)]
    assert copies, f"the Dockerfile does not copy a script to {script}"
    options = dict(a.removeprefix("--").split("=", 1) for a in init["command"] if "=" in a
                   and a.startswith("--"))
    topics = [a for a in init["command"] if not a.startswith("--")]
    assert int(options["partitions"]) == settings.kafka.partitions
    host, port = options["bootstrap"].split(":")
    assert options["bootstrap"] == settings.kafka.bootstrap
    assert host in services() and f"PLAINTEXT://{host}:{port}" in str(
        services()[host]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    t = settings.topics
    assert sorted(topics) == sorted(
        [t.tickets, t.surveys, f"{t.kpis}:cleanup.policy=compact", t.deadletter])


def test_compose_simulator_arguments_parse() -> None:
    """The demo simulator's command is valid `kpimon simulate` arguments."""
    command = services()["simulator"]["command"]
    assert command[0] == "simulate"
    parser = argparse.ArgumentParser(prog="kpimon simulate")
    sim.add_arguments(parser)
    args = parser.parse_args(command[1:])
    assert args.realtime and args.rate > 0


def test_compose_prometheus_targets_name_services_and_ports() -> None:
    """Every static scrape and Alertmanager target is a compose service:port."""
    config = load_yaml(COMPOSE_PROMETHEUS)
    targets = [t for job in config["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]]
    targets += [t for am in config["alerting"]["alertmanagers"]
                for sc in am["static_configs"] for t in sc["targets"]]
    checked = 0
    for target in targets:
        host, port = target.rsplit(":", 1)
        if host == "localhost":
            continue
        assert host in services(), f"target {target}: no compose service {host}"
        assert int(port) in container_ports(services()[host]), f"target {target}: port"
        checked += 1
    kpimon_job = next(j for j in config["scrape_configs"] if j["job_name"] == "kpimon")
    workers = {t.split(":")[0] for sc in kpimon_job["static_configs"] for t in sc["targets"]}
    assert workers == {n for n, s in kpimon_services().items() if s["command"] == ["worker"]}
    assert checked >= 3


def test_compose_prometheus_rule_files_are_mounted() -> None:
    """Each rule file, resolved in the container, is a mount of the same repository file."""
    config = load_yaml(COMPOSE_PROMETHEUS)
    service = services()["prometheus"]
    (config_mount,) = [m for m in mounts(service) if m.host_path == COMPOSE_PROMETHEUS]
    by_target = {m.target: m.host_path for m in mounts(service) if m.is_bind}
    assert config["rule_files"]
    for rule in config["rule_files"]:
        in_container = str(Path(config_mount.target).parent.joinpath(rule).resolve())
        in_repo = (COMPOSE_PROMETHEUS.parent / rule).resolve()
        assert by_target.get(in_container) == in_repo, f"{rule}: not mounted at {in_container}"
        assert in_repo.parent == DEPLOY / "prometheus" / "rules"


def test_compose_alertmanager_and_grafana_mounts() -> None:
    """Alertmanager reads the mounted config; Grafana gets the three grafana/ folders."""
    alertmanager = services()["alertmanager"]
    config = next(a for a in alertmanager["command"] if a.startswith("--config.file="))
    by_target = {m.target: m.host_path for m in mounts(alertmanager)}
    assert by_target[config.split("=", 1)[1]] == DEPLOY / "alertmanager" / "alertmanager.yml"
    grafana = {m.host_path: m.target for m in mounts(services()["grafana"]) if m.is_bind}
    assert grafana.get(GRAFANA / "provisioning" / "datasources") == (
        "/etc/grafana/provisioning/datasources")
    assert grafana.get(GRAFANA / "provisioning" / "dashboards") == (
        "/etc/grafana/provisioning/dashboards")
    assert GRAFANA / "dashboards" in grafana


# --- settings used by the manifests ----------------------------------------------------


ENV_NAMES = kpimon_env_names()


def test_env_name_list_is_not_empty() -> None:
    """The walker finds the KPIMON_* variables of the Dockerfile, compose and k8s."""
    places = {where.split()[0] for where, _ in ENV_NAMES}
    assert {"Dockerfile", "deploy/compose/kpimon.env.example", "deploy/k8s/worker.yaml"} <= places


@pytest.mark.parametrize(("where", "name"), ENV_NAMES, ids=[f"{w}:{n}" for w, n in ENV_NAMES])
def test_env_names_are_kpimon_settings(where: str, name: str) -> None:
    """Each KPIMON_* variable is one kpimon reads (others would be ignored silently)."""
    problem = setting_problem(name)
    assert problem is None, f"{where}: {problem}"


def test_env_name_check_rejects_near_misses() -> None:
    """The name check itself catches the usual mistakes."""
    assert setting_problem("KPIMON_HTTP__TOKEN") is None
    assert setting_problem("KPIMON_BOOTSTRAP") is None
    assert setting_problem("KPIMON_HTTP_TOKEN") is not None
    assert setting_problem("KPIMON_KAFKA__PASSWORD") is not None
    assert setting_problem("KPIMON_HTTPS__TOKEN") is not None


def test_compose_config_loads_with_kpimon() -> None:
    """The compose kpimon.toml (plus environment) passes kpimon's loader."""
    for name in kpimon_services():
        path, settings = compose_settings(name)
        assert path == COMPOSE_DIR / "kpimon.toml"
        assert settings.kafka.bootstrap.split(":")[0] in services()


def test_k8s_config_loads_with_kpimon() -> None:
    """The ConfigMap's kpimon.toml plus the worker's env (example Secret) loads."""
    path, settings = k8s_settings()
    assert path == K8S / "kpimon.toml"
    assert settings.http.host == "0.0.0.0"
    assert settings.http.token == secret_value("kpimon-secrets", "http-token")
    ports = {p["name"]: p["containerPort"] for p in kpimon_container()["ports"]}
    assert ports["http"] == settings.http.port
    mounted = {m["mountPath"]: m["name"] for m in kpimon_container()["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in kpimon_workload()["spec"]["volumeClaimTemplates"]}
    assert mounted.get(settings.worker.data_dir) in claims, "data_dir is not on the PVC"


def test_k8s_config_loads_with_check_config(tmp_path: Path) -> None:
    """`kpimon check-config` accepts the ConfigMap's TOML and never prints the token."""
    path, _ = k8s_settings()
    env = {"PATH": "/usr/bin:/bin", **k8s_worker_env()}
    env.pop("KPIMON_CONFIG")
    result = subprocess.run(
        [sys.executable, "-m", "kpimon.cli", "check-config", "--config", str(path)], env=env,
        capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"token": "<set>"' in result.stdout
    assert str(secret_value("kpimon-secrets", "http-token")) not in result.stdout


# --- Kubernetes ------------------------------------------------------------------------


def test_k8s_documents_are_well_formed() -> None:
    """apiVersion, kind and a unique name per kind for every object."""
    seen: set[tuple[str, str]] = set()
    for path, doc in k8s_documents():
        assert doc.get("apiVersion") and doc.get("kind"), f"{rel(path)}: {doc}"
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{rel(path)}: duplicate {key}"
        seen.add(key)
    kinds = {kind for kind, _ in seen}
    assert {"Namespace", "Secret", "StatefulSet", "Service", "Deployment", "Job"} <= kinds


def test_k8s_all_yaml_parses() -> None:
    """Every YAML file under deploy/k8s and deploy/compose parses."""
    files = sorted([*K8S.rglob("*.yaml"), *K8S.rglob("*.yml"), *COMPOSE_DIR.glob("*.y*ml"),
                    DEPLOY / "kustomization.yaml"])
    assert len(files) >= 10
    for path in files:
        with path.open(encoding="utf-8") as fh:
            assert list(yaml.safe_load_all(fh)), f"{rel(path)} is empty"


def test_k8s_worker_statefulset() -> None:
    """Two replicas, PVC per pod, probes, resources, anti-affinity, headless service."""
    workload = kpimon_workload()
    spec = workload["spec"]
    assert spec["replicas"] == 2
    assert spec["volumeClaimTemplates"]
    pod = pod_spec(workload)
    container = kpimon_container()
    assert container["args"] == ["worker"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"requests", "limits"} <= set(container["resources"])
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    service = k8s_object("Service", spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize(
    "workload", k8s_objects(*WORKLOAD_KINDS), ids=lambda w: f"{w['kind']}/{w['metadata']['name']}"
)
def test_k8s_probes_use_container_ports(workload: dict[str, Any]) -> None:
    """Every probe port is a port (by name or number) of its own container."""
    assert pod_spec(workload).get("enableServiceLinks") is False, (
        "service links put <SERVICE>_PORT=tcp://... variables into the environment, which "
        "kpimon (KPIMON_*) and the Kafka image (KAFKA_*) read as settings"
    )
    for container in containers(workload):
        names = {p.get("name") for p in container.get("ports", [])}
        numbers = {p["containerPort"] for p in container.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec = container.get(probe)
            if not spec:
                continue
            handler = spec.get("httpGet") or spec.get("tcpSocket") or spec.get("grpc")
            assert handler, f"{container['name']} {probe}: no port-based handler"
            port = handler["port"]
            assert port in (numbers if isinstance(port, int) else names), (
                f"{container['name']} {probe} port {port!r} is not a container port"
            )


@pytest.mark.parametrize("service", k8s_objects("Service"), ids=lambda s: s["metadata"]["name"])
def test_k8s_service_target_ports_exist(service: dict[str, Any]) -> None:
    """A Service selects pods of some workload, whose containers have its targetPorts."""
    selector = service["spec"]["selector"]
    pods = [w for w in k8s_objects(*WORKLOAD_KINDS)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
    assert pods, f"Service {service['metadata']['name']} selects no workload"
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        for workload in pods:
            ports = [p for c in containers(workload) for p in c.get("ports", [])]
            assert any(p.get("name") == target or p["containerPort"] == target for p in ports), (
                f"{workload['metadata']['name']} has no container port {target!r}"
            )


def test_k8s_references_resolve() -> None:
    """ConfigMaps, Secrets (and their keys), PVCs and mounts named by workloads exist."""
    configmaps = {d["metadata"]["name"] for d in k8s_objects("ConfigMap")}
    configmaps |= set(generated_configmaps())
    secrets = {d["metadata"]["name"] for d in k8s_objects("Secret")}
    claims = {d["metadata"]["name"] for d in k8s_objects("PersistentVolumeClaim")}
    checked = 0
    for workload in k8s_objects(*WORKLOAD_KINDS):
        wname = workload["metadata"]["name"]
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        templates = {t["metadata"]["name"]
                     for t in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            if "configMap" in volume and not volume["configMap"].get("optional"):
                name = volume["configMap"]["name"]
                assert name in configmaps, f"{wname}: no ConfigMap {name}"
                keys = set(generated_configmaps().get(name, {}))
                for item in volume["configMap"].get("items", []):
                    assert item["key"] in keys, f"{wname}: ConfigMap {name} lacks {item['key']}"
            if "secret" in volume and not volume["secret"].get("optional"):
                assert volume["secret"]["secretName"] in secrets, f"{wname}: {volume}"
            if "secret" in volume:
                for item in volume["secret"].get("items", []):
                    assert item["key"] in secret_keys(volume["secret"]["secretName"]), (
                        f"{wname}: Secret {volume['secret']['secretName']} lacks {item['key']}")
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            checked += 1
        for container in containers(workload):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, (
                    f"{wname}/{container['name']}: no volume {mount['name']}")
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in secret_keys(ref["name"]), f"{wname}: {ref}"
                checked += bool(ref)
    assert checked >= 10


def test_k8s_prometheus_scrapes_every_worker_pod() -> None:
    """The SRV name is the workers' headless Service and its named port."""
    config = load_yaml(K8S_PROMETHEUS)
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "kpimon")
    (sd,) = job["dns_sd_configs"]
    assert sd["type"] == "SRV"
    (name,) = sd["names"]
    match = re.fullmatch(r"_([a-z0-9-]+)\._tcp\.([a-z0-9-]+)", name)
    assert match, name
    port_name, service_name = match.groups()
    service = k8s_object("Service", service_name)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"].get("publishNotReadyAddresses") is True
    assert port_name in {p["name"] for p in service["spec"]["ports"]}
    assert kpimon_workload()["spec"]["serviceName"] == service_name
    # The bearer token file is the Secret key the workers use as http.token.
    credentials = Path(job["authorization"]["credentials_file"])
    deployment = k8s_object("Deployment", "prometheus")
    (container,) = containers(deployment)
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == credentials.parent)
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    item = next(i for i in volume["secret"]["items"] if i["path"] == credentials.name)
    token_env = next(e for e in kpimon_container()["env"] if e["name"] == "KPIMON_HTTP__TOKEN")
    assert token_env["valueFrom"]["secretKeyRef"] == {
        "name": volume["secret"]["secretName"], "key": item["key"], "optional": True}


def test_k8s_prometheus_static_targets_are_services() -> None:
    """Alertmanager and other static targets are Services with that port."""
    config = load_yaml(K8S_PROMETHEUS)
    targets = [t for am in config["alerting"]["alertmanagers"]
               for sc in am["static_configs"] for t in sc["targets"]]
    targets += [t for job in config["scrape_configs"] for sc in job.get("static_configs", [])
                for t in sc["targets"]]
    remote = [t for t in targets if not t.startswith("localhost:")]
    assert remote
    for target in remote:
        host, port = target.rsplit(":", 1)
        assert int(port) in {p["port"] for p in k8s_object("Service", host)["spec"]["ports"]}


def k8s_prometheus_mount(configmap: str) -> str:
    """Where the Prometheus Deployment mounts `configmap`."""
    deployment = k8s_object("Deployment", "prometheus")
    volume = next(v["name"] for v in pod_spec(deployment)["volumes"]
                  if v.get("configMap", {}).get("name") == configmap)
    (container,) = containers(deployment)
    return str(next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume))


def test_k8s_prometheus_files_are_mounted() -> None:
    """--config.file and each rule file are keys of the ConfigMaps mounted there."""
    config = load_yaml(K8S_PROMETHEUS)
    rules = generated_configmaps()["kpimon-prometheus-rules"]
    rules_dir = k8s_prometheus_mount("kpimon-prometheus-rules")
    assert config["rule_files"]
    for rule in config["rule_files"]:
        assert str(Path(rule).parent) == rules_dir and Path(rule).name in rules, rule
        assert rules[Path(rule).name].parent == DEPLOY / "prometheus" / "rules"
    (container,) = containers(k8s_object("Deployment", "prometheus"))
    flag = next(a for a in container["args"] if a.startswith("--config.file="))
    path = Path(flag.split("=", 1)[1])
    assert str(path.parent) == k8s_prometheus_mount("kpimon-prometheus-config")
    assert generated_configmaps()["kpimon-prometheus-config"][path.name] == K8S_PROMETHEUS


def test_k8s_topics_job_matches_worker_config() -> None:
    """The try-out topic Job uses the worker's bootstrap and partition count."""
    _, settings = k8s_settings()
    job = k8s_object("Job", "kpimon-topics")
    (container,) = containers(job)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["BOOTSTRAP"] == settings.kafka.bootstrap
    assert int(env["PARTITIONS"]) == settings.kafka.partitions
    script = container["command"][-1]
    for topic in (settings.topics.tickets, settings.topics.surveys, settings.topics.deadletter,
                  settings.topics.kpis):
        assert topic in script
    assert "cleanup.policy=compact" in script
    host, port = settings.kafka.bootstrap.split(":")
    assert int(port) in {p["port"] for p in k8s_object("Service", host)["spec"]["ports"]}


# --- images ----------------------------------------------------------------------------


def images() -> list[tuple[str, str]]:
    """(where, image) for every compose service and Kubernetes container."""
    found = [(f"compose {n}", s["image"]) for n, s in services().items() if "image" in s]
    for doc in k8s_objects(*WORKLOAD_KINDS):
        found += [(f"k8s {doc['metadata']['name']}", c["image"]) for c in containers(doc)]
    return found


def test_images_are_pinned_and_agree() -> None:
    """Every image has an explicit tag (not latest); compose and k8s use the same ones."""
    tags: dict[str, set[str]] = {}
    for where, image in images():
        name, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag and tag not in ("", "latest"), f"{where}: {image}"
        tags.setdefault(name, set()).add(tag)
    assert {"apache/kafka", "prom/prometheus", "prom/alertmanager", "grafana/grafana",
            "kpimon"} <= set(tags)
    assert all(len(t) == 1 for t in tags.values()), tags


# --- Grafana provisioning (files maintained in grafana/) --------------------------------


def provisioning(kind: str) -> list[dict[str, Any]]:
    """Entries of grafana/provisioning/<kind>/*.y*ml (datasources or providers)."""
    folder = GRAFANA / "provisioning" / kind
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    assert files, f"no provisioning files in {rel(folder)} (compose.yaml mounts it)"
    key = "datasources" if kind == "datasources" else "providers"
    return [entry for path in files for entry in (load_yaml(path) or {}).get(key, [])]


def test_grafana_datasources_agree_between_compose_and_k8s() -> None:
    """Dashboards refer to data sources by uid: k8s must provision the same ones."""
    compose_sources = provisioning("datasources")
    assert compose_sources
    k8s_file = generated_configmaps()["kpimon-grafana-datasources"]["datasources.yml"]
    k8s_sources = {(d["name"], d["type"], d.get("uid")) for d in load_yaml(k8s_file)["datasources"]}
    for source in compose_sources:
        key = (source["name"], source["type"], source.get("uid"))
        assert key in k8s_sources, f"{key} is not in {rel(k8s_file)}"
        url = re.match(r"https?://([^:/]+):(\d+)", source.get("url", ""))
        if url:
            host, port = url.groups()
            assert host in services() and int(port) in container_ports(services()[host]), (
                f"data source {source['name']}: {source['url']} is not a compose service"
            )


def test_grafana_dashboard_providers_read_the_mounted_folder() -> None:
    """Dashboard providers point at the folder compose and k8s mount grafana/dashboards on."""
    grafana = {m.host_path: m.target for m in mounts(services()["grafana"]) if m.is_bind}
    mounted = grafana[GRAFANA / "dashboards"]
    providers = provisioning("dashboards")
    assert providers
    for provider in providers:
        path = provider["options"]["path"]
        assert path == mounted or path.startswith(mounted + "/"), (
            f"provider {provider['name']}: {path} is not under {mounted}")
    k8s_file = generated_configmaps()["kpimon-grafana-dashboard-providers"][
        "dashboard-providers.yml"]
    k8s_paths = {p["options"]["path"] for p in load_yaml(k8s_file)["providers"]}
    assert k8s_paths == {mounted}
    dashboards = sorted((GRAFANA / "dashboards").rglob("*.json"))
    assert dashboards, "no dashboards in grafana/dashboards"


# --- promtool --------------------------------------------------------------------------


def promtool() -> str:
    """Path of promtool; fails the test with the fix when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run scripts/setup.sh (Debian package prometheus)")
    return path


def test_promtool_accepts_compose_config() -> None:
    """`promtool check config deploy/compose/prometheus.yml`, rule files included."""
    result = subprocess.run([promtool(), "check", "config", str(COMPOSE_PROMETHEUS)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rule files found" in result.stdout + result.stderr


def test_promtool_accepts_k8s_config(tmp_path: Path) -> None:
    """The k8s prometheus.yml, with its in-pod paths mapped to the repository files."""
    config = load_yaml(K8S_PROMETHEUS)
    rules = generated_configmaps()["kpimon-prometheus-rules"]
    config["rule_files"] = [str(rules[Path(r).name]) for r in config["rule_files"]]
    for job in config["scrape_configs"]:
        auth = job.get("authorization")
        if auth and "credentials_file" in auth:
            token = tmp_path / Path(auth["credentials_file"]).name
            token.write_text("token-of-the-test-0123456789\n")
            auth["credentials_file"] = str(token)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool(), "check", "config", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
