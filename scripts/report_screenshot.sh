#!/usr/bin/env bash
# Render an etl HTML report (reports/<run id>.html) to a PNG with headless Chromium, for
# operators and CI: scripts/report_screenshot.sh REPORT.html OUT.png [WIDTH,HEIGHT]
# Needs a chromium binary (Debian: apt-get install chromium); CHROMIUM=/path overrides.
# The page is self-contained; networking is switched off as far as the flags allow.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]   (default 1280,2000)" >&2
    exit 2
fi
report=$1 out=$2 size=${3:-1280,2000}
if [ ! -f "$report" ]; then
    echo "$0: no such report: $report" >&2
    exit 2
fi
browser=${CHROMIUM:-}
if [ -z "$browser" ]; then
    for b in chromium chromium-browser google-chrome; do
        if command -v "$b" >/dev/null 2>&1; then browser=$(command -v "$b"); break; fi
    done
fi
if [ -z "$browser" ]; then
    echo "$0: no chromium found (apt-get install chromium, or set CHROMIUM=/path/to/chrome)" >&2
    exit 2
fi

report_abs=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
mkdir -p "$(dirname "$out")"
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d "${TMPDIR:-/tmp}/report-screenshot.XXXXXX")
trap 'rm -rf "$profile"' EXIT
rm -f "$out_abs"

# file:// URL: percent-encode what a path may hold that a URL may not
url=file://$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$report_abs")

if ! "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --hide-scrollbars --user-data-dir="$profile" --screenshot="$out_abs" \
        --window-size="$size" "$url" >"$profile/chromium.log" 2>&1 || [ ! -s "$out_abs" ]; then
    echo "$0: chromium did not write $out" >&2
    tail -n 20 "$profile/chromium.log" >&2 || true
    exit 1
fi
echo "$out"
