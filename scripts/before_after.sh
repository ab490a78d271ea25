#!/usr/bin/env bash
# Verify and identify throughput of a build before a change (OLD_BIN) against this build
# (NEW_BIN), on the same machine in one run: both servers up side by side on SQLite files,
# the same gallery (one subject with one template to verify against, SUBJECTS subjects for
# identify), the same load from `NEW_BIN bench http`, interleaved round by round, at each
# concurrency of CONCURRENCY (default "8"). Ratio = new / old. Used for what custody cost
# (OLD_BIN from before the keyring) and for fewer round trips.
#
#   [CONCURRENCY="1 32 128"] [REQUESTS=2000] bash scripts/before_after.sh OLD_BIN NEW_BIN MODEL_DIR [SUBJECTS=200]
set -euo pipefail
OLD=$1; NEW=$2; MODEL=$3; SUBJECTS=${4:-200}
WORK=$(mktemp -d /tmp/dvsp-cost.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
python3 "$(dirname "$0")/digits.py" "$WORK/digits" 3 >/dev/null
"$NEW" db new-key --template-keys "$WORK/template.keys" >/dev/null

start() { # start NAME BIN KEY_ARGS... : a server on a fresh store; sets URL_<NAME>, KEY_<NAME>
    local name=$1 bin=$2; shift 2
    local db="sqlite://$WORK/$name.db" port mport key
    port=$(free_port); mport=$(free_port)
    "$bin" db migrate --db "$db" >/dev/null
    key=$("$bin" keys create "$@" --db "$db" 2>/dev/null)
    # A build from before encryption at rest has no keyring and no per-subject limit.
    local extra=()
    "$bin" serve --help | grep -q -- --template-keys &&
        extra=(--template-keys "$WORK/template.keys" --max-subject-attempts 1000000000)
    "$bin" serve --model "$MODEL" --db "$db" --bind "127.0.0.1:$port" --metrics-bind "127.0.0.1:$mport" \
        "${extra[@]}" --fmr 1e-2 --max-key-probes 1000000000 --max-attempts 1000000000 \
        >"$WORK/$name.log" 2>&1 &
    for _ in $(seq 150); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    local url="http://127.0.0.1:$port"
    for i in $(seq 0 "$SUBJECTS"); do
        curl -sf -X POST "$url/v1/subjects" -H "Authorization: Bearer $key" -H 'content-type: application/json' \
            -d "{\"id\":\"s$i\"}" >/dev/null
        curl -sf -X POST "$url/v1/subjects/s$i/templates" -H "Authorization: Bearer $key" -H 'content-type: image/png' \
            --data-binary @"$WORK/digits/$((i % 10))_$((i / 10 % 3)).png" >/dev/null
    done
    printf -v "URL_$name" '%s' "$url"
    export "DVSP_BENCH_KEY_${name^^}=$key"
}
# Full scores where the build has score policies.
scores() { "$1" keys create --help | grep -q -- --scores && echo --scores full; }
start old "$OLD" --role admin $(scores "$OLD")
start new "$NEW" --role admin $(scores "$NEW")
echo "gallery: $((SUBJECTS + 1)) subjects, one template each; old = $OLD, new = $NEW"
for c in ${CONCURRENCY:-8}; do
    echo "concurrency $c"
    "$NEW" bench http --model "$MODEL" --target "old=$URL_old" --target "new=$URL_new" \
        --route verify:/v1/subjects/s0/verify --route "identify:/v1/identify?top_k=5" \
        --requests "${REQUESTS:-2000}" --rounds 4 --concurrency "$c"
done
