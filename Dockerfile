# sgbus image: the worker stages, the gateway, connectors and the CLI (one image, the command
# chooses). Multi-stage: build the wheel and its pinned dependencies, then copy only the virtual
# environment into a slim runtime that runs as a non-root user with no shell tools it needs.
# Base images pinned by version; pin by digest in your registry mirror (`@sha256:...`).

FROM docker.io/library/python:3.11.7-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bus ./bus
COPY schemas ./schemas
COPY connectors ./connectors
COPY requirements ./requirements
RUN python -m venv /opt/sgbus \
 && /opt/sgbus/bin/pip install --upgrade pip==24.3.1 \
 && /opt/sgbus/bin/pip install --no-deps --require-hashes -r requirements/spacy-model.txt \
 && /opt/sgbus/bin/pip install .

FROM docker.io/library/python:3.11.7-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="sgbus" \
      org.opencontainers.image.description="Secure multi-agency safeguarding event bus" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 sgbus \
 && useradd --system --uid 10001 --gid sgbus --home-dir /var/lib/sgbus --shell /usr/sbin/nologin sgbus \
 && mkdir -p /var/lib/sgbus && chown sgbus:sgbus /var/lib/sgbus
COPY --from=build /opt/sgbus /opt/sgbus
# The partnership's policies and data, for the CLI's tests and simulations (workers read the
# signed bundle from OPA, never these files).
COPY --chown=root:root policies /opt/sgbus/policies
ENV PATH=/opt/sgbus/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SGBUS_HOME=/var/lib/sgbus SGBUS_POLICIES_DIR=/opt/sgbus/policies
USER 10001:10001
WORKDIR /var/lib/sgbus
ENTRYPOINT ["sgbus"]
CMD ["--help"]
