#!/usr/bin/env bash
# The system programs some tests drive, on Debian/Ubuntu, so that `make test` skips nothing:
# - Debian's chromium, a small CJK font (so Chinese text renders in the screenshots instead of empty
#   boxes) and the playwright Python package into .venv, for the browser tests. Playwright only drives
#   the installed chromium (executable_path=/usr/bin/chromium); we never run `playwright install`,
#   which downloads browsers from a CDN.
# - Debian's Go, whose text/template is Ollama's template engine: the GGUF export test renders the
#   Ollama Modelfile's TEMPLATE with it and compares it with the chat template (no Go modules fetched).
# Usage: scripts/install-test-deps.sh   (as root, or with sudo available; safe to run again)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(chromium fonts-wqy-microhei golang-go)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
.venv/bin/python -m pip install --quiet "playwright>=1.50"
/usr/bin/chromium --version 2>/dev/null
go version 2>/dev/null
