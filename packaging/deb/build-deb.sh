#!/bin/sh
# make deb: proxyd_VERSION_ARCH.deb from `make install`, with dpkg-deb
# (no debhelper needed): a proxyd system user made in postinst, the config
# and the logrotate file as conffiles (kept on upgrade), the units enabled.
#   sh packaging/deb/build-deb.sh BUILD_DIR OUT_DIR
set -eu
B=${1:-build}
OUT=${2:-$B}
cd "$(dirname "$0")/../.."
here=$(pwd)
version=$(sed -n 's/^#define PX_VERSION "\(.*\)"/\1/p' include/px/common.h)
arch=$(dpkg --print-architecture)
work=$B/deb
root=$work/proxyd_${version}_$arch
rm -rf "$work"
mkdir -p "$root/DEBIAN" "$OUT"
work=$(cd "$work" && pwd)
root=$(cd "$root" && pwd)
# built apart ($B/deb-build) with Debian's hardening flags (dpkg-buildflags,
# hardening=+all: stack protector, FORTIFY_SOURCE, PIE, RELRO, BIND_NOW)
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
hcflags="$(dpkg-buildflags --get CPPFLAGS) $(dpkg-buildflags --get CFLAGS)"
hldflags=$(dpkg-buildflags --get LDFLAGS)
make -s install B="$B/deb-build" CFLAGS="$hcflags" LDFLAGS="$hldflags" \
    DESTDIR="$root" PREFIX=/usr UNITDIR=/lib/systemd/system >/dev/null
# what Debian ships: stripped binaries (debug info belongs in a -dbgsym),
# compressed man pages and changelog, a machine-readable copyright
for f in "$root/usr/sbin/proxyd" "$root/usr/bin/proxyctl"; do
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$f"
done
for f in "$root"/usr/share/man/man*/*; do [ -L "$f" ] || gzip -9n "$f"; done
for f in "$root"/usr/share/man/man*/*; do    # a page that is another's name: link the .gz
    [ -L "$f" ] && ln -sf "$(readlink "$f").gz" "$f.gz" && rm "$f"
done
doc=$root/usr/share/doc/proxyd
mkdir -p "$doc"
cp packaging/deb/copyright "$doc/copyright"
sed "s/@VERSION@/$version/" packaging/deb/changelog | gzip -9n > "$doc/changelog.gz"   # native: changelog.gz
chmod 0644 "$doc/copyright" "$doc/changelog.gz"
for s in postinst prerm postrm; do install -m 0755 "packaging/deb/$s" "$root/DEBIAN/$s"; done
install -m 0644 packaging/deb/conffiles "$root/DEBIAN/conffiles"

# Depends from the binaries' libraries, as dh_shlibdeps computes them
shl=$work/shlibdeps
mkdir -p "$shl/debian"
printf 'Source: proxyd\n\nPackage: proxyd\nArchitecture: any\n' > "$shl/debian/control"
depends=$(cd "$shl" && dpkg-shlibdeps -O -e"$root/usr/sbin/proxyd" -e"$root/usr/bin/proxyctl" 2>/dev/null |
          sed -n 's/^shlibs:Depends=//p')
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" -e "s/@SIZE@/$size/" \
    packaging/deb/control > "$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
chmod 0644 "$root/DEBIAN/md5sums"
# file modes as a package has them, whatever the umask of the build
find "$root" -type d -exec chmod 0755 {} +
deb=$OUT/proxyd_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
