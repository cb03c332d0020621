# syntax=docker/dockerfile:1
# Container image of the ConnectyCube exporter.
#
#   docker build -t ghcr.io/connectycube-exporter/connectycube-exporter:0.1.0 .
#   docker run --rm -p 19742:19742 ghcr.io/connectycube-exporter/connectycube-exporter:0.1.0 --demo
#
# Released images are published under that name for linux/amd64 and linux/arm64.
# Arguments after the image name are the exporter's flags (see --help). The final stage
# has no compiler, no apt lists, no pip cache and no wheels: only Python, the installed
# package and its dependencies. It runs as UID/GID 10001. Needs BuildKit (the default
# builder of Docker 23+ and of docker compose) for the RUN --mount of the last stage.

# The dependencies are exactly those of requirements.txt, the lock file: every version
# pinned and every download checked against its hashes (--require-hashes). Regenerate it
# after changing the dependencies in pyproject.toml (docs/development.md):
#   uv pip compile pyproject.toml --generate-hashes --python-version 3.11 --output-file requirements.txt
#
# The base image is pinned by tag here; Renovate (.github/renovate.json, pinDigests) adds
# its digest on its first run and keeps tag and digest current.

# Stage 1: the locked dependencies' wheels, hash-checked, and the project's own wheel.
FROM python:3.11.12-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY requirements.txt ./
RUN pip download --no-cache-dir --require-hashes --only-binary=:all: --dest /wheels \
        -r requirements.txt
# pyproject.toml has readme = "README.md": the build needs it next to the code.
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Stage 2: the runtime image.
FROM python:3.11.12-slim-bookworm

ARG VERSION=0.1.0
ARG SOURCE_URL="https://github.com/connectycube-exporter/connectycube-exporter"

LABEL org.opencontainers.image.title="connectycube-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the ConnectyCube Admin Statistics API" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The wheels and the lock are bind-mounted for this one step, so they never become a
# layer of the image. The dependencies install from the lock, hashes checked again; the
# package, pinned to VERSION (a mismatch fails the build), adds none (pip check proves
# the lock has them all).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.txt,target=/run/requirements.txt \
    pip install --no-cache-dir --no-index --find-links=/wheels --require-hashes \
        -r /run/requirements.txt \
    && pip install --no-cache-dir --no-index --find-links=/wheels --no-deps \
        "connectycube-exporter==${VERSION}" \
    && pip check \
    && groupadd --gid 10001 exporter \
    && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin exporter

USER 10001:10001

# The default CONNECTYCUBE_LISTEN_ADDRESS is 0.0.0.0:19742.
EXPOSE 19742

# The exporter checks itself: `healthcheck` reads the same settings as the daemon (the
# listen address, the web config file), asks /-/healthy over HTTPS when TLS is on, and
# exits 0 when healthy, 1 otherwise; no curl needed. It sees the environment of the
# container but not the daemon's flags: set CONNECTYCUBE_LISTEN_ADDRESS and
# CONNECTYCUBE_WEB_CONFIG_FILE as environment variables, not flags.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["connectycube-exporter", "healthcheck"]

ENTRYPOINT ["connectycube-exporter"]
