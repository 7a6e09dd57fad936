# syntax=docker/dockerfile:1.7
# edgeward's image: docs/container.md. Build with `docker build -t edgeward .` (BuildKit).
#
# Every RUN step that builds, installs or starts edgeward is a script of container/, so CI runs
# the same steps outside Docker (tests/test_container.py) and hadolint lints this file there too.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the wheel, with the native modules and libsodium linked statically (docs/native.md)
FROM ${PYTHON_IMAGE} AS build
# Debian packages follow the base image's release (security fixes), so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libsodium-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/build
WORKDIR /src
COPY . .
RUN PYTHON=/opt/build/bin/python sh container/build.sh --install-build-requires /src /wheels

# --- runtime: the wheel only (no compiler, no libsodium: the modules carry it), as a non-root user
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 edgeward \
    && useradd --system --uid 10001 --gid edgeward --home-dir /var/lib/edgeward --create-home \
        --shell /usr/sbin/nologin edgeward
# The wheel and install.sh are mounted for this step only: no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/tmp/wheels \
    --mount=type=bind,source=container/install.sh,target=/tmp/install.sh \
    sh /tmp/install.sh /opt/edgeward /tmp/wheels \
    && /opt/edgeward/bin/edgeward doctor
COPY --chmod=755 container/start.sh /usr/local/bin/edgeward-start

ENV PATH=/opt/edgeward/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Tuned defaults (docs/container.md says why each); override any with `-e`, docs/configuration.md
# lists them all. The admin listener answers on every interface for the HEALTHCHECK and the
# scraper: publish only the gRPC and public ports.
ENV EDGEWARD_GRPC_ADDR=0.0.0.0:50051
ENV EDGEWARD_PUBLIC_HTTP_ADDR=0.0.0.0:8080
ENV EDGEWARD_ADMIN_HTTP_ADDR=0.0.0.0:9090
# One gateway process per container: CPU affinity does not see a CPU quota (--cpus). Set it to the
# container's CPUs with EDGEWARD_REDIS_URL (workers share the replay store), or scale by replicas.
ENV EDGEWARD_WORKERS=1
# Keepalive: ping idle clients every 30 s, under the usual 60-350 s idle timeouts of NATs and load
# balancers, so a device's connection survives them and a dead one is found within 40 s.
ENV EDGEWARD_GRPC_KEEPALIVE_TIME_MS=30000
ENV EDGEWARD_GRPC_KEEPALIVE_TIMEOUT_MS=10000
ENV EDGEWARD_GRPC_MIN_PING_INTERVAL_MS=10000
# A device holds one call and a few streams; a proxy in front multiplexes many: 256 per connection.
ENV EDGEWARD_GRPC_MAX_CONCURRENT_STREAMS=256
# Connections older than 30 min get GOAWAY (jittered), so they spread over new replicas after a scale-out.
ENV EDGEWARD_GRPC_MAX_CONNECTION_AGE_MS=1800000
ENV EDGEWARD_GRPC_MAX_CONNECTION_AGE_GRACE_MS=300000
# File descriptors: the limit is the runtime's (`docker run --ulimit nofile=65536:65536`); the
# public listener keeps this many free for gRPC, the backend and Redis.
ENV EDGEWARD_FD_RESERVE=1024
# Calls in flight may finish for 5 s after SIGTERM: below the runtime's stop timeout (10 s by default).
ENV EDGEWARD_SHUTDOWN_GRACE_MS=5000
ENV EDGEWARD_HEALTHCHECK_URL=http://127.0.0.1:9090/readyz

USER 10001:10001
WORKDIR /var/lib/edgeward
EXPOSE 50051 8080 9090
STOPSIGNAL SIGTERM
# `edgeward healthcheck` starts the whole command (about 0.4 s of CPU): every 30 s, not more often.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["edgeward", "healthcheck", "--timeout", "3"]
CMD ["/usr/local/bin/edgeward-start"]
