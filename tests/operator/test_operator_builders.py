"""The pure builders: manifests from a spec, checked field by field and against Kubernetes' schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetserve.operator import defaults
from fleetserve.operator.manifests.children import build_children, desired_replicas, service_url
from fleetserve.operator.manifests.meta import Owner
from fleetserve.operator.manifests.runtime import build_runtime_deployment, serve_args
from fleetserve.operator.spec import InferenceServiceSpec
from fleetserve.runtime import wire

K8S_VERSION = "1.30"
OWNER = Owner(name="qwen", namespace="ml", uid="uid-1")
IMAGE = "registry.test/fleetserve:1"
MINIMAL = {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"}}
GPU_INGRESS = {
    "model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct", "servedName": "llama",
              "hubTokenSecret": {"name": "hf"}},
    "runtime": {"resources": {"gpus": 2, "requests": {"cpu": 8, "memory": "64Gi"}, "limits": {"memory": "80Gi"}},
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "contextLength": 32768, "maxRunningRequests": 128, "dtype": "bfloat16"},
    "replicas": {"min": 1, "max": 4},
    "router": {"policy": "least_load", "replicas": 2},
    "ingress": {"host": "llm.example.com", "className": "nginx", "tlsSecretName": "llm-tls",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}},
    "apiKeySecret": {"name": "llm-keys"},
}
PVC_LORA = {
    "model": {"source": "pvc://models/qwen3/8b"},
    "runtime": {"env": [{"name": "A", "value": "1"}, {"name": "B", "secretKeyRef": {"name": "s", "key": "k"}}],
                "args": ["--chunked-prefill-size", "4096"], "maxQueuedRequests": 0},
    "adapters": [{"name": "sql", "source": "pvc://models/adapters/sql"}],
    "replicas": {"count": 0},
}
PLATFORM = {  # every field a platform team reaches for
    "model": {"source": "hf://Qwen/Qwen3-8B"},
    "runtime": {
        "resources": {"gpus": 1},
        "podAnnotations": {"team": "search"}, "podLabels": {"cost-center": "42"},
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
                "matchLabels": {"fleetserve.io/inference-service": "qwen"}}}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
        "priorityClassName": "inference-high", "runtimeClassName": "nvidia",
        "volumes": [{"name": "extra", "configMap": {"name": "prompts"}}],
        "volumeMounts": [{"name": "extra", "mountPath": "/etc/prompts", "readOnly": True}],
        "modelCache": {"persistentVolumeClaim": "hf-cache"}, "shmSizeLimit": "8Gi",
        "rollout": {"maxSurge": "25%", "maxUnavailable": 0},
    },
    "imagePullSecrets": ["regcred"],
    "disruptionBudget": {"maxUnavailable": "50%"},
}
SPECS: dict[str, dict[str, Any]] = {"minimal": MINIMAL, "gpu-ingress": GPU_INGRESS, "pvc-lora": PVC_LORA,
                                    "platform": PLATFORM}


def spec_of(raw: dict) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(raw)


def runtime_pod(raw: dict) -> dict:
    return build_runtime_deployment(OWNER, spec_of(raw), IMAGE, 1)["spec"]["template"]["spec"]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_child_validates_against_kubernetes_schemas(name):
    for manifest in build_children(OWNER, spec_of(SPECS[name]), IMAGE, 2):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_hub_model_is_downloaded_with_the_token_from_its_secret():
    pod = runtime_pod(GPU_INGRESS)
    (container,) = pod["containers"]
    assert flag(container["args"], "--model-path") == "meta-llama/Llama-3.1-8B-Instruct"
    assert flag(container["args"], "--served-model-name") == "llama"
    env = {e["name"]: e for e in container["env"]}
    assert env[defaults.ENV_HF_TOKEN]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert env[defaults.ENV_API_KEY]["valueFrom"] == {"secretKeyRef": {"name": "llm-keys", "key": "api-key"}}
    assert "--api-key" not in container["args"]  # a key on the command line would show in `ps` and events
    assert all(v.get("persistentVolumeClaim") is None for v in pod["volumes"])


def test_pvc_model_is_mounted_read_only():
    pod = runtime_pod(PVC_LORA)
    (container,) = pod["containers"]
    assert flag(container["args"], "--model-path") == f"{defaults.MODEL_MOUNT_PATH}/qwen3/8b"
    assert flag(container["args"], "--served-model-name") == "8b"
    volume = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {"name": volume["name"], "mountPath": defaults.MODEL_MOUNT_PATH, "readOnly": True}


def test_gpus_become_nvidia_resources_cuda_device_and_shared_memory():
    pod = runtime_pod(GPU_INGRESS)
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"memory": "80Gi", "nvidia.com/gpu": "2"}
    assert container["resources"]["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert flag(container["args"], "--device") == "cuda"
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_cpu_only_spec_runs_on_cpu_without_gpu_resources():
    (container,) = runtime_pod(MINIMAL)["containers"]
    assert flag(container["args"], "--device") == "cpu"
    assert "nvidia.com/gpu" not in str(container.get("resources"))


def test_probes_give_a_loading_model_its_whole_startup_budget():
    raw = {**MINIMAL, "runtime": {"startupTimeoutSeconds": 3600}}
    (container,) = runtime_pod(raw)["containers"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3600
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": wire.PATH_HEALTH, "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": wire.DEFAULT_PORT, "protocol": "TCP"}]


def test_pods_run_non_root_without_api_access_and_drain_on_stop():
    pod = runtime_pod(MINIMAL)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] == defaults.TERMINATION_GRACE_SECONDS


def test_serve_args_carry_the_engine_settings_then_the_users_extra_args():
    args = serve_args(spec_of(GPU_INGRESS))
    assert args[0] == "serve"
    assert (flag(args, "--context-length"), flag(args, "--max-running-requests")) == ("32768", "128")
    assert (flag(args, "--dtype"), flag(args, "--port"), flag(args, "--host")) == ("bfloat16", "30000", "0.0.0.0")
    assert "--enable-cache-report" in args and "--enable-lora" not in args
    lora = serve_args(spec_of(PVC_LORA))
    assert "--enable-lora" in lora
    assert flag(lora, "--max-queued-requests") == "0"
    assert lora[-2:] == ["--chunked-prefill-size", "4096"]


def test_the_runtime_drains_for_its_grace_period_less_a_margin():
    assert flag(serve_args(spec_of(GPU_INGRESS)), "--graceful-shutdown-timeout") == str(
        defaults.TERMINATION_GRACE_SECONDS - defaults.SHUTDOWN_MARGIN_SECONDS)  # 110 of the default 120 s
    for grace, drain in ((600, "590"), (5, "1"), (0, "1")):
        spec = spec_of({**GPU_INGRESS, "runtime": {**GPU_INGRESS["runtime"], "terminationGracePeriodSeconds": grace}})
        assert flag(serve_args(spec), "--graceful-shutdown-timeout") == drain


def test_user_env_keeps_literal_and_secret_values():
    env = runtime_pod(PVC_LORA)["containers"][0]["env"]
    assert {"name": "A", "value": "1"} in env
    assert {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}} in env


def by_kind(raw: dict) -> dict[tuple[str, str], dict]:
    return {(m["kind"], m["metadata"]["name"]): m for m in build_children(OWNER, spec_of(raw), IMAGE, 1)}


def test_router_discovers_runtime_pods_with_read_only_rights_in_its_namespace():
    children = by_kind(GPU_INGRESS)
    router = children[("Deployment", "qwen-router")]
    assert router["spec"]["replicas"] == 2
    pod = router["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "qwen-router"
    assert pod["containers"][0]["args"] == ["router", "--host", "0.0.0.0", "--port", str(wire.ROUTER_PORT),
                                            "--k8s-service", "qwen-runtime", "--k8s-namespace", "ml",
                                            "--policy", "least_load", "--max-hold-secs", "300"]
    held = by_kind({**GPU_INGRESS, "router": {**GPU_INGRESS.get("router", {}), "maxHoldSeconds": 0}})
    assert held[("Deployment", "qwen-router")]["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == [
        "--max-hold-secs", "0"]  # 0: the router answers 503 at once while no runtime pod is ready
    rules = children[("Role", "qwen-router")]["rules"]
    assert rules == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
    ]
    binding = children[("RoleBinding", "qwen-router")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "qwen-router", "namespace": "ml"}]
    assert binding["roleRef"]["name"] == "qwen-router"
    service = children[("Service", "qwen")]
    assert service["spec"]["selector"] == router["spec"]["selector"]["matchLabels"]


def test_ingress_points_at_the_router_service_with_tls():
    ingress = by_kind(GPU_INGRESS)[("Ingress", "qwen")]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["llm.example.com"], "secretName": "llm-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": "qwen", "port": {"number": defaults.SERVICE_PORT}}}
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}
    assert service_url(OWNER, spec_of(GPU_INGRESS)) == "https://llm.example.com"
    assert ("Ingress", "qwen") not in by_kind(MINIMAL)


def test_every_child_is_owned_and_labelled():
    for manifest in build_children(OWNER, spec_of(GPU_INGRESS), IMAGE, 1):
        meta = manifest["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"][0]["uid"] == "uid-1" and meta["ownerReferences"][0]["controller"]
        assert meta["labels"][wire.LABEL_SERVICE] == "qwen"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "fleetserve-operator"


@pytest.mark.parametrize(
    ("replicas", "autoscaling", "status", "expected"),
    [
        ({}, False, {}, 1),
        ({"min": 2, "max": 5}, False, {}, 1),  # min and max bound the autoscaler only
        ({"min": 1, "max": 5, "count": 4}, False, {}, 4),
        ({"count": 0}, False, {}, 0),
        ({"min": 2, "max": 5}, True, {}, 2),
        ({"min": 2, "max": 5}, True, {"desiredReplicas": 4}, 4),
        ({"min": 2, "max": 5}, True, {"desiredReplicas": 9}, 5),
        ({"min": 2, "max": 5, "count": 1}, True, {"desiredReplicas": 1}, 2),
    ],
)
def test_desired_replicas(replicas, autoscaling, status, expected):
    spec = spec_of({**MINIMAL, "replicas": replicas, "autoscaling": {"enabled": autoscaling}})
    assert desired_replicas(spec, status) == expected


quantity = st.one_of(st.integers(1, 64), st.sampled_from(["500m", "2", "8Gi", "512Mi"]))
specs = st.fixed_dictionaries(
    {"model": st.fixed_dictionaries({"source": st.sampled_from(["hf://org/m", "pvc://c/p/q", "pvc://c", "demo://llama-tiny"])})},
    optional={
        "runtime": st.fixed_dictionaries({}, optional={
            "resources": st.fixed_dictionaries({}, optional={
                "gpus": st.integers(0, 8),
                "requests": st.dictionaries(st.sampled_from(["cpu", "memory"]), quantity, max_size=2)}),
            "args": st.lists(st.text("abcdef-", min_size=1, max_size=8), max_size=3),
            "contextLength": st.integers(1, 1 << 20),
            "logLevel": st.sampled_from(["debug", "info"]),
        }),
        "router": st.fixed_dictionaries({}, optional={
            "policy": st.sampled_from(["cache_aware", "round_robin", "least_load", "power_of_two", "random"]),
            "replicas": st.integers(1, 5)}),
        "ingress": st.fixed_dictionaries({"host": st.sampled_from(["a.example.com", "llm.test"])}),
    },
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=specs, replicas=st.integers(0, 16))
def test_any_valid_spec_builds_valid_manifests(raw, replicas):
    for manifest in build_children(OWNER, spec_of(raw), IMAGE, replicas):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_serve_args_parse_with_the_runtime_servers_own_parser(name):
    """The contract with `fleetserve serve`: every flag the operator passes is one it accepts."""
    from fleetserve.runtime.server.launch import build_parser

    spec = spec_of(SPECS[name])
    args = serve_args(spec)
    assert args[0] == "serve"
    parsed = build_parser().parse_args(args[1:])
    assert parsed.port == wire.DEFAULT_PORT and parsed.host == "0.0.0.0"
    assert parsed.model_path == flag(args, "--model-path")
    assert parsed.served_model_name[0] == flag(args, "--served-model-name")
    assert parsed.enable_cache_report is True


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_build_valid_manifests(path):
    example = yaml.safe_load(path.read_text())
    owner = Owner(name=example["metadata"]["name"], namespace="ml", uid="uid-1")
    children = build_children(owner, spec_of(example["spec"]), IMAGE, 1)
    for manifest in children:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    assert ("Ingress" in {m["kind"] for m in children}) == ("ingress" in example["spec"])
