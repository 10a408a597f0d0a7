#!/bin/sh
# Install the Debian packages proxyd needs.
#   sh tests/install-deps.sh        to build and run it (tests/deps.txt): make, make run
#   sh tests/install-deps.sh test   and to test it (tests/deps-test.txt too): make test, asan, fuzz, soak
# As root: installs what is missing (apt-get). Otherwise: names what is
# missing and exits 1. Fast when everything is there (no apt-get call).
set -e
cd "$(dirname "$0")"
missing=""
lists=deps.txt
[ "${1:-}" = test ] && lists="deps.txt deps-test.txt"
for p in $(cat $lists); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "proxyd: missing Debian packages:$missing" >&2
    echo "install them as root: apt-get install$missing   (or run 'make deps' as root)" >&2
    exit 1
fi
echo "proxyd: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# The tests start nginx (a side-by-side check) and certbot (a layout check)
# themselves: keep the packages' postinst from starting their services on
# ports 80/443 or a renewal timer.
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
fi
rc=0
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing; } || rc=$?
[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
[ "$rc" = 0 ] || { echo "proxyd: apt-get failed ($rc)" >&2; exit 1; }
