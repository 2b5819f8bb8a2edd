"""The adapters' claims in the runtime pod: read-only volumes, mounted where the rollout's paths point,
validated against Kubernetes' schemas; what changes the pod template and what does not."""

from __future__ import annotations

import json

import kubernetes_validate

from fleetserve.operator import defaults
from fleetserve.operator.adapters.locate import lora_path
from fleetserve.operator.manifests.children import build_children
from fleetserve.operator.manifests.meta import Owner
from fleetserve.operator.manifests.runtime import build_runtime_deployment
from fleetserve.operator.spec import InferenceServiceSpec
from fleetserve.runtime.server.serving_lora import read_adapters_file

K8S_VERSION = "1.30"
OWNER = Owner(name="qwen", namespace="ml", uid="uid-1")
IMAGE = "registry.test/fleetserve:1"
HUB_MODEL = {"source": "hf://Qwen/Qwen3-8B"}
ADAPTERS = [
    {"name": "sql", "source": "pvc://team-loras/sql"},
    {"name": "chat", "source": "pvc://shared.loras/v2/chat"},
    {"name": "code", "source": "pvc://team-loras/code"},
    {"name": "hub", "source": "hf://org/hub-lora"},
]


def template(model: dict, adapters: list[dict]) -> dict:
    spec = InferenceServiceSpec.model_validate({"model": model, "adapters": adapters})
    return build_runtime_deployment(OWNER, spec, IMAGE, 1)["spec"]["template"]


def claim_volumes(pod: dict) -> dict[str, str]:
    return {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }


def test_each_adapter_claim_is_one_read_only_volume_mounted_where_the_load_path_points():
    pod = template(HUB_MODEL, ADAPTERS)["spec"]
    (container,) = pod["containers"]
    assert claim_volumes(pod) == {"adapters-0": "shared.loras", "adapters-1": "team-loras"}
    assert all(v["persistentVolumeClaim"]["readOnly"] for v in pod["volumes"] if "persistentVolumeClaim" in v)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["adapters-0"] == {
        "name": "adapters-0",
        "mountPath": f"{defaults.ADAPTER_MOUNT_PATH}/shared.loras",
        "readOnly": True,
    }
    assert mounts["adapters-1"]["mountPath"] == f"{defaults.ADAPTER_MOUNT_PATH}/team-loras"
    for adapter in ADAPTERS[:3]:  # the path the rollout sends lies under the claim's mount
        claim = adapter["source"].removeprefix("pvc://").split("/")[0]
        assert lora_path(adapter["source"]).startswith(f"{defaults.ADAPTER_MOUNT_PATH}/{claim}/")
    assert "--enable-lora" in container["args"]
    spec = InferenceServiceSpec.model_validate({"model": HUB_MODEL, "adapters": ADAPTERS})
    for manifest in build_children(OWNER, spec, IMAGE, 2):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_the_models_own_claim_is_mounted_again_not_added_twice():
    pod = template({"source": "pvc://team-loras/base/qwen"}, ADAPTERS[:1])["spec"]
    assert claim_volumes(pod) == {"model": "team-loras"}
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model"]
    assert [m["mountPath"] for m in mounts] == [
        defaults.MODEL_MOUNT_PATH,
        f"{defaults.ADAPTER_MOUNT_PATH}/team-loras",
    ]
    assert all(m["readOnly"] for m in mounts)
    kubernetes_validate.validate(
        build_runtime_deployment(
            OWNER,
            InferenceServiceSpec.model_validate(
                {"model": {"source": "pvc://team-loras/base/qwen"}, "adapters": ADAPTERS[:1]}
            ),
            IMAGE,
            1,
        ),
        K8S_VERSION,
        strict=True,
    )


def test_adapters_on_mounted_claims_or_the_hub_leave_the_pod_template_alone():
    """Only a change of the set of claims (or of adapters from none to some: --enable-lora) rolls out."""
    base = template(HUB_MODEL, ADAPTERS[:1])
    assert template(HUB_MODEL, [*ADAPTERS[:1], ADAPTERS[2], ADAPTERS[3]]) == base  # same claim, a hub adapter
    assert template(HUB_MODEL, [{"name": "sql", "source": "pvc://team-loras/sql-v2"}]) == base  # new source
    assert template(HUB_MODEL, ADAPTERS[:2]) != base  # a new claim: a rollout
    assert template(HUB_MODEL, []) != template(HUB_MODEL, ADAPTERS[3:])  # --enable-lora
    assert claim_volumes(template(HUB_MODEL, ADAPTERS[3:])["spec"]) == {}


def test_the_adapter_list_is_a_configmap_the_pods_read_at_start(tmp_path):
    spec = InferenceServiceSpec.model_validate({"model": HUB_MODEL, "adapters": ADAPTERS})
    children = build_children(OWNER, spec, IMAGE, 2)
    kinds = [c["kind"] for c in children]
    assert kinds.index("ConfigMap") < kinds.index("Deployment")  # there before the pods that mount it
    (config_map,) = [c for c in children if c["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"] == "qwen-adapters"
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    listed = json.loads(config_map["data"][defaults.ADAPTER_LIST_FILE])
    assert listed == [{"lora_name": a["name"], "lora_path": lora_path(a["source"])} for a in ADAPTERS]
    mounted = tmp_path / defaults.ADAPTER_LIST_FILE
    mounted.write_text(config_map["data"][defaults.ADAPTER_LIST_FILE])
    assert [(e.lora_name, e.lora_path) for e in read_adapters_file(mounted)] == [
        (a["name"], lora_path(a["source"])) for a in ADAPTERS]  # what `fleetserve serve` makes of it

    pod = template(HUB_MODEL, ADAPTERS)["spec"]
    (container,) = pod["containers"]
    volume = next(v for v in pod["volumes"] if "configMap" in v)
    assert volume["configMap"] == {"name": "qwen-adapters", "optional": True}
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {"name": volume["name"], "mountPath": defaults.ADAPTER_LIST_MOUNT_PATH, "readOnly": True}
    at = container["args"].index("--lora-paths-file")
    assert container["args"][at + 1] == f"{defaults.ADAPTER_LIST_MOUNT_PATH}/{defaults.ADAPTER_LIST_FILE}"

    none = build_children(OWNER, InferenceServiceSpec.model_validate({"model": HUB_MODEL}), IMAGE, 2)
    assert "ConfigMap" not in [c["kind"] for c in none]
    bare = template(HUB_MODEL, [])["spec"]
    assert not [v for v in bare.get("volumes", []) if "configMap" in v]
    assert "--lora-paths-file" not in bare["containers"][0]["args"]

