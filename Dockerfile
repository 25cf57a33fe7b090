# dr, the disaster-recovery failover orchestrator: the daemon image.
#
# Build:  docker build -t dr:latest .
# Run:    docker run -v dr-store:/var/lib/dr -v $PWD/dr.toml:/etc/dr/dr.toml:ro -p 8080:8080 dr:latest
# The config is mounted at /etc/dr/dr.toml; its store_path (and sim.state_path) must be under the
# /var/lib/dr volume, and [api] listen must be 0.0.0.0:8080 to be reachable from outside.

# The build stage runs the same build as CI: the release binary from the locked dependencies.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked \
 && strip target/release/dr

# The runtime stage: Debian slim with CA certificates, nothing else.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 dr \
 && useradd --system --uid 10001 --gid dr --home-dir /var/lib/dr --shell /usr/sbin/nologin dr \
 && mkdir -p /etc/dr /var/lib/dr \
 && chown dr:dr /var/lib/dr
COPY --from=build /src/target/release/dr /usr/local/bin/dr
USER 10001:10001
WORKDIR /var/lib/dr
# The checkpoint store lives here; it must outlive the container.
VOLUME ["/var/lib/dr"]
ENV DR_CONFIG=/etc/dr/dr.toml
EXPOSE 8080
# dr asks its own daemon's /health: no curl, no shell.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["dr", "healthcheck"]
ENTRYPOINT ["dr"]
CMD ["daemon", "--log-format", "json"]
