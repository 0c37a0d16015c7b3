# syntax=docker/dockerfile:1
# Loopline's GPU trainer image: the pod that train_model's KubernetesPodOperator starts
# (training.kubernetes.image in loopline.yaml). Same entrypoint as the local CPU trainer process.
#
#   docker build -f docker/trainer.Dockerfile -t ghcr.io/loopline/trainer:0.1.0 .    # context = repo root
#
# Base: plain Python 3.11 (pyproject pins >=3.11,<3.12; the CUDA/PyTorch base images ship 3.10 or 3.12).
# No CUDA toolkit is needed in the image: the PyPI xgboost wheel is CUDA-enabled (its CUDA runtime is
# linked in, NCCL comes as the nvidia-nccl-cu12 wheel), the PyPI torch wheel brings its CUDA libraries as
# nvidia-* wheels, and the driver is mounted from the node by the NVIDIA container toolkit / device plugin
# when the pod requests nvidia.com/gpu. No Airflow in here.
FROM python:3.11-slim-bookworm

# What the NVIDIA container runtime reads to expose the GPU and mount the driver's compute libraries.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN python -m venv /opt/venv \
    && useradd --uid 1000 --user-group --create-home --home-dir /home/trainer --shell /usr/sbin/nologin trainer

WORKDIR /opt/loopline
COPY constraints.txt ./
# constraints.txt pins the CPU torch build (torch==2.13.0+cpu) and the NCCL that xgboost pulled on the
# dev machine; drop those lines so pip takes the CUDA build of torch 2.13.0 from PyPI with the nvidia-*
# wheels it needs. Everything else keeps its exact pin.
RUN set -eux; \
    grep -vE '^(torch|nvidia-[a-z0-9-]+)==' constraints.txt > /tmp/constraints-gpu.txt; \
    pip install --no-cache-dir -c /tmp/constraints-gpu.txt \
        torch==2.13.0 xgboost mlflow pandas pyarrow numpy scikit-learn boto3 pydantic pyyaml; \
    rm /tmp/constraints-gpu.txt

# The loopline package (no dependencies: they are installed above, pinned).
COPY pyproject.toml README.m[d] ./
COPY include ./include
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build include/*.egg-info \
    && python -c "import loopline.config, mlflow, torch, xgboost; loopline.config.load_config()"

USER 1000:1000
WORKDIR /home/trainer
ENTRYPOINT ["python", "-m", "loopline.training"]
