"""Tests of the Helm chart in deploy/helm/olp (spec section 7 "Helm chart"; STYLE item 11).

`helm lint` and `helm template` with the default values, a production-like values file
(tests/helm/values-production.yaml) and the production example (examples/values-production.yaml),
then checks on the rendered objects: hardened, resourced and probed containers; secrets only by
reference; the feed services, NetworkPolicies, ServiceMonitors and Kafka volumes; the environment
and config file the chart sets are exactly what olp.settings reads and they load; topic names agree
with olp.topics; values.schema.json rejects bad values; values.yaml, values.schema.json and the
README table agree; every manifest matches the Kubernetes API schemas (kubernetes-validate) and a
checkov scan fails only the checks listed with their reasons.

Needs the helm binary at .tools/helm (`bash scripts/install-helm.sh`, which CI runs) and, for the
scan, checkov on PATH or at .tools/checkov (`bash deploy/helm/tools/install-checkov.sh`); tests
that need them skip with that reason when they are absent.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from olp.catalog import Catalog, ModelSpec, load_catalog
from olp.service_settings import (
    DocumentsSettings,
    FeedLimits,
    IngestSettings,
    NewsSource,
    SenderSettings,
    WebhookSettings,
)
from olp.settings import FeedSettings, KafkaSettings, LearnerSettings, Settings, load_settings
from olp.topics import TopicNames

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "olp"
HELM = REPO / ".tools" / "helm"
PRODUCTION = Path(__file__).resolve().parent / "values-production.yaml"
EXAMPLE = CHART / "examples" / "values-production.yaml"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
SCHEMA = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
PROD_VALUES = yaml.safe_load(PRODUCTION.read_text(encoding="utf-8"))
EXAMPLE_VALUES = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
WORKERS = {"olp-splitter", "olp-llm-roles", "olp-format"}
FEED_SERVICES = {"olp-ingest": 8643, "olp-documents": 8644}
"""The feed services' Deployments and their ports (olp/service_settings.py defaults)."""

ALL_ROLES = {
    "chunk_splitter",
    "topic_finder",
    "topic_locator",
    "relationship_checker",
    "content_organizer",
    "format_checker",
}
ROLE_INPUTS = {
    "chunk_splitter": ["transcripts"],
    "topic_finder": ["chunks"],
    "topic_locator": ["found"],
    "relationship_checker": ["located"],
    "content_organizer": ["checked"],
    "format_checker": ["organized"],
}
UID = 10001
READ_TOKEN_SECRET = "olp-policy-store-read-token"
REQUIRED = ["--set", f"policyStore.readToken.existingSecret={READ_TOKEN_SECRET}"]
"""The one value without a working default: the policy store's read token (or an explicit
policyStore.allowUnauthenticatedReads). Every render below starts from it; the value files name
the same Secret."""
REQUIRED_VALUES: dict[str, Any] = {"policyStore": {"readToken": {"existingSecret": READ_TOKEN_SECRET}}}
Docs = list[dict[str, Any]]
Rendered = tuple[str, Docs, dict[str, Any]]  # (name, rendered objects, the values file's overrides)


# --- helpers ---------------------------------------------------------------------------------


def _load_values_doc() -> Any:
    path = REPO / "deploy" / "helm" / "tools" / "values_doc.py"
    spec = importlib.util.spec_from_file_location("values_doc", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.skip(f"helm is not installed at {HELM.relative_to(REPO)}: run `bash scripts/install-helm.sh`")
    return subprocess.run(
        [str(HELM), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def render(*args: str | Path) -> Docs:
    result = helm("template", "olp", CHART, "--namespace", "olp", *REQUIRED, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: Docs, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: Docs) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> Docs:
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over values.yaml (maps merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        both_maps = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both_maps else value
    return out


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model an annotation holds (`Model` or `Model | None`), if any; not the entries
    of a `dict[str, Model]`, which the environment reaches only by key."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for candidate in (annotation, *(typing.get_args(annotation) if union else ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _env_names(model: type[BaseModel], prefix: str) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        nested = _model_of(field.annotation)
        env = f"{prefix}{name}".upper()
        names |= _env_names(nested, f"{env}__") if nested else {env}
    return names


def settings_env_names() -> set[str]:
    """Every environment variable olp.settings reads (prefix OLP_, nesting with __)."""
    # OLP_CONFIG_FILE is read by the settings' YAML source, not a field.
    return _env_names(Settings, "OLP_") | {"OLP_CONFIG_FILE"}


def _keyed_env_patterns(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """`<PREFIX>FIELD__<KEY>__<SUBFIELD>` for each field of `dict[str, Model]`: the environment
    reaches one entry's field by its key (the settings merge it into the config file's entry)."""
    for name, field in model.model_fields.items():
        env = f"{prefix}{name}".upper()
        nested = _model_of(field.annotation)
        if nested:
            yield from _keyed_env_patterns(nested, f"{env}__")
        elif typing.get_origin(field.annotation) is dict:
            entry = _model_of(typing.get_args(field.annotation)[1])
            if entry:
                subfields = "|".join(sorted(f.upper() for f in entry.model_fields))
                yield rf"{env}__[A-Z0-9.-]+__({subfields})"


def is_setting_env(name: str) -> bool:
    return name in settings_env_names() or any(
        re.fullmatch(p, name) for p in _keyed_env_patterns(Settings, "OLP_")
    )


@pytest.fixture(scope="module")
def default_docs() -> Docs:
    return render()


@pytest.fixture(scope="module")
def production_docs() -> Docs:
    return render("-f", PRODUCTION)


@pytest.fixture(params=["default", "production"])
def rendered(request: pytest.FixtureRequest) -> tuple[str, Docs, dict[str, Any]]:
    """(name, rendered objects, the values file's overrides) for both value sets."""
    if request.param == "default":
        return "default", request.getfixturevalue("default_docs"), REQUIRED_VALUES
    return "production", request.getfixturevalue("production_docs"), PROD_VALUES


# --- helm lint / template / install --dry-run ------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [REQUIRED, ["-f", str(PRODUCTION)], ["-f", str(CHART / "examples" / "values-strimzi.yaml")]],
    ids=["default", "production", "strimzi-example"],
)
def test_helm_lint_passes(extra: list[str]) -> None:
    result = helm("lint", "--strict", CHART, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("extra", [REQUIRED, ["-f", str(PRODUCTION)]], ids=["default", "production"])
def test_notes_render(extra: list[str]) -> None:
    result = helm("install", "olp", CHART, "--dry-run=client", "--namespace", "olp", *extra)
    assert result.returncode == 0, result.stderr
    assert "port-forward svc/olp-policy-store" in result.stdout
    # The dashboard is opened with the read token in the fragment, read from its Secret.
    assert f"/dashboard#token=$(kubectl -n olp get secret {READ_TOKEN_SECRET} " in result.stdout


def test_default_render_has_the_expected_objects(default_docs: Docs) -> None:
    deployments = by_kind(default_docs, "Deployment")
    assert set(deployments) == {*WORKERS, "olp-policy-store"}  # the feed services are opt-in
    assert set(by_kind(default_docs, "ConfigMap")) == {"olp-catalog", "olp-config", "olp-topics-config"}
    assert set(by_kind(default_docs, "Service")) == {"olp-policy-store"}
    assert set(by_kind(default_docs, "PersistentVolumeClaim")) == {"olp-policy-store"}
    assert set(by_kind(default_docs, "PodDisruptionBudget")) == {
        "olp-splitter",
        "olp-llm-roles",
        "olp-format",
    }
    assert set(by_kind(default_docs, "ServiceAccount")) == {"olp"}
    assert set(by_kind(default_docs, "Job")) == {"olp-topics"}
    assert set(by_kind(default_docs, "NetworkPolicy")) == {
        "olp-default-deny-ingress",
        "olp-policy-store",
        "olp-egress",
    }
    absent = ("HorizontalPodAutoscaler", "ScaledObject", "TriggerAuthentication", "ServiceMonitor")
    for kind in (*absent, "Ingress", "Secret"):
        assert not by_kind(default_docs, kind), kind
    for name in ("olp-splitter", "olp-llm-roles", "olp-format"):
        assert deployments[name]["spec"]["replicas"] == 1


def test_production_render_scales_and_isolates(production_docs: Docs) -> None:
    deployments = by_kind(production_docs, "Deployment")
    # Autoscaled groups leave replicas to the HPA / KEDA.
    for name in ("olp-splitter", "olp-llm-roles", "olp-format"):
        assert "replicas" not in deployments[name]["spec"], name
    hpas = by_kind(production_docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"olp-format"}  # the other two scale with KEDA, which makes its own HPA
    assert hpas["olp-format"]["spec"]["minReplicas"] == 3
    assert hpas["olp-format"]["spec"]["maxReplicas"] == 4  # the group's override of the default 12
    assert set(by_kind(production_docs, "ScaledObject")) == {"olp-splitter", "olp-llm-roles"}
    assert set(by_kind(production_docs, "TriggerAuthentication")) == {"olp-kafka"}
    assert set(by_kind(production_docs, "NetworkPolicy")) == {
        "olp-default-deny-ingress",
        "olp-policy-store",
        "olp-ingest",
        "olp-documents",
        "olp-metrics",
        "olp-egress",
    }
    image = deployments["olp-policy-store"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{PROD_VALUES['image']['repository']}@{PROD_VALUES['image']['digest']}"


# --- pods: non-root, restricted, resourced, probed -------------------------------------------


def test_every_container_is_hardened_and_resourced(rendered: Rendered) -> None:
    _, docs, _ = rendered
    seen = 0
    for doc, pod in pod_specs(docs):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        pod_sc = pod["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, where
        assert pod_sc["runAsUser"] == UID and pod_sc["fsGroup"] == UID, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in containers(pod):
            seen += 1
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["privileged"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where} {bound}"
            # A read-only root needs writable scratch space: /tmp and the Faust data dir.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            data_dir = env_of(container)["OLP_DATA_DIR"]["value"]
            for path in ("/tmp", data_dir):
                assert "emptyDir" in volumes[mounts[path]], f"{where} {path}"
    assert seen >= 5


def test_long_running_containers_have_probes(rendered: Rendered) -> None:
    _, docs, _ = rendered
    for name, deployment in by_kind(docs, "Deployment").items():
        for container in containers(deployment["spec"]["template"]["spec"]):
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            expected_port = 8642 if name.endswith("policy-store") else FEED_SERVICES.get(name, 6066)
            assert ports["http"] == expected_port, name
            probes = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
            for probe, path in probes.items():
                assert container[probe]["httpGet"] == {"path": path, "port": "http"}, f"{name} {probe}"


def test_commands(default_docs: Docs) -> None:
    deployments = by_kind(default_docs, "Deployment")
    roles_run: list[str] = []
    for group in VALUES["workers"]["groups"]:
        container = deployments[f"olp-{group['name']}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["olp"]
        assert container["args"] == ["worker", "--roles", ",".join(group["roles"])]
        roles_run += group["roles"]
    assert sorted(roles_run) == sorted(ALL_ROLES)
    policy_store = deployments["olp-policy-store"]["spec"]["template"]["spec"]["containers"][0]
    assert [*policy_store["command"], *policy_store["args"]] == ["olp", "policy-store"]
    job = by_kind(default_docs, "Job")["olp-topics"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    job_container = job["spec"]["template"]["spec"]["containers"][0]
    assert [*job_container["command"], *job_container["args"]] == ["olp", "topics", "ensure"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_topics_job_fixes_drift_only_when_asked(production_docs: Docs) -> None:
    job = by_kind(production_docs, "Job")["olp-topics"]["spec"]["template"]["spec"]["containers"][0]
    assert PROD_VALUES["topicsJob"]["fix"] is True
    assert job["args"] == ["topics", "ensure", "--fix"]


def test_service_accounts() -> None:
    """Long-running pods use the chart's ServiceAccount; the pre-install hook runs before it exists,
    so it uses the namespace's default one, or the one you manage."""
    docs = render()
    names = {d["metadata"]["name"]: pod.get("serviceAccountName") for d, pod in pod_specs(docs)}
    assert names.pop("olp-topics") == "default"
    assert set(names.values()) == {"olp"}
    docs = render("--set", "serviceAccount.create=false", "--set", "serviceAccount.name=team-sa")
    assert not by_kind(docs, "ServiceAccount")
    assert {pod.get("serviceAccountName") for _, pod in pod_specs(docs)} == {"team-sa"}


def test_policy_store_snapshot_and_service(rendered: Rendered) -> None:
    _, docs, _ = rendered
    deployment = by_kind(docs, "Deployment")["olp-policy-store"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    snapshot = Path(env_of(container)["OLP_LEARNER__SNAPSHOT_PATH"]["value"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["snapshot"] == str(snapshot.parent)
    volume = next(v for v in pod["volumes"] if v["name"] == "snapshot")
    assert volume["persistentVolumeClaim"]["claimName"] == "olp-policy-store"
    service = by_kind(docs, "Service")["olp-policy-store"]
    assert service["spec"]["ports"][0]["port"] == 8642
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_snapshot_falls_back_to_empty_dir() -> None:
    docs = render("--set", "policyStore.persistence.enabled=false")
    assert not by_kind(docs, "PersistentVolumeClaim")
    pod = by_kind(docs, "Deployment")["olp-policy-store"]["spec"]["template"]["spec"]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == "snapshot")


def test_pdb_selects_its_group(default_docs: Docs) -> None:
    deployments = by_kind(default_docs, "Deployment")
    for name, pdb in by_kind(default_docs, "PodDisruptionBudget").items():
        assert pdb["spec"]["selector"] == deployments[name]["spec"]["selector"]
        assert pdb["spec"]["maxUnavailable"] == 1


# --- secrets ---------------------------------------------------------------------------------

SECRETISH = re.compile(r"PASSWORD|TOKEN(?!_ENDPOINT_URL)|API_KEY|SECRET|HEADERS")
"""Variables holding secrets (an OAuth token endpoint's URL is none)."""


def test_secrets_are_referenced_never_inlined(rendered: Rendered) -> None:
    _, docs, _ = rendered
    assert not by_kind(docs, "Secret")
    for doc, pod in pod_specs(docs):
        for container in containers(pod):
            for name, entry in env_of(container).items():
                if SECRETISH.search(name):
                    assert "value" not in entry, f"{doc['metadata']['name']}: {name} is inlined"
                    assert "secretKeyRef" in entry["valueFrom"], name


def test_production_secrets_come_from_the_named_existing_secrets(production_docs: Docs) -> None:
    kafka = PROD_VALUES["kafka"]
    expected_refs = {
        "OLP_KAFKA__SASL_USERNAME": (kafka["sasl"]["existingSecret"], kafka["sasl"]["usernameKey"]),
        "OLP_KAFKA__SASL_PASSWORD": (kafka["sasl"]["existingSecret"], kafka["sasl"]["passwordKey"]),
        "OTEL_EXPORTER_OTLP_HEADERS": (PROD_VALUES["otel"]["headers"]["existingSecret"], "headers"),
        "OLP_KAFKA__SSL_KEY_PASSWORD": (kafka["tls"]["clientSecret"], kafka["tls"]["keyPasswordKey"]),
    }
    for doc, pod in pod_specs(production_docs):
        container = pod["containers"][0]
        env = env_of(container)
        for name, (secret, key) in expected_refs.items():
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}, name
        # The Kafka CA comes from its Secret through the read-only /etc/olp projected volume.
        assert env["OLP_KAFKA__SSL_CAFILE"]["value"] == "/etc/olp/kafka/ca.crt"
        etc = next(v for v in pod["volumes"] if v["name"] == "etc-olp")["projected"]["sources"]
        secrets = [s["secret"] for s in etc if "secret" in s]
        ca = {"name": kafka["tls"]["caSecret"], "items": [{"key": "ca.crt", "path": "kafka/ca.crt"}]}
        assert ca in secrets
        # The client certificate and key (mTLS) too, the key readable by the pod's group only.
        client = {
            "name": kafka["tls"]["clientSecret"],
            "items": [
                {"key": "tls.crt", "path": "kafka/client.crt"},
                {"key": "tls.key", "path": "kafka/client.key", "mode": 0o440},
            ],
        }
        assert client in secrets
        assert env["OLP_KAFKA__SSL_CERTFILE"]["value"] == "/etc/olp/kafka/client.crt"
        assert env["OLP_KAFKA__SSL_KEYFILE"]["value"] == "/etc/olp/kafka/client.key"
        assert pod["securityContext"]["fsGroup"] == UID
        if doc["metadata"]["name"] in {*WORKERS, "olp-policy-store"}:  # the model callers
            for var in PROD_VALUES["modelApiKeys"]["envVars"]:
                assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "olp-model-keys", "key": var}
    policy_store = by_kind(production_docs, "Deployment")["olp-policy-store"]["spec"]["template"]["spec"]
    policy_env = env_of(policy_store["containers"][0])
    token = policy_env["OLP_API_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "olp-policy-store-token", "key": "token"}
    read_token = policy_env["OLP_READ_TOKEN"]
    assert read_token["valueFrom"]["secretKeyRef"] == {"name": READ_TOKEN_SECRET, "key": "token"}
    assert "OLP_ALLOW_UNAUTHENTICATED_READS" not in policy_env
    auth = by_kind(production_docs, "TriggerAuthentication")["olp-kafka"]["spec"]
    assert {(r["parameter"], r["name"], r["key"]) for r in auth["secretTargetRef"]} == {
        ("username", "olp-kafka-user", "username"),
        ("password", "olp-kafka-user", "password"),
        ("ca", "kafka-cluster-ca", "ca.crt"),
        ("cert", "olp-kafka-client-cert", "tls.crt"),
        ("key", "olp-kafka-client-cert", "tls.key"),
        ("keyPassword", "olp-kafka-client-cert", "key-password"),
    }


PLANTED = "planted-s3cr3t-value-6a1f"


@pytest.mark.parametrize(
    "setting",
    [
        f"kafka.sasl.password={PLANTED}",
        f"policyStore.apiToken.value={PLANTED}",
        f"modelApiKeys.OPENAI_API_KEY={PLANTED}",
        f"otel.headers.value={PLANTED}",
        f"policyStore.readToken.value={PLANTED}",
        f"ingest.senders.studio-a.token.value={PLANTED}",
        f"ingest.senders.studio-a.token={PLANTED}",
        f"config.ingest.senders.studio-a.token={PLANTED}",
        f"documents.webhookSecret.value={PLANTED}",
        f"kafka.tls.keyPassword={PLANTED}",
        f"kafka.sasl.oauthbearer.clientSecret={PLANTED}",
        f"kafka.config.sasl_password={PLANTED}",
        f"kafka.config.confluent_extra.sasl\\.password={PLANTED}",
        f"kafka.config.confluent_extra.ssl\\.keystore\\.password={PLANTED}",
        f"kafka.config.confluent_extra.sasl\\.jaas\\.config={PLANTED}",
        f"kafka.config.aiokafka_extra.sasl_plain_password={PLANTED}",
        f"kafka.config.aiokafka_extra.ssl_context={PLANTED}",
    ],
)
def test_values_cannot_carry_secrets(setting: str) -> None:
    """There is no value that takes a secret itself: the schema rejects the attempt."""
    result = helm("template", "olp", CHART, "-f", PRODUCTION, "--set", setting)
    assert result.returncode != 0
    assert "schema" in result.stderr
    assert PLANTED not in result.stdout


def test_planted_secret_names_only_appear_as_references() -> None:
    names = {
        "kafka.sasl.existingSecret": "planted-kafka-user",
        "modelApiKeys.existingSecret": "planted-model-keys",
        "policyStore.apiToken.existingSecret": "planted-token",
    }
    args = [a for key, value in names.items() for a in ("--set", f"{key}={value}")]
    plain_user = ["--set", "kafka.sasl.usernameKey=", "--set", "kafka.sasl.username=olp-user"]
    result = helm("template", "olp", CHART, "-f", PRODUCTION, *args, *plain_user)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert "kind: Secret\n" not in result.stdout
    refs: set[str] = set()
    for _, pod in pod_specs(docs):
        for container in containers(pod):
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add(ref["name"])
                elif "value" in entry:
                    assert not str(entry["value"]).startswith("planted-"), entry
    assert set(names.values()) <= refs
    # A plain user name is no secret: it is a value, and KEDA reads it from the container's env.
    auth = by_kind(docs, "TriggerAuthentication")["olp-kafka"]["spec"]
    username = {"parameter": "username", "name": "OLP_KAFKA__SASL_USERNAME", "containerName": "worker"}
    assert auth["env"] == [username]


# --- the environment is exactly what olp.settings reads --------------------------------------


def test_rendered_environment_is_known_to_the_application(
    rendered: Rendered,
) -> None:
    _, docs, overrides = rendered
    api_keys = set(overrides.get("modelApiKeys", {}).get("envVars", []))
    extra = {e["name"] for e in overrides.get("extraEnv", [])}
    for doc, pod in pod_specs(docs):
        for container in containers(pod):
            for name in env_of(container):
                if name.startswith("OLP_"):
                    assert is_setting_env(name), f"{doc['metadata']['name']}: {name} is no setting"
                else:
                    assert name.startswith("OTEL_") or name in api_keys | extra | {"K8S_POD_NAME"}, name


def test_values_comments_name_real_settings() -> None:
    """Each `(OLP_...)` a value's comment names is a setting the application reads."""
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    named = set(re.findall(r"`(OLP_[A-Z_]+)`", text))
    assert named and named <= settings_env_names(), named - settings_env_names()


def mounted_configmap_files(pod: dict[str, Any], container: dict[str, Any], docs: Docs) -> dict[str, str]:
    """Path in the container -> text, for every file a ConfigMap of the render puts there."""
    configmaps = by_kind(docs, "ConfigMap")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    files = {}
    for volume in pod["volumes"]:
        if volume["name"] not in mounts:
            continue
        sources = volume.get("projected", {}).get("sources", [{"configMap": volume.get("configMap")}])
        for source in sources:
            ref = source.get("configMap")
            if not ref:
                continue
            data = configmaps[ref["name"]]["data"]
            items = ref.get("items") or [{"key": key, "path": key} for key in data]
            for item in items:
                files[f"{mounts[volume['name']]}/{item['path']}"] = data[item["key"]]
    return files


def secret_value(ref: dict[str, str]) -> str:
    """What the test pretends a Secret's key holds: distinct per key, as tokens must be, and a
    valid Standard Webhooks secret (`whsec_<base64 of at least 16 bytes>`), as a signing key must be."""
    return "whsec_" + base64.b64encode(f"value-from-secret {ref['name']}/{ref['key']}".encode()).decode()


def _settings_from(
    pod: dict[str, Any], docs: Docs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Settings:
    for name in list(os.environ):
        if name.startswith("OLP_"):
            monkeypatch.delenv(name)
    container = pod["containers"][0]
    files = {}
    for index, (path, text) in enumerate(mounted_configmap_files(pod, container, docs).items()):
        local = tmp_path / f"{index}-{Path(path).name}"
        local.write_text(text, encoding="utf-8")
        files[path] = str(local)
    for name, entry in env_of(container).items():
        if "value" in entry:
            value = files.get(entry["value"], entry["value"])
        elif "secretKeyRef" in entry["valueFrom"]:
            value = secret_value(entry["valueFrom"]["secretKeyRef"])
        else:
            value = "olp-pod-0"
        if name.startswith("OLP_"):
            monkeypatch.setenv(name, value)
    return load_settings()


def _check_ingest(settings: Settings, values: dict[str, Any]) -> None:
    """The ingest pod's senders (each token from its Secret), limits and news sources."""
    assert (settings.ingest.host, settings.ingest.port) == ("0.0.0.0", values["ingest"]["port"])
    senders = values["ingest"]["senders"]
    assert set(settings.ingest.senders) == set(senders)
    for name, sender in senders.items():
        loaded = settings.ingest.senders[name]
        token_ref = {"name": sender["token"]["existingSecret"], "key": sender["token"].get("key", "token")}
        assert loaded.token.get_secret_value() == secret_value(token_ref), name
        assert list(loaded.feeds) == sender["feeds"], name
        assert loaded.rate_per_s == sender.get("rate_per_s", 50.0), name
        assert loaded.burst == sender.get("burst", 500), name
    config = values["config"]["ingest"]
    limits = settings.ingest.limits_for("default")
    for key, value in config["limits"]["default"].items():
        assert getattr(limits, key) == value, key
    assert settings.ingest.stream_idle_s == config.get("stream_idle_s", 3600)
    assert settings.ingest.tracked_streams == config.get("tracked_streams", 100_000)
    assert [s.url for s in settings.ingest.news] == [s["url"] for s in config["news"]]
    assert [s.max_redirects for s in settings.ingest.news] == [
        s.get("max_redirects", 3) for s in config["news"]
    ]


def test_rendered_configuration_loads(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each container's environment plus the rendered config file and catalog build a valid
    Settings (extra="forbid") and Catalog, with the values given."""
    _, docs, overrides = rendered
    values = _merged(VALUES, overrides)
    for doc, pod in pod_specs(docs):
        settings = _settings_from(pod, docs, monkeypatch, tmp_path)
        where = doc["metadata"]["name"]
        assert settings.kafka.bootstrap_servers == values["kafka"]["bootstrapServers"], where
        assert settings.kafka.security_protocol == values["kafka"]["securityProtocol"], where
        assert settings.kafka.partitions == values["kafka"]["partitions"], where
        assert settings.kafka.producer_max_batch_size == values["kafka"]["producerMaxBatchSize"], where
        assert settings.topic_prefix == values["topicPrefix"], where
        assert settings.app_id == values["appId"], where
        # The Kafka client settings reach every pod through its config file (the hook Job's too).
        for key, value in values["kafka"]["config"].items():
            assert getattr(settings.kafka, key) == value, f"{where} kafka.{key}"
        if doc["kind"] == "Deployment":
            assert set(settings.feeds) == set(values["config"]["feeds"]), where
            catalog = load_catalog(settings.catalog_path)
            assert [m.name for m in catalog.models] == [m["name"] for m in values["catalog"]["models"]]
        # Only the embedded stack re-creates lost topics; on a cluster they are the operator's.
        assert settings.recreate_lost_topics is False, where
        assert "OLP_RECREATE_LOST_TOPICS" not in env_of(pod["containers"][0]), where
        if where == "olp-policy-store":
            assert settings.policy_store_host == "0.0.0.0"
            assert settings.learner.snapshot_path == Path(values["policyStore"]["snapshotPath"])
            # Not on loopback, so the store needs its read token (the chart refuses to render
            # without one unless unauthenticated reads are asked for).
            assert settings.read_token is not None
            read_ref = {"name": values["policyStore"]["readToken"]["existingSecret"], "key": "token"}
            assert settings.read_token.get_secret_value() == secret_value(read_ref)
            assert settings.allow_unauthenticated_reads is False
        elif where in WORKERS:
            assert settings.policy_store_host == "olp-policy-store"
            # The probes and the metrics scrape reach the pod's address, not its loopback.
            assert settings.worker_web_host == "0.0.0.0"
        elif where == "olp-ingest":
            _check_ingest(settings, values)
        elif where == "olp-documents":
            documents = settings.documents
            assert (documents.host, documents.port) == ("0.0.0.0", values["documents"]["port"])
            assert settings.documents.read_token is not None
            assert settings.documents.webhook is not None
            assert settings.documents.webhook.url == values["config"]["documents"]["webhook"]["url"]
            assert settings.documents.webhook.token is not None
            assert settings.documents.webhook.secret is not None
            assert settings.documents.open_reads is False
        if where != "olp-ingest":  # the senders' tokens reach the ingest pods only
            assert settings.ingest.senders == {}, where
        if values["kafka"]["securityProtocol"].startswith("SASL_"):
            assert settings.kafka.sasl_password is not None
            sasl = values["kafka"]["sasl"]
            password_ref = {"name": sasl["existingSecret"], "key": sasl["passwordKey"]}
            assert settings.kafka.sasl_password.get_secret_value() == secret_value(password_ref)
        if values["kafka"]["tls"].get("clientSecret"):
            assert settings.kafka.ssl_certfile == Path("/etc/olp/kafka/client.crt"), where
            assert settings.kafka.ssl_keyfile == Path("/etc/olp/kafka/client.key"), where
            assert settings.kafka.ssl_key_password is not None, where


def test_otel_settings(production_docs: Docs, default_docs: Docs) -> None:
    services = set()
    for doc, pod in pod_specs(production_docs):
        env = env_of(pod["containers"][0])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == PROD_VALUES["otel"]["endpoint"]
        assert "OTEL_SDK_DISABLED" not in env
        attributes = dict(kv.split("=", 1) for kv in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(","))
        assert attributes["k8s.pod.name"] == "$(K8S_POD_NAME)"
        assert attributes["deployment.environment.name"] == "production"
        services.add(env["OTEL_SERVICE_NAME"]["value"])
        # metrics.enabled: the processes that serve /metrics also read metrics for Prometheus.
        serves_metrics = doc["metadata"]["name"] in {*WORKERS, "olp-policy-store"}
        exporter = env.get("OTEL_METRICS_EXPORTER", {}).get("value")
        assert exporter == ("otlp,prometheus" if serves_metrics else None)
    assert services == {
        "olp-splitter",
        "olp-llm-roles",
        "olp-format",
        "olp-policy-store",
        "olp-topics",
        "olp-ingest",
        "olp-documents",
    }
    for _, pod in pod_specs(default_docs):
        env = env_of(pod["containers"][0])
        assert env["OTEL_SDK_DISABLED"]["value"] == "true"
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
        assert "OTEL_METRICS_EXPORTER" not in env


def test_prometheus_metrics_without_otlp() -> None:
    """Prometheus alone needs the SDK on (OTEL_SDK_DISABLED would turn the reader off too) and
    traces off."""
    docs = render("--set", "metrics.enabled=true")
    for doc, pod in pod_specs(docs):
        env = {name: e.get("value") for name, e in env_of(pod["containers"][0]).items()}
        if doc["metadata"]["name"] == "olp-topics":
            assert env["OTEL_SDK_DISABLED"] == "true"
            continue
        assert env["OTEL_METRICS_EXPORTER"] == "prometheus"
        assert env["OTEL_TRACES_EXPORTER"] == "none"
        assert "OTEL_SDK_DISABLED" not in env


# --- topics ----------------------------------------------------------------------------------


def test_strimzi_example_topics_match_the_application() -> None:
    topics = [d for d in yaml.safe_load_all((CHART / "examples" / "strimzi-topics.yaml").read_text()) if d]
    assert all(t["kind"] == "KafkaTopic" for t in topics)
    names = [t["spec"]["topicName"] for t in topics]
    expected = TopicNames.with_prefix(VALUES["topicPrefix"]).all()
    assert sorted(names) == sorted(expected)
    for topic in topics:
        assert topic["metadata"]["name"] == topic["spec"]["topicName"].replace(".", "-")
        # One partition count for every topic, the one `olp topics ensure` expects.
        assert topic["spec"]["partitions"] == VALUES["kafka"]["partitions"], topic["spec"]["topicName"]
        assert topic["spec"]["replicas"] == VALUES["kafka"]["replicationFactor"]
    # The configs `olp topics ensure` wants (compaction for documents and policy, retention for
    # the rest), so that it reports no drift; settings olp does not own (min.insync.replicas) may
    # be added.
    wanted = TopicNames.with_prefix(VALUES["topicPrefix"]).configs()
    for topic in topics:
        name = topic["spec"]["topicName"]
        config = {key: str(value) for key, value in topic["spec"]["config"].items()}
        assert {key: config.get(key) for key in wanted[name]} == wanted[name], name
        if config["cleanup.policy"] == "compact":
            assert "retention.ms" not in config, name
    values = yaml.safe_load((CHART / "examples" / "values-strimzi.yaml").read_text())
    assert values["topicsJob"]["enabled"] is False  # Strimzi owns the topics
    assert values["kafka"]["partitions"] == VALUES["kafka"]["partitions"]


def test_chart_topic_prefix_matches_the_application_default() -> None:
    assert VALUES["topicPrefix"] == Settings.model_fields["topic_prefix"].default


def test_keda_watches_the_input_topics_of_each_group(production_docs: Docs) -> None:
    prefix = PROD_VALUES["topicPrefix"]
    all_topics = set(TopicNames.with_prefix(prefix).all())
    groups = {g["name"]: g for g in PROD_VALUES["workers"]["groups"]}
    for name, scaled in by_kind(production_docs, "ScaledObject").items():
        group = groups[name.removeprefix("olp-")]
        kafka_triggers = [t for t in scaled["spec"]["triggers"] if t["type"] == "kafka"]
        topics = [t["metadata"]["topic"] for t in kafka_triggers]
        assert topics == [f"{prefix}{s}" for role in group["roles"] for s in ROLE_INPUTS[role]]
        assert set(topics) <= all_topics
        for trigger in kafka_triggers:
            assert trigger["metadata"]["consumerGroup"] == PROD_VALUES["appId"]
            assert trigger["metadata"]["sasl"] == "scram_sha512"
            assert trigger["metadata"]["tls"] == "enable"
            assert trigger["authenticationRef"] == {"name": "olp-kafka"}
        assert any(t["type"] == "cpu" for t in scaled["spec"]["triggers"])


# --- values, schema and README in step -------------------------------------------------------


def sets(*assignments: str) -> list[str]:
    return [arg for assignment in assignments for arg in ("--set", assignment)]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (sets("workers.defaults.replicas=three"), "want integer"),
        (sets("kafka.securityProtocol=SASL"), "/kafka/securityProtocol"),
        (sets("kafka.partitions=0"), "/kafka/partitions"),
        (sets("kafka.bootstrapServers=no-port"), "/kafka/bootstrapServers"),
        (sets("workers.groups[0].name=s", "workers.groups[0].roles={splitter}"), "roles"),
        (sets("workers.defaults.replicaz=2"), "replicaz"),
        (sets("config.kafka.bootstrap_servers=x:1"), "/config"),
        (sets("catalog.models[0].name=m", "catalog.models[0].base_url=ftp://x"), "base_url"),
        # A sender's name is a segment of its (case-folded) environment variables.
        (
            sets("ingest.senders.Studio_A.feeds={a}", "ingest.senders.Studio_A.token.existingSecret=s"),
            "Studio_A",
        ),
        (sets("ingest.senders.a.feeds={a}"), "token"),
        (sets("config.ingest.limits.default.max_streams=0"), "max_streams"),
    ],
)
def test_schema_rejects_bad_values(setting: list[str], message: str) -> None:
    commands: list[list[str | Path]] = [["lint", CHART], ["template", "olp", CHART]]
    for command in commands:
        result = helm(*command, *setting)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert "schema" in output and message in output, output


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (sets("kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=PLAIN"), "existingSecret"),
        (sets("kafka.sasl.existingSecret=x"), "does not use SASL"),
        (sets("kafka.tls.caSecret=ca"), "does not use TLS"),
        (sets("kafka.tls.clientSecret=cert"), "kafka.tls.clientSecret is set but"),
        (
            sets("kafka.securityProtocol=SSL", "kafka.tls.keyPasswordKey=password"),
            "kafka.tls.keyPasswordKey needs kafka.tls.clientSecret",
        ),
        (
            sets(
                "kafka.securityProtocol=SASL_SSL",
                "kafka.sasl.mechanism=OAUTHBEARER",
                "kafka.sasl.existingSecret=oauth",
            ),
            "kafka.sasl.oauthbearer.tokenEndpointUrl",
        ),
        (sets("otel.enabled=true"), "otel.endpoint"),
        (
            sets(
                "catalog.models[0].name=m",
                "catalog.models[0].base_url=http://m/v1",
                "catalog.models[0].api_key_env=K",
            ),
            "modelApiKeys.envVars",
        ),
        (
            sets(
                "workers.groups[0].name=a",
                "workers.groups[0].roles={format_checker}",
                "workers.groups[1].name=b",
                "workers.groups[1].roles={format_checker}",
            ),
            "one group",
        ),
        (sets("documents.webhookSecret.existingSecret=w"), "need config.documents.webhook.url"),
    ],
)
def test_inconsistent_values_fail_with_a_reason(setting: list[str], message: str) -> None:
    result = helm("template", "olp", CHART, *REQUIRED, *setting)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_group_override_beats_defaults_even_when_false(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "workers": {
                    "defaults": {"autoscaling": {"enabled": True}, "spreadAcrossNodes": True},
                    "groups": [
                        {"name": "splitter", "roles": ["chunk_splitter"]},
                        {
                            "name": "rest",
                            "roles": sorted(ALL_ROLES - {"chunk_splitter"}),
                            "replicas": 2,
                            "autoscaling": {"enabled": False},
                            "spreadAcrossNodes": False,
                        },
                    ],
                }
            }
        )
    )
    docs = render("-f", values)
    assert set(by_kind(docs, "HorizontalPodAutoscaler")) == {"olp-splitter"}
    rest = by_kind(docs, "Deployment")["olp-rest"]["spec"]
    assert rest["replicas"] == 2
    assert "topologySpreadConstraints" not in rest["template"]["spec"]
    assert by_kind(docs, "HorizontalPodAutoscaler")["olp-splitter"]["spec"]["maxReplicas"] == 6


def test_config_changes_roll_the_pods(default_docs: Docs) -> None:
    def checksums(docs: Docs) -> dict[str, str]:
        return {
            name: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for name, d in by_kind(docs, "Deployment").items()
        }

    before = checksums(default_docs)
    assert len(set(before.values())) == 1
    for setting in ("config.reask_on_junk=2", "catalog.models[0].timeout_s=5"):
        if setting.startswith("catalog"):
            args = ["--set", "catalog.models[0].name=m", "--set", "catalog.models[0].base_url=http://m/v1"]
        else:
            args = []
        after = checksums(render("--set", setting, *args))
        assert all(after[name] != before[name] for name in before), setting


def test_values_are_documented_and_the_readme_table_is_in_step() -> None:
    values_doc = _load_values_doc()
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    rows, undocumented = values_doc.rows(text)
    assert undocumented == [], f"values without a `# --` comment: {undocumented}"
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    wanted = values_doc.update_readme(readme, values_doc.render_table(rows))
    assert readme == wanted, "README values table is stale: run python deploy/helm/tools/values_doc.py"
    table_keys = {row.key for row in rows}
    table_top = {key.split(".")[0] for key in table_keys}
    assert table_top == set(VALUES), f"top-level keys missing from the README: {set(VALUES) - table_top}"
    for key in table_keys:
        assert f"| `{key}` |" in readme


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and "properties" not in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    if "$ref" in node:  # properties next to a $ref: merge the referenced ones in
        base = _resolve(SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]])
        return {**base, **node, "properties": {**base.get("properties", {}), **node["properties"]}}
    return node


def _schema_gaps(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    schema = _resolve(schema)
    if not isinstance(value, dict) or "properties" not in schema:
        return
    for key, sub in value.items():
        if key in schema["properties"]:
            yield from _schema_gaps(sub, schema["properties"][key], f"{path}.{key}")
        elif not isinstance(schema.get("additionalProperties"), dict):
            yield f"{path}.{key}"


def test_schema_describes_every_value() -> None:
    assert list(_schema_gaps(VALUES, SCHEMA, "")) == []
    assert list(_schema_gaps(PROD_VALUES, SCHEMA, "")) == []
    assert set(SCHEMA["properties"]) - {"global"} == set(VALUES)
    for group in VALUES["workers"]["groups"]:
        assert list(_schema_gaps(group, SCHEMA["$defs"]["workerGroup"], "group")) == []


def test_schema_mirrors_the_application_models() -> None:
    """The schema's config file and catalog sections accept exactly what olp reads."""
    defs = SCHEMA["$defs"]
    assert set(defs["feed"]["properties"]) == set(FeedSettings.model_fields)
    learner = SCHEMA["properties"]["config"]["properties"]["learner"]["properties"]
    # The snapshot path is a chart value (an environment variable), not a config file entry.
    assert set(learner) == set(LearnerSettings.model_fields) - {"snapshot_path"}
    assert set(SCHEMA["properties"]["config"]["properties"]) <= set(Settings.model_fields)
    # Nothing in the chart turns on the embedded broker's topic re-creation.
    assert "recreate_lost_topics" not in SCHEMA["properties"]["config"]["properties"]
    assert set(defs["catalogModel"]["properties"]) == set(ModelSpec.model_fields)
    assert set(SCHEMA["properties"]["catalog"]["properties"]) == set(Catalog.model_fields)
    assert set(defs["role"]["enum"]) == ALL_ROLES


def test_install_script_is_idempotent() -> None:
    if not HELM.exists():
        pytest.skip("helm is not installed at .tools/helm: run `bash scripts/install-helm.sh`")
    script = REPO / "scripts" / "install-helm.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout


# --- the feed services -----------------------------------------------------------------------


def test_feed_services(production_docs: Docs) -> None:
    """`olp ingest-server` and `olp documents-server`: on the pod's addresses, token from its
    Secret, a Service and a PDB selecting exactly their pods, an Ingress when asked for."""
    deployments = by_kind(production_docs, "Deployment")
    services = by_kind(production_docs, "Service")
    pdbs = by_kind(production_docs, "PodDisruptionBudget")
    tokens = {
        "olp-ingest": {
            "OLP_INGEST__SENDERS__STUDIO-A__TOKEN": {"name": "olp-ingest-senders", "key": "studio-a"},
            "OLP_INGEST__SENDERS__NEWSDESK__TOKEN": {"name": "olp-ingest-newsdesk", "key": "token"},
        },
        "olp-documents": {
            "OLP_DOCUMENTS__READ_TOKEN": {"name": "olp-documents-token", "key": "token"},
            "OLP_DOCUMENTS__WEBHOOK__TOKEN": {"name": "olp-webhook-token", "key": "token"},
            "OLP_DOCUMENTS__WEBHOOK__SECRET": {"name": "olp-webhook-secret", "key": "secret"},
        },
    }
    for name, port in FEED_SERVICES.items():
        deployment = deployments[name]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == name.removeprefix("olp-")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert [*container["command"], *container["args"]] == ["olp", f"{name.removeprefix('olp-')}-server"]
        env = env_of(container)
        prefix = f"OLP_{name.removeprefix('olp-').upper()}__"
        assert env[f"{prefix}HOST"]["value"] == "0.0.0.0"
        assert env[f"{prefix}PORT"]["value"] == str(port)
        for var, ref in tokens[name].items():
            assert env[var]["valueFrom"]["secretKeyRef"] == ref, var
        assert services[name]["spec"]["selector"] == selector
        assert services[name]["spec"]["ports"] == [
            {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
        ]
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == selector
    assert deployments["olp-ingest"]["spec"]["replicas"] == PROD_VALUES["ingest"]["replicas"]
    ingress = by_kind(production_docs, "Ingress")
    assert set(ingress) == {"olp-ingest"}
    rule = ingress["olp-ingest"]["spec"]["rules"][0]
    assert rule["host"] == "ingest.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "olp-ingest", "port": {"name": "http"}}
    assert ingress["olp-ingest"]["spec"]["tls"] == PROD_VALUES["ingest"]["ingress"]["tls"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (sets("ingest.enabled=true"), "ingest.senders"),
        (sets("documents.enabled=true"), "documents.readToken.existingSecret"),
        (sets("networkPolicy.enabled=false"), "policyStore.apiToken.existingSecret"),
        (sets("metrics.serviceMonitor.enabled=true"), "needs metrics.enabled"),
        (sets("schemaRegistryUrl=http://r:8081", "schemaRegistry.existingSecret=reg"), "not both"),
    ],
)
def test_unprotected_services_do_not_render(setting: list[str], message: str) -> None:
    """A service on the pod's addresses without its token (or, for the policy store, without
    the NetworkPolicy in front of it) is refused, as is a half-configured option."""
    result = helm("template", "olp", CHART, *REQUIRED, *setting)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_policy_store_needs_a_read_token_or_an_explicit_opening() -> None:
    """The store listens on the pod's addresses and its dashboard shows transcript text: without
    a read token the chart refuses to render, unless unauthenticated reads are asked for."""
    result = helm("template", "olp", CHART)
    assert result.returncode != 0
    assert "policyStore.readToken.existingSecret is required" in result.stderr
    assert "allowUnauthenticatedReads" in result.stderr
    opened = helm("template", "olp", CHART, "--set", "policyStore.allowUnauthenticatedReads=true")
    assert opened.returncode == 0, opened.stderr
    docs = [d for d in yaml.safe_load_all(opened.stdout) if d]
    env = env_of(by_kind(docs, "Deployment")["olp-policy-store"]["spec"]["template"]["spec"]["containers"][0])
    assert env["OLP_ALLOW_UNAUTHENTICATED_READS"]["value"] == "true"
    assert "OLP_READ_TOKEN" not in env
    notes = helm(
        "install", "olp", CHART, "--dry-run=client", "--set", "policyStore.allowUnauthenticatedReads=true"
    )
    assert "WARNING: policyStore.allowUnauthenticatedReads is true" in notes.stdout


def test_policy_store_without_network_policy_needs_its_token() -> None:
    docs = render("--set", "networkPolicy.enabled=false", "--set", "policyStore.apiToken.existingSecret=t")
    assert not by_kind(docs, "NetworkPolicy")


# --- network policies ------------------------------------------------------------------------


def _ingress_rules(policy: dict[str, Any]) -> Docs:
    rules: Docs = policy["spec"].get("ingress", [])
    for rule in rules:
        assert rule["from"], "an ingress rule without `from` would admit everyone"
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    return rules


def test_network_policies_admit_only_the_configured_peers(production_docs: Docs) -> None:
    policies = by_kind(production_docs, "NetworkPolicy")
    release = {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "olp", "app.kubernetes.io/instance": "olp"}}
    }
    deny = policies["olp-default-deny-ingress"]["spec"]
    assert deny["podSelector"] == release["podSelector"] and "ingress" not in deny
    network = PROD_VALUES["networkPolicy"]
    expected = {
        "olp-policy-store": [release, *network["ingressFrom"]],
        "olp-ingest": network["ingestFrom"],
        "olp-documents": network["documentsFrom"],
        "olp-metrics": network["metricsFrom"],
    }
    for name, peers in expected.items():
        assert [rule["from"] for rule in _ingress_rules(policies[name])] == [peers], name
    deployments = by_kind(production_docs, "Deployment")
    for name in ("olp-policy-store", "olp-ingest", "olp-documents"):
        selector = policies[name]["spec"]["podSelector"]["matchLabels"]
        assert selector == deployments[name]["spec"]["selector"]["matchLabels"], name
    # /metrics: the workers and the policy store, not the feed services (they serve none).
    scraped = policies["olp-metrics"]["spec"]["podSelector"]["matchExpressions"]
    assert {
        "key": "app.kubernetes.io/component",
        "operator": "NotIn",
        "values": ["ingest", "documents", "topics"],
    } in scraped


def test_documents_open_reads_renders_without_a_read_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """config.documents.open_reads (behind a proxy that authenticates readers) replaces the
    read token; the service then starts off loopback without one."""
    docs = render("--set", "documents.enabled=true", "--set", "config.documents.open_reads=true")
    pod = by_kind(docs, "Deployment")["olp-documents"]["spec"]["template"]["spec"]
    assert "OLP_DOCUMENTS__READ_TOKEN" not in env_of(pod["containers"][0])
    documents = _settings_from(pod, docs, monkeypatch, tmp_path).documents
    assert (documents.open_reads, documents.read_token, documents.host) == (True, None, "0.0.0.0")


def test_feed_services_are_closed_until_clients_are_named() -> None:
    docs = render(
        "--set", "ingest.enabled=true", "--set", "ingest.senders.a.feeds={default}",
        "--set", "ingest.senders.a.token.existingSecret=t",
        "--set", "documents.enabled=true", "--set", "documents.readToken.existingSecret=r",
    )  # fmt: skip
    policies = by_kind(docs, "NetworkPolicy")
    assert "olp-ingest" not in policies and "olp-documents" not in policies  # only the deny-all applies
    assert "olp-default-deny-ingress" in policies


def _egress_ports(policy: dict[str, Any]) -> list[tuple[tuple[str, ...], set[int]]]:
    """(peers as YAML, ports) per egress rule."""
    return [
        (tuple(yaml.safe_dump(p) for p in rule.get("to", [])), {p["port"] for p in rule.get("ports", [])})
        for rule in policy["spec"]["egress"]
    ]


def test_egress_opens_the_configured_ports(default_docs: Docs, production_docs: Docs) -> None:
    default = _egress_ports(by_kind(default_docs, "NetworkPolicy")["olp-egress"])
    assert ((), {53}) in default  # DNS
    assert ((), {9092}) in default  # kafka.bootstrapServers
    assert ((), {8000}) in default  # the catalog's model server
    production = _egress_ports(by_kind(production_docs, "NetworkPolicy")["olp-egress"])
    assert ((), {9096}) in production  # MSK's SASL port, from kafka.bootstrapServers
    assert ((), {8081, 443, 8000}) in production  # registry, models, news feed and webhook (443)
    assert ((), {4318}) in production  # the OTLP collector
    webhook_on_9000 = render(
        "-f", PRODUCTION, "--set", "config.documents.webhook.url=http://hooks.internal:9000/x"
    )
    assert ((), {8081, 443, 8000, 9000}) in _egress_ports(
        by_kind(webhook_on_9000, "NetworkPolicy")["olp-egress"]
    )
    for rule in PROD_VALUES["networkPolicy"]["egress"]["rules"]:
        assert rule in by_kind(production_docs, "NetworkPolicy")["olp-egress"]["spec"]["egress"]
    example = render("-f", EXAMPLE)
    peers = _egress_ports(by_kind(example, "NetworkPolicy")["olp-egress"])
    kafka_to = tuple(yaml.safe_dump(p) for p in EXAMPLE_VALUES["networkPolicy"]["egress"]["kafkaTo"])
    otel_to = tuple(yaml.safe_dump(p) for p in EXAMPLE_VALUES["networkPolicy"]["egress"]["otelTo"])
    assert (kafka_to, {9093}) in peers and (otel_to, {4318}) in peers


# --- metrics, registry credentials, Kafka client settings and certificates --------------------


def test_service_monitors(production_docs: Docs) -> None:
    monitors = by_kind(production_docs, "ServiceMonitor")
    services = by_kind(production_docs, "Service")
    assert set(monitors) == {*WORKERS, "olp-policy-store"}
    for name, monitor in monitors.items():
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        assert monitor["spec"]["endpoints"][0]["port"] == "http"
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["olp"]}
        service = services[name]  # a worker group gets a Service for its scrapes
        labels = service["metadata"]["labels"]
        assert all(labels[k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()), name
        assert service["spec"]["ports"][0]["port"] == (8642 if name == "olp-policy-store" else 6066)


def test_schema_registry_url_from_a_secret() -> None:
    docs = render("--set", "schemaRegistry.existingSecret=registry", "--set", "schemaRegistry.urlKey=u")
    for _, pod in pod_specs(docs):
        entry = env_of(pod["containers"][0])["OLP_SCHEMA_REGISTRY_URL"]
        assert entry == {
            "name": "OLP_SCHEMA_REGISTRY_URL",
            "valueFrom": {"secretKeyRef": {"name": "registry", "key": "u"}},
        }


def test_kafka_volumes_reach_every_pod(production_docs: Docs) -> None:
    volume = PROD_VALUES["kafka"]["extraVolumes"][0]
    mount = PROD_VALUES["kafka"]["extraVolumeMounts"][0]
    seen = set()
    for doc, pod in pod_specs(production_docs):
        assert volume in pod["volumes"], doc["metadata"]["name"]
        assert mount in pod["containers"][0]["volumeMounts"], doc["metadata"]["name"]
        seen.add(doc["metadata"]["name"])
    assert seen == {*WORKERS, *FEED_SERVICES, "olp-policy-store", "olp-topics"}


DEDICATED_KAFKA_VALUES = {
    "bootstrap_servers": "bootstrapServers",
    "security_protocol": "securityProtocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_username": "sasl.username / sasl.usernameKey",
    "sasl_password": "sasl.existingSecret + sasl.passwordKey",
    "sasl_oauthbearer_token_endpoint_url": "sasl.oauthbearer.tokenEndpointUrl",
    "sasl_oauthbearer_client_id": "sasl.oauthbearer.clientId",
    "sasl_oauthbearer_client_secret": "sasl.existingSecret + sasl.oauthbearer.clientSecretKey",
    "sasl_oauthbearer_scope": "sasl.oauthbearer.scope",
    "ssl_cafile": "tls.caSecret",
    "ssl_certfile": "tls.clientSecret + tls.certKey",
    "ssl_keyfile": "tls.clientSecret + tls.keyKey",
    "ssl_key_password": "tls.clientSecret + tls.keyPasswordKey",
    "ssl_check_hostname": "tls.checkHostname",
    "partitions": "partitions",
    "replication_factor": "replicationFactor",
    "producer_max_batch_size": "producerMaxBatchSize",
}
"""KafkaSettings fields with a value of their own under `kafka.` (connection, secrets, topics)."""


def test_every_kafka_setting_is_reachable_from_the_values() -> None:
    """Each KafkaSettings field has a value: a dedicated one or a key of kafka.config, which the
    schema lists exactly."""
    config = set(SCHEMA["properties"]["kafka"]["properties"]["config"]["properties"])
    assert config == set(KafkaSettings.model_fields) - set(DEDICATED_KAFKA_VALUES)
    assert set(VALUES["kafka"]["config"]) <= config
    # The chart's defaults are the application's (a real cluster's), in bytes where it says so.
    fields = KafkaSettings.model_fields
    assert VALUES["kafka"]["producerMaxBatchSize"] == fields["producer_max_batch_size"].default
    for key, value in VALUES["kafka"]["config"].items():
        field = fields[key]
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        assert value == default, key
    assert VALUES["kafka"]["tls"]["checkHostname"] is fields["ssl_check_hostname"].default


OAUTHBEARER = sets(
    "kafka.securityProtocol=SASL_SSL",
    "kafka.sasl.mechanism=OAUTHBEARER",
    "kafka.sasl.existingSecret=olp-oauth",
    "kafka.sasl.oauthbearer.tokenEndpointUrl=https://idp.example.com:8443/oauth2/token",
    "kafka.sasl.oauthbearer.clientId=olp-client",
    "kafka.sasl.oauthbearer.scope=kafka",
    "kafka.tls.checkHostname=false",
    "workers.defaults.keda.enabled=true",
)


def test_oauthbearer_reaches_every_pod_and_keda(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = render(*OAUTHBEARER)
    for doc, pod in pod_specs(docs):
        env = env_of(pod["containers"][0])
        secret = env["OLP_KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": "olp-oauth", "key": "clientSecret"}
        assert "OLP_KAFKA__SASL_PASSWORD" not in env and "OLP_KAFKA__SASL_USERNAME" not in env
        kafka = _settings_from(pod, docs, monkeypatch, tmp_path).kafka
        where = doc["metadata"]["name"]
        assert kafka.sasl_mechanism == "OAUTHBEARER", where
        assert kafka.sasl_oauthbearer_token_endpoint_url == "https://idp.example.com:8443/oauth2/token", where
        assert kafka.sasl_oauthbearer_client_id == "olp-client", where
        assert kafka.sasl_oauthbearer_scope == "kafka", where
        assert kafka.sasl_oauthbearer_client_secret is not None, where
        assert kafka.ssl_check_hostname is False, where
        assert kafka.confluent_config()["sasl.oauthbearer.method"] == "oidc"
    auth = by_kind(docs, "TriggerAuthentication")["olp-kafka"]["spec"]
    assert {(e["parameter"], e["name"]) for e in auth["env"]} == {
        ("username", "OLP_KAFKA__SASL_OAUTHBEARER_CLIENT_ID"),
        ("oauthTokenEndpointUri", "OLP_KAFKA__SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"),
        ("scopes", "OLP_KAFKA__SASL_OAUTHBEARER_SCOPE"),
    }
    assert [(r["parameter"], r["key"]) for r in auth["secretTargetRef"]] == [("password", "clientSecret")]
    # The token endpoint's port is open for egress.
    egress = by_kind(docs, "NetworkPolicy")["olp-egress"]["spec"]["egress"]
    assert any({"port": 8443, "protocol": "TCP"} in rule.get("ports", []) for rule in egress)
    for scaled in by_kind(docs, "ScaledObject").values():
        assert {t["metadata"]["sasl"] for t in scaled["spec"]["triggers"] if t["type"] == "kafka"} == {
            "oauthbearer"
        }


def test_client_pass_through_reaches_the_config_file(
    production_docs: Docs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kafka_values = PROD_VALUES["kafka"]["config"]
    for doc, pod in pod_specs(production_docs):
        kafka = _settings_from(pod, production_docs, monkeypatch, tmp_path).kafka
        assert kafka.confluent_extra == kafka_values["confluent_extra"], doc["metadata"]["name"]
        assert kafka.aiokafka_extra == kafka_values["aiokafka_extra"], doc["metadata"]["name"]
        assert kafka.confluent_config()["client.rack"] == "eu-west-1a"


def test_config_file_service_sections_mirror_the_application() -> None:
    """config.ingest / config.documents take every field but those the chart sets itself."""
    sections = SCHEMA["properties"]["config"]["properties"]
    ingest = sections["ingest"]["properties"]
    assert set(ingest) == set(IngestSettings.model_fields) - {"host", "port", "senders"}
    # The senders are chart values (ingest.senders), their tokens references to Secrets.
    sender = SCHEMA["properties"]["ingest"]["properties"]["senders"]["additionalProperties"]["properties"]
    assert set(sender) == set(SenderSettings.model_fields)
    assert set(sender["token"]["properties"]) == {"existingSecret", "key"}
    assert set(ingest["limits"]["additionalProperties"]["properties"]) == set(FeedLimits.model_fields)
    assert set(ingest["news"]["items"]["properties"]) == set(NewsSource.model_fields)
    assert set(sections["documents"]["properties"]) == set(DocumentsSettings.model_fields) - {
        "host",
        "port",
        "read_token",
    }
    webhook = sections["documents"]["properties"]["webhook"]["oneOf"][0]["properties"]
    assert set(webhook) == set(WebhookSettings.model_fields) - {"token", "secret"}


# --- the production example, Kubernetes API schemas and a security scan ----------------------


def test_production_example_renders_every_service() -> None:
    docs = render("-f", EXAMPLE)
    assert set(by_kind(docs, "Deployment")) == {*WORKERS, *FEED_SERVICES, "olp-policy-store"}
    assert set(by_kind(docs, "Ingress")) == set(FEED_SERVICES)
    env = env_of(by_kind(docs, "Deployment")["olp-splitter"]["spec"]["template"]["spec"]["containers"][0])
    kafka = EXAMPLE_VALUES["kafka"]
    assert (kafka["securityProtocol"], kafka["sasl"]["mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert env["OLP_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "olp", "key": "password"}
    assert env["OLP_KAFKA__SSL_CAFILE"]["value"] == "/etc/olp/kafka/ca.crt"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == EXAMPLE_VALUES["otel"]["endpoint"]
    catalog = yaml.safe_load(by_kind(docs, "ConfigMap")["olp-catalog"]["data"]["catalog.yaml"])
    assert {m["structured_output"] for m in catalog["models"]} == {"json_schema"}
    assert all(m["base_url"] == "https://api.openai.com/v1" for m in catalog["models"])


def test_production_example_catalog_loads(tmp_path: Path) -> None:
    if "structured_output" not in ModelSpec.model_fields:
        pytest.skip("the catalog's structured_output field is not in olp.catalog.ModelSpec yet")
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(EXAMPLE_VALUES["catalog"]), encoding="utf-8")
    assert [m.name for m in load_catalog(path).models] == [
        m["name"] for m in EXAMPLE_VALUES["catalog"]["models"]
    ]


RENDERINGS = {"default": REQUIRED_VALUES, "production": PROD_VALUES, "example": EXAMPLE_VALUES}
"""The value sets the scans render: name -> the values file's overrides."""


def render_values(name: str) -> str:
    files: dict[str, list[str | Path]] = {
        "default": [*REQUIRED],
        "production": ["-f", PRODUCTION],
        "example": ["-f", EXAMPLE],
    }
    args = files[name]
    result = helm("template", "olp", CHART, "--namespace", "olp", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}
"""Custom resources (KEDA, Prometheus operator): no Kubernetes API schema validates them."""
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")
"""The chart's kubeVersion floor and the newest version kubernetes-validate ships schemas for."""


@pytest.mark.parametrize("name", list(RENDERINGS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_api_schemas(name: str, version: str) -> None:
    """`kubernetes-validate --strict`: every rendered object against the API schemas (unknown
    fields are errors)."""
    import kubernetes_validate

    docs = [doc for doc in yaml.safe_load_all(render_values(name)) if doc]
    checked = 0
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError
        checked += 1
    assert checked >= 15


CHECKOV_ACCEPTED = {
    "CKV_K8S_35": (
        "Prefer secrets as files over environment variables: the application reads credentials "
        "from environment variables (olp/settings.py; model keys by the variable the catalog "
        "names). They come by secretKeyRef, so no secret is in a manifest, a value or the release."
    ),
}
CHECKOV_ACCEPTED_WITH_A_TAG = {
    "CKV_K8S_43": "Image should use a digest: set image.digest in production (the test values do).",
    "CKV_K8S_15": "Image pull policy Always: needless with a digest; with a tag, IfNotPresent is chosen.",
}
"""Checks that fail only while the image is pinned by tag rather than by `image.digest`."""


def _checkov() -> str:
    for candidate in (shutil.which("checkov"), REPO / ".tools" / "checkov" / "bin" / "checkov"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.skip("checkov is not installed: run `bash deploy/helm/tools/install-checkov.sh`")


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_security_scan_finds_only_accepted_checks(name: str, tmp_path: Path) -> None:
    """checkov's Kubernetes checks on the rendered manifests: every failed check is listed above
    with its reason, and the scan covers what it should."""
    checkov = _checkov()
    (tmp_path / "manifests.yaml").write_text(render_values(name), encoding="utf-8")
    scan = subprocess.run(
        [checkov, "-d", str(tmp_path), "--framework", "kubernetes", "--quiet", "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = json.loads(scan.stdout)
    failed = {check["check_id"]: check["check_name"] for check in report["results"]["failed_checks"]}
    accepted = dict(CHECKOV_ACCEPTED)
    if not _merged(VALUES, RENDERINGS[name])["image"]["digest"]:
        accepted |= CHECKOV_ACCEPTED_WITH_A_TAG
    assert set(failed) <= set(accepted), {
        check: why for check, why in failed.items() if check not in accepted
    }
    assert "CKV_K8S_21" not in failed  # every object names its namespace
    assert report["summary"]["passed"] > 300
