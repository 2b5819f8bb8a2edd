"""Where the workers are: a static URL list, or the EndpointSlices of the runtime's headless Service.

`endpoints_from_slices` is the pure core: EndpointSlice objects (Kubernetes JSON) -> {url: ready}.
Ready endpoints get traffic; terminating and not-yet-ready ones are known but get no new requests
(their in-flight requests finish); endpoints no slice lists any more leave the set. The watch runs
the `kubernetes` client (in-cluster config, else kubeconfig) in a thread: list, then watch from the
list's resourceVersion, re-listing whenever the watch ends or fails.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fleetserve.runtime import wire

logger = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WATCH_TIMEOUT_SECONDS = 60
RETRY_SECONDS = 2.0


def own_namespace(path: Path = NAMESPACE_FILE) -> str:
    """The pod's namespace (its service account's), else "default"."""
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"


def slice_port(slice_: dict[str, Any], port_name: str, default: int = wire.DEFAULT_PORT) -> int:
    ports = [p for p in slice_.get("ports") or [] if p.get("port")]
    for port in ports:
        if port.get("name") == port_name:
            return int(port["port"])
    return int(ports[0]["port"]) if len(ports) == 1 else default


def endpoint_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


def endpoints_from_slices(slices: Iterable[dict[str, Any]], port_name: str) -> dict[str, bool]:
    """{url: ready} over every endpoint of the slices; an address listed twice is ready if any says so."""
    out: dict[str, bool] = {}
    for slice_ in slices:
        port = slice_port(slice_, port_name)
        for endpoint in slice_.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            ready = conditions.get("ready") is not False and not conditions.get("terminating")  # nil means ready
            for address in endpoint.get("addresses") or []:
                url = endpoint_url(address, port)
                out[url] = out.get(url, False) or ready
    return out


class EndpointSliceWatch:
    """Watches the EndpointSlices of one Service and hands {url: ready} to `publish` on every change."""

    def __init__(self, service: str, namespace: str, port_name: str, publish: Callable[[dict[str, bool]], None],
                 loop: asyncio.AbstractEventLoop):
        self.service = service
        self.namespace = namespace
        self.port_name = port_name
        self.publish = publish
        self.loop = loop
        self.slices: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="endpointslice-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _api(self) -> tuple[Any, Any]:
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        api_client = client.ApiClient(configuration)
        return api_client, client.DiscoveryV1Api(api_client)

    def _owned(self, obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return labels.get(SERVICE_NAME_LABEL) == self.service

    def _emit(self) -> None:
        endpoints = endpoints_from_slices(self.slices.values(), self.port_name)
        self.loop.call_soon_threadsafe(self.publish, endpoints)

    def _run(self) -> None:
        from kubernetes import watch

        selector = f"{SERVICE_NAME_LABEL}={self.service}"
        api_client = api = None
        while not self._stop.is_set():
            try:
                if api is None:
                    api_client, api = self._api()
                listing = api.list_namespaced_endpoint_slice(self.namespace, label_selector=selector,
                                                             _request_timeout=(5, 30))
                items = [api_client.sanitize_for_serialization(s) for s in listing.items]
                self.slices = {s["metadata"]["name"]: s for s in items if self._owned(s)}
                self._emit()
                stream = watch.Watch().stream(
                    api.list_namespaced_endpoint_slice, self.namespace, label_selector=selector,
                    resource_version=listing.metadata.resource_version, timeout_seconds=WATCH_TIMEOUT_SECONDS,
                    _request_timeout=(5, WATCH_TIMEOUT_SECONDS + 10))
                for event in stream:
                    if self._stop.is_set():
                        return
                    if event["type"] == "ERROR":
                        break
                    obj = api_client.sanitize_for_serialization(event["object"])
                    if not isinstance(obj, dict) or not self._owned(obj):
                        continue
                    name = obj["metadata"]["name"]
                    if event["type"] == "DELETED":
                        self.slices.pop(name, None)
                    else:
                        self.slices[name] = obj
                    self._emit()
            except Exception as exc:  # the API server is away or refuses: log, wait, list again
                logger.warning("EndpointSlice watch of %s/%s failed: %r; retrying", self.namespace,
                               self.service, exc)
                self._stop.wait(RETRY_SECONDS)
