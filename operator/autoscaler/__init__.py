"""The autoscaler control loop (docs/autoscaling.md): queue depth of the ready runtime pods and the
routers' held requests → ``status.desiredReplicas``, within ``spec.replicas.min``..``max``.

``decide`` is the pure core (no I/O); ``scrape`` reads pods' ``/metrics``; ``loop`` is the kopf daemon
that samples every ``spec.autoscaling.intervalSeconds``, decides, and writes through the one
``StatusWriter`` (reconcile then applies the count to the runtime Deployment).
"""
