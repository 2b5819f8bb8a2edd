"""Model and adapter locations: ``hf://ORG/NAME``, ``pvc://CLAIM/PATH`` and ``demo://ARCH-SIZE``, parsed once."""

from __future__ import annotations

import re
from dataclasses import dataclass

HF_SCHEME = "hf"
PVC_SCHEME = "pvc"
DEMO_SCHEME = "demo"
SCHEMES = (HF_SCHEME, PVC_SCHEME, DEMO_SCHEME)
# The runtime's built-in demo models (runtime/demo/spec.py): ARCH-SIZE.
_DEMO_NAME = re.compile(r"^(llama|qwen2|qwen3|mistral)-(tiny|small|large)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True, slots=True)
class HubLocation:
    """A Hugging Face hub repository, downloaded by the runtime at start-up."""

    repo: str

    @property
    def basename(self) -> str:
        return self.repo.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class PvcLocation:
    """A directory on a PersistentVolumeClaim in the InferenceService's namespace."""

    claim: str
    path: str  # relative to the volume's root; "" for the root itself

    @property
    def basename(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1] or self.claim


@dataclass(frozen=True, slots=True)
class DemoLocation:
    """The runtime's built-in seeded demo model (random weights, real tokenizer): a smoke test that
    needs no hub and no volume."""

    name: str  # ARCH-SIZE, e.g. llama-tiny

    @property
    def basename(self) -> str:
        return self.name

    @property
    def uri(self) -> str:
        return f"{DEMO_SCHEME}://{self.name}"


Location = HubLocation | PvcLocation | DemoLocation


class SourceError(ValueError):
    """A source URI that no runtime could load; the message tells the user what to write instead."""


def parse_source(uri: str) -> Location:
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise SourceError(f"{uri!r} has no scheme; write hf://ORG/NAME, pvc://CLAIM/PATH or demo://ARCH-SIZE")
    if scheme == HF_SCHEME:
        if not _HUB_REPO.match(rest):
            raise SourceError(f"{uri!r} is not a hub repository; write hf://ORG/NAME, e.g. hf://Qwen/Qwen3-8B")
        return HubLocation(repo=rest)
    if scheme == PVC_SCHEME:
        claim, _, path = rest.partition("/")
        if not _DNS_SUBDOMAIN.match(claim):
            raise SourceError(f"{uri!r}: {claim!r} is not a valid PersistentVolumeClaim name")
        if ".." in path.split("/"):
            raise SourceError(f"{uri!r}: the path inside the claim must not contain '..'")
        return PvcLocation(claim=claim, path=path.strip("/"))
    if scheme == DEMO_SCHEME:
        if not _DEMO_NAME.match(rest):
            raise SourceError(f"{uri!r} is not a demo model; write demo://ARCH-SIZE with ARCH one of llama, "
                              "qwen2, qwen3, mistral and SIZE one of tiny, small, large, e.g. demo://llama-tiny")
        return DemoLocation(name=rest)
    supported = ", ".join(f"{s}://" for s in SCHEMES)
    raise SourceError(f"{uri!r} uses the unsupported scheme {scheme}://; supported: {supported}")
