"""kopf handlers: thin I/O around ``reconcile`` and the registry that wires them.

- create / update / resume of an InferenceService reconcile it at once;
- a timer reconciles it every ``resync_seconds`` (drift repair, children deleted by hand);
- events of its Deployments, Services and Pods (status changes, deletions) reconcile the parent,
  found through a kopf index, so its status follows the pods without waiting for the timer;
- a daemon per InferenceService runs its autoscaler (autoscaler/loop.py) every
  ``spec.autoscaling.intervalSeconds``, until the object is deleted or the operator exits;
- a daemon per InferenceService runs its adapter rollout (adapters/loop.py) every
  ``defaults.ADAPTER_SYNC_SECONDS``: the spec's LoRA adapters loaded on every ready runtime pod;
- every one of them writes the status through the one ``StatusWriter`` (status/writer.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import kopf

from fleetserve.operator import defaults, names
from fleetserve.operator.adapters.loop import AdapterRollout
from fleetserve.operator.autoscaler.loop import Autoscaler
from fleetserve.operator.config import OperatorConfig
from fleetserve.operator.kube import KubeClient, KubeError, Ref
from fleetserve.operator.reconcile.loop import reconcile, refresh_status
from fleetserve.operator.settings import CHILD_RESOURCES, HANDLER_BACKOFF_SECONDS, configure
from fleetserve.operator.status.writer import StatusWriter
from fleetserve.runtime import wire

RETRY_DELAY_SECONDS = 10
# kopf cancels a stopping autoscaler daemon at once (within this many seconds): its rounds are idempotent
AUTOSCALER_CANCEL_SECONDS = 5.0
# and a stopping adapter rollout (a load in flight is cancelled; the next round sends it again)
ADAPTERS_CANCEL_SECONDS = 5.0
RESOURCE = (names.GROUP, names.VERSION, names.PLURAL)
CHILD_LABELS = {wire.LABEL_SERVICE: kopf.PRESENT}
LoginFn = Callable[..., kopf.ConnectionInfo | None]


def make_memo(config: OperatorConfig) -> kopf.Memo:
    client = KubeClient()
    return kopf.Memo(config=config, client=client, writer=StatusWriter(client))


def isvc_ref(namespace: str, name: str) -> Ref:
    return Ref(names.API_VERSION, names.KIND, namespace, name)


async def on_inference_service(namespace: str | None, name: str, logger: kopf.Logger, memo: Any,
                               **_: Any) -> None:
    """Create, update, resume, resync: reconcile the children and write the status, through the writer."""
    async def compute(live: dict[str, Any]) -> dict[str, Any]:
        return await reconcile(memo.client, memo.config, live, logger)

    assert namespace is not None  # InferenceService is namespaced
    try:
        await memo.writer.update(isvc_ref(namespace, name), compute)
    except (KubeError, aiohttp.ClientError, TimeoutError) as error:
        raise kopf.TemporaryError(f"Kubernetes API call failed: {error}", delay=RETRY_DELAY_SECONDS) from error


def inference_services(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Index: (namespace, name) -> True for every InferenceService, for handlers of its children."""
    return {(namespace, name): True}


async def on_child_event(event: kopf.RawEvent, body: kopf.Body, namespace: str | None,
                         labels: Mapping[str, str], logger: kopf.Logger, memo: Any, **kwargs: Any) -> None:
    """A Deployment, Service or Pod of ours changed or vanished.

    A Deployment or Service deleted: reconcile its InferenceService, which recreates it. A Deployment
    or Pod changed: refresh the status from the Deployments and pods, so status follows the pods.
    Other Service changes need nothing.
    """
    is_deleted = event.get("type") == "DELETED"
    kind = body.get("kind")
    if namespace is None or (kind == "Service" and not is_deleted):
        return
    parent_name = labels[wire.LABEL_SERVICE]
    index: kopf.Index[tuple[str, str], bool] = kwargs["inference_services"]  # see inference_services()
    if (namespace, parent_name) not in index:
        return

    async def compute(live: dict[str, Any]) -> dict[str, Any]:
        if is_deleted and kind != "Pod":
            return await reconcile(memo.client, memo.config, live, logger)
        return await refresh_status(memo.client, live)

    try:  # the writer skips an InferenceService being deleted: the garbage collector removes the children
        await memo.writer.update(isvc_ref(namespace, parent_name), compute)
    except (KubeError, aiohttp.ClientError, TimeoutError) as error:  # the resync timer retries
        logger.warning("Could not reconcile InferenceService %s: %s", parent_name, error)


async def run_rounds(step: Callable[[], Awaitable[float | None]], stopped: kopf.DaemonStopped,
                     logger: kopf.Logger, label: str) -> None:
    """A control loop's daemon body: ``step()`` returns the seconds until the next round, or None once
    the object is gone; API or network errors skip a round. Runs until kopf stops the daemon."""
    while not stopped:
        try:
            delay = await step()
        except (KubeError, aiohttp.ClientError, TimeoutError) as error:
            logger.warning("%s: Kubernetes API call failed, next try in %ss: %s", label, RETRY_DELAY_SECONDS,
                           error)
            delay = RETRY_DELAY_SECONDS
        if delay is None:
            return
        # Not ``stopped.wait(delay)``: kopf cancels a stopping async daemon (cancellation_timeout), and
        # a cancelled wait would leave kopf's inner timed task to fail the operator's exit.
        await asyncio.sleep(delay)


async def autoscale(namespace: str | None, name: str, stopped: kopf.DaemonStopped, logger: kopf.Logger,
                    memo: Any, **_: Any) -> None:
    """The autoscaler of one InferenceService: a step per interval until kopf stops the daemon (the
    object is deleted, the operator exits) or the object is gone."""
    assert namespace is not None  # InferenceService is namespaced
    async with aiohttp.ClientSession() as session:
        scaler = Autoscaler(memo.client, memo.writer, memo.config, isvc_ref(namespace, name), logger, session)
        await run_rounds(scaler.step, stopped, logger, "Autoscaler")


async def roll_out_adapters(namespace: str | None, name: str, stopped: kopf.DaemonStopped,
                            logger: kopf.Logger, memo: Any, **_: Any) -> None:
    """The adapter rollout of one InferenceService: a round every ``ADAPTER_SYNC_SECONDS`` until kopf stops
    the daemon or the object is gone."""
    assert namespace is not None  # InferenceService is namespaced
    async with aiohttp.ClientSession() as session:
        rollout = AdapterRollout(memo.client, memo.writer, isvc_ref(namespace, name), logger, session,
                                 interval=defaults.ADAPTER_SYNC_SECONDS)
        await run_rounds(rollout.step, stopped, logger, "Adapters")


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
    kopf.daemon(*RESOURCE, id="autoscaler", cancellation_timeout=AUTOSCALER_CANCEL_SECONDS,
                registry=registry)(autoscale)
    kopf.daemon(*RESOURCE, id="adapters", cancellation_timeout=ADAPTERS_CANCEL_SECONDS,
                registry=registry)(roll_out_adapters)
    for group_version, plural in CHILD_RESOURCES:
        kopf.on.event(group_version, plural, id=f"{plural}-changed", labels=CHILD_LABELS,
                      registry=registry)(on_child_event)
    return registry
