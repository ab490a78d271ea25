#!/usr/bin/env bash
# The service half of `make demo`: starts `dvsp serve` on the demo model with an embedded
# SQLite store, creates an API key, enrolls two '3' digits, verifies another '3' (match) and
# a '7' (no match), identifies, shows the console's headers and the metrics, stops the server with SIGTERM, then
# prints the end of the audit trail. Templates are sealed under a fresh template keyring.
set -euo pipefail
bin="$1"; model="$2"; work="${3:-runs/demo-service}"
mkdir -p "$work"; rm -f "$work"/dvsp.db* "$work"/template.keys
db="sqlite://$work/dvsp.db"; port="${DVSP_DEMO_PORT:-8088}"; url="http://127.0.0.1:$port"
mport="${DVSP_DEMO_METRICS_PORT:-9488}"; metrics="http://127.0.0.1:$mport/metrics"
python3 "$(dirname "$0")/digits.py" "$work/digits" 3 >/dev/null
# Templates are sealed at rest under a master key of this keyring (`dvsp db new-key`).
"$bin" db new-key --template-keys "$work/template.keys" >/dev/null
# The store: created and migrated here (administration commands never create one).
"$bin" db migrate --db "$db" >/dev/null
# A key of the `default` gallery that may do everything there, scores rounded to 2 decimals.
key=$("$bin" keys create --role admin --scores rounded --db "$db")
"$bin" serve --model "$model" --db "$db" --template-keys "$work/template.keys" --bind "127.0.0.1:$port" --metrics-bind "127.0.0.1:$mport" --fmr 1e-2 > "$work/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.1; done
run() { echo "\$ $*" | sed "s/$key/\$KEY/g"; "$@"; echo; }
run curl -s -X POST "$url/v1/subjects" -H "Authorization: Bearer $key" -H 'content-type: application/json' -d '{"id":"alice","name":"Alice (a three)"}'
run curl -s -X POST "$url/v1/subjects/alice/templates" -H "Authorization: Bearer $key" -F image=@"$work/digits/3_0.png"
run curl -s -X POST "$url/v1/subjects/alice/templates" -H "Authorization: Bearer $key" -H 'content-type: image/png' --data-binary @"$work/digits/3_1.png"
run curl -s -X POST "$url/v1/subjects/alice/verify" -H "Authorization: Bearer $key" -H 'content-type: image/png' --data-binary @"$work/digits/3_2.png"
run curl -s -X POST "$url/v1/subjects/alice/verify" -H "Authorization: Bearer $key" -H 'content-type: image/png' --data-binary @"$work/digits/7_0.png"
run curl -s -X POST "$url/v1/identify?top_k=3" -H "Authorization: Bearer $key" -H 'content-type: image/png' --data-binary @"$work/digits/3_2.png"
run curl -s -X POST "$url/v1/subjects/alice/verify" -H 'content-type: image/png' --data-binary @"$work/digits/3_2.png"
run curl -s -X POST "$url/v1/subjects/alice/verify" -H "Authorization: Bearer $key" -H 'content-type: image/png' --data-binary 'not an image'
echo "\$ curl -sI $url/console/   (the operators' console: open it in a browser, paste the key)"
curl -sI "$url/console/" | grep -iE '^(HTTP|content-type|content-security-policy|x-frame-options)'
echo
echo "\$ curl -s $metrics | grep -E '^dvsp_(decisions|templates|auth)'   (the metrics port)"
curl -s "$metrics" | grep -E '^dvsp_(decisions|templates|auth)'
kill -TERM $pid; wait $pid || true
trap - EXIT
echo "server stopped (SIGTERM); store kept in $work/dvsp.db"
echo "\$ dvsp audit-log --since 1h | tail -n 3   (who did what to whom, with what outcome)"
"$bin" audit-log --db "$db" --since 1h | tail -n 3
