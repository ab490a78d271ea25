#!/usr/bin/env bash
# Debian's Chromium and its ChromeDriver for the console's browser test (tests/console.rs),
# installed from apt when missing. Idempotent.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "chromium.sh: installing chromium and chromium-driver (apt)"
$sudo apt-get update -qq || echo "chromium.sh: apt-get update failed; trying the cached package lists" >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
