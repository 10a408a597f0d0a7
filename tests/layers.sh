#!/bin/sh
# layers.sh -- no arrow from the data path to the control plane.
#
# The rule (default-deny, so a new file is checked without editing this):
#  - control-plane headers are the px/ headers matching CONTROL_HEADERS;
#  - control-plane files, which may include them, are those matching
#    CONTROL_FILES (control/, the lifecycle, health checks, deploys, state,
#    metrics, ACME) and the control-plane headers themselves;
#  - every other .c and .h under proxy/ and include/ is data path (or shared
#    by it) and must not include a control-plane header.
#  - proxyctl, when its binary is given, defines no data-path symbol
#    (px_routes_*, px_limit_*, px_tls_*): it links the protocol, the errors
#    table and the value parsers only (nm, so a stray call cannot hide).
# Exit 0 when clean; 1 naming each file, line and include (or symbol) otherwise.
# Usage: sh tests/layers.sh [ROOT [PROXYCTL]]   (default: the current directory)
set -u
ROOT=${1:-.}
PROXYCTL=${2:-}
CONTROL_HEADERS='px/control[^/]*\.h|px/deploy\.h|px/health\.h|px/state\.h|px/acme[^/]*\.h|px/metrics\.h|px/server\.h'
CONTROL_FILES='^(control/|proxy/acme/|proxy/(main|server|health|deploy|state|metrics)\.c$|include/px/(control[^/]*|deploy|health|state|acme[^/]*|metrics|server)\.h$)'

cd "$ROOT" || exit 2
bad=0
checked=0
for f in $(find proxy include -type f \( -name '*.c' -o -name '*.h' \) | sort); do
    if printf '%s\n' "$f" | grep -Eq "$CONTROL_FILES"; then
        continue
    fi
    checked=$((checked + 1))
    hits=$(grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"<]($CONTROL_HEADERS)[\">]" "$f")
    if [ -n "$hits" ]; then
        printf '%s\n' "$hits" | while IFS= read -r h; do
            line=${h%%:*}
            inc=$(printf '%s\n' "${h#*:}" | sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*//')
            echo "layers: $f:$line: data-path file includes control-plane header $inc" >&2
        done
        bad=1
    fi
done
if [ "$bad" -ne 0 ]; then
    echo "layers: FAILED: the data path must not depend on the control plane (rule in tests/layers.sh)" >&2
    exit 1
fi
echo "layers: ok ($checked data-path files, none includes a control-plane header)"
if [ -n "$PROXYCTL" ]; then
    if ! syms=$(nm "$PROXYCTL"); then
        echo "layers: FAILED: cannot read the symbols of $PROXYCTL" >&2
        exit 1
    fi
    hits=$(printf '%s\n' "$syms" | grep -E ' [TtDdBb] px_(routes|limit|tls)_')
    if [ -n "$hits" ]; then
        printf '%s\n' "$hits" | sed "s|^|layers: $PROXYCTL links data-path symbol: |" >&2
        echo "layers: FAILED: proxyctl must link no data-path object (its objects: CTL_OBJS in the Makefile)" >&2
        exit 1
    fi
    echo "layers: ok ($PROXYCTL links no px_routes_/px_limit_/px_tls_ symbol)"
fi
