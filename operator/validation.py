"""Checks the CRD's OpenAPI schema cannot express: they become a Ready=False condition.

``check_spec`` is pure: it takes the raw ``spec`` dict as the API server stored it and returns the
parsed model or the problems, never raises for bad input.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

import pydantic

from fleetserve.operator import names
from fleetserve.operator.sources import SourceError, parse_source
from fleetserve.operator.spec import InferenceServiceSpec

INVALID_SPEC = "InvalidSpec"


class SpecCheck(NamedTuple):
    spec: InferenceServiceSpec | None  # None when problems is not empty
    problems: list[str]

    @property
    def message(self) -> str:
        return "; ".join(self.problems)


def check_spec(name: str, raw: Mapping[str, Any]) -> SpecCheck:
    try:
        spec = InferenceServiceSpec.model_validate(dict(raw))
    except pydantic.ValidationError as error:
        return SpecCheck(None, [_describe(e) for e in error.errors()])
    problems = (_check_name(name) + _check_sources(spec) + _check_replicas(spec) + _check_adapters(spec)
                + _check_cache(spec))
    return SpecCheck(None if problems else spec, problems)


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    return f"spec.{where}: {error['msg']}"


def _check_name(name: str) -> list[str]:
    if len(name) > names.MAX_NAME_LENGTH:
        return [f"metadata.name is {len(name)} characters; at most {names.MAX_NAME_LENGTH} fit the "
                f"names of the Services it creates"]
    return []


def _check_sources(spec: InferenceServiceSpec) -> list[str]:
    uris = [("spec.model.source", spec.model.source)]
    uris += [(f"spec.adapters[{i}].source", a.source) for i, a in enumerate(spec.adapters)]
    problems = []
    for where, uri in uris:
        try:
            parse_source(uri)
        except SourceError as error:
            problems.append(f"{where}: {error}")
    return problems


def _check_replicas(spec: InferenceServiceSpec) -> list[str]:
    bounds = spec.replicas
    if bounds.min > bounds.max:
        return [f"spec.replicas.min ({bounds.min}) is greater than spec.replicas.max ({bounds.max})"]
    return []


def _check_adapters(spec: InferenceServiceSpec) -> list[str]:
    counts = Counter(adapter.name for adapter in spec.adapters)
    problems = [f"spec.adapters: the name {name!r} is used {n} times" for name, n in counts.items() if n > 1]
    return problems + [f"spec.adapters[{i}].source: demo:// names a base model, not an adapter"
                       for i, adapter in enumerate(spec.adapters) if adapter.source.startswith("demo://")]


def _check_cache(spec: InferenceServiceSpec) -> list[str]:
    """The CRD's CEL rule says the same; clusters that do not run CEL rules still get told."""
    cache = spec.runtime.model_cache
    if cache.persistent_volume_claim and cache.host_path:
        return ["spec.runtime.modelCache: set persistentVolumeClaim or hostPath, not both"]
    return []
