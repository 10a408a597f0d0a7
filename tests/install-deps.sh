#!/bin/sh
# Install the Debian packages proxyd needs to build and test (as root).
set -e
cd "$(dirname "$0")"
pkgs=$(cat deps.txt | tr '\n' ' ')
missing=""
for p in $pkgs; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && { echo "all dependencies installed"; exit 0; }
if [ "$(id -u)" != 0 ]; then
    echo "missing packages:$missing"
    echo "run as root: apt-get install$missing"
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
