"""The runtime pod's volumes: the model cache, a PVC model source, /dev/shm for GPUs, the user's extras."""

from __future__ import annotations

from typing import Any

from fleetserve.operator import defaults
from fleetserve.operator.sources import PvcLocation, parse_source
from fleetserve.operator.spec import InferenceServiceSpec, ModelCache

Volumes = tuple[list[dict[str, Any]], list[dict[str, Any]]]


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
    if isinstance(location, PvcLocation):
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": location.claim, "readOnly": True}})
        mounts.append({"name": "model", "mountPath": defaults.MODEL_MOUNT_PATH, "readOnly": True})
    if runtime.resources.gpus > 0:  # NCCL and CUDA IPC need more than the default 64Mi /dev/shm
        shm: dict[str, Any] = {"medium": "Memory"}
        if runtime.shm_size_limit is not None:
            shm["sizeLimit"] = str(runtime.shm_size_limit)
        volumes.append({"name": "shm", "emptyDir": shm})
        mounts.append({"name": "shm", "mountPath": defaults.SHM_MOUNT_PATH})
    return volumes + [dict(v) for v in runtime.volumes], mounts + [dict(m) for m in runtime.volume_mounts]
