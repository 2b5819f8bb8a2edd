"""Where an adapter's files are, as the runtime pod sees them: the ``lora_path`` sent to it.

- ``hf://ORG/NAME``: the repository id; the runtime downloads it with the pod's HF_TOKEN (the spec's
  ``model.hubTokenSecret``) into its cache.
- ``pvc://CLAIM/PATH``: the claim is mounted read-only in the runtime pods at
  ``ADAPTER_MOUNT_PATH/CLAIM`` (manifests/volumes.py), so the path is ``ADAPTER_MOUNT_PATH/CLAIM/PATH``.
"""

from __future__ import annotations

from fleetserve.operator.adapters.decide import Wanted
from fleetserve.operator.manifests.volumes import adapter_mount_path
from fleetserve.operator.sources import HubLocation, PvcLocation, SourceError, parse_source
from fleetserve.operator.spec import InferenceServiceSpec


def lora_path(source: str) -> str:
    """SourceError for what no runtime can load as an adapter (validation reports it first)."""
    location = parse_source(source)
    if isinstance(location, HubLocation):
        return location.repo
    if isinstance(location, PvcLocation):
        return adapter_mount_path(location)
    raise SourceError(
        f"{source!r} names a base model, not an adapter; write hf://ORG/NAME or pvc://CLAIM/PATH"
    )


def wanted_adapters(spec: InferenceServiceSpec) -> list[Wanted]:
    return [Wanted(adapter.name, lora_path(adapter.source)) for adapter in spec.adapters]
