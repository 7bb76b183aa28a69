# Build stage: compile kdeploy with the pinned lockfile.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY charts ./charts
COPY tests ./tests
RUN cargo build --release --locked --bin kdeploy \
 && strip target/release/kdeploy

# Runtime: git (to fetch commits missing from shallow clones) and CA certificates.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kdeploy /usr/local/bin/kdeploy
ENTRYPOINT ["/usr/local/bin/kdeploy"]
CMD ["--help"]
