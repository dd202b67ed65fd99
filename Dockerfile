# syntax=docker/dockerfile:1.7
# The `streams` image: the CLI, the agents' worker, the bridge, the schema registry and the reference Celery
# tasks, with topics.yaml and schemas/ under /app. deploy/kubernetes and docker-compose.yml run it as
# streams:0.1.0:
#   docker build -t streams:0.1.0 .
#   docker run --rm streams:0.1.0 topics lint
#
# Both stages start from the same Python image, so the wheel built against the builder's glibc always fits
# the runtime's. The Rust toolchain (the PyO3 extension streams._avro_native, edition 2024, Rust >= 1.85)
# stays in the builder.

ARG PYTHON_IMAGE=python:3.11-slim
ARG RUST_TOOLCHAIN=1.88.0

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG RUST_TOOLCHAIN
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV RUSTUP_HOME=/opt/rustup \
    CARGO_HOME=/opt/cargo \
    PATH=/opt/cargo/bin:${PATH} \
    CARGO_TARGET_DIR=/cache/cargo-target \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --no-modify-path --profile minimal --default-toolchain "${RUST_TOOLCHAIN}" \
    && rustc --version && cargo --version

WORKDIR /src

# Dependencies first, from pyproject.toml alone: this layer survives edits to the package's code.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip wheel --wheel-dir /wheels -r /tmp/requirements.txt

# Then the package: maturin (the pyproject build backend) compiles streams/_native into streams._avro_native.
# README.md is the project's `readme`, which maturin reads into the wheel's metadata.
COPY README.md ./
COPY streams/ ./streams/
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=cache,target=/opt/cargo/registry \
    --mount=type=cache,target=/cache/cargo-target \
    pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# A numeric user (10001): Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 streams \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/streams --shell /usr/sbin/nologin streams \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/streams

# Everything comes from the builder's wheels (--no-index): the runtime stage needs no compiler nor PyPI.
# pip compiles the bytecode here, so a read-only root filesystem costs nothing at start.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels --disable-pip-version-check /wheels/streams-*.whl \
    && python -c "import streams._avro_native, streams.cli" \
    && streams --help > /dev/null

WORKDIR /app
COPY topics.yaml ./
COPY schemas/ ./schemas/

# The catalog and schemas are owned by root and read-only to the service user; state goes to the data dir
# (a volume in compose, an emptyDir in Kubernetes).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/streams \
    STREAMS_CATALOG_PATH=/app/topics.yaml \
    STREAMS_DATA_DIR=/var/lib/streams

USER 10001:10001

# 6066: worker /metrics and /search; 8081: schema registry; 9310: bridge /metrics.
EXPOSE 6066 8081 9310
ENTRYPOINT ["streams"]
CMD ["--help"]
