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
#  - no call circle among the data-path modules (DATAPATH_OBJS), when their
#    object directory is given: an edge a -> b for each px_ symbol a.o uses
#    and b.o defines (nm, so calls through headers, inline or not, count);
#    the worker is a loop, the transport calls its sessions through an ops
#    table, the pool its owner through handlers. A circle is printed.
# Exit 0 when clean; 1 naming each file, line and include (or symbol) otherwise.
# Usage: sh tests/layers.sh [ROOT [PROXYCTL [OBJDIR]]]   (default: the current directory)
set -u
ROOT=${1:-.}
PROXYCTL=${2:-}
OBJDIR=${3:-}
DATAPATH_OBJS='worker conn h1 h2 tunnel request upstream pool balancer'
# Edges allowed to close a circle (none today; "a b" per line): a circle
# that cannot be broken yet is listed here so that any new one still fails.
CYCLE_ALLOW=
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
if [ -n "$OBJDIR" ]; then
    edges=$(for a in $DATAPATH_OBJS; do
        if [ ! -f "$OBJDIR/$a.o" ]; then
            echo "layers: FAILED: no $OBJDIR/$a.o" >&2
            exit 1
        fi
        nm -u "$OBJDIR/$a.o" | awk '$2 ~ /^px_/ {print $2}' | sort -u >"${TMPDIR:-/tmp}/layers.$$.u"
        for b in $DATAPATH_OBJS; do
            [ "$a" = "$b" ] && continue
            nm --defined-only "$OBJDIR/$b.o" | awk '$2 ~ /^[TDBR]$/ && $3 ~ /^px_/ {print $3}' |
                grep -Fxq -f "${TMPDIR:-/tmp}/layers.$$.u" && echo "$a $b"
        done
        rm -f "${TMPDIR:-/tmp}/layers.$$.u"
    done) || exit 1
    edges=$(printf '%s\n' "$edges" | grep -v '^$' | while read -r a b; do
        printf '%s\n' "$CYCLE_ALLOW" | grep -Fxq "$a $b" || echo "$a $b"
    done)
    # depth-first search; prints each circle found as "a -> b -> ... -> a"
    cycles=$(printf '%s\n' "$edges" | awk '
        NF == 2 { adj[$1] = adj[$1] " " $2; nodes[$1]; nodes[$2] }
        function dfs(n,   i, k, m, nb) {
            state[n] = 1; stack[++depth] = n
            k = split(adj[n], nb, " ")
            for (i = 1; i <= k; i++) {
                m = nb[i]
                if (state[m] == 1) {
                    for (j = depth; j > 1 && stack[j] != m; j--) ;
                    path = stack[j]
                    for (j++; j <= depth; j++) path = path " -> " stack[j]
                    print path " -> " m
                    found = 1
                } else if (state[m] == 0) dfs(m)
            }
            depth--; state[n] = 2
        }
        END { for (n in nodes) if (state[n] == 0) dfs(n); exit found }')
    if [ -n "$cycles" ]; then
        printf '%s\n' "$cycles" | sed 's/^/layers: call circle: /' >&2
        echo "layers: FAILED: the data path calls in a circle (nm on $OBJDIR; rule in tests/layers.sh)" >&2
        exit 1
    fi
    echo "layers: ok (no call circle among: $DATAPATH_OBJS)"
fi
