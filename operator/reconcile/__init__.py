"""The reconcile control loop: children from the spec (``loop``), applied idempotently (``apply``).

Other control loops (autoscaler, adapters) get their own packages beside this one; all of them
report through ``fleetserve.operator.status``.
"""
