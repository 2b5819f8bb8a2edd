"""The InferenceService spec as a pydantic model: the source of truth for the CRD's schema.

Field descriptions become the CRD's OpenAPI descriptions (what `kubectl explain fsvc.spec` prints),
so every field has one. Checks the OpenAPI schema can express (types, enums, minimums, patterns)
live here as constraints; checks across fields live in ``validation.py`` and surface as a
``Ready=False`` condition.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from fleetserve.operator import defaults

# A Kubernetes resource quantity ("500m", "8Gi", 2): an int-or-string in the CRD, a string here.
Quantity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}),
]
IntOrPercent = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}),
]
# A Kubernetes object the operator copies into the pod spec as is (affinity, a volume, …): the API
# server validates it when the Deployment is written.
KubeObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
URI_PATTERN = r"^[a-z][a-z0-9+.-]*://.+$"
HOST_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Policy = Literal["cache_aware", "round_robin", "least_load", "power_of_two", "random"]
DType = Literal["auto", "float16", "bfloat16", "float32"]
Device = Literal["cuda", "cpu"]
LogLevel = Literal["debug", "info", "warning", "error"]


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretKeyRef(Model):
    name: str = Field(description="Name of a Secret in the InferenceService's namespace.", min_length=1)
    key: str = Field(description="Key inside the Secret whose value is used.", min_length=1)


class HubTokenSecret(SecretKeyRef):
    key: str = Field(default="token", description="Key inside the Secret that holds the token.", min_length=1)


class ApiKeySecret(SecretKeyRef):
    key: str = Field(default="api-key", description="Key inside the Secret that holds the API key.", min_length=1)


class ModelSource(Model):
    source: str = Field(
        description="Where the weights come from: hf://ORG/NAME (downloaded from the Hugging Face hub at "
        "start-up) or pvc://CLAIM/PATH (a directory on a PersistentVolumeClaim, mounted read-only).",
        pattern=URI_PATTERN,
    )
    served_name: str | None = Field(
        default=None,
        description="Model id clients put in the `model` field of their requests. "
        "Defaults to the last path segment of the source.",
        min_length=1,
    )
    hub_token_secret: HubTokenSecret | None = Field(
        default=None, description="Secret holding a Hugging Face token, passed to the runtime as HF_TOKEN."
    )


class EnvVar(Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!(has(self.value) && has(self.secretKeyRef))", "message": "set value or secretKeyRef, not both"}]})

    name: str = Field(description="Environment variable name.", min_length=1)
    value: str | None = Field(default=None, description="Literal value.")
    secret_key_ref: SecretKeyRef | None = Field(
        default=None, description="Take the value from a Secret key instead of `value`."
    )


class Toleration(Model):
    key: str | None = Field(default=None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="How key and value are compared.")
    value: str | None = Field(default=None, description="Taint value to match when operator is Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated before eviction.", ge=0
    )


class Resources(Model):
    gpus: int = Field(default=0, description="NVIDIA GPUs per replica (nvidia.com/gpu).", ge=0)
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description='Resource requests per replica, e.g. {cpu: "4", memory: 32Gi}.'
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Resource limits per replica, e.g. {memory: 48Gi}."
    )


class ModelCache(Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!(has(self.persistentVolumeClaim) && has(self.hostPath))",
         "message": "set persistentVolumeClaim or hostPath, not both"}]})

    persistent_volume_claim: str | None = Field(
        default=None, description="A ReadWriteMany PersistentVolumeClaim shared by every replica: the first "
        "one downloads, the others find the weights there.", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    host_path: str | None = Field(default=None, description="A directory on the node shared by the replicas "
                                  "on that node (a node cache).", pattern=r"^/")
    size_limit: Quantity | None = Field(default=None, description="sizeLimit of the per-pod emptyDir used "
                                        "when neither a claim nor a host path is set.")


class Rollout(Model):
    max_surge: IntOrPercent = Field(description="Extra pods a rollout may start (count or percentage).")
    max_unavailable: IntOrPercent = Field(description="Pods a rollout may take down (count or percentage).")


class DisruptionBudget(Model):
    max_unavailable: IntOrPercent = Field(description="Runtime pods voluntary disruptions (node drains) may "
                                          "take down at once, e.g. 1 or 25%.")


class Runtime(Model):
    image: str | None = Field(
        default=None, description="Container image running `fleetserve serve`. Defaults to the operator's "
        "configured runtime image.", min_length=1
    )
    args: list[str] = Field(
        default_factory=list, description="Extra `fleetserve serve` flags appended after the ones the "
        "operator derives from this spec."
    )
    resources: Resources = Field(default_factory=Resources, description="Compute resources per replica.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate.")
    context_length: int | None = Field(default=None, description="--context-length: maximum tokens per "
                                       "sequence; defaults to the model's.", ge=1)
    max_running_requests: int | None = Field(default=None, description="--max-running-requests: batch "
                                             "size cap per replica.", ge=1)
    max_queued_requests: int | None = Field(default=None, description="--max-queued-requests: waiting "
                                            "requests per replica before 503s.", ge=0)
    dtype: DType = Field(default="auto", description="--dtype of the weights and activations.")
    device: Device | None = Field(default=None, description="--device; defaults to cuda when gpus > 0, "
                                  "else cpu.")
    log_level: LogLevel = Field(default="info", description="--log-level of the runtime.")
    enable_cache_report: bool = Field(default=True, description="--enable-cache-report: report cached "
                                      "prompt tokens in usage.")
    pod_annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations on the "
                                            "runtime pods.")
    pod_labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the runtime pods "
                                       "(the operator's own labels win on a clash).")
    affinity: KubeObject | None = Field(default=None, description="Pod affinity and anti-affinity "
                                        "(a Kubernetes Affinity object), e.g. one replica per node.")
    topology_spread_constraints: list[KubeObject] = Field(
        default_factory=list, description="Kubernetes TopologySpreadConstraints for the runtime pods; a "
        "constraint without labelSelector gets the runtime pods' selector.")
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the runtime pods.",
                                            min_length=1)
    runtime_class_name: str | None = Field(default=None, description="RuntimeClass of the runtime pods, e.g. "
                                           "nvidia.", min_length=1)
    volumes: list[KubeObject] = Field(default_factory=list, description="Extra pod volumes (Kubernetes "
                                      "Volume objects).")
    volume_mounts: list[KubeObject] = Field(default_factory=list, description="Extra volume mounts of the "
                                            "runtime container (Kubernetes VolumeMount objects).")
    model_cache: ModelCache = Field(default_factory=ModelCache, description="Where downloaded "
                                    "weights are kept (HF_HOME).")
    shm_size_limit: Quantity | None = Field(default=None, description="sizeLimit of the in-memory /dev/shm "
                                            "volume GPU replicas get.")
    rollout: Rollout | None = Field(default=None, description="RollingUpdate bounds; by default maxSurge 0 / "
                                    "maxUnavailable 1 when GPUs are requested (a full GPU node cannot take a "
                                    "surge pod), else maxSurge 1 / maxUnavailable 0.")
    startup_timeout_seconds: int = Field(
        default=defaults.STARTUP_TIMEOUT_SECONDS, description="How long a replica may take to download "
        "and load the model before it is restarted.", ge=defaults.PROBE_PERIOD_SECONDS)
    termination_grace_period_seconds: int = Field(
        default=defaults.TERMINATION_GRACE_SECONDS, description="Time a stopping replica gets to finish "
        "in-flight requests.", ge=0)


class Replicas(Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.min <= self.max", "message": "replicas.min must not exceed replicas.max"}]})

    min: int = Field(default=1, description="Fewest runtime replicas the autoscaler keeps (autoscaling on "
                     "only). 0 lets an idle service scale to zero: the routers hold requests while the "
                     "autoscaler starts a replica.", ge=0)
    max: int = Field(default=1, description="Most runtime replicas the autoscaler may run (autoscaling on "
                     "only).", ge=1)
    count: int = Field(
        default=1, description="Runtime replicas while autoscaling is off; the scale subresource "
        "(`kubectl scale`, an HPA, KEDA) reads and sets it. Ignored while autoscaling is on.", ge=0)


class Autoscaling(Model):
    enabled: bool = Field(default=False, description="Scale runtime replicas between replicas.min and "
                          "replicas.max on the requests running and waiting in the ready pods and held by "
                          "the routers; replicas.count is ignored while on.")
    target_queue_depth: int = Field(default=4, description="Waiting requests per replica the autoscaler "
                                    "allows on top of a full batch (--max-running-requests) before it "
                                    "scales up.", ge=1)
    scale_up_stabilization_seconds: int = Field(default=0, description="Scale up only to the lowest "
                                                "recommendation of this many last seconds (0: at once).",
                                                ge=0)
    scale_down_stabilization_seconds: int = Field(default=300, description="Scale down only to the highest "
                                                  "recommendation of this many last seconds.", ge=0)
    interval_seconds: int = Field(default=5, description="How often the autoscaler reads the pods' and "
                                  "routers' /metrics.", ge=1)


class Adapter(Model):
    name: str = Field(description="Adapter name; clients request it as `model: BASE:NAME`.", pattern=DNS_LABEL,
                      max_length=defaults.MAX_ADAPTER_NAME_LENGTH)
    source: str = Field(description="Where the PEFT LoRA adapter is: hf://ORG/NAME (each runtime pod downloads "
                        "it) or pvc://CLAIM/PATH (a directory on a PersistentVolumeClaim, mounted read-only "
                        f"in the runtime pods at {defaults.ADAPTER_MOUNT_PATH}/CLAIM).", pattern=URI_PATTERN)


class Router(Model):
    policy: Policy = Field(default="cache_aware", description="How the router picks a runtime replica.")
    replicas: int = Field(default=1, description="Router replicas.", ge=1)
    image: str | None = Field(default=None, description="Router image; defaults to the runtime image.",
                              min_length=1)
    resources: Resources = Field(default_factory=Resources, description="Compute resources per router "
                                 "replica (gpus is ignored).")
    max_hold_seconds: int = Field(default=defaults.ROUTER_MAX_HOLD_SECONDS, description="How long the router "
                                  "holds a request while no runtime replica is ready (a rollout, a restart, a "
                                  "scale from zero) before it answers 503; 0 answers 503 at once.", ge=0)


class Ingress(Model):
    host: str = Field(description="Host name the Ingress serves, e.g. llm.example.com.", pattern=HOST_PATTERN,
                      max_length=253)
    class_name: str | None = Field(default=None, description="IngressClass to use; the cluster default "
                                   "when empty.")
    path: str = Field(default="/", description="URL path prefix routed to the router.", pattern=r"^/")
    tls_secret_name: str | None = Field(default=None, description="TLS Secret for the host; plain HTTP "
                                        "when empty.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations for the Ingress, "
                                        "e.g. controller timeouts for long streams.")


class InferenceServiceSpec(Model):
    """Desired state of an InferenceService: a model served behind a router."""

    model: ModelSource = Field(description="The model to serve.")
    runtime: Runtime = Field(default_factory=Runtime, description="How runtime pods run.")
    replicas: Replicas = Field(default_factory=Replicas, description="Runtime replica bounds.")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="Queue-depth autoscaling "
                                     "of the runtime replicas (docs/autoscaling.md).")
    adapters: list[Adapter] = Field(default_factory=list, description="LoRA adapters the operator loads on "
                                    "every ready runtime replica, and unloads any other (docs/adapters.md). A "
                                    "non-empty list starts the runtime with --enable-lora; adding or removing a "
                                    "pvc:// claim rolls the runtime pods out, other changes are loaded on the "
                                    "running pods.")
    router: Router = Field(default_factory=Router, description="The router in front of the runtime pods.")
    ingress: Ingress | None = Field(default=None, description="Expose the router outside the cluster.")
    image_pull_secrets: list[str] = Field(default_factory=list, description="Secrets with registry "
                                          "credentials, for the runtime and the router pods.")
    disruption_budget: DisruptionBudget | None = Field(default=None, description="A PodDisruptionBudget for "
                                                       "the runtime pods; none when empty.")
    api_key_secret: ApiKeySecret | None = Field(default=None, description="Secret holding the API key "
                                                "clients must send as a Bearer token.")


class Condition(Model):
    type: str = Field(description="Condition type: Ready, Progressing, Degraded, ScalingActive or "
                      "AdaptersReady.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str = Field(description="CamelCase reason for the last transition, for machines.")
    message: str = Field(default="", description="What happened and what to do about it, for humans.")
    observed_generation: int | None = Field(default=None, description="metadata.generation the "
                                            "condition was computed from.", ge=0)
    last_transition_time: str = Field(description="When status last changed (RFC 3339).",
                                      json_schema_extra={"format": "date-time"})


class AdapterState(Model):
    name: str = Field(description="The adapter's name in spec.adapters.")
    ready_replicas: int = Field(default=0, description="Ready runtime pods that have it loaded from its "
                                "spec source.", ge=0)
    message: str = Field(default="", description="Empty when every ready runtime pod has it; else why the "
                         "first pod lacking it does (the runtime's reason for a refused load).")


class InferenceServiceStatus(Model):
    """Observed state, written by the operator only."""

    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing, Degraded, "
                                        "ScalingActive and AdaptersReady, "
                                        "following Kubernetes condition conventions; one per type.",
                                        json_schema_extra={"x-kubernetes-list-type": "map",
                                                           "x-kubernetes-list-map-keys": ["type"]})
    observed_generation: int | None = Field(default=None, description="metadata.generation the status "
                                            "reflects.", ge=0)
    replicas: int = Field(default=0, description="Runtime pods that exist.", ge=0)
    ready_replicas: int = Field(default=0, description="Runtime pods passing their readiness probe.", ge=0)
    updated_replicas: int = Field(default=0, description="Runtime pods running the current spec.", ge=0)
    desired_replicas: int = Field(default=0, description="Runtime pods the operator asks for: replicas.count, "
                                  "or the autoscaler's decision while autoscaling is on.", ge=0)
    router_ready_replicas: int = Field(default=0, description="Router pods passing their readiness probe.",
                                       ge=0)
    selector: str = Field(default="", description="Label selector of the runtime pods (scale subresource).")
    url: str | None = Field(default=None, description="Where clients reach the OpenAI-compatible API.")
    queue_depth: int | None = Field(default=None, description="Requests waiting in the ready runtime pods "
                                    "plus those the routers hold, at the autoscaler's last sample "
                                    "(autoscaling on only).", ge=0)
    adapters: list[AdapterState] = Field(default_factory=list, description="One entry per spec.adapters "
                                         "entry, from the adapter rollout's last round (docs/adapters.md).")
