# The tunnel pod image, for users who build with Docker (docker build -f e2e/images/tunnel-pod.Dockerfile .).
# Without Docker (this project's CI), e2e/images/build.sh assembles the same image from the
# release binary. The pod runs as root with every capability dropped but NET_ADMIN and NET_RAW
# (the operator sets that in the pod's securityContext), read-only root filesystem.
# The toolchain this project is built and tested with here.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p magictunnel-tunnel-pod

FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/tunnel-pod /usr/local/bin/tunnel-pod
USER 0:0
ENTRYPOINT ["/usr/local/bin/tunnel-pod"]
