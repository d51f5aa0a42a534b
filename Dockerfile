# syntax=docker/dockerfile:1
# The example proxy (examples/proxy) as a small image:
#   docker build -t tower-conversations-proxy .
#   docker run -p 8080:8080 -v conversations:/data tower-conversations-proxy
# or, with PostgreSQL beside it: docker compose up

FROM rust:1.94-slim-trixie AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build directory between builds, so a change
# to the sources rebuilds the crate and the example, not every dependency.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --example proxy \
    && cp target/release/examples/proxy /usr/local/bin/proxy

FROM debian:trixie-slim
# Root certificates for HTTPS upstreams; nothing else is needed at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home proxy
COPY --from=build /usr/local/bin/proxy /usr/local/bin/proxy
USER proxy
WORKDIR /data
VOLUME /data
ENV LISTEN_ADDR=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///data/conversations.db
EXPOSE 8080
# The image has no curl: the proxy checks itself. /healthz answers while it serves;
# /readyz (which the compose file uses) also needs the database to answer.
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/proxy", "--healthcheck", "/healthz"]
# Exec form: the proxy is PID 1 and gets SIGTERM itself, so `docker stop` lets the
# streams in flight finish and their turns be stored.
ENTRYPOINT ["/usr/local/bin/proxy"]
