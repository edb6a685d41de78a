# syntax=docker/dockerfile:1
# The inference-access operator as a static binary on distroless, running as UID 65532.
#   docker build -t ghcr.io/inference-access/inference-access:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .
#
# Build stage: Alpine's Rust targets musl natively on every architecture, and musl binaries are
# statically linked by default, so multi-arch builds need no cross toolchain.
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build
# musl-dev: libc headers for ring's C and assembly; binutils: readelf for the static check;
# make: jemalloc's build (the operator's allocator, see Cargo.toml).
RUN apk add --no-cache musl-dev binutils make
WORKDIR /src
# The whole workspace: Cargo loads every member's manifest even when building one package.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package inference-access --bin inference-access \
 && cp target/release/inference-access /inference-access
# Fail the build if the binary would need a dynamic loader the runtime image does not have.
RUN if readelf --program-headers /inference-access | grep -q INTERP; then \
      echo "inference-access is dynamically linked" >&2; exit 1; \
    fi \
 && /inference-access --help >/dev/null

# Runtime: no shell, no package manager; CA certificates and a `nonroot` user (65532) only.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="inference-access" \
      org.opencontainers.image.description="Keeps a ready, self-renewing credential for a KServe InferenceService in a Secret" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /inference-access /usr/local/bin/inference-access
USER 65532:65532
# /metrics, /healthz, /readyz (`--metrics-addr`).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/inference-access"]
CMD ["controller"]
