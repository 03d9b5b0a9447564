# idgraph in a container: built in one stage, run as a non-root user in a small one, with the
# data directory as a volume.
#
#   docker build -t idgraph .
#   docker run -d -p 8080:8080 -v idgraph-data:/data \
#     -v /etc/idgraph/secrets:/run/secrets:ro idgraph
# (the image's config reads its tokens from /run/secrets/*: see docs/deploy.md)

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin idgraph

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin idgraph \
    && install -d -o idgraph -g idgraph -m 0700 /data
COPY --from=build /src/target/release/idgraph /usr/local/bin/idgraph
USER idgraph
VOLUME /data
EXPOSE 8080
ENV IDGRAPH_DATA_DIR=/data \
    IDGRAPH_LISTEN=0.0.0.0:8080 \
    IDGRAPH_TOKEN_FILE=/run/secrets/drift-token \
    IDGRAPH_READ_TOKEN_FILE=/run/secrets/read-token \
    IDGRAPH_ADMIN_TOKEN_FILE=/run/secrets/admin-token \
    IDGRAPH_WEBHOOK_TOKEN_FILE=/run/secrets/webhook-token
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/idgraph", "--log-format", "json"]
CMD ["serve"]
