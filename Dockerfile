# chamber-bridge for the lab server: the uploader (`chamber-bridge upload`), and for the
# docker-compose try-out also the simulated chamber and a bridge (same image, other commands).
#
#   docker build -t chamber-bridge .
#   docker run --rm chamber-bridge --version
#
# No secret is baked in: the MQTT password and the Atomscale API key arrive as Docker secrets
# (files under /run/secrets/, named by the config's password_file / api_key_file), the config is
# mounted at /etc/chamber-bridge/config.yaml, and the state lives in volumes. docker-compose.yml
# wires all of it; the steps below are exercised without a Docker engine by
# tests/system/test_deploy.py (same pip install into a fresh virtual environment).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    MPLCONFIGDIR=/tmp/matplotlib

# A fixed uid/gid, so volumes and secret files can be given to it on the host (chown 10001).
RUN groupadd --system --gid 10001 chamber \
 && useradd --system --uid 10001 --gid chamber --no-create-home --home-dir /var/lib/chamber-bridge-uploader \
        --shell /usr/sbin/nologin chamber

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY simulators ./simulators
# The server extra: the Atomscale HTTP client (httpx), run plots (matplotlib), Parquet export (pyarrow).
# ./simulators (the chamber-bridge-simulators distribution): the try-out profile of docker-compose.yml
# runs `simulate chamber` from this same image. The Pi's install (deploy/pi/install.sh) has no simulators.
RUN pip install --no-cache-dir '.[server]' ./simulators \
 && rm -rf /src

# State: the uploader's spool and ledger, and the local store of runs. /var/lib/chamber-bridge is
# only used by the try-out bridge (its outbox); it exists so a named volume mounted there is ours.
RUN mkdir -p /var/lib/chamber-bridge-uploader /srv/runs /var/lib/chamber-bridge /etc/chamber-bridge \
 && chown chamber:chamber /var/lib/chamber-bridge-uploader /srv/runs /var/lib/chamber-bridge
VOLUME ["/var/lib/chamber-bridge-uploader", "/srv/runs"]

USER chamber
WORKDIR /var/lib/chamber-bridge-uploader

# Healthy while the uploader's retained status (lab/uploader/status) says online and is fresh;
# the uploader refreshes it every 5 s, and the broker publishes its last will (offline) if it dies.
# The probe logs in as `monitor` (configs/monitor.yaml, mounted by docker-compose.yml), never with
# the uploader's own login: the shipped broker ties client ids to users, so that would take over
# the uploader's session.
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["chamber-bridge", "health", "/etc/chamber-bridge/monitor.yaml", "--role", "uploader", "--max-age", "30"]

ENTRYPOINT ["chamber-bridge"]
CMD ["upload", "/etc/chamber-bridge/config.yaml"]
