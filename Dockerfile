# One image with both binaries; the Helm chart picks the command (portcullis-controller or
# portcullis-dataplane). Build: docker build -t portcullis:0.1.0 .
#
# The build stage runs scripts/build-release.sh, the script CI runs for the release binaries.
# They link glibc dynamically (no musl target on the build machines), so the runtime image is
# distroless/cc: glibc, libgcc, CA certificates, no shell, non-root user 65532.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN bash scripts/build-release.sh /out

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/portcullis-controller /out/portcullis-dataplane /usr/local/bin/
USER 65532:65532
EXPOSE 8080 8443 9090 9091 9443
CMD ["portcullis-dataplane", "--help"]
