#!/usr/bin/env bash
# Re-vendors the console's front-end library from the npm registry: htm 3.1.1's Preact
# standalone build (htm + Preact + hooks in one ES module, no eval), checked against the
# registry's published integrity before it is copied. The result is committed; the build and
# the binary never fetch anything.
set -euo pipefail
cd "$(dirname "$0")/.."
version=3.1.1
integrity='sha512-983Vyg8NwUE7JkZ6NmOqpCZ+sh1bKv2iYTlUkzlWmA5JD2acKoxd4KVxbMmxX/85mtfdnDmTFoNKcg5DGAvxNQ=='
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "htm@$version" >/dev/null)
got="sha512-$(openssl dgst -sha512 -binary "$tmp/htm-$version.tgz" | base64 -w0)"
if [ "$got" != "$integrity" ]; then
  echo "vendor_console: htm-$version.tgz has integrity $got, expected $integrity" >&2
  exit 1
fi
tar -xzf "$tmp/htm-$version.tgz" -C "$tmp"
cp "$tmp/package/preact/standalone.module.js" crates/dvsp-server/console/vendor/htm-preact.mjs
cp "$tmp/package/LICENSE" crates/dvsp-server/console/vendor/LICENSE-htm
echo "vendor_console: crates/dvsp-server/console/vendor/htm-preact.mjs from htm@$version ($integrity)"
