# One image for every role: `controlplane serve`, `controlplane migrate`, and the task SDK's
# example services. Build: docker build -t controlplane .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controlplane ./controlplane
COPY task-sdk ./task-sdk
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ./task-sdk .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 controlplane
COPY --from=build /opt/venv /opt/venv
COPY sequences /app/sequences
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 CONTROLPLANE_HOST=0.0.0.0 \
    CONTROLPLANE_SEQUENCES=/app/sequences CONTROLPLANE_LOG_FORMAT=json
WORKDIR /app
USER 10001
EXPOSE 8080
ENTRYPOINT ["controlplane"]
CMD ["serve"]
