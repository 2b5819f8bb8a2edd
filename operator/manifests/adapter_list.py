"""The adapters a runtime pod loads before it reports ready: a ConfigMap the operator keeps equal to
``spec.adapters``, mounted in the runtime pods and read by ``fleetserve serve --lora-paths-file``.

A pod that starts (a new replica, a scale from zero, a restarted container) so has the spec's adapters
when it first takes requests; without it the router would answer 404 for an adapter until the adapter
rollout (operator/adapters/) had loaded it. The pod template names only the ConfigMap, never its
content, so changing adapters rolls nothing out: running pods get their adapters from the rollout.
"""

from __future__ import annotations

import json

from fleetserve.operator import defaults, names
from fleetserve.operator.adapters.locate import wanted_adapters
from fleetserve.operator.manifests.meta import Manifest, Owner, object_meta
from fleetserve.operator.spec import InferenceServiceSpec

VOLUME = "adapter-list"


def adapter_list_json(spec: InferenceServiceSpec) -> str:
    """The ``--lora-paths-file`` content: one load body per spec adapter, in spec order."""
    entries = [{"lora_name": wanted.name, "lora_path": wanted.path} for wanted in wanted_adapters(spec)]
    return json.dumps(entries, indent=2) + "\n"


def build_adapter_list(owner: Owner, spec: InferenceServiceSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(owner, names.adapter_list_name(owner.name), names.RUNTIME),
        "data": {defaults.ADAPTER_LIST_FILE: adapter_list_json(spec)},
    }


def adapter_list_volume(owner_name: str) -> tuple[dict, dict]:
    """The pod's volume and the container's mount. ``optional``: a pod that starts before the ConfigMap
    exists starts without adapters, and the rollout loads them."""
    volume = {"name": VOLUME, "configMap": {"name": names.adapter_list_name(owner_name), "optional": True}}
    mount = {"name": VOLUME, "mountPath": defaults.ADAPTER_LIST_MOUNT_PATH, "readOnly": True}
    return volume, mount


def adapter_list_path() -> str:
    return f"{defaults.ADAPTER_LIST_MOUNT_PATH}/{defaults.ADAPTER_LIST_FILE}"
