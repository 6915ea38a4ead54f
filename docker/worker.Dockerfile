# A CUDA GPU worker: torch's CUDA 13 wheels, sam2 with its CUDA extension, GroundingDINO.
# Run one container per GPU (compose pins each to one device).
FROM nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PYTHON=python3.12 VENV=/opt/mattefarm \
    SAM2_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="8.6;8.9;9.0"
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev build-essential git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md /app/
COPY scripts /app/scripts
COPY schemas /app/schemas
COPY services /app/services
COPY workers /app/workers
COPY farm_config /app/farm_config
# The same install script as everywhere else; the CUDA toolkit here builds sam2's extension.
RUN bash scripts/install.sh && useradd --uid 1000 --create-home farm
ENV PATH=/opt/mattefarm/bin:$PATH MATTEFARM_MODELS_DIR=/models
USER farm

# Models load in the Celery child after the fork; -c 1: one process per GPU.
CMD ["mattefarm", "worker", "--queues", "gpu,cpu"]
