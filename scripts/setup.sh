#!/usr/bin/env bash
# setup.sh: install, once, everything `make test` needs on a fresh Debian 12
# machine, then print nothing more. Idempotent: with everything in place it
# only checks (a few dpkg queries) and returns. `make test` runs it first and
# .ci/run runs it before `make test`; `make check` does not need it.
#
#   - apt packages: the C toolchain the e2e tests compile with, gdb (the
#     backtrace test), QEMU, busybox and the kernel build tools (the kernel
#     tests), chromium-headless-shell (the fleet page's browser test);
#   - deb-src entries, cJSON installed with its build dependencies (the
#     Debian-package tests), dpkg-dev and apt-utils (apt-ftparchive);
#   - the Go modules;
#   - the kernel lab (scripts/kernel-lab.sh: the Debian kernel, headers and
#     source the kernel tests use, under /var/cache/livesplice-lab).
#
# Not root: prints what is missing and what to run, and exits 0 (tests that
# need root skip themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export PATH=/usr/local/go/bin:$PATH

pkgs=(gcc g++ make patch binutils gdb qemu-system-x86 busybox-static cpio flex bison libelf-dev
	dwarves kmod bc xz-utils chromium-headless-shell build-essential dpkg-dev apt-utils
	libcjson1 libcjson-dev debhelper diffutils)
need=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
have_src() { grep -Eqrs '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; }

if [ "$(id -u)" != 0 ]; then
	if [ ${#need[@]} -gt 0 ] || ! have_src; then
		echo "setup: not root; missing packages: ${need[*]:-none}; deb-src entries: $(have_src && echo yes || echo no)." >&2
		echo "setup: run 'sudo scripts/setup.sh' for the tests that need them (the others run without)." >&2
	fi
	go mod download
	exit 0
fi

exec 9>/var/lock/livesplice-setup.lock
flock 9

updated=
apt_update() { [ -n "$updated" ] || { apt-get update -qq; updated=1; }; }
if ! have_src; then
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		sed -e 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >/etc/apt/sources.list.d/livesplice-src.sources
	else
		sed -n -e 's/^deb /deb-src /p' /etc/apt/sources.list >/etc/apt/sources.list.d/livesplice-src.list
	fi
	apt_update
fi
if [ ${#need[@]} -gt 0 ]; then
	apt_update
	apt-get install -y -qq "${need[@]}" >/dev/null
fi
# cJSON's build dependencies (the Debian-package tests rebuild it).
if ! apt-get -s build-dep --arch-only cjson 2>/dev/null | grep -q '^0 upgraded, 0 newly installed'; then
	apt_update
	apt-get build-dep -y -qq --arch-only cjson >/dev/null
fi
go mod download
scripts/kernel-lab.sh >/dev/null
