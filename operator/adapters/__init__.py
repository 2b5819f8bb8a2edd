"""The adapter rollout control loop (docs/adapters.md): the spec's LoRA adapters loaded on every ready
runtime pod, per-adapter status, reload after a pod restart.

``decide`` is the pure core (no I/O); ``locate`` maps a source to the path the runtime loads;
``client`` calls a pod's adapter API; ``loop`` is the kopf daemon's round: read every ready pod's
``/v1/models``, decide, load and unload, write ``status.adapters`` and ``AdaptersReady`` through the one
``StatusWriter``.
"""
