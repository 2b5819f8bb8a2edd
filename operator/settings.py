"""kopf settings for the fleetserve operator: storage, posting, backoff, peering, watching."""

from __future__ import annotations

import logging

import kopf

from fleetserve.operator import names
from fleetserve.operator.config import OperatorConfig
from fleetserve.runtime import wire

# API errors: retry soon, then back off to a minute; never give up on a transient failure.
ERROR_BACKOFFS = (1, 2, 5, 10, 30, 60)
HANDLER_BACKOFF_SECONDS = 15
WATCH_SERVER_TIMEOUT_SECONDS = 300  # the API server closes a watch after this; kopf reconnects
WATCH_CLIENT_TIMEOUT_SECONDS = 330
CHILD_RESOURCES = (("apps/v1", "deployments"), ("v1", "services"), ("v1", "pods"))


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    # Keep kopf's bookkeeping in annotations under our own prefix, so status holds only our schema.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{names.GROUP}/finalizer"
    # Kubernetes Events only for what a user should see: warnings and errors, not every log line.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = names.FIELD_MANAGER
    settings.networking.error_backoffs = ERROR_BACKOFFS
    settings.execution.default_backoff = HANDLER_BACKOFF_SECONDS
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_SECONDS
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_SECONDS
    # Only watch our own children, filtered by the API server rather than in the operator.
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = wire.LABEL_SERVICE
    # Peering: replicas with a lower priority pause while a higher one is alive (see main.py).
    settings.peering.name = config.peering_name
    settings.peering.priority = config.priority
    settings.peering.standalone = config.standalone
    settings.peering.mandatory = not config.standalone
    settings.peering.clusterwide = config.clusterwide
    settings.peering.stealth = True
