# The netfix agent image for deploy/kubernetes: Debian slim, the tools netfix runs on a node
# (ethtool, nft, ip, modprobe, sysctl, flock) and netfix's own wheel, nothing else.
#   pip wheel --no-deps -w dist . && docker build -t netfix-agent:0.1.0 .
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv ethtool nftables iproute2 kmod procps util-linux \
    && rm -rf /var/lib/apt/lists/*

# A venv of its own: netfix and its requirements from PyPI, apart from Debian's python3-*.
COPY dist/netfix-*.whl /tmp/
RUN python3 -m venv /opt/netfix \
    && /opt/netfix/bin/pip install --no-cache-dir /tmp/netfix-*.whl \
    && rm -f /tmp/netfix-*.whl

# The DaemonSet passes `agent --profile ... --mode ... --listen ...` as args.
ENTRYPOINT ["/opt/netfix/bin/netfix"]
CMD ["agent", "--help"]
