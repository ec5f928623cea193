#!/usr/bin/env bash
# kernel-lab.sh: fetch and unpack, once, everything the kernel tests need: the
# Debian kernel that linux-image-amd64 points at today (image, headers, kbuild,
# source) and the tools to boot it under QEMU and to compile units of it.
#
# Idempotent: a second run with everything in place only prints the paths.
# Safe to run concurrently (flock). Never installs the kernel: the packages
# are unpacked with dpkg -x into $LIVESPLICE_LAB (default
# /var/cache/livesplice-lab):
#
#   debs/                       the downloaded .deb files
#   root/boot/vmlinuz-REL       kernel image, config-REL beside it
#   root/lib/modules/REL/       its modules
#   root/usr/src/linux-headers-REL/   headers (Makefile pointed at the -common
#                                     part extracted beside it)
#   src/linux-source-MAJ.MIN/   the source tree; src/.done holds its package version
#
# Prints KEY=VALUE lines: LAB RELEASE PKGVERSION VMLINUZ CONFIG MODULES
# HEADERS SRC.
set -euo pipefail

lab=${LIVESPLICE_LAB:-/var/cache/livesplice-lab}
export DEBIAN_FRONTEND=noninteractive

log() { echo "kernel-lab: $*" >&2; }

# Tools: QEMU and busybox for the VM; flex..bc for compiling kernel units.
tools=(qemu-system-x86 busybox-static cpio flex bison libelf-dev dwarves kmod bc xz-utils)
need=()
for p in "${tools[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]}"
	apt-get update -qq
	apt-get install -y -qq "${need[@]}" >&2
fi

mkdir -p "$lab/debs" "$lab/root" "$lab/src"
exec 9>"$lab/.lock"
flock 9

# The release linux-image-amd64 depends on today (never pinned: the archive
# drops old ones).
find_release() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { sub(/^linux-image-/, "", $2); print $2; exit }' || true
}
find_version() {
	rel=$(find_release)
	pkgver=
	pkgs=()
	[ -n "$rel" ] || return 0
	pkgver=$(apt-cache policy "linux-image-$rel" | awk '$1 == "Candidate:" && $2 != "(none)" { print $2; exit }')
	abi=${rel%-amd64}                               # 6.1.0-56
	majmin=${rel%%.*}.$(echo "$rel" | cut -d. -f2)  # 6.1
	pkgs=("linux-image-$rel" "linux-headers-$rel" "linux-headers-$abi-common" "linux-kbuild-$majmin" "linux-source-$majmin")
}
have_deb() {
	compgen -G "$lab/debs/${1}_${pkgver//:/%3a}_*.deb" >/dev/null
}
find_version
missing=$([ -n "$pkgver" ] || echo yes)
for p in "${pkgs[@]}"; do
	[ -n "$missing" ] || have_deb "$p" || missing=yes
done
if [ -n "$missing" ]; then
	# Something to download: refresh the package lists first, so that the
	# version is today's and still in the archive.
	apt-get update -qq
	find_version
fi
[ -n "$pkgver" ] || { log "cannot find the release of linux-image-amd64 (apt-cache depends/policy)"; exit 1; }

cd "$lab/debs"
for p in "${pkgs[@]}"; do
	deb=$(compgen -G "${p}_${pkgver//:/%3a}_*.deb" | sort | tail -n1 || true)
	if [ -z "$deb" ]; then
		log "downloading $p $pkgver"
		apt-get download -q -o APT::Sandbox::User=root "$p=$pkgver" >&2
		deb=$(compgen -G "${p}_${pkgver//:/%3a}_*.deb" | sort | tail -n1)
	fi
	stamp="$lab/root/.x-${deb%.deb}"
	if [ ! -e "$stamp" ]; then
		log "unpacking $deb"
		dpkg -x "$deb" "$lab/root"
		touch "$stamp"
	fi
done

# Debian's headers include their -common part by an absolute /usr/src path.
hdr="$lab/root/usr/src/linux-headers-$rel"
if grep -q '^include /usr/src/' "$hdr/Makefile"; then
	sed -i "s|^include /usr/src/|include $lab/root/usr/src/|" "$hdr/Makefile"
fi

src="$lab/src/linux-source-$majmin"
if [ "$(cat "$lab/src/.done" 2>/dev/null)" != "$pkgver" ]; then
	log "untarring linux-source-$majmin $pkgver"
	rm -rf "$src" "$lab/src/.done"
	tar -C "$lab/src" -xf "$lab/root/usr/src/linux-source-$majmin.tar.xz"
	echo "$pkgver" >"$lab/src/.done"
fi

cat <<EOF
LAB=$lab
RELEASE=$rel
PKGVERSION=$pkgver
VMLINUZ=$lab/root/boot/vmlinuz-$rel
CONFIG=$lab/root/boot/config-$rel
MODULES=$lab/root/lib/modules/$rel
HEADERS=$hdr
SRC=$src
EOF
