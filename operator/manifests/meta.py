"""Object metadata shared by every child: labels and the owner reference to the InferenceService."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from fleetserve.operator import names

Manifest = dict[str, Any]


class Owner(NamedTuple):
    """The InferenceService a child belongs to."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def owner_reference(owner: Owner) -> dict[str, Any]:
    """controller=true: the garbage collector deletes the child with its InferenceService."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(owner: Owner, name: str, component: names.Component) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": names.labels(owner.name, component),
        "ownerReferences": [owner_reference(owner)],
    }


def quantities(values: Mapping[str, int | str]) -> dict[str, str]:
    """Resource quantities as strings, the form the API server returns them in."""
    return {key: str(value) for key, value in values.items()}
