# syntax=docker/dockerfile:1
# llm-relay: Socket.IO relay for streaming LLM chat.
#
#   docker build -t llm-relay .
#   docker run --rm -p 8000:8000 --stop-timeout 30 \
#     -e JWT_SECRET=... -e OPENROUTER_API_KEY=... llm-relay
#
# The start command is `python -m server`: on SIGTERM it drains streams for
# SHUTDOWN_GRACE_S (default 20 s) before it closes connections, so give the container
# a stop timeout above that (docker: --stop-timeout 30; compose: stop_grace_period).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the runtime dependencies only, from uv.lock -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1
WORKDIR /build
# uv pinned with hashes, as `make` installs it
COPY scripts/uv-requirements.txt ./
RUN pip install --require-hashes -r uv-requirements.txt
COPY pyproject.toml uv.lock ./
# The locked runtime dependencies (no dev group, not the project itself): the same
# versions `make test` checked; a lock out of date with pyproject.toml fails the build.
RUN uv sync --locked --no-dev --no-install-project --python /usr/local/bin/python
WORKDIR /app
# .dockerignore lets only the server's packages and the web page through.
COPY . .
RUN /opt/venv/bin/python -m compileall -q /app

# --- runtime: slim, non-root, nothing but the venv and the source -------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llm-relay" \
      org.opencontainers.image.description="Socket.IO relay for streaming LLM chat" \
      org.opencontainers.image.licenses="MIT"
# /data holds the embedded SQLite store (DATABASE_URL's default here); mount a volume
# there, or point DATABASE_URL at PostgreSQL as docker-compose.yml does.
RUN groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid relay --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin relay \
 && mkdir /data && chown 10001:10001 /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json \
    DATABASE_URL=sqlite+aiosqlite:////data/relay.db
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-m", "server", "health"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "server"]
