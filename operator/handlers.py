"""kopf handlers: thin I/O around ``reconcile`` and the registry that wires them.

- create / update / resume of an InferenceService reconcile it at once;
- a timer reconciles it every ``resync_seconds`` (drift repair, children deleted by hand);
- events of its Deployments and Services (status changes, deletions) reconcile the parent, found
  through a kopf index, so its status follows the pods without waiting for the timer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import kopf

from fleetserve.operator import names
from fleetserve.operator.config import OperatorConfig
from fleetserve.operator.kube import KubeClient, KubeError, Ref
from fleetserve.operator.reconcile.loop import reconcile, refresh_status
from fleetserve.operator.settings import HANDLER_BACKOFF_SECONDS, configure
from fleetserve.operator.status.compute import status_changes
from fleetserve.runtime import wire

RETRY_DELAY_SECONDS = 10
RESOURCE = (names.GROUP, names.VERSION, names.PLURAL)
CHILD_LABELS = {wire.LABEL_SERVICE: kopf.PRESENT}
LoginFn = Callable[..., kopf.ConnectionInfo | None]


def make_memo(config: OperatorConfig) -> kopf.Memo:
    return kopf.Memo(config=config, client=KubeClient())


async def reconcile_or_retry(memo: Any, body: Mapping[str, Any], logger: kopf.Logger) -> dict[str, Any]:
    try:
        return await reconcile(memo.client, memo.config, body, logger)
    except (KubeError, aiohttp.ClientError, TimeoutError) as error:
        raise kopf.TemporaryError(f"Kubernetes API call failed: {error}", delay=RETRY_DELAY_SECONDS) from error


async def on_inference_service(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, memo: Any,
                               **_: Any) -> None:
    """Reconcile and put the status changes into kopf's patch of the InferenceService."""
    new_status = await reconcile_or_retry(memo, body, logger)
    patch.status.update(status_changes(body.get("status") or {}, new_status))


def inference_services(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Index: (namespace, name) -> the InferenceService, for handlers of its children."""
    return {(namespace, name): copy.deepcopy(dict(body))}


async def on_child_event(event: kopf.RawEvent, body: kopf.Body, namespace: str | None,
                         labels: Mapping[str, str], logger: kopf.Logger, memo: Any, **kwargs: Any) -> None:
    """A Deployment or Service of ours changed or vanished.

    Deleted: reconcile its InferenceService, which recreates it. A Deployment changed: refresh
    the InferenceService's status from the Deployments (two reads), so status follows the pods.
    Other Service changes need nothing.
    """
    is_deleted = event.get("type") == "DELETED"
    if namespace is None or (not is_deleted and body.get("kind") != "Deployment"):
        return
    parent_name = labels[wire.LABEL_SERVICE]
    index: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs["inference_services"]  # see inference_services()
    for parent in index.get((namespace, parent_name), []):
        if parent["metadata"].get("deletionTimestamp"):
            continue  # being deleted: the garbage collector removes the children
        try:
            if is_deleted:
                new_status = await reconcile(memo.client, memo.config, parent, logger)
            else:
                new_status = await refresh_status(memo.client, parent)
            changes = status_changes(parent.get("status") or {}, new_status)
            if changes:
                await memo.client.patch_status(Ref(names.API_VERSION, names.KIND, namespace, parent_name), changes)
        except (KubeError, aiohttp.ClientError, TimeoutError) as error:  # the resync timer retries
            logger.warning("Could not reconcile InferenceService %s: %s", parent_name, error)


def default_login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: its ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config."""
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)


def build_registry(config: OperatorConfig, login: LoginFn = default_login) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    async def authenticate(settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger,
                           **_: Any) -> kopf.ConnectionInfo | None:
        info = login(settings=settings, logger=logger)
        if info is not None:
            await memo.client.connect(info)
        return info

    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, config)

    async def cleanup(memo: Any, **_: Any) -> None:
        await memo.client.close()

    kopf.on.login(registry=registry)(authenticate)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.index(*RESOURCE, registry=registry)(inference_services)
    for on, handler_id in ((kopf.on.create, "create"), (kopf.on.update, "update"), (kopf.on.resume, "resume")):
        on(*RESOURCE, id=handler_id, backoff=HANDLER_BACKOFF_SECONDS, registry=registry)(on_inference_service)
    kopf.timer(*RESOURCE, id="resync", interval=config.resync_seconds, initial_delay=config.resync_seconds,
               registry=registry)(on_inference_service)
    for group_version, plural in (("apps/v1", "deployments"), ("v1", "services")):
        kopf.on.event(group_version, plural, id=f"{plural}-changed", labels=CHILD_LABELS,
                      registry=registry)(on_child_event)
    return registry
