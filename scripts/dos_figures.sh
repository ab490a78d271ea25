#!/usr/bin/env bash
# Denial-of-service figures of `dvsp serve` (README, Verification service): peak RSS under 24
# concurrent identify calls with worst-case images, and /healthz while 2 x 10,000 half-open
# connections are held. Runs the server on an embedded SQLite store in a temp dir.
#
#   bash scripts/dos_figures.sh BIN MODEL_DIR [--old]
#
# --old: BIN predates --metrics-bind and --template-keys (to measure a build before these
# limits).
set -euo pipefail
BIN=$1; MODEL=$2
WORK=$(mktemp -d /tmp/dvsp-dos.XXXXXX)
EXTRA=()
if [[ ${3:-} != --old ]]; then
    "$BIN" db new-key --template-keys "$WORK/template.keys" >/dev/null
    EXTRA=(--metrics-bind 127.0.0.1:0 --template-keys "$WORK/template.keys")
fi
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Blank PNGs (zlib level 9 of zeros: ~100 KB each): 4096x4096 16-bit RGBA (134 MB decoded),
# 6000x4000 8-bit RGBA (96 MB, the default decode budget), 3000x4000 16-bit RGBA (96 MB).
python3 - "$WORK" <<'PY'
import struct, sys, zlib
def png(path, w, h, bitdepth, bytes_per_px):
    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    co = zlib.compressobj(9)
    row = b'\0' * (1 + w * bytes_per_px)
    data = b''.join(co.compress(row) for _ in range(h)) + co.flush()
    ihdr = struct.pack('>IIBBBBB', w, h, bitdepth, 6, 0, 0, 0)
    open(path, 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', data) + chunk(b'IEND', b''))
png(sys.argv[1] + '/rgba16_4096x4096.png', 4096, 4096, 16, 8)
png(sys.argv[1] + '/rgba8_6000x4000.png', 6000, 4000, 8, 4)
png(sys.argv[1] + '/rgba16_3000x4000.png', 3000, 4000, 16, 8)
PY

start_server() { # start_server PORT DB: runs dvsp serve in the background, sets $pid
    "$BIN" serve --model "$MODEL" --db "$2" --bind "127.0.0.1:$1" "${EXTRA[@]}" --fmr 1e-2 \
        --max-key-probes 1000000 >"$WORK/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 150); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.2; done
    cat "$WORK/serve.log"; exit 1
}

echo "| image | concurrent identify calls | answers | peak RSS (idle) |"
echo "|---|---|---|---|"
for img in rgba16_4096x4096 rgba8_6000x4000 rgba16_3000x4000; do
    db="sqlite://$WORK/rss-$img.db"
    "$BIN" db migrate --db "$db" >/dev/null
    key=$("$BIN" keys create --role admin --db "$db" 2>/dev/null)
    port=$(free_port); start_server "$port" "$db"
    idle=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status")
    answers=$(seq 24 | xargs -P 24 -I{} curl -s -o /dev/null -w '%{http_code}\n' -H "x-api-key: $key" \
        -H 'content-type: image/png' --data-binary "@$WORK/$img.png" "http://127.0.0.1:$port/v1/identify" |
        sort | uniq -c | awk '{printf "%s x %s ", $1, $2}')
    peak=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$pid/status")
    echo "| $img | 24 | $answers| $peak MiB ($idle MiB) |"
    kill "$pid"; wait "$pid" 2>/dev/null || true
done

# Half-open connections: each sends half a request head, then nothing, and reconnects when
# closed. Two client processes (each within its own open-files limit).
cat >"$WORK/hold.py" <<'PY'
import asyncio, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def one():
    while True:
        try:
            r, w = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.5); continue
        try:
            w.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n"); await w.drain(); await r.read()
        except OSError:
            pass
        finally:
            w.close()
async def main():
    await asyncio.gather(*(one() for _ in range(n)))
asyncio.run(main())
PY
port=$(free_port); start_server "$port" "sqlite://$WORK/held.db"
python3 "$WORK/hold.py" 127.0.0.1 "$port" 10000 & python3 "$WORK/hold.py" 127.0.0.1 "$port" 10000 &
sleep 15
ok=0; worst=0
for _ in $(seq 40); do
    t=$(curl -s -o /dev/null -m 5 -w '%{http_code} %{time_total}' "http://127.0.0.1:$port/healthz" || true)
    [[ ${t%% *} == 200 ]] && ok=$((ok + 1))
    worst=$(python3 -c "print(max($worst, ${t##* }))")
    sleep 0.5
done
fds=$(ls "/proc/$pid/fd" | wc -l)
kill $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
# A server without a header timeout never finishes its graceful shutdown with these held.
kill "$pid"; sleep 5; kill -KILL "$pid" 2>/dev/null || true
echo
echo "2 x 10000 half-open connections held: server fds $fds, /healthz $ok/40 answered (fresh connection each, 5 s timeout), slowest ${worst} s"
