"""Fields platform teams reach for, rollouts and probes: what each puts in the built manifests."""

from __future__ import annotations

import pytest
from test_operator_builders import IMAGE, OWNER, PLATFORM, spec_of

from fleetserve.operator import defaults
from fleetserve.operator.manifests.children import build_children, optional_children
from fleetserve.operator.manifests.router import build_router_deployment
from fleetserve.operator.manifests.runtime import build_runtime_deployment
from fleetserve.runtime import wire

MINIMAL = {"model": {"source": "hf://Qwen/Qwen3-8B"}}
SELECTOR = {wire.LABEL_SERVICE: "qwen", wire.LABEL_COMPONENT: "runtime"}


def runtime(raw: dict) -> dict:
    return build_runtime_deployment(OWNER, spec_of(raw), IMAGE, 2)


def pod(raw: dict) -> dict:
    return runtime(raw)["spec"]["template"]["spec"]


def test_placement_fields_reach_the_runtime_pods():
    spec = pod(PLATFORM)
    assert spec["affinity"] == PLATFORM["runtime"]["affinity"]
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["labelSelector"] == {"matchLabels": SELECTOR}  # filled in when the user left it out
    assert (spec["priorityClassName"], spec["runtimeClassName"]) == ("inference-high", "nvidia")
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]


def test_a_spread_constraint_keeps_its_own_selector():
    own = {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
           "labelSelector": {"matchLabels": {"app": "x"}}}
    (spread,) = pod({**MINIMAL, "runtime": {"topologySpreadConstraints": [own]}})["topologySpreadConstraints"]
    assert spread == own


def test_minimal_spec_sets_no_optional_pod_fields():
    spec = pod(MINIMAL)
    for key in ("affinity", "topologySpreadConstraints", "priorityClassName", "runtimeClassName",
                "imagePullSecrets", "nodeSelector", "tolerations"):
        assert key not in spec


def test_router_pods_get_the_image_pull_secrets_too():
    router = build_router_deployment(OWNER, spec_of(PLATFORM), IMAGE)["spec"]["template"]["spec"]
    assert router["imagePullSecrets"] == [{"name": "regcred"}]


def test_pod_labels_and_annotations_never_override_the_operators_own():
    raw = {**MINIMAL, "runtime": {"podLabels": {"team": "a", wire.LABEL_SERVICE: "hijack"},
                                  "podAnnotations": {"team": "a", "prometheus.io/port": "1"}}}
    meta = runtime(raw)["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "a" and meta["labels"][wire.LABEL_SERVICE] == "qwen"
    assert meta["annotations"]["team"] == "a" and meta["annotations"]["prometheus.io/port"] == str(wire.DEFAULT_PORT)


def volumes(raw: dict) -> tuple[dict, dict]:
    spec = pod(raw)
    return ({v["name"]: v for v in spec["volumes"]},
            {m["name"]: m for m in spec["containers"][0]["volumeMounts"]})


@pytest.mark.parametrize(("cache", "expected"), [
    ({}, {"name": "cache", "emptyDir": {}}),
    ({"sizeLimit": "50Gi"}, {"name": "cache", "emptyDir": {"sizeLimit": "50Gi"}}),
    ({"persistentVolumeClaim": "hf-cache"}, {"name": "cache", "persistentVolumeClaim": {"claimName": "hf-cache"}}),
    ({"hostPath": "/var/lib/models"},
     {"name": "cache", "hostPath": {"path": "/var/lib/models", "type": "DirectoryOrCreate"}}),
])
def test_model_cache_is_per_pod_or_shared(cache, expected):
    by_name, mounts = volumes({**MINIMAL, "runtime": {"modelCache": cache}})
    assert by_name["cache"] == expected
    assert mounts["cache"]["mountPath"] == defaults.CACHE_MOUNT_PATH
    env = {e["name"]: e.get("value") for e in pod(MINIMAL)["containers"][0]["env"]}
    assert env[defaults.ENV_HF_HOME].startswith(defaults.CACHE_MOUNT_PATH)
    assert env[defaults.ENV_FLEETSERVE_CACHE] == defaults.CACHE_MOUNT_PATH


def test_model_cache_takes_a_claim_or_a_host_path_not_both():
    from fleetserve.operator.validation import check_spec

    check = check_spec("qwen", {**MINIMAL, "runtime": {"modelCache": {"persistentVolumeClaim": "c", "hostPath": "/x"}}})
    assert check.spec is None and "not both" in check.message


def test_extra_volumes_and_the_shm_size_limit():
    by_name, mounts = volumes(PLATFORM)
    assert by_name["extra"] == {"name": "extra", "configMap": {"name": "prompts"}}
    assert mounts["extra"] == {"name": "extra", "mountPath": "/etc/prompts", "readOnly": True}
    assert by_name["shm"] == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}


def test_disruption_budget_is_built_when_asked_and_removed_otherwise():
    children = build_children(OWNER, spec_of(PLATFORM), IMAGE, 2)
    (pdb,) = [c for c in children if c["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == "50%" and pdb["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert not [c for c in build_children(OWNER, spec_of(MINIMAL), IMAGE, 2) if c["kind"] == "PodDisruptionBudget"]
    wanted = {kind: want for _, kind, _, want in optional_children(OWNER, spec_of(MINIMAL))}
    assert wanted == {"Ingress": False, "PodDisruptionBudget": False, "ConfigMap": False}


def test_an_unset_disruption_budget_gets_no_crd_default():
    """The API server fills `default: {}` into optional objects whose fields all have defaults; the
    budget's maxUnavailable is required so that an InferenceService without one gets no PDB."""
    from fleetserve.operator.crd import openapi_schema

    budget = openapi_schema()["properties"]["spec"]["properties"]["disruptionBudget"]
    assert "default" not in budget and budget["required"] == ["maxUnavailable"]


@pytest.mark.parametrize(("raw_runtime", "bounds"), [
    ({}, {"maxSurge": 1, "maxUnavailable": 0}),  # CPU: a surge pod has room, keep serving capacity
    ({"resources": {"gpus": 1}}, {"maxSurge": 0, "maxUnavailable": 1}),  # a full GPU node has no room
    ({"resources": {"gpus": 1}, "rollout": {"maxSurge": "25%", "maxUnavailable": 0}},
     {"maxSurge": "25%", "maxUnavailable": 0}),
])
def test_rollout_strategy(raw_runtime, bounds):
    strategy = runtime({**MINIMAL, "runtime": raw_runtime})["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": bounds}


def test_progress_deadline_covers_the_startup_timeout():
    deployment = runtime({**MINIMAL, "runtime": {"startupTimeoutSeconds": 3600}})
    assert deployment["spec"]["progressDeadlineSeconds"] == 3600 + defaults.PROGRESS_MARGIN_SECONDS
    default = runtime(MINIMAL)["spec"]["progressDeadlineSeconds"]
    assert default > defaults.STARTUP_TIMEOUT_SECONDS  # was Kubernetes' 600 s: a 10-minute load showed Degraded


def test_probes_liveness_and_readiness_ask_the_runtimes_health():
    container = pod(MINIMAL)["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": wire.PATH_HEALTH, "port": "http"}
    # not ready within 15 s of /health failing; restarted after a minute of it (a dead or stalled engine)
    assert container["readinessProbe"]["periodSeconds"] * container["readinessProbe"]["failureThreshold"] <= 15
    assert container["livenessProbe"]["periodSeconds"] * container["livenessProbe"]["failureThreshold"] == 60


def test_the_router_gets_the_api_key_from_the_same_secret_as_the_runtime():
    raw = {**MINIMAL, "apiKeySecret": {"name": "llm-keys"}}
    router = build_router_deployment(OWNER, spec_of(raw), IMAGE)["spec"]["template"]["spec"]["containers"][0]
    runtime_env = {e["name"]: e for e in pod(raw)["containers"][0]["env"]}
    assert router["env"] == [runtime_env[wire.ENV_API_KEY]]
    assert runtime_env[wire.ENV_API_KEY]["valueFrom"] == {"secretKeyRef": {"name": "llm-keys", "key": "api-key"}}
    assert "env" not in build_router_deployment(OWNER, spec_of(MINIMAL), IMAGE)["spec"]["template"]["spec"][
        "containers"][0]
