# The operator image, for users who build with Docker (docker build -f e2e/images/operator.Dockerfile .).
# Without Docker (this project's CI), e2e/images/build.sh assembles the same image from the
# release binary: /usr/local/bin/magictunnel-operator, user 65532:65532 as the chart runs it.
# The toolchain this project is built and tested with here.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p magictunnel-operator

# glibc, libgcc_s and nothing else; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/magictunnel-operator /usr/local/bin/magictunnel-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/magictunnel-operator"]
