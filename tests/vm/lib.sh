# shellcheck shell=bash disable=SC2034
# Shared by the VM harness scripts (sourced, not run). Bash.
#
# The guest kernel: Debian 12's 6.12 kernel from bookworm-security. The version is
# pinned because out-of-tree modules must match the headers exactly (and Debian 12's
# gcc-12 matches its CONFIG_CC_VERSION_TEXT). Override with ARCHIP_VM_KERNEL (the ABI
# part of the package names, e.g. 6.12.117+deb12) when Debian drops this one from the
# security archive.
export PATH="$PATH:/usr/sbin:/sbin"
VM_KVER=${ARCHIP_VM_KERNEL:-6.12.117+deb12}
VM_KV=$VM_KVER-amd64
VM_KERNEL_DEBS=(
    "linux-image-$VM_KV"
    "linux-headers-$VM_KV"
    "linux-headers-$VM_KVER-common"
    "linux-kbuild-$VM_KVER"
)
# Host packages: qemu and the initramfs tools; dwarves (pahole), gcc-12 and make for
# building out-of-tree modules against the unpacked headers.
VM_HOST_PACKAGES=(qemu-system-x86 busybox-static kmod cpio xz-utils dwarves gcc-12 make)

# The cache: $ARCHIP_VM_CACHE, else /var/cache/archipelago-vm.
vm_cache_dir() { echo "${ARCHIP_VM_CACHE:-/var/cache/archipelago-vm}"; }
# Where fetch-kernel unpacks the kernel debs (dpkg -x root).
vm_kernel_root() { echo "$1/linux-$VM_KV"; }

vm_log() { echo "${0##*/}: $*" >&2; }
vm_die() { vm_log "$*"; exit 1; }

# Seconds since the epoch with milliseconds, and differences of those.
vm_now() { date +%s.%N | cut -c1-14; }
vm_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Installs the host packages that are missing (as root); fast when none is.
vm_ensure_host_packages() {
    local missing=() p installed
    # One dpkg-query for all (a package dpkg never heard of is simply not listed; dpkg-query
    # then exits 1, which must not end the script under `set -e -o pipefail`).
    installed=" $({ dpkg-query -W -f='${Package}=${db:Status-Abbrev}\n' "${VM_HOST_PACKAGES[@]}" 2>/dev/null || true; } |
        sed -n 's/=ii *$//p' | paste -sd' ') "
    for p in "${VM_HOST_PACKAGES[@]}"; do
        [[ $installed == *" $p "* ]] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        vm_die "missing host packages: ${missing[*]} (run as root, or apt-get install them)"
    fi
    vm_log "installing host packages: ${missing[*]}"
    # --no-remove: never make room by removing something (a qemu-utils from backports
    # was once removed that way to fit qemu-system-x86 from bookworm).
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove)
    if ! "${install[@]}" "${missing[@]}" >&2; then
        # A fresh machine (or container) may have empty or stale package lists.
        apt-get update -qq >&2 || true
        if ! "${install[@]}" "${missing[@]}" >&2; then
            vm_install_beside_backports_qemu "${install[@]}" -- "${missing[@]}" ||
                vm_die "could not install ${missing[*]}; if apt wanted to remove packages (e.g. a qemu-utils from backports), install versions that fit together yourself (e.g. qemu-system-x86 from the same suite)"
        fi
    fi
}

# A machine image may carry qemu-utils from bookworm-backports (the project machines' do),
# which bookworm's qemu-system-x86 cannot be installed beside (apt would remove it).
# Then take qemu-system-x86 (and what it pulls) from bookworm-backports too: the source is
# added (backports are never installed unless asked for, so nothing else changes) and
# the install asks for that suite. Arguments: the install command, --, the packages.
vm_install_beside_backports_qemu() {
    local cmd=() have
    while [ "$1" != -- ]; do cmd+=("$1"); shift; done
    shift
    have=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    [[ $have == *bpo12* ]] || return 1
    vm_log "qemu-utils $have is from bookworm-backports: taking qemu-system-x86 from there too"
    local list=/etc/apt/sources.list.d/archipelago-bookworm-backports.list signed=
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
        signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    echo "deb ${signed}http://deb.debian.org/debian bookworm-backports main" >"$list"
    apt-get update -qq >&2 || true
    "${cmd[@]}" -t bookworm-backports "$@" >&2
}
