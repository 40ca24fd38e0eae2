#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the `browser` tests (tests/test_view_browser.py): Debian's
# chromium and chromium-driver packages. Playwright's own browser download needs hosts this project's
# CI cannot reach, and Debian's build is maintained with the OS.
# Usage: scripts/install_browser.sh   (as root, or with sudo available; a no-op when both are present)
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "[install] browser: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | head -1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[install] browser: no apt-get here; install Chromium and ChromeDriver yourself (the browser tests need them)" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "[install] browser: installing chromium needs root or sudo" >&2; exit 1; }
    sudo=(sudo)
fi
echo "[install] browser: Debian's chromium and chromium-driver"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "[install] browser: $(chromium --version 2>/dev/null | head -1)"
