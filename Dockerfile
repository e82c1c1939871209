# syntax=docker/dockerfile:1
#
# The kube-failover controller image: a static (musl) binary on a distroless base that
# runs as a non-root user. Multi-stage: nothing of the build toolchain is in the result.
#
#   docker build -t kube-failover:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t registry.example.com/kube-failover:0.1.0 --push .
#
# Each platform compiles natively (under emulation when it is not the build host's).
# Not built in this repository's CI: its machines have no container engine. See
# docs/install.md for what was and was not verified.

# The Rust release of rust-toolchain.toml (kept out of the build context by .dockerignore,
# so that rustup does not fetch the components it lists: the image has this toolchain).
ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-slim AS build
ARG TARGETARCH
# musl-gcc compiles the C parts of ring (TLS) and of jemalloc (the allocator; make drives
# its build) for the static musl target; protoc, the container runtime's gRPC API (the agent
# stops pods through it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools make protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
# Only the `kube-failover` binary is built (its crates under crates/). Cargo reads every
# workspace member's manifest, so the lab's is copied, with an empty library standing in
# for its sources (never compiled here).
COPY lab/Cargo.toml ./lab/Cargo.toml
RUN mkdir -p lab/src && touch lab/src/lib.rs
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
 && cargo build --release --locked --target "$target" -p kube-failover --bin kube-failover \
 && cp "target/$target/release/kube-failover" /kube-failover \
 && strip /kube-failover \
 && /kube-failover version

# Static binary: no libc needed. The nonroot variant runs as uid/gid 65532 (the chart
# sets the same numbers so that the kubelet can enforce runAsNonRoot); it carries CA
# certificates and tzdata only. Pin it by digest in production.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kube-failover /usr/local/bin/kube-failover
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kube-failover"]
CMD ["run"]
