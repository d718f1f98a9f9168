# Build stage: release build of the service and of electionctl, from just what they are built
# from (so a change to docs or deployment files reuses the built layer).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY proto proto
COPY lua lua
COPY src src
COPY client client
COPY electionctl electionctl
COPY bench bench
RUN cargo build --release --locked --bin electiond --bin electionctl

# Runtime stage: a small Debian with CA roots (for rediss://) and curl (to read /metrics from
# inside: docker-compose exec electiond-1 curl -s localhost:9090/metrics), as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home electiond
COPY --from=build /src/target/release/electiond /usr/local/bin/electiond
COPY --from=build /src/target/release/electionctl /usr/local/bin/electionctl
USER 10001
ENV ELECTION_LISTEN_ADDR=0.0.0.0:5678 \
    ELECTION_METRICS_ADDR=0.0.0.0:9090 \
    ELECTION_CONSOLE_ADDR=0.0.0.0:8080
EXPOSE 5678 8080 9090
ENTRYPOINT ["/usr/local/bin/electiond"]
