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

# Renderers for Helm charts and Kustomize overlays, pinned, each checked
# against the SHA-256 its project publishes beside the release archive.
FROM debian:bookworm-slim AS tools
ARG HELM_VERSION=v3.19.0
ARG KUSTOMIZE_VERSION=v5.7.1
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /tools
RUN curl -fsSLO "https://get.helm.sh/helm-${HELM_VERSION}-linux-amd64.tar.gz" \
 && curl -fsSL "https://get.helm.sh/helm-${HELM_VERSION}-linux-amd64.tar.gz.sha256sum" -o helm.sha256 \
 && sha256sum -c helm.sha256 \
 && tar -xzf "helm-${HELM_VERSION}-linux-amd64.tar.gz" linux-amd64/helm \
 && mv linux-amd64/helm /tools/helm
RUN curl -fsSLO "https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2F${KUSTOMIZE_VERSION}/kustomize_${KUSTOMIZE_VERSION}_linux_amd64.tar.gz" \
 && curl -fsSL "https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2F${KUSTOMIZE_VERSION}/checksums.txt" -o kustomize.sha256 \
 && grep " kustomize_${KUSTOMIZE_VERSION}_linux_amd64.tar.gz\$" kustomize.sha256 | sha256sum -c - \
 && tar -xzf "kustomize_${KUSTOMIZE_VERSION}_linux_amd64.tar.gz" kustomize

# Runtime: git (to fetch commits missing from shallow clones), CA
# certificates, helm and kustomize.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=tools /tools/helm /tools/kustomize /usr/local/bin/
COPY --from=build /src/target/release/kdeploy /usr/local/bin/kdeploy
ENTRYPOINT ["/usr/local/bin/kdeploy"]
CMD ["--help"]
