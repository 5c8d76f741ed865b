#!/usr/bin/env bash
# Render the example monthly digest (May 2017, Datong, for the director) to HTML and take a
# screenshot of it with headless Chromium, to see what a mail client would show.
#
#   scripts/render_digest_png.sh [OUT_DIR]        # default OUT_DIR: out/
#   KIND=overdue scripts/render_digest_png.sh     # any kind: due_soon, overdue, at_risk,
#                                                 # breached, resolved, digest (default)
#
# Writes OUT_DIR/KIND.html (the HTML part, with the inline cid: charts rewritten to
# data: URIs so a browser can show them) and OUT_DIR/KIND.png (800 px wide).
#
# Needs: the project's venv (.venv, with Jinja2 and Pillow) and Chromium. On Debian:
#   apt-get update && apt-get install -y chromium fonts-noto-cjk
# fonts-noto-cjk gives Chromium the Traditional Chinese glyphs; without a CJK font the
# screenshot shows empty boxes (tofu) instead of text. Both are for the preview only:
# the mail itself carries no fonts.
#
# Set CHROMIUM to use another binary; set INSTALL=1 to apt-get install what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out}"
mkdir -p "$out"
py="${PYTHON:-.venv/bin/python}"
kind="${KIND:-digest}"

browser="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [[ -z "$browser" || -z "$(fc-list :lang=zh-tw 2>/dev/null || true)" ]]; then
    if [[ "${INSTALL:-0}" == 1 ]]; then
        apt-get update -q && apt-get install -y -q chromium fonts-noto-cjk
        browser="$(command -v chromium)"
    elif [[ -z "$browser" ]]; then
        echo "chromium not found: apt-get install -y chromium fonts-noto-cjk (or INSTALL=1 $0)" >&2
        exit 1
    else
        echo "warning: no Chinese font found; install fonts-noto-cjk or the text shows as boxes" >&2
    fi
fi

"$py" - "$kind" "$out/$kind.html" <<'PY'
import sys
from pathlib import Path

from bsc_rules.notify.examples import preview

Path(sys.argv[2]).write_text(preview(sys.argv[1], "html"), encoding="utf-8")
PY

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$out/$kind.png" --window-size=800,"${HEIGHT:-2400}" \
    "file://$(realpath "$out/$kind.html")" 2>"$out/chromium.log" || {
        cat "$out/chromium.log" >&2
        exit 1
    }
echo "wrote $out/$kind.html and $out/$kind.png"
