# One image for every role of the control plane, chosen by the command:
#   controlplane serve        the server (default)
#   controlplane operator     the Sequence operator
#   controlplane migrate      apply the database migrations and exit
#   python -c ...             the example task services (see helm/controlplane/templates/examples.yaml)
# There is no HEALTHCHECK: Kubernetes probes the server's /health endpoint itself.
#
# Build from the repository root:  docker build -t controlplane:dev .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY deploy/image-install.sh deploy/image-install.sh
COPY pyproject.toml README.md ./
COPY task-sdk task-sdk
COPY controlplane controlplane
RUN deploy/image-install.sh /opt/venv /src

FROM ${PYTHON_IMAGE}
# A fixed numeric user, so that Kubernetes can check runAsNonRoot without a runAsUser.
RUN groupadd --system --gid 10001 controlplane \
 && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /app \
        --shell /usr/sbin/nologin controlplane
# Same path as in the build stage: the venv's scripts name /opt/venv/bin/python.
COPY --from=build /opt/venv /opt/venv
COPY sequences /app/sequences
# The bytecode was compiled at install time; the root file system may be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONTROLPLANE_HOST=0.0.0.0 \
    CONTROLPLANE_SEQUENCES=/app/sequences \
    CONTROLPLANE_LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["controlplane"]
CMD ["serve"]
