# dvsp runtime image. Built by `make image` (scripts/image.sh), which stages the build
# context in a temp dir: this Dockerfile, .dockerignore, the `dvsp` binary and `lib/` (the
# libtorch shared libraries the binary links, found with ldd). The build needs no network:
# the base is a local Debian bookworm minbase made once by debootstrap with curl,
# ca-certificates, libfontconfig1 and libfreetype6 already inside (scripts/image.sh).
#
#   podman build --isolation chroot --format docker -t localhost/dvsp:latest -f Dockerfile CTX
#
# `--format docker` keeps HEALTHCHECK (the OCI image format has no field for it).
ARG BASE=localhost/dvsp-base:bookworm
FROM ${BASE}

ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="dvsp" \
      org.opencontainers.image.description="Biometric verification service (DVSP features, REST + gRPC)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it (USER must be numeric).
RUN groupadd --gid 10001 dvsp \
 && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin dvsp \
 && mkdir -p /models /data /opt/libtorch/lib \
 && chown 10001:10001 /data

COPY lib/ /opt/libtorch/lib/
RUN echo /opt/libtorch/lib > /etc/ld.so.conf.d/libtorch.conf && ldconfig
COPY dvsp /usr/local/bin/dvsp

# Configuration is by env vars (every `dvsp serve` flag has one: DVSP_FMR, DVSP_THRESHOLD,
# DVSP_MAX_BATCH, DVSP_QUEUE, ...). The binary's build-time rpath points at the build host's
# libtorch, so the libraries are found through ld.so.conf and LD_LIBRARY_PATH here.
ENV LD_LIBRARY_PATH=/opt/libtorch/lib \
    DVSP_BIND=0.0.0.0:8080 \
    DVSP_GRPC_BIND=0.0.0.0:50051 \
    DVSP_METRICS_BIND=0.0.0.0:9464 \
    DVSP_DB=sqlite:///data/dvsp.db \
    DVSP_MODEL=/models/current

# /models: model directories (DVSP_MODEL=/models/current holds model.safetensors + model.json,
# mount it read-only); /data: the SQLite store (unused with a postgres:// DVSP_DB).
VOLUME ["/models", "/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8080 50051 9464

# Liveness of the HTTP server on the port DVSP_BIND names (curl is in the base image).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/bin/sh", "-c", "s=http; [ -n \"$DVSP_TLS_CERT\" ] && s=https; curl -kfsS -o /dev/null \"$s://127.0.0.1:${DVSP_BIND##*:}/healthz\" || exit 1"]

ENTRYPOINT ["dvsp"]
CMD ["serve"]
