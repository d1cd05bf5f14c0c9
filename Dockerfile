# The scimhub binary in a small runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin scimhub

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/scimhub scimhub \
    && install -d -o scimhub -g scimhub /var/lib/scimhub/scimhub-data
COPY --from=build /src/target/release/scimhub /usr/local/bin/scimhub
COPY scim-server/config.default.toml /etc/scimhub/config.toml
USER scimhub
WORKDIR /var/lib/scimhub
EXPOSE 8080 3389
ENTRYPOINT ["/usr/local/bin/scimhub"]
CMD ["serve"]
