#!/usr/bin/env bash
# `make demo-faces`: the imported face-api model behind the service. Enrolls an ordinary photo
# of Obama (the service finds, landmarks and crops the face), verifies his other photos
# with the similarities: obama2, obama3 and 32bit (obama2 re-encoded) must match, biden must
# not; the two partial faces are shown, whatever the decision. Then stops the server.
set -euo pipefail
bin="$1"; model="$2"; work="${3:-runs/demo-faces-service}"
photos="${DVSP_CACHE:-$HOME/.cache/dvsp}/faces/face_recognition"
mkdir -p "$work"; rm -f "$work"/dvsp.db* "$work"/template.keys
db="sqlite://$work/dvsp.db"; port="${DVSP_DEMO_PORT:-8089}"; url="http://127.0.0.1:$port"
# Templates are sealed at rest under a master key of this keyring (`dvsp db new-key`).
"$bin" db new-key --template-keys "$work/template.keys" >/dev/null
# The store: created and migrated here (administration commands never create one).
"$bin" db migrate --db "$db" >/dev/null
# A key of the `default` gallery that may do everything there, scores rounded to 2 decimals.
key=$("$bin" keys create --role admin --scores rounded --db "$db")
"$bin" serve --model "$model" --db "$db" --template-keys "$work/template.keys" --bind "127.0.0.1:$port" --fmr 1e-2 > "$work/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$url/readyz" >/dev/null || { cat "$work/serve.log"; exit 1; }
auth=(-H "Authorization: Bearer $key")
curl -sf -X POST "$url/v1/subjects" "${auth[@]}" -H 'content-type: application/json' -d '{"id":"obama","name":"Barack Obama"}' >/dev/null
echo "enroll obama.jpg:"
curl -sf -X POST "$url/v1/subjects/obama/templates" "${auth[@]}" -H 'content-type: image/jpeg' --data-binary @"$photos/obama.jpg"; echo
status=0
for f in obama2.jpg obama3.jpg obama_partial_face.jpg obama_partial_face2.jpg 32bit.png biden.jpg; do
  r=$(curl -s -X POST "$url/v1/subjects/obama/verify" "${auth[@]}" -H 'content-type: application/octet-stream' --data-binary @"$photos/$f")
  printf '%-24s %s\n' "$f" "$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
if "match" in r:
    print("match" if r["match"] else "no match", "similarity %.4f (threshold: similarity >= %.4f)" % (r["similarity"], 1 - r["threshold"]))
else:
    print("refused:", r.get("error"), r.get("message"))
' "$r")"
  case "$f" in
    biden.jpg) want=False ;;
    obama_partial*) continue ;;
    *) want=True ;;
  esac
  echo "$r" | python3 -c "import json,sys; sys.exit(0 if json.load(sys.stdin).get('match') == $want else 1)" || status=1
done
kill -TERM $pid; wait $pid || true
trap - EXIT
[ $status = 0 ] && echo "all decisions as expected" || { echo "a decision was not the expected one" >&2; exit 1; }
