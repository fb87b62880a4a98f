# syntax=docker/dockerfile:1
# weir server image (docs/deployment.md): `docker build -t weir .` then
#   docker run -p 8080:8080 -v /path/to/automation-repo:/repo:ro \
#       -e WEIR_API_TOKEN=... -e WEIR_DB=postgresql://weir@db/weir -e WEIR_PUBLIC_URL=https://weir.example.com \
#       weir --repo /repo
# The server listens on 0.0.0.0:8080 in the container (WEIR_HOST), so it refuses to start without an API token.

FROM python:3.12-slim AS build
WORKDIR /src
RUN python -m venv /opt/weir
COPY pyproject.toml README.md ./
COPY weir ./weir
RUN /opt/weir/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/weir/bin/pip install --no-cache-dir '.[postgres,mysql]'

FROM python:3.12-slim
# A mounted automation repository is owned by a user of the host, not by the container's user, and
# git refuses to read a repository owned by someone else ("dubious ownership") unless it is trusted.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && git config --system --add safe.directory '*' \
 && useradd --create-home --uid 10001 weir
COPY --from=build /opt/weir /opt/weir
ENV PATH=/opt/weir/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WEIR_HOST=0.0.0.0 \
    WEIR_STATE_DIR=/var/lib/weir
RUN mkdir -p /var/lib/weir && chown weir:weir /var/lib/weir
USER weir
WORKDIR /home/weir
VOLUME ["/var/lib/weir"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["tini", "--", "weir", "serve", "--port", "8080", "--state-dir", "/var/lib/weir"]
