"""Pure manifest builders: spec in, Kubernetes objects out. No I/O, no kopf.

- ``meta``: labels, owner references, quantities shared by every child;
- ``pod``: the pod-security contexts and HTTP probes every container shares;
- ``runtime``, ``router``, ``ingress``: one component each;
- ``children``: the whole desired state of one InferenceService.
"""
