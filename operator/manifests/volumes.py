"""The runtime pod's volumes: the model cache, a PVC model source, the adapters' claims, /dev/shm for
GPUs, the user's extras."""

from __future__ import annotations

from typing import Any

from fleetserve.operator import defaults
from fleetserve.operator.sources import PvcLocation, SourceError, parse_source
from fleetserve.operator.spec import InferenceServiceSpec, ModelCache

Volumes = tuple[list[dict[str, Any]], list[dict[str, Any]]]
ADAPTER_VOLUME_PREFIX = "adapters-"
MODEL_VOLUME = "model"


def adapter_claims(spec: InferenceServiceSpec) -> list[str]:
    """The claims that pvc:// adapters name, sorted and once each (sources that do not parse are left
    out: validation reports them and nothing is rolled out)."""
    claims = set()
    for adapter in spec.adapters:
        try:
            location = parse_source(adapter.source)
        except SourceError:
            continue
        if isinstance(location, PvcLocation):
            claims.add(location.claim)
    return sorted(claims)


def adapter_mount_path(location: PvcLocation) -> str:
    """Where a pvc:// adapter's directory is in the runtime container."""
    return f"{defaults.ADAPTER_MOUNT_PATH}/{location.claim}/{location.path}".rstrip("/")


def adapter_volumes(spec: InferenceServiceSpec, model_claim: str | None = None) -> Volumes:
    """One read-only volume per claim (``adapters-0``, ``adapters-1``, … in claim order) mounted at
    ADAPTER_MOUNT_PATH/CLAIM; the model's own claim (``model_claim``) is not added twice: its ``model``
    volume is mounted there too. The set of claims is part of the pod template: adding or removing a
    claim rolls the runtime pods out; adapters on claims already mounted, and hf:// adapters, change
    nothing in it."""
    volumes, mounts = [], []
    for i, claim in enumerate(adapter_claims(spec)):
        mount_path = f"{defaults.ADAPTER_MOUNT_PATH}/{claim}"
        if claim == model_claim:
            mounts.append({"name": MODEL_VOLUME, "mountPath": mount_path, "readOnly": True})
            continue
        name = f"{ADAPTER_VOLUME_PREFIX}{i}"
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": name, "mountPath": mount_path, "readOnly": True})
    return volumes, mounts


def cache_volume(cache: ModelCache) -> dict[str, Any]:
    """Shared (a claim or a node directory) so that replicas download the weights once, else per pod."""
    if cache.persistent_volume_claim:
        return {"name": "cache", "persistentVolumeClaim": {"claimName": cache.persistent_volume_claim}}
    if cache.host_path:
        return {"name": "cache", "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}
    empty_dir = {"sizeLimit": str(cache.size_limit)} if cache.size_limit is not None else {}
    return {"name": "cache", "emptyDir": empty_dir}


def runtime_volumes(spec: InferenceServiceSpec) -> Volumes:
    runtime = spec.runtime
    volumes = [cache_volume(runtime.model_cache)]
    mounts: list[dict[str, Any]] = [{"name": "cache", "mountPath": defaults.CACHE_MOUNT_PATH}]
    location = parse_source(spec.model.source)
    model_claim = None
    if isinstance(location, PvcLocation):
        model_claim = location.claim
        volumes.append({"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": model_claim, "readOnly": True}})
        mounts.append({"name": MODEL_VOLUME, "mountPath": defaults.MODEL_MOUNT_PATH, "readOnly": True})
    claim_volumes, claim_mounts = adapter_volumes(spec, model_claim)
    volumes += claim_volumes
    mounts += claim_mounts
    if runtime.resources.gpus > 0:  # NCCL and CUDA IPC need more than the default 64Mi /dev/shm
        shm: dict[str, Any] = {"medium": "Memory"}
        if runtime.shm_size_limit is not None:
            shm["sizeLimit"] = str(runtime.shm_size_limit)
        volumes.append({"name": "shm", "emptyDir": shm})
        mounts.append({"name": "shm", "mountPath": defaults.SHM_MOUNT_PATH})
    return volumes + [dict(v) for v in runtime.volumes], mounts + [dict(m) for m in runtime.volume_mounts]
