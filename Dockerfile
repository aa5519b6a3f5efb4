# syntax=docker/dockerfile:1
# One image per mloop service, chosen at build time:
#   docker build --build-arg SERVICE=trainer -t mloop-trainer .
# SERVICE is one of ingest, trainer, validator, registry, serving, drift, ui (the web UI). The build stage installs that
# service's uv workspace member and its dependencies exactly as uv.lock pins them (no dev tools); the
# final stage gets only the virtual environment, so no compiler, uv or source tree ships.

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG UV_VERSION
ARG SERVICE
# uv from PyPI, the same version the Makefile uses; its own venv keeps it out of the app's.
RUN python -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Every workspace member's pyproject.toml must be present for uv to read the workspace, so the
# whole (filtered: .dockerignore) tree goes in; only the chosen member is installed.
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
COPY cli ./cli
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<ingest|trainer|validator|registry|serving|drift|ui>" >&2; exit 1; } \
    && test -d "services/${SERVICE}" || { echo "unknown SERVICE '${SERVICE}'" >&2; exit 1; }
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --frozen --no-dev --no-editable --package "mloop-${SERVICE}"
# Services with a database keep their alembic.ini for the migration job (`alembic -c /app/alembic.ini upgrade head`);
# the migrations themselves ship inside the package (script_location = mloop_<service>:migrations).
RUN if [ -f "services/${SERVICE}/alembic.ini" ]; then cp "services/${SERVICE}/alembic.ini" /app/alembic.ini; fi

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG SERVICE
ARG CODE_VERSION=unknown
LABEL org.opencontainers.image.title="mloop-${SERVICE}" \
      org.opencontainers.image.source="https://github.com/mloop/mloop" \
      org.opencontainers.image.revision="${CODE_VERSION}"
RUN groupadd --system --gid 10001 mloop \
    && useradd --system --uid 10001 --gid mloop --home-dir /app --no-create-home --shell /usr/sbin/nologin mloop \
    && mkdir -p /var/lib/mloop/artifacts /var/lib/mloop/serving-spill \
    && chown -R mloop:mloop /var/lib/mloop
COPY --from=build /app /app
# MLOOP_SERVICE is read by the entrypoint and the health check only (no setting has that name).
# The artifact root and the spill folder are absolute: a relative one would resolve from the working dir.
# The folder root is for a single container only; deployments set MLOOP_ARTIFACTS_ROOT to s3://bucket/prefix.
# MLOOP_CODE_VERSION replaces `git rev-parse` (no git in the image) in the runs' code_version.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLOOP_SERVICE=${SERVICE} \
    MLOOP_CODE_VERSION=${CODE_VERSION} \
    MLOOP_ARTIFACTS_ROOT=/var/lib/mloop/artifacts \
    MLOOP_SERVING_LOG_SPILL_DIR=/var/lib/mloop/serving-spill
WORKDIR /app
USER 10001:10001
EXPOSE 8001 8002 8003 8004 8005 8006 8007
# Liveness only (/healthz): readiness (/readyz) depends on Kafka and PostgreSQL, which an orchestrator
# checks separately. The port is the service's default (the web UI's: UI_PORT) unless MLOOP_<SERVICE>_PORT moves it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; from mloop_common.settings import SERVICE_PORTS, UI_PORT; s = os.environ['MLOOP_SERVICE']; p = os.environ.get(f'MLOOP_{s.upper()}_PORT') or {**SERVICE_PORTS, 'ui': UI_PORT}[s]; urllib.request.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4)"]
# exec: the service is PID 1's replacement and gets SIGTERM directly (it drains its consumers and outbox).
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"mloop_${MLOOP_SERVICE}\"", "mloop"]
