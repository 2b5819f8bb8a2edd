"""A small async Kubernetes API client for the objects the operator owns.

It rides on kopf's own credentials (the ConnectionInfo its login handler returns), so the
operator has one source of truth for where the API server is and how to authenticate. Only the
calls reconcile needs: get, create, server-side apply, status patch, delete.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections.abc import Mapping
from typing import IO, Any, NamedTuple

import aiohttp
import kopf

from fleetserve.operator import names

Obj = dict[str, Any]
APPLY = "application/apply-patch+yaml"  # server-side apply; JSON is valid YAML
MERGE = "application/merge-patch+json"
NOT_FOUND = 404
CONFLICT = 409
REQUEST_TIMEOUT_SECONDS = 30
USER_AGENT = f"{names.FIELD_MANAGER} (fleetserve)"

PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Ingress": "ingresses",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Pod": "pods",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    names.KIND: names.PLURAL,
}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Ref(NamedTuple):
    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> Ref:
        meta = manifest["metadata"]
        return cls(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])

    def collection_path(self) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{base}/namespaces/{self.namespace}/{PLURALS[self.kind]}"

    def path(self) -> str:
        return f"{self.collection_path()}/{self.name}"


def ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context(cafile=info.ca_path, cadata=_text(info.ca_data))
    if info.certificate_data and info.private_key_data:  # ssl loads client certificates from files only
        with _tempfile(info.certificate_data) as cert, _tempfile(info.private_key_data) as key:
            context.load_cert_chain(cert.name, key.name)
    elif info.certificate_path and info.private_key_path:
        context.load_cert_chain(info.certificate_path, info.private_key_path)
    return context


def _text(data: str | bytes | None) -> str | None:
    return data.decode() if isinstance(data, bytes) else data


def _tempfile(data: str | bytes) -> IO[bytes]:
    """A private temporary file holding ``data``, removed when closed."""
    f = tempfile.NamedTemporaryFile("wb", suffix=".pem")  # noqa: SIM115  the caller closes it
    f.write(data if isinstance(data, bytes) else data.encode())
    f.flush()
    return f


def auth_headers(info: kopf.ConnectionInfo) -> dict[str, str]:
    if info.token:
        return {"Authorization": f"{info.scheme or 'Bearer'} {info.token}"}
    if info.username and info.password:
        pair = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}


class KubeClient:
    """Connected by the login handler (``connect``); used by every reconcile."""

    def __init__(self) -> None:
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    async def connect(self, info: kopf.ConnectionInfo) -> None:
        """(Re)connect with fresh credentials, e.g. after kopf re-logged in on a 401."""
        await self._close_session()
        self._info = info

    async def close(self) -> None:
        """At operator exit: late calls (a timer kopf left running) fail instead of reconnecting."""
        await self._close_session()
        self._info = None

    async def _close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None

    def _open(self) -> aiohttp.ClientSession:
        if self._info is None:
            raise KubeError(0, "not connected: kopf's login handler has not run or the operator exits")
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=ssl_context(self._info))
            self._session = aiohttp.ClientSession(
                base_url=self._info.server.rstrip("/"), connector=connector,
                headers=auth_headers(self._info) | {"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS), trust_env=self._info.trust_env,
            )
        return self._session

    async def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                    params: Mapping[str, str] | None = None) -> Obj:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self._open().request(method, path, data=data, headers=headers, params=params) as response:
            payload = await response.json(content_type=None) if response.content_length != 0 else {}
            if response.status >= 400:
                raise KubeError(response.status, (payload or {}).get("message", response.reason or ""))
            return payload or {}

    async def get(self, ref: Ref) -> Obj | None:
        try:
            return await self._call("GET", ref.path())
        except KubeError as error:
            if error.status == NOT_FOUND:
                return None
            raise

    async def create(self, manifest: Mapping[str, Any]) -> Obj:
        return await self._call("POST", Ref.of(manifest).collection_path(), manifest,
                                params={"fieldManager": names.FIELD_MANAGER})

    async def apply(self, manifest: Mapping[str, Any]) -> Obj:
        """Server-side apply: fields the operator stops setting are removed, others' fields kept."""
        params = {"fieldManager": names.FIELD_MANAGER, "force": "true"}
        return await self._call("PATCH", Ref.of(manifest).path(), manifest, APPLY, params)

    async def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[Obj]:
        path = Ref(api_version, kind, namespace, "").collection_path()
        return list((await self._call("GET", path, params={"labelSelector": label_selector})).get("items") or [])

    async def patch_status(self, ref: Ref, status: Mapping[str, Any], resource_version: str | None = None) -> Obj:
        """Merge-patch ``status``; with ``resource_version``, only if the object is still at it (else 409)."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._call("PATCH", f"{ref.path()}/status", body, MERGE)

    async def delete(self, ref: Ref) -> bool:
        try:
            await self._call("DELETE", ref.path(), params={"propagationPolicy": "Background"})
        except KubeError as error:
            if error.status == NOT_FOUND:
                return False
            raise
        return True


async def get_alive(client: KubeClient, ref: Ref) -> Obj | None:
    """The object, or None once it is gone or being deleted (its deletionTimestamp is set)."""
    live = await client.get(ref)
    if live is None or live["metadata"].get("deletionTimestamp"):
        return None
    return live
