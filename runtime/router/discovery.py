"""Where the workers are: a static URL list, or the EndpointSlices of the runtime's headless Service.

`endpoints_from_slices` is the pure core: EndpointSlice objects (Kubernetes JSON) -> {url: state},
state being ready, starting (not ready yet) or terminating.
Ready endpoints get traffic; terminating and starting ones are known but get no new requests
(their in-flight requests finish); endpoints no slice lists any more leave the set. The watch runs
the `kubernetes` client (in-cluster config, else kubeconfig) in a thread: list, then watch from the
list's resourceVersion (raw JSON events), re-listing whenever the watch ends or fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fleetserve.runtime import wire
from fleetserve.runtime.router.workers import EndpointState

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


def endpoint_state(conditions: dict[str, Any]) -> EndpointState:
    if conditions.get("terminating"):
        return "terminating"
    return "starting" if conditions.get("ready") is False else "ready"  # nil means ready


def endpoints_from_slices(slices: Iterable[dict[str, Any]], port_name: str) -> dict[str, EndpointState]:
    """{url: state} over every endpoint of the slices; an address listed twice takes its most serving state
    (ready over starting over terminating)."""
    rank = {"terminating": 0, "starting": 1, "ready": 2}
    out: dict[str, EndpointState] = {}
    for slice_ in slices:
        port = slice_port(slice_, port_name)
        for endpoint in slice_.get("endpoints") or []:
            state = endpoint_state(endpoint.get("conditions") or {})
            for address in endpoint.get("addresses") or []:
                url = endpoint_url(address, port)
                if url not in out or rank[state] > rank[out[url]]:
                    out[url] = state
    return out


class EndpointSliceWatch:
    """Watches the EndpointSlices of one Service and hands {url: state} to `publish` on every change."""

    def __init__(self, service: str, namespace: str, port_name: str, publish: Callable[[dict[str, EndpointState]], None],
                 loop: asyncio.AbstractEventLoop):
        self.service = service
        self.namespace = namespace
        self.port_name = port_name
        self.publish = publish
        self.loop = loop
        self.slices: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._response: Any = None  # the open watch stream (urllib3 response)
        self._thread = threading.Thread(target=self._run, name="endpointslice-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the watch now: closes its open stream from this thread."""
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
                response.release_conn()

    def _api(self) -> Any:
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:  # off-cluster: $KUBECONFIG (read now, not at the client's import)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
        return client.DiscoveryV1Api(client.ApiClient(configuration))

    def _owned(self, obj: Any) -> bool:
        labels = ((obj.get("metadata") or {}).get("labels") or {}) if isinstance(obj, dict) else {}
        return labels.get(SERVICE_NAME_LABEL) == self.service

    def _emit(self) -> None:
        endpoints = endpoints_from_slices(self.slices.values(), self.port_name)
        self.loop.call_soon_threadsafe(self.publish, endpoints)

    def _list_and_watch(self, api: Any) -> None:
        selector = f"{SERVICE_NAME_LABEL}={self.service}"
        listing = json.loads(api.list_namespaced_endpoint_slice(
            self.namespace, label_selector=selector, _preload_content=False, _request_timeout=(5, 30)).data)
        self.slices = {s["metadata"]["name"]: s for s in listing.get("items") or [] if self._owned(s)}
        self._emit()
        self._response = api.list_namespaced_endpoint_slice(
            self.namespace, label_selector=selector, watch=True, _preload_content=False,
            resource_version=(listing.get("metadata") or {}).get("resourceVersion"),
            timeout_seconds=WATCH_TIMEOUT_SECONDS, _request_timeout=(5, WATCH_TIMEOUT_SECONDS + 10))
        try:
            for line in self._response:
                if self._stop.is_set():
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":  # e.g. 410 Gone: list again
                    return
                obj = event.get("object")
                if not self._owned(obj):
                    continue
                if event.get("type") == "DELETED":
                    self.slices.pop(obj["metadata"]["name"], None)
                else:
                    self.slices[obj["metadata"]["name"]] = obj
                self._emit()
        finally:
            self._response.release_conn()
            self._response = None

    def _run(self) -> None:
        api = None
        while not self._stop.is_set():
            try:
                if api is None:
                    api = self._api()
                self._list_and_watch(api)
            except Exception as exc:  # the API server is away or refuses: log, wait, list again
                if self._stop.is_set():
                    return
                logger.warning("EndpointSlice watch of %s/%s failed: %r; retrying", self.namespace,
                               self.service, exc)
                self._stop.wait(RETRY_SECONDS)
