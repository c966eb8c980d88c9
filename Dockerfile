# syntax=docker/dockerfile:1
# The zcurate image: the engine, the Ray job and the REST service in one image. docker-compose.yml
# runs it as the Ray head, the Ray workers, the API and the curate job (docs/deployment.md).
#   docker compose build          (or: docker build -t zcurate .)
# Two stages: `build` makes the virtual environment in /opt/venv; the final image copies only that
# venv onto a fresh base, so the sources, pip and the wheel builds stay out of it.

# --- build: the virtual environment -------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build

# torch's CPU wheels (~0.2 GB) instead of the CUDA build PyPI serves on Linux (~3 GB of nvidia-*
# packages): the compose cluster has no GPUs. For a CUDA image:
#   docker build --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CACHE_DIR=/var/cache/pip \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv
# The pip cache is a BuildKit cache mount: rebuilds reuse downloads, the image never holds them.
RUN --mount=type=cache,target=/var/cache/pip pip install -U pip setuptools wheel
# torch/torchvision first, pinned as in scripts/setup.sh and pyproject.toml's [all]; `pip install
# ".[all]"` then finds them installed (2.14.1+cpu satisfies ==2.14.1) and keeps them. A layer of its
# own, so that a change to the code does not download torch again.
RUN --mount=type=cache,target=/var/cache/pip \
    pip install --index-url "$TORCH_INDEX_URL" "torch==2.14.1" "torchvision==0.29.1"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine engine
COPY pipelines pipelines
COPY api api
COPY cli cli
# Not editable: the package (with its recipes, WordNet tables and embedder weights: pyproject's
# package-data) is copied into the venv, and /src is left behind with this stage.
RUN --mount=type=cache,target=/var/cache/pip pip install ".[all]"
# RapidOCR's wheel ships the PP-OCRv4 ONNX models; --no-deps so that its opencv-python does not sit
# beside paddlex's opencv-contrib-python (as scripts/setup.sh does).
RUN --mount=type=cache,target=/var/cache/pip pip install --no-deps "rapidocr-onnxruntime==1.4.4"
# The BRISQUE model files and NudeNet's ONNX detector, --no-deps for the same reason (setup.sh says more).
RUN --mount=type=cache,target=/var/cache/pip pip install --no-deps "brisque==0.2.0" "nudenet==3.4.2"

# --- run: the image -----------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

# Debian packages the engine reads at run time: WordNet (concept graph) and openclipart (the data
# `zcurate demo` curates, SVG metadata for its captions) - scripts/setup.sh's list without the
# development ones (fonts for the OCR tests, chromium for the dashboard tests, make). Plus shared
# libraries the wheels link against that the slim base lacks: libgl1 and libglib2.0-0 for OpenCV's
# cv2 (RapidOCR), libgomp1 for paddlepaddle (OpenMP).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      wordnet-base openclipart-png openclipart-svg \
      libgl1 libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/venv /opt/venv

# A non-root user. /workspace is created here owned by it: Docker fills a new named volume from the
# image's directory, owner included, so the compose volume mounted there is writable by it.
RUN useradd --create-home --uid 1000 --shell /bin/bash zcurate \
 && mkdir -p /workspace /var/cache/zcurate \
 && chown zcurate:zcurate /workspace /var/cache/zcurate

# Caches outside $HOME (the home directory is not a volume; a cache there is lost or grows the
# container's layer): ZCURATE_CACHE_DIR is the engine's (OCR model directories), the others are
# the libraries' own. Nothing downloads models at run time: they ship in the PyPI packages.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    ZCURATE_CACHE_DIR=/var/cache/zcurate \
    XDG_CACHE_HOME=/var/cache/zcurate/xdg \
    HF_HOME=/var/cache/zcurate/huggingface \
    TORCH_HOME=/var/cache/zcurate/torch

USER zcurate
WORKDIR /workspace
# The API's port; the Ray ports stay inside the compose network.
EXPOSE 8000
# No HEALTHCHECK here: the image plays four roles, each with its own check in docker-compose.yml.
CMD ["zcurate", "--help"]
