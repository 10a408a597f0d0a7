#!/bin/sh
# layers.sh -- no arrow from the data path to the control plane.
#
# The rule (default-deny, so a new file is checked without editing this):
#  - control-plane headers are the px/ headers matching CONTROL_HEADERS;
#  - control-plane files, which may include them, are those matching
#    CONTROL_FILES (control/, the lifecycle, health checks, deploys, state,
#    metrics, ACME) and the control-plane headers themselves;
#  - every other .c and .h under proxy/ and include/ is data path (or shared
#    by it) and must not include a control-plane header;
#  - and it includes px/ headers on DATA_HEADERS only (allow-list): a new
#    header is not data path until it is added there on purpose. px/stats.h
#    (per-worker counters) is data path; px/metrics.h (the server that reads
#    them, issue 16) is control plane.
#  - proxyctl, when its binary is given, defines no data-path symbol
#    (px_routes_*, px_limit_*, px_tls_*): it links the protocol, the errors
#    table and the value parsers only (nm, so a stray call cannot hide).
#  - no circle among the snapshot's modules (CIRCLE_MODULES: config, routes,
#    services, target), neither by include (a module's .c or header includes
#    another's header) nor, when the object directory is given, by call (a
#    module's object has an undefined px_ symbol another's object defines:
#    nm, so a declaration copied by hand cannot hide an arrow). Any circle
#    counts, not only pairs: the arrows are closed transitively.
#  - no include circle among the data-path modules (DATAPATH_OBJS: a
#    module's proxy/NAME.c or px/NAME.h includes another's px/NAME.h,
#    closed transitively as above), and
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
CIRCLE_MODULES='config routes services target carry'
DATAPATH_OBJS='worker conn h1 h2 tunnel request upstream pool balancer'
# Edges allowed to close a circle (none today; "a b" per line): a circle
# that cannot be broken yet is listed here so that any new one still fails.
CYCLE_ALLOW=
CONTROL_HEADERS='px/control[^/]*\.h|px/status\.h|px/upgrade\.h|px/deploy\.h|px/health\.h|px/state\.h|px/acme[^/]*\.h|px/metrics\.h|px/server\.h|px/systemd\.h'
CONTROL_FILES='^(control/|proxy/acme/|proxy/(main|server|health|deploy|state|metrics|status|systemd|upgrade)\.c$|include/px/(control[^/]*|upgrade|deploy|health|state|acme[^/]*|metrics|server|status|systemd)\.h$)'

# ---- data-path header allow-list (stats, issue 15) ----
DATA_HEADERS='px/(accesslog|addr|carry|challenge|child|cluster|common|config|conn|errors|h1|h2|headers|http1|limit|list|log|mem|parse|request|routes|services|sock|spool|stats|target|timer|tls|tunnel|upstream|worker|worker_ctx)\.h'
# ---- end of the allow-list block ----

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
    # ---- data-path header allow-list (stats, issue 15) ----
    others=$(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*["<]px/' "$f" |
        grep -vE "[\"<]($DATA_HEADERS)[\">]" | grep -vE "[\"<]($CONTROL_HEADERS)[\">]")
    if [ -n "$others" ]; then
        printf '%s\n' "$others" | while IFS= read -r h; do
            inc=$(printf '%s\n' "${h#*:}" | sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*//')
            echo "layers: $f:${h%%:*}: data-path file includes $inc, not on the data-path allow-list (DATA_HEADERS)" >&2
        done
        bad=1
    fi
    # ---- end of the allow-list block ----
done
if [ "$bad" -ne 0 ]; then
    echo "layers: FAILED: the data path must not depend on the control plane, and includes allow-listed headers only (rules in tests/layers.sh)" >&2
    exit 1
fi
echo "layers: ok ($checked data-path files, none includes a control-plane header; px/ headers from the allow-list only)"
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

# circles: arrows "KIND FROM TO" (with the evidence), then a transitive
# closure per kind; a pair reachable both ways is a circle.
# circles [MODULES]: among MODULES (default: CIRCLE_MODULES).
circles() {
    awk -v mods="${1:-$CIRCLE_MODULES}" '
        BEGIN { n = split(mods, m, " ") }
        { kind[$1] = 1; e[$1, $2, $3] = 1; why[$1, $2, $3] = why[$1, $2, $3] " " $4 }
        END {
            bad = 0
            for (k in kind) {
                for (i = 1; i <= n; i++) for (j = 1; j <= n; j++) r[i, j] = ((k, m[i], m[j]) in e)
                for (x = 1; x <= n; x++) for (i = 1; i <= n; i++) for (j = 1; j <= n; j++)
                    if (r[i, x] && r[x, j]) r[i, j] = 1
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) {
                    if (!(r[i, j] && r[j, i])) continue
                    bad = 1
                    printf "layers: circle by %s between %s and %s\n", k, m[i], m[j] > "/dev/stderr"
                    for (a = 1; a <= n; a++) for (b = 1; b <= n; b++)
                        if ((k, m[a], m[b]) in e && r[b, i] && r[i, a] && r[b, j] && r[j, a])
                            printf "layers:   %s -> %s:%s\n", m[a], m[b], why[k, m[a], m[b]] > "/dev/stderr"
                }
            }
            exit bad
        }'
}
present=''
for a in $CIRCLE_MODULES; do
    [ -f "proxy/$a.c" ] && present="$present $a"
done
CIRCLE_MODULES=${present# }
# include_arrows "MODULES": "include FROM TO FILE:LINE" for each #include of
# px/TO.h in proxy/FROM.c or include/px/FROM.h
include_arrows() {
    for a in $1; do
        for f in proxy/$a.c include/px/$a.h; do
            [ -f "$f" ] || continue
            for b in $1; do
                [ "$a" = "$b" ] && continue
                grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"<]px/$b\.h[\">]" "$f" |
                    sed "s|^\([0-9]*\):.*|include $a $b $f:\1|"
            done
        done
    done
}
arrows=$(
    include_arrows "$CIRCLE_MODULES"
    if [ -n "$OBJDIR" ]; then
        for a in $CIRCLE_MODULES; do
            [ -f "$OBJDIR/proxy/$a.o" ] || { echo "missing $OBJDIR/proxy/$a.o"; continue; }
            for b in $CIRCLE_MODULES; do
                [ "$a" = "$b" ] && continue
                nm -u "$OBJDIR/proxy/$a.o" | awk '$2 ~ /^px_/ { print $2 }' | sort -u >"${TMPDIR:-/tmp}/layers.$$.u"
                nm --defined-only "$OBJDIR/proxy/$b.o" | awk '$2 ~ /^[TDBR]$/ { print $3 }' | sort -u |
                    comm -12 "${TMPDIR:-/tmp}/layers.$$.u" - | sed "s|^|call $a $b |"
            done
        done
        rm -f "${TMPDIR:-/tmp}/layers.$$.u"
    fi
)
if printf '%s\n' "$arrows" | grep -q '^missing '; then
    printf '%s\n' "$arrows" | grep '^missing ' | sed 's/^missing /layers: FAILED: no object /' >&2
    exit 1
fi
if ! printf '%s\n' "$arrows" | grep -v '^$' | circles; then
    echo "layers: FAILED: no circle among $CIRCLE_MODULES (rule in tests/layers.sh)" >&2
    exit 1
fi
echo "layers: ok (no circle among $CIRCLE_MODULES by include${OBJDIR:+ or by call})"
# the data path by include: a module is its px/NAME.h and proxy/NAME.c (pool
# and balancer have no header of their own: upstream.h); worker.h includes
# leaves only (px/worker_ctx.h holds the modules' per-worker state).
arrows=$(include_arrows "$DATAPATH_OBJS")
if ! printf '%s\n' "$arrows" | grep -v '^$' | circles "$DATAPATH_OBJS"; then
    echo "layers: FAILED: no include circle among $DATAPATH_OBJS (rule in tests/layers.sh)" >&2
    exit 1
fi
echo "layers: ok (no include circle among: $DATAPATH_OBJS)"
if [ -n "$OBJDIR" ]; then
    edges=$(for a in $DATAPATH_OBJS; do
        if [ ! -f "$OBJDIR/proxy/$a.o" ]; then
            echo "layers: FAILED: no $OBJDIR/proxy/$a.o" >&2
            exit 1
        fi
        nm -u "$OBJDIR/proxy/$a.o" | awk '$2 ~ /^px_/ {print $2}' | sort -u >"${TMPDIR:-/tmp}/layers.$$.u"
        for b in $DATAPATH_OBJS; do
            [ "$a" = "$b" ] && continue
            nm --defined-only "$OBJDIR/proxy/$b.o" | awk '$2 ~ /^[TDBR]$/ && $3 ~ /^px_/ {print $3}' |
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
