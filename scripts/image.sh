#!/usr/bin/env bash
# Builds the dvsp runtime image with podman, offline, and verifies it without running a
# container (crun cannot set rlimits in this sandbox): the image is mounted and the binary is
# run by chroot as the image's user with the image's env, against a tiny model and a SQLite
# store bind-mounted onto /models and /data; /healthz, /readyz, /metrics and the image's own
# HEALTHCHECK command must answer.
#
#   make image                        # cargo build --release, then this script
#   DVSP_BIN=path/to/dvsp bash scripts/image.sh
#
# Env: DVSP_BIN (default $CARGO_TARGET_DIR/release/dvsp), LIBTORCH, DVSP_CACHE (~/.cache/dvsp),
# DVSP_BASE_IMAGE (localhost/dvsp-base:bookworm), DVSP_IMAGE (localhost/dvsp),
# DVSP_DEBIAN_MIRROR (default: the first Debian mirror in /etc/apt/sources.list*),
# DVSP_STRIP=0 (stage the binary and libraries unstripped), DVSP_SKIP_VERIFY=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${DVSP_CACHE:-$HOME/.cache/dvsp}
LIBTORCH=${LIBTORCH:-$CACHE/libtorch}
TARGET=${CARGO_TARGET_DIR:-$CACHE/target}
BIN=${DVSP_BIN:-$TARGET/release/dvsp}
BASE=${DVSP_BASE_IMAGE:-localhost/dvsp-base:bookworm}
IMAGE=${DVSP_IMAGE:-localhost/dvsp}
SUITE=bookworm
# In the base (not installed at image build time, so the build needs no network): curl for
# HEALTHCHECK, CA roots for TLS to PostgreSQL, and the font libraries plotters links.
BASE_PACKAGES=ca-certificates,curl,libfontconfig1,libfreetype6

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'image.sh: %s\n' "$*" >&2; exit 1; }

[[ -x $BIN ]] || die "no dvsp binary at $BIN (run 'make image', or set DVSP_BIN)"
[[ -d $LIBTORCH/lib ]] || die "no libtorch at $LIBTORCH (run 'make setup')"

# --- tools -----------------------------------------------------------------------------------
need=()
command -v podman >/dev/null || need+=(podman)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v curl >/dev/null || need+=(curl)
command -v unshare >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
    say "installing ${need[*]} (apt)"
    SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get install -y "${need[@]}" || { $SUDO apt-get update && $SUDO apt-get install -y "${need[@]}"; }
fi
[[ $(id -u) == 0 ]] || die "run as root (debootstrap, podman image mount and chroot need it)"
podman --version

# --- base image: Debian bookworm minbase, made once ----------------------------------------------
debian_mirror() {
    local m
    m=$(grep -rhoE '^[[:space:]]*(deb|URIs:)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+' \
            /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -oE 'https?://[^[:space:]]+' | grep -E '/debian/?$' | head -n1 || true)
    echo "${DVSP_DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

if podman image exists "$BASE"; then
    say "base image $BASE exists"
else
    ROOTFS=$CACHE/image/$SUITE-minbase
    if [[ ! -f $ROOTFS.done ]]; then
        MIRROR=$(debian_mirror)
        say "debootstrap --variant=minbase $SUITE from $MIRROR into $ROOTFS"
        rm -rf "$ROOTFS"
        mkdir -p "$(dirname "$ROOTFS")"
        debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR"
        rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
               "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
        touch "$ROOTFS.done"
    fi
    say "importing $ROOTFS as $BASE"
    tar -C "$ROOTFS" --numeric-owner -c . \
        | podman import --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE"
fi

# --- build context ---------------------------------------------------------------------------
CTX=$(mktemp -d /tmp/dvsp-image-ctx.XXXXXX)
MNT=
VERIFY=
cleanup() {
    [[ -n $VERIFY ]] && rm -rf "$VERIFY"
    [[ -n $MNT ]] && podman image unmount "$IMAGE:latest" >/dev/null 2>&1 || true
    rm -rf "$CTX"
}
trap cleanup EXIT

VERSION=$("$BIN" --version | awk '{print $2}')
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
say "staging $BIN (dvsp $VERSION, commit ${REVISION:0:12}) and its libtorch libraries in $CTX"
cp "$ROOT/Dockerfile" "$ROOT/.dockerignore" "$CTX/"
if [[ ${DVSP_STRIP:-1} == 1 ]] && command -v strip >/dev/null; then
    strip --strip-debug -o "$CTX/dvsp" "$BIN"
else
    cp "$BIN" "$CTX/dvsp"
fi
chmod 0755 "$CTX/dvsp"
ls -la "$BIN" "$CTX/dvsp" | awk '{print $5, $NF}'

# The libraries the binary really loads (ldd: the whole closure) that live in libtorch/lib.
LTLIB=$(readlink -f "$LIBTORCH/lib")
LDD=$(LD_LIBRARY_PATH=$LTLIB ldd "$BIN")
if grep -q 'not found' <<<"$LDD"; then echo "$LDD" >&2; die "unresolved libraries"; fi
mkdir "$CTX/lib"
while read -r name path; do
    if [[ $(dirname "$(readlink -f "$path")") == "$LTLIB" ]]; then
        if [[ ${DVSP_STRIP:-1} == 1 ]] && command -v strip >/dev/null; then
            # Drops the static symbol table (libtorch_cpu: -90 MB); .dynsym stays.
            strip --strip-unneeded -o "$CTX/lib/$name" "$path"
        else
            cp -L "$path" "$CTX/lib/$name"
        fi
    fi
done < <(awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' <<<"$LDD")
[[ -n $(ls "$CTX/lib") ]] || die "ldd found no libtorch library under $LTLIB"
echo "libtorch libraries (from ldd; staged sizes):"
ls -la "$CTX/lib" | awk 'NR > 1 && $NF != "." && $NF != ".." {print "  " $5, $NF}'
echo "system libraries (must be in the base):"
awk '$2 == "=>" && $3 ~ /^\// {print $1}' <<<"$LDD" | while read -r n; do
    [[ -e $CTX/lib/$n ]] || echo "  $n"
done

# --- build -----------------------------------------------------------------------------------
say "podman build $IMAGE:$VERSION"
podman build --isolation chroot --format docker \
    --build-arg BASE="$BASE" --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
    -t "$IMAGE:$VERSION" -t "$IMAGE:latest" -f "$CTX/Dockerfile" "$CTX"

# Earlier builds of this image left untagged: remove them (only dvsp's, by its label).
podman image prune -f --filter label=org.opencontainers.image.title=dvsp >/dev/null || true

say "image size"
SIZE=$(podman image inspect --format '{{.Size}}' "$IMAGE:latest")
echo "$IMAGE:latest: $SIZE bytes ($(numfmt --to=iec-i --suffix=B "$SIZE"))"
podman images --filter reference="$IMAGE" --filter reference="$BASE"

[[ ${DVSP_SKIP_VERIFY:-0} == 1 ]] && { say "verification skipped (DVSP_SKIP_VERIFY=1)"; exit 0; }

# --- verify ----------------------------------------------------------------------------------
say "verifying $IMAGE:latest (image mount + chroot; containers cannot run here)"
inspect() { podman image inspect --format "$1" "$IMAGE:latest"; }
IMG_USER=$(inspect '{{.Config.User}}')
IMG_WORKDIR=$(inspect '{{.Config.WorkingDir}}')
IMG_ENTRY=$(inspect '{{join .Config.Entrypoint " "}}')
IMG_CMD=$(inspect '{{join .Config.Cmd " "}}')
IMG_HEALTH=$(inspect '{{json .Config.Healthcheck}}')
mapfile -t IMG_ENV < <(inspect '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
echo "user: $IMG_USER  workdir: $IMG_WORKDIR  entrypoint: $IMG_ENTRY  cmd: $IMG_CMD"
echo "exposed: $(inspect '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}')  volumes: $(inspect '{{range $v, $_ := .Config.Volumes}}{{$v}} {{end}}')"
printf 'env: %s\n' "${IMG_ENV[@]}"
echo "healthcheck: $IMG_HEALTH"
[[ $IMG_HEALTH == *healthz* ]] || die "the image has no HEALTHCHECK on /healthz"
HEALTH_CMD=$(inspect '{{index .Config.Healthcheck.Test 3}}')

MNT=$(podman image mount "$IMAGE:latest")
echo "mounted at $MNT"

# A tiny model: runs/demo if it exists (evaluated, so T comes from its card at DVSP_FMR),
# else a center-loss model trained on 512 MNIST images for one epoch (no card thresholds:
# DVSP_THRESHOLD=0.5 is set for it). Only /healthz etc. are checked, not accuracy.
VERIFY=$(mktemp -d /tmp/dvsp-image-verify.XXXXXX)
mkdir -p "$VERIFY/models" "$VERIFY/data"
# A throwaway template keyring for the check (templates are sealed at rest; `serve` needs one).
EXTRA_ENV=("DVSP_TEMPLATE_KEYS=image-check $(head -c 32 /dev/urandom | base64)")
if [[ -f $ROOT/runs/demo/model.json ]]; then
    cp -r "$ROOT/runs/demo" "$VERIFY/models/current"
    echo "model: runs/demo"
else
    SMOKE=$CACHE/image/smoke-model
    if [[ ! -f $SMOKE/model.json ]]; then
        "$BIN" train --threads 1 --data mnist --method center --epochs 1 --limit 512 --out "$SMOKE" | tail -n 2
    fi
    cp -r "$SMOKE" "$VERIFY/models/current"
    EXTRA_ENV+=(DVSP_THRESHOLD=0.5)
    echo "model: $SMOKE (1 epoch on 512 images; DVSP_THRESHOLD=0.5)"
fi
chown -R "${IMG_USER}" "$VERIFY/data"
python3 "$ROOT/scripts/digits.py" "$VERIFY/digits" 2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
GPORT=$(free_port)
MPORT=$(free_port)

# Runs in a private mount namespace: the bind mounts vanish with it and the image is not
# modified (its mount is read-only anyway). Same user, env, workdir and entrypoint as the image.
verify_in_chroot() {
    set -euo pipefail
    mount --bind -o ro "$VERIFY/models" "$MNT/models"
    mount --bind "$VERIFY/data" "$MNT/data"
    mount --bind /dev "$MNT/dev"
    mount -t proc proc "$MNT/proc" 2>/dev/null || mount --rbind /proc "$MNT/proc"
    local run=(chroot --userspec="$IMG_USER" "$MNT" /usr/bin/env -i "${IMG_ENV[@]}"
        DVSP_BIND=127.0.0.1:$PORT DVSP_GRPC_BIND=127.0.0.1:$GPORT DVSP_METRICS_BIND=127.0.0.1:$MPORT "${EXTRA_ENV[@]}"
        /bin/sh -c 'cd "$0" && exec "$@"' "$IMG_WORKDIR")
    echo "\$ id (in the image)"; "${run[@]}" id
    echo "\$ dvsp --version"; "${run[@]}" $IMG_ENTRY --version
    echo "\$ dvsp db migrate   (DVSP_DB from the image env)"; "${run[@]}" $IMG_ENTRY db migrate
    echo "\$ $IMG_ENTRY $IMG_CMD   (REST on 127.0.0.1:$PORT, gRPC on 127.0.0.1:$GPORT)"
    "${run[@]}" $IMG_ENTRY $IMG_CMD >"$VERIFY/serve.log" 2>&1 &
    local pid=$! up=0
    # A failed check below must not leave the server running (set -e exits the shell).
    trap 'kill -TERM '"$pid"' 2>/dev/null || true' EXIT
    for _ in $(seq 1 120); do
        if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then up=1; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if ((!up)); then cat "$VERIFY/serve.log"; kill "$pid" 2>/dev/null; return 1; fi
    echo "\$ curl -sf http://127.0.0.1:$PORT/healthz"; curl -sf "http://127.0.0.1:$PORT/healthz"; echo
    echo "\$ curl -sf http://127.0.0.1:$PORT/readyz"; curl -sf "http://127.0.0.1:$PORT/readyz"; echo
    echo "\$ curl -sf http://127.0.0.1:$MPORT/metrics | grep -c '^dvsp_'   (the metrics port)"
    curl -sf "http://127.0.0.1:$MPORT/metrics" | grep -c '^dvsp_'
    local url=http://127.0.0.1:$PORT key
    echo "\$ dvsp keys create --role admin   (in the image)"
    key=$("${run[@]}" $IMG_ENTRY keys create --role admin 2>/dev/null)
    echo "\$ enroll digits/3_0.png as subject s1, verify 3_1.png and 7_0.png (inference in the image; with the smoke model the decisions mean nothing)"
    curl -sS --fail-with-body -X POST "$url/v1/subjects" -H "Authorization: Bearer $key" \
        -H 'content-type: application/json' -d '{"id":"s1"}'; echo
    curl -sS --fail-with-body -X POST "$url/v1/subjects/s1/templates" -H "Authorization: Bearer $key" \
        -F image=@"$VERIFY/digits/3_0.png"; echo
    curl -sS --fail-with-body -X POST "$url/v1/subjects/s1/verify" -H "Authorization: Bearer $key" \
        -H 'content-type: image/png' --data-binary @"$VERIFY/digits/3_1.png"; echo
    curl -sS --fail-with-body -X POST "$url/v1/subjects/s1/verify" -H "Authorization: Bearer $key" \
        -H 'content-type: image/png' --data-binary @"$VERIFY/digits/7_0.png"; echo
    echo "\$ curl -s http://127.0.0.1:$MPORT/metrics | grep -E '^dvsp_(decisions_total|templates_stored|inference_batch_size_count)'"
    curl -fsS "http://127.0.0.1:$MPORT/metrics" | grep -E '^dvsp_(decisions_total|templates_stored|inference_batch_size_count)'
    echo "\$ (gRPC port) bash /dev/tcp/127.0.0.1/$GPORT"
    (exec 3<>"/dev/tcp/127.0.0.1/$GPORT") && echo "gRPC port $GPORT accepts connections"
    echo "\$ HEALTHCHECK (run in the image): $HEALTH_CMD"
    "${run[@]}" /bin/sh -c "$HEALTH_CMD" && echo "HEALTHCHECK exit 0"
    echo "\$ kill -TERM (graceful shutdown)"
    kill -TERM "$pid"
    local rc=0; wait "$pid" || rc=$?
    trap - EXIT
    echo "server exited with $rc; its output:"
    sed 's/\x1b\[[0-9;]*m//g' "$VERIFY/serve.log" | tail -n 5
    echo "files the server wrote to /data: $(ls "$VERIFY/data" | tr '\n' ' ')"
    return "$rc"
}
export VERIFY MNT IMG_USER IMG_WORKDIR IMG_ENTRY IMG_CMD HEALTH_CMD PORT GPORT MPORT
IMG_ENV_S=$(declare -p IMG_ENV EXTRA_ENV)
unshare --mount --propagation private --fork \
    bash -c "$IMG_ENV_S; $(declare -f verify_in_chroot); verify_in_chroot"

say "OK: $IMAGE:$VERSION ($IMAGE:latest), $(numfmt --to=iec-i --suffix=B "$SIZE")"
