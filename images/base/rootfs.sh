#!/usr/bin/env bash
# Make the workbench base image's root filesystem from Debian's packages (no public image needed).
#
#   images/base/rootfs.sh OUT_DIR
#
# Writes OUT_DIR/rootfs.tar (Debian bookworm, minbase, with the Python 3.11 the notebook image's
# lock is resolved for) and OUT_DIR/packages.lock (`name version` of every installed package).
# The packages come from the Debian mirrors this host's apt is configured with (its sources are
# read at run time, never written into the project); SOURCE_DATE_EPOCH makes the tarball
# reproducible for one set of package versions. Nothing of the build host stays in it: /etc/hostname,
# /etc/hosts and /etc/resolv.conf are the neutral ones a container runtime replaces.
# Debian's mirrors keep only the newest version of each package (and snapshot.debian.org cannot be
# reached from the build machines), so the pin is packages.lock: images/local/build.sh compares it
# with the committed images/base/packages.lock and says which packages moved.
set -euo pipefail
out=${1:?usage: rootfs.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)

command -v mmdebstrap >/dev/null || {
  echo "base: mmdebstrap is not installed (Debian package mmdebstrap, scripts/system-packages.txt)" >&2
  exit 3
}

# The host's apt sources: the deb822 file(s) and/or the one-line list, whichever exist.
sources=()
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
  [ -s "$f" ] && grep -Eq '^(deb |URIs:)' "$f" && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || { echo "base: this host has no apt sources to build from" >&2; exit 3; }

# Everything the Dockerfiles expect of a Python base: python/pip on PATH, useradd, CA roots.
packages=$(sed -e 's/#.*//' "$here/packages.txt" | tr -s ' \n' ',' | sed -e 's/^,//' -e 's/,$//')
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}   # 2025-01-01: fixed file times

mkdir -p "$out"
mmdebstrap --variant=minbase --quiet \
  --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --aptopt='APT::Install-Recommends "false"' \
  --customize-hook='chroot "$1" dpkg-query -W -f="\${Package} \${Version}\n" > "$1/tmp/packages.lock"' \
  --customize-hook='copy-out /tmp/packages.lock '"$out" \
  --customize-hook='rm -f "$1/tmp/packages.lock" "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
  --customize-hook='printf "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" > "$1/etc/hosts"' \
  --customize-hook='echo localhost > "$1/etc/hostname"; : > "$1/etc/resolv.conf"' \
  bookworm "$out/rootfs.tar" "${sources[@]}"
sort -o "$out/packages.lock" "$out/packages.lock"
