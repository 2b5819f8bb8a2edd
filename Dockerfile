# syntax=docker/dockerfile:1
# One image for every fleetserve process: `fleetserve serve` (GPU runtime), `fleetserve router`
# and `fleetserve operator`. The operator and the router never import torch; they simply share it.
#
#   docker build -t fleetserve:0.1.0 .
#   docker run --gpus all -p 30000:30000 fleetserve:0.1.0 serve --model-path Qwen/Qwen2.5-0.5B-Instruct
#
# CUDA_IMAGE is the CUDA user-space the GPU wheels run on; the driver comes from the node.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# ---- build the fleetserve wheel (no compilers or sources reach the final image) ----
FROM python:3.12.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime/ runtime/
COPY operator/ operator/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime image ----
FROM ${CUDA_IMAGE}
ARG TORCH_VERSION=2.13.0
ARG FLASHINFER_VERSION=0.6.13
ARG APP_UID=10001

LABEL org.opencontainers.image.title="fleetserve" \
      org.opencontainers.image.description="LLM serving on Kubernetes: runtime, router and operator" \
      org.opencontainers.image.source="https://github.com/fleetserve/fleetserve" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/fleetserve \
    PATH=/opt/fleetserve/bin:$PATH \
    HF_HOME=/var/cache/fleetserve/huggingface

# Python from the distribution; versions follow the pinned base image's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.12 -m venv "$VIRTUAL_ENV" \
 && useradd --uid "$APP_UID" --user-group --create-home --shell /usr/sbin/nologin fleetserve \
 && mkdir -p /var/cache/fleetserve \
 && chown "$APP_UID:$APP_UID" /var/cache/fleetserve

# The heavy, rarely changing layer first: CUDA torch (the PyPI Linux wheel bundles CUDA) and
# FlashInfer with its precompiled kernels, at pinned versions.
RUN pip install "torch==${TORCH_VERSION}" \
        "flashinfer-python==${FLASHINFER_VERSION}" "flashinfer-cubin==${FLASHINFER_VERSION}"

# Then fleetserve itself, whose remaining dependencies come from pyproject.toml.
COPY --from=wheel /wheels/ /tmp/wheels/
RUN pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels

USER 10001:10001
WORKDIR /home/fleetserve
# runtime (serve), router, operator liveness
EXPOSE 30000 8000 8080
ENTRYPOINT ["fleetserve"]
CMD ["serve"]
