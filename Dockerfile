# Parley as a container image: the wheel built from this checkout (it carries the page and the
# migrations), installed into python:3.11-slim, run as a non-root user.
#
#   docker build -t parley .
#   docker run -p 127.0.0.1:8000:8000 parley       # embedded log and SQLite, development login on
#   docker run -p 8000:8000 -e PARLEY_JWT_SECRET=... -e DATABASE_URL=postgresql+asyncpg://... \
#       -e REDIS_URL=redis://... parley            # production; run `parley migrate` first
#
# The Procfile stays the primary deployment; this image runs the same `parley serve`.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml hatch_build.py README.md ./
COPY app ./app
COPY static ./static
COPY alembic ./alembic
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# Every dependency ships manylinux wheels for 3.11: no compiler in the image.
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 parley
USER parley
WORKDIR /home/parley
# In a container the published port reaches the server only on every interface; with development
# login on (no PARLEY_JWT_SECRET) publish it on 127.0.0.1 as above. The SQLite file and .parley/
# (generated keys) live here: mount a volume on /home/parley to keep them.
ENV PARLEY_HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=2)"
CMD ["parley", "serve"]
