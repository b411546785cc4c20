#!/usr/bin/env bash
# Installs Debian's Chromium for browser tests and the dashboard tests unless one
# is there (or CHROMIUM_PATH names one). The runner prefers the headless shell:
# a fresh browser context costs it about a third of what full Chromium needs.
set -euo pipefail
if [ -n "${CHROMIUM_PATH:-}" ] && [ -x "$CHROMIUM_PATH" ]; then exit 0; fi
want=()
command -v chromium-headless-shell >/dev/null 2>&1 || want+=(chromium-headless-shell)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
if [ ${#want[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  if command -v chromium >/dev/null 2>&1 || command -v chromium-headless-shell >/dev/null 2>&1; then
    exit 0
  fi
  echo "Chromium is missing: run 'sudo apt-get install chromium-headless-shell chromium'" \
       "or set CHROMIUM_PATH" >&2
  exit 1
fi
echo "installing Debian's ${want[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
