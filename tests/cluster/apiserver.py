"""A test stand-in for the Kubernetes API server: kmock's emulator plus the API-server behaviour it lacks.

kmock stores objects and merges patches as plain dicts. This thin layer adds, explicitly:

- metadata the API server fills in: ``uid``, ``creationTimestamp``, ``generation`` (bumped when
  anything outside metadata/status changes) and a ``resourceVersion`` that moves on every write;
- optimistic concurrency: a PATCH whose body carries ``metadata.resourceVersion`` fails with 409
  when the stored object has moved on;
- label selectors on list and watch (``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (..)``, ``k notin (..)``);
- CustomResourceDefinitions: creating one registers its resource, its schema's defaults are applied
  to new and updated objects, and its ``scale`` subresource works (GET, PUT, PATCH), as does
  Deployments' ``/scale``;
- immutable fields: a Deployment's ``spec.selector`` and a Service's ``spec.clusterIP`` cannot change
  (422, as the real server answers);
- garbage collection: after every write (and every half second, see cluster.py), objects whose owners
  (``ownerReferences``) are all gone are deleted (background propagation), repeatedly, so pods of a
  deleted Deployment go too;
- bounded request history: kmock keeps every request and matches new ones against them, which
  slows a long test to ~100 ms per request; only the last ``KEEP_REQUESTS`` are kept.

Server-side apply is a merge patch here (no field ownership), PUT is only served for ``/scale``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

import aiohttp.web
import attrs
import kmock
from kmock._internal import enums, rendering

KEEP_REQUESTS = 200
IMMUTABLE = {"Deployment": (("spec", "selector"),), "Service": (("spec", "clusterIP"),)}
BUILTIN_RESOURCES = {
    "v1/pods": ("Pod", {"status"}),
    "v1/services": ("Service", {"status"}),
    "v1/serviceaccounts": ("ServiceAccount", set()),
    "v1/configmaps": ("ConfigMap", set()),
    "v1/secrets": ("Secret", set()),
    "v1/events": ("Event", set()),
    "apps/v1/deployments": ("Deployment", {"status", "scale"}),
    "discovery.k8s.io/v1/endpointslices": ("EndpointSlice", set()),
    "rbac.authorization.k8s.io/v1/roles": ("Role", set()),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", set()),
    "networking.k8s.io/v1/ingresses": ("Ingress", {"status"}),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", {"status"}),
    "events.k8s.io/v1/events": ("Event", set()),
}
CLUSTER_RESOURCES = {
    "v1/namespaces": "Namespace",
    "apiextensions.k8s.io/v1/customresourcedefinitions": "CustomResourceDefinition",
    "rbac.authorization.k8s.io/v1/clusterroles": "ClusterRole",
    "rbac.authorization.k8s.io/v1/clusterrolebindings": "ClusterRoleBinding",
}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}
DEPLOYMENT_SCALE = ("spec.replicas", "status.replicas", None)


class ScalePaths(NamedTuple):
    spec: str
    status: str
    selector: str | None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_path(obj: Mapping[str, Any], dotted: str) -> Any:
    node: Any = obj
    for part in dotted.strip(".").split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def set_path(obj: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.strip(".").split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def apply_defaults(schema: Mapping[str, Any], obj: Any) -> Any:
    """Structural-schema defaulting as the API server does it: missing fields with a default get it."""
    if isinstance(obj, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = apply_defaults(sub, obj[name])
    elif isinstance(obj, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in obj]
    return obj


_TERM = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_selector(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [t for t in [*terms, current] if t.strip()]


def matches_selector(labels: Mapping[str, str], selector: str | None) -> bool:
    for term in _split_selector(selector or ""):
        match = _TERM.match(term)
        if match is None:
            raise ValueError(f"unparsable label selector term {term!r}")
        negated, key, op, value, set_op, values = match.groups()
        if op in ("=", "=="):
            ok = labels.get(key) == value
        elif op == "!=":
            ok = labels.get(key) != value
        elif set_op:
            choices = {v.strip() for v in values.split(",")}
            ok = (labels.get(key) in choices) == (set_op == "in") if key in labels else set_op == "notin"
        else:
            ok = (key in labels) != bool(negated)
        if not ok:
            return False
    return True


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def apply_json_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 (add, remove, replace, test), as kopf sends for finalizers; raises ValueError."""
    result = copy.deepcopy(obj)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        kind = op["op"]
        if kind == "test":
            current = node[int(last)] if isinstance(node, list) else node.get(last)
            if current != op.get("value"):
                raise ValueError(f"test failed at {op['path']}")
        elif kind == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif kind in ("add", "replace"):
            if isinstance(node, list):
                index = len(node) if last == "-" else int(last)
                node[index:index + (kind == "replace")] = [op["value"]]
            else:
                node[last] = op["value"]
        else:
            raise ValueError(f"unsupported JSON patch op {kind!r}")
    return result


def merge_diff(before: Any, after: Any) -> Any:
    """The merge patch (RFC 7386) that turns ``before`` into ``after``."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return after
    diff = {key: None for key in before if key not in after}
    for key, value in after.items():
        if key not in before or before[key] != value:
            diff[key] = merge_diff(before.get(key), value)
    return diff


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _strip(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a write may change outside metadata and status (their change bumps generation)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


@attrs.define(kw_only=True)
class ClusterApi(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server behaviour listed in the module docstring."""

    _versions: Any = attrs.field(factory=lambda: itertools.count(2), init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    scale_paths: dict[Any, ScalePaths] = attrs.field(factory=dict, init=False)
    schemas: dict[Any, dict[str, Any]] = attrs.field(factory=dict, init=False)
    num_writes: int = attrs.field(default=0, init=False)
    # (method, path, User-Agent) of every successful write, for "who wrote what" assertions
    write_log: list[tuple[str, str, str]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, (kind, subresources) in BUILTIN_RESOURCES.items():
            self.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=VERBS,
                                                     subresources=subresources)
        for key, kind in CLUSTER_RESOURCES.items():
            self.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=False, verbs=VERBS)
        self.scale_paths[kmock.resource("apps/v1/deployments")] = ScalePaths(*DEPLOYMENT_SCALE)

    # --- the request path -------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._trim_history()
        if request.resource is None:
            return await super()._handle(request)
        if request.subresource == "scale":
            return await self._serve_scale(request)
        if request.action not in (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE):
            return await super()._handle(request)
        async with self._write_lock:
            request = self._prepare_write(request)
            response = await super()._handle(request)
            if response.status < 400:
                self.num_writes += 1
                self.write_log.append((str(request.method.value), request.url.path,
                                       request.headers.get("User-Agent", "")))
                await self._after_write(request)
            return response

    def _trim_history(self) -> None:
        for holder in (self, *self._payloads):
            requests = getattr(holder, "_requests", None)
            if requests is not None and len(requests) > 2 * KEEP_REQUESTS:
                del requests[:-KEEP_REQUESTS]

    def _stored(self, request: rendering.Request) -> Any:
        name = request.name or ((request.data or {}).get("metadata") or {}).get("name")
        namespace = request.namespace or ((request.data or {}).get("metadata") or {}).get("namespace")
        key = (request.resource, namespace, name)
        obj = self.objects[key] if key in self.objects else None  # noqa: SIM401  (kmock has no .get)
        return None if obj is None or obj.deleted else obj

    def _prepare_write(self, request: rendering.Request) -> rendering.Request:
        """Fill and check metadata in the request body before kmock stores it."""
        version = str(next(self._versions))
        stored = self._stored(request)
        if request.action == enums.action.DELETE:
            if stored is not None:  # so that the DELETED (or deletionTimestamp) event is newer than any before
                stored.patch({"metadata": {"resourceVersion": version}})
            return request
        if isinstance(request.data, list) and stored is not None:  # a JSON patch: kmock only merges
            try:
                merged = merge_diff(dict(stored.raw), apply_json_patch(dict(stored.raw), request.data))
                object.__setattr__(request, "data", merged)  # kmock requests are frozen
            except (ValueError, KeyError, IndexError) as error:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(error)) from error
        if not isinstance(request.data, dict):
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="the body must be a JSON object")
        data = request.data
        meta = data.setdefault("metadata", {})
        schema = self.schemas.get(request.resource)
        if request.action == enums.action.CREATE:
            if stored is not None:
                return request  # kmock answers 409
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1, resourceVersion=version)
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            if schema is not None:
                apply_defaults(schema, data)
            return request
        if stored is None:
            return request  # kmock answers 404
        current = copy.deepcopy(dict(stored.raw))
        expected = meta.get("resourceVersion")
        if expected is not None and expected != current["metadata"].get("resourceVersion"):
            raise kmock.KubernetesError(status=409, reason="Conflict", message=(
                f"Operation cannot be fulfilled: the object has been modified (resourceVersion {expected} "
                f"is not {current['metadata'].get('resourceVersion')})"))
        for path in IMMUTABLE.get(current.get("kind", ""), ()):
            new = get_path(data, ".".join(path))
            if new is not None and new != get_path(current, ".".join(path)):
                raise kmock.KubernetesError(status=422, reason="Invalid", message=(
                    f"{current.get('kind')} \"{current['metadata']['name']}\" is invalid: "
                    f"{'.'.join(path)}: Invalid value: field is immutable"))
        meta["resourceVersion"] = version
        for key in ("uid", "creationTimestamp", "generation"):
            meta.pop(key, None)
        if request.subresource is None:
            after = kmock.Object(current)
            after.patch(copy.deepcopy(data))
            if _strip(after.raw) != _strip(current):
                meta["generation"] = int(current["metadata"].get("generation") or 1) + 1
            if schema is not None:
                defaulted = apply_defaults(schema, copy.deepcopy(dict(after.raw)))
                if "spec" in defaulted:
                    data["spec"] = defaulted["spec"]
        return request

    async def _after_write(self, request: rendering.Request) -> None:
        if request.action == enums.action.CREATE and request.resource == kmock.resource(
                "apiextensions.k8s.io/v1/customresourcedefinitions"):
            self.register_crd(request.data)
        await self.collect_garbage()

    # --- CRDs -------------------------------------------------------------------------------------

    def register_crd(self, crd: Mapping[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            key = kmock.resource(f"{spec['group']}/{version['name']}/{spec['names']['plural']}")
            subresources = version.get("subresources") or {}
            self.resources[key] = kmock.ResourceInfo(
                kind=spec["names"]["kind"], namespaced=spec["scope"] == "Namespaced", verbs=VERBS,
                subresources=set(subresources), singular=spec["names"].get("singular"),
                shortnames=set(spec["names"].get("shortNames", [])))
            self.schemas[key] = (version.get("schema") or {}).get("openAPIV3Schema") or {}
            scale = subresources.get("scale")
            if scale:
                self.scale_paths[key] = ScalePaths(scale["specReplicasPath"], scale["statusReplicasPath"],
                                                   scale.get("labelSelectorPath"))

    # --- /scale -----------------------------------------------------------------------------------

    def _scale_of(self, obj: Mapping[str, Any], paths: ScalePaths) -> dict[str, Any]:
        selector = get_path(obj, paths.selector) if paths.selector else None
        if selector is None and obj.get("kind") == "Deployment":
            match = get_path(obj, "spec.selector.matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in match.items())
        meta = obj["metadata"]
        return {
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                         "resourceVersion": meta.get("resourceVersion")},
            # the API server reads a missing spec path as 0 replicas
            "spec": {"replicas": int(get_path(obj, paths.spec) or 0)},
            "status": {"replicas": int(get_path(obj, paths.status) or 0), "selector": selector or ""},
        }

    async def _serve_scale(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        paths = self.scale_paths.get(request.resource)
        if paths is None:
            return await self._render_error(kmock.KubernetesNotFoundError(message="no scale subresource"))
        async with self._write_lock:
            stored = self._stored(request)
            if stored is None:
                return await self._render_error(kmock.KubernetesObjectNotFoundError())
            if request.method in (enums.method.PUT, enums.method.PATCH):
                replicas = get_path(request.data or {}, "spec.replicas")
                if not isinstance(replicas, int) or replicas < 0:
                    return await self._render_error(kmock.KubernetesError(
                        status=422, reason="Invalid", message="spec.replicas must be a non-negative integer"))
                change: dict[str, Any] = {"metadata": {"resourceVersion": str(next(self._versions))}}
                set_path(change, paths.spec, replicas)
                generation = int(stored.raw["metadata"].get("generation") or 1)
                if get_path(stored.raw, paths.spec) != replicas:
                    change["metadata"]["generation"] = generation + 1
                stored.patch(change)
                self.num_writes += 1
                self.write_log.append((str(request.method.value), request.url.path,
                                       request.headers.get("User-Agent", "")))
                await self._buses[request.resource].put({"type": "MODIFIED", "object": stored.raw})
            return aiohttp.web.json_response(self._scale_of(stored.raw, paths))

    # --- garbage collection -----------------------------------------------------------------------

    async def sweep(self) -> None:
        """A garbage-collector pass between writes (the real collector runs continuously)."""
        async with self._write_lock:
            await self.collect_garbage()

    async def collect_garbage(self) -> None:
        """Delete every object whose owners are all gone, until nothing more goes (background cascade)."""
        while True:
            live_uids = {(obj.raw.get("metadata") or {}).get("uid")
                         for obj in self.objects.values() if not obj.deleted}
            orphans = []
            for key, obj in self.objects.items():
                refs = (obj.raw.get("metadata") or {}).get("ownerReferences") if not obj.deleted else None
                if refs and not any(ref.get("uid") in live_uids for ref in refs):
                    orphans.append((key, obj))
            if not orphans:
                return
            async with self._lock:
                for (resource, _, _), obj in orphans:
                    raw = copy.deepcopy(dict(obj.raw))
                    raw["metadata"]["resourceVersion"] = str(next(self._versions))
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})

    # --- label selectors on list and watch --------------------------------------------------------

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        payload["items"] = [obj for obj in payload["items"] if matches_selector(_labels(obj), selector)]
        payload["metadata"]["resourceVersion"] = str(next(self._versions))
        return payload

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        """kmock replays every object at the start of a watch; a watch from resourceVersion X (what
        the list before it returned) gets only objects and events newer than X, as from a real server."""
        selector = request.params.get("labelSelector")
        since = int(request.params.get("resourceVersion") or 0) if str(
            request.params.get("resourceVersion") or "0").isdigit() else 0
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict):
                yield event
                continue
            obj = event.get("object") or {}
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "0")
            if version.isdigit() and int(version) <= since:
                continue
            if matches_selector(_labels(obj), selector):
                yield event

    # --- helpers for the harness -----------------------------------------------------------------

    def live_objects(self, resource: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of every stored, not deleted object (of one resource and namespace when given)."""
        wanted = kmock.resource(resource) if resource else None
        return [copy.deepcopy(dict(obj.raw)) for (res, ns, _), obj in list(self.objects.items())
                if not obj.deleted and (wanted is None or res == wanted) and (namespace is None or ns == namespace)]

    def live(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(dict(self.objects[key].raw))
