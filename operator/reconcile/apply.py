"""Create-or-patch of one child object, idempotently: no write when the live object already matches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from fleetserve.operator.kube import CONFLICT, NOT_FOUND, KubeClient, KubeError, Obj, Ref
from fleetserve.operator.manifests.meta import Owner


class OwnershipConflict(Exception):
    """An object with a child's name exists and belongs to someone else: the operator leaves it alone."""


def is_subset(desired: Any, live: Any) -> bool:
    """True when every field the operator sets has that value in the live object.

    The API server adds defaults (imagePullPolicy, clusterIP, …); those are not drift. Lists are
    compared item by item, so a removed env var or flag is drift.
    """
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(is_subset(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(live, list) and len(desired) == len(live)
                and all(is_subset(d, v) for d, v in zip(desired, live, strict=True)))
    return bool(desired == live)


# Fields the API server refuses to change in place; a change to one means delete and create.
IMMUTABLE_FIELDS = {"Deployment": (("spec", "selector"),), "Service": (("spec", "clusterIP"),)}


def immutable_change(manifest: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
    """The dotted path of an immutable field the manifest sets to another value than the live one."""
    for path in IMMUTABLE_FIELDS.get(manifest.get("kind", ""), ()):
        desired: Any = manifest
        current: Any = live
        for part in path:
            desired = desired.get(part) if isinstance(desired, Mapping) else None
            current = current.get(part) if isinstance(current, Mapping) else None
        if desired is not None and desired != current:  # a selector with an extra label selects other pods
            return ".".join(path)
    return None


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((ref.get("uid") for ref in refs if ref.get("controller")), None)


def is_owned_by(obj: Mapping[str, Any], owner: Owner) -> bool:
    return controller_uid(obj) == owner.uid


async def create(client: KubeClient, manifest: Obj) -> Obj:
    """Create by server-side apply, so that later applies own every field and can drop any.

    Fields a POST set belong to an "Update" entry in managedFields that no apply ever clears, so a
    flag or env var removed from the spec would linger. An API server without create-on-apply
    (kmock) answers 404; then POST.
    """
    try:
        return await client.apply(manifest)
    except KubeError as error:
        if error.status != NOT_FOUND:
            raise
    return await client.create(manifest)


async def ensure(client: KubeClient, owner: Owner, manifest: Obj, logger: kopf.Logger) -> Obj:
    """Make the live object match ``manifest``; returns the live object."""
    ref = Ref.of(manifest)
    live = await client.get(ref)
    if live is None:
        logger.info("Creating %s %s", ref.kind, ref.name)
        try:
            return await create(client, manifest)
        except KubeError as error:
            if error.status != CONFLICT:  # created meanwhile by a concurrent reconcile: patch it below
                raise
            live = await client.get(ref) or {}
    if not is_owned_by(live, owner):
        raise OwnershipConflict(f"{ref.kind} {ref.name} already exists and is not owned by this "
                                f"InferenceService; rename or delete it")
    if is_subset(manifest, live):
        return live
    field = immutable_change(manifest, live)
    if field is not None:  # e.g. a selector changed by hand or by an older operator version
        logger.warning("Recreating %s %s: its %s cannot change in place", ref.kind, ref.name, field)
        await client.delete(ref)
        return await create(client, manifest)
    logger.info("Updating %s %s", ref.kind, ref.name)
    return await client.apply(manifest)


async def remove(client: KubeClient, owner: Owner, ref: Ref, logger: kopf.Logger) -> bool:
    """Delete a child the spec no longer asks for, but only if this InferenceService owns it."""
    live = await client.get(ref)
    if live is None or not is_owned_by(live, owner):
        return False
    logger.info("Deleting %s %s", ref.kind, ref.name)
    return await client.delete(ref)
