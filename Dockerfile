# The Allium Agent daemon. Build: docker build -t allium-agent .
# Run:   docker run -v allium-state:/var/lib/allium-agent -v $PWD/config.yaml:/etc/allium-agent/config.yaml:ro \
#               -e ALLIUM_INFLUX_TOKEN=... allium-agent
# (config.yaml should set state_dir: /var/lib/allium-agent). docker-compose.yml runs it with config/docker-agent-*.yaml.
FROM debian:12-slim

# tor-geoipdb provides /usr/share/tor/geoip for relay countries; the tor
# daemon itself is not started in the container.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates tor-geoipdb \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --system --home-dir /var/lib/allium-agent --shell /usr/sbin/nologin allium-agent \
 && install -d -o allium-agent -g allium-agent -m 0750 /var/lib/allium-agent /etc/allium-agent

WORKDIR /opt/allium-agent
COPY setup.cfg pyproject.toml README.md ./
COPY agent ./agent
RUN python3 -m venv .venv \
 && .venv/bin/pip install --no-cache-dir . \
 && .venv/bin/allium-agent --version

# `docker exec CONTAINER allium-agent query '...'` (or status, alerts ...) finds the program and the config.
ENV PATH=/opt/allium-agent/.venv/bin:$PATH \
    ALLIUM_AGENT_CONFIG=/etc/allium-agent/config.yaml

USER allium-agent
WORKDIR /var/lib/allium-agent
VOLUME ["/var/lib/allium-agent"]
# docker stop sends SIGTERM: the running cycle finishes, points are stored or outboxed.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5m --timeout=20s CMD ["/opt/allium-agent/.venv/bin/allium-agent", "status", "--config", "/etc/allium-agent/config.yaml"]
ENTRYPOINT ["/opt/allium-agent/.venv/bin/allium-agent"]
CMD ["run", "--config", "/etc/allium-agent/config.yaml"]
