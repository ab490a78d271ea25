#!/usr/bin/env bash
# One dependency graph for build and test: after `cargo build` (what `make demo` compiles),
# `cargo test --workspace --no-run` may compile only the workspace's own targets and crates
# the build graph does not have (the test-only ones). Fails naming any crate the build graph
# has that the tests compile again (a feature a dev-dependency adds to a shared crate).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build --message-format=json-render-diagnostics > "$tmp/build.json"
cargo test --workspace --no-run --message-format=json-render-diagnostics > "$tmp/test.json"
python3 - "$tmp/build.json" "$tmp/test.json" <<'PY'
import json, sys

def artifacts(path):
    for line in open(path):
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact":
            yield m

def name(pid):
    # "registry+https://...#syn@2.0.119" or "path+file:///work/main/crates/x#0.1.0"
    tail = pid.rsplit("#", 1)[-1]
    return tail if "@" in tail else pid.rsplit("/", 1)[-1].replace("#", "@")

# A crate compiled with the same features (and profile) lands in the same files: a crate of
# both graphs whose test-graph files the build graph did not make was compiled again.
built = {}
for m in artifacts(sys.argv[1]):
    built.setdefault(m["package_id"], set()).update(m["filenames"])
ours = lambda pid: pid.startswith("path+file://")
again, only = set(), set()
for m in artifacts(sys.argv[2]):
    pid = m["package_id"]
    if ours(pid):
        continue
    if pid not in built:
        only.add(name(pid))
    elif not set(m["filenames"]) <= built[pid]:
        again.add(f"{name(pid)} [{','.join(m['features'])}]")
print(f"one_graph: {len(only)} test-only crates: {', '.join(sorted(only)) or '-'}")
if again:
    print(f"one_graph: FAILED: {len(again)} crates of the build graph are compiled again for the tests: {'; '.join(sorted(again))}")
    sys.exit(1)
print("one_graph: the tests compile no crate of the build graph again")
PY
