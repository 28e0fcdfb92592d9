# The opsctl image: the core API, an ingest worker or the policy daemon, chosen by the first argument
# (image/entrypoint.sh). A standard Dockerfile: `docker build .` works anywhere; on machines without
# a registry `make image` builds it with podman on a local Debian base (see docs/kubernetes.md).
#   docker build -t opsctl:0.1.0 .
#   docker build -t opsctl:0.1.0-minilm --build-arg MODEL=minilm .      # with the local embedding model
#   docker run -e OPSCTL_DATABASE_URL=… -e OPSCTL_REDIS_URL=… -p 8080:8080 opsctl:0.1.0 api

# any image with Python 3.11+ at `python3`, its venv module, and useradd (Debian-based)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# none: the hash embedder and OpenAI (no torch); minilm: the local sentence-transformers model
ARG MODEL=none
# pip's options for torch alone: its CPU-only wheels (PyPI's torch for Linux pulls in CUDA)
ARG TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
RUN python3 -m venv /opt/opsctl
# the dependencies in a layer of their own: a change of the code reinstalls only the project
COPY pyproject.toml image/requirements.py ./
RUN python3 requirements.py pyproject.toml "$MODEL" > requirements.txt \
 && if grep -q '^torch' requirements.txt; then \
      /opt/opsctl/bin/pip install $TORCH_PIP_ARGS "$(grep '^torch' requirements.txt)"; fi \
 && /opt/opsctl/bin/pip install -r requirements.txt
COPY README.md ./
COPY core core
COPY opsctl opsctl
COPY runbooks runbooks
# the installers stay behind: the image runs the project, it installs nothing
RUN /opt/opsctl/bin/pip install --no-deps . \
 && /opt/opsctl/bin/opsctl --help >/dev/null \
 && /opt/opsctl/bin/pip uninstall --yes --quiet pip setuptools

FROM ${PYTHON_IMAGE}
ARG MODEL=none
LABEL org.opencontainers.image.title="opsctl" \
      org.opencontainers.image.description="The opsctl core API, ingest worker and policy daemon" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.opsctl.model="${MODEL}"
# the uid/gid the manifests run as (securityContext.runAsUser: 10001)
RUN groupadd --gid 10001 opsctl \
 && useradd --uid 10001 --gid opsctl --home-dir /var/lib/opsctl --no-create-home \
      --shell /usr/sbin/nologin opsctl \
 && mkdir -p /var/lib/opsctl && chown opsctl:opsctl /var/lib/opsctl
COPY --from=builder /opt/opsctl /opt/opsctl
COPY policies /etc/opsctl/policies
COPY image/entrypoint.sh /usr/local/bin/opsctl-entrypoint
ENV PATH=/opt/opsctl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPSCTL_DATA_DIR=/var/lib/opsctl \
    OPSCTL_POLICY_DIR=/etc/opsctl/policies \
    OPSCTL_HOST=0.0.0.0 \
    OPSCTL_PORT=8080
USER 10001:10001
WORKDIR /var/lib/opsctl
# api 8080 (/healthz, /readyz, /metrics); worker /metrics 9100; daemon /metrics and /readyz 9101
EXPOSE 8080 9100 9101
# probes the role that runs (opsctl.container.probe): no curl in the image
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "opsctl.container.healthcheck"]
ENTRYPOINT ["opsctl-entrypoint"]
CMD ["api"]
