# shellcheck shell=bash
# `lab build [--suite SUITE] [--force]`: the base image of the lab hosts, one per Debian
# suite (bookworm, the default; trixie; sid), each cached in its own directory
# (image_dir): $LAB itself for bookworm, as before suites existed, $LAB/images/SUITE else.
#   DIR/stage0/    debootstrap output (kept; redone only when the suite's package list changes)
#   DIR/rootfs/    stage0 + lab configuration + the initial NixOS-like generation
#   DIR/base.raw   ext4 image of rootfs for the VM; vmlinuz, initrd.img beside it
IMAGE_PKGS=systemd-sysv,udev,dbus,libpam-systemd,libnss-myhostname,openssh-server,sudo,opendoas,nix-bin,nix-setup-systemd,libdbi-perl,linux-image-amd64,initramfs-tools,zstd,iproute2,procps,less,ca-certificates,xz-utils,kmod
NIXF=(--extra-experimental-features 'nix-command flakes' --option build-users-group '')
LAB_SUITES=(bookworm trixie sid)

valid_suite() {  # SUITE
  local s; for s in "${LAB_SUITES[@]}"; do [ "$s" = "$1" ] && return 0; done
  die "unknown suite '$1' (one of: ${LAB_SUITES[*]})"
}
image_dir() {  # SUITE
  if [ "$1" = bookworm ]; then echo "$LAB"; else echo "$LAB/images/$1"; fi
}
# The suite's package list (opendoas and, where Debian has it, sudo-rs: the elevations
# other than sudo that NixOS offers, --elevate). sid's kernel packages pull in dracut (debootstrap fails with
# initramfs-tools there); its initrd is made as small as initramfs-tools' (image_initrd).
image_pkgs() {  # SUITE
  case $1 in
    sid) echo "${IMAGE_PKGS/initramfs-tools/dracut},sudo-rs" ;;
    trixie) echo "$IMAGE_PKGS,sudo-rs" ;;
    *) echo "$IMAGE_PKGS" ;;
  esac
}
# systemd >= 256 (trixie's 257, sid's 262) refuses the hybrid cgroup hierarchy this machine
# has (cgroup v1 with a cgroup2 mount beside it): nspawn must give such a container a unified one.
suite_unified_cgroup() {  # SUITE: true when nspawn needs SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
  [ "$1" != bookworm ]
}

image_build() {  # [--suite SUITE] [--force]
  need_root
  local suite=bookworm force=
  while [ $# -gt 0 ]; do
    case $1 in
      --suite) [ $# -ge 2 ] || die "usage: lab build [--suite SUITE] [--force]"; suite=$2; shift 2 ;;
      --suite=*) suite=${1#--suite=}; shift ;;
      --force) force=1; shift ;;
      *) die "usage: lab build [--suite SUITE] [--force]" ;;
    esac
  done
  valid_suite "$suite"
  ensure_host_packages
  ensure_host_nix
  local d want pkgs; d=$(image_dir "$suite"); want=$(recipe_hash "$suite"); pkgs=$(image_pkgs "$suite")
  mkdir -p "$d"
  # two builds of one suite at once (two test workers): the second waits, then finds it done
  exec 9>"$LAB/build-$suite.lock"
  flock -w 1800 9 || die "another 'lab build --suite $suite' holds $LAB/build-$suite.lock"
  if [ -z "$force" ] && [ -e "$d/rootfs/.lab-recipe" ] && [ "$(cat "$d/rootfs/.lab-recipe")" = "$want" ] \
     && [ -e "$d/base.raw" ]; then
    say "image up to date ($d, $suite, recipe $want)"
    return 0
  fi
  local cache=$LAB/debcache; [ "$suite" = bookworm ] || cache=$LAB/debcache-$suite
  mkdir -p "$cache" "$LAB/keys"
  local t0=$SECONDS stamp; stamp=$(echo "$pkgs $suite" | sha256sum | cut -c1-16)
  if [ "$(cat "$d/stage0/.lab-stage0" 2>/dev/null)" != "$stamp" ]; then
    curl -fsS --max-time 20 -o /dev/null "$MIRROR/dists/$suite/Release" \
      || die "cannot reach the Debian mirror $MIRROR (set LAB_MIRROR to one that works)"
    rm -rf --one-file-system "$d/stage0"
    say "debootstrap $suite from $MIRROR (about 90 s)"
    # in a mount namespace of its own: a failed debootstrap leaves nothing mounted; one
    # debootstrap at a time per package cache (the deployer root of the suite shares it)
    flock "$cache.lock" unshare --mount --propagation private \
      debootstrap --variant=minbase --cache-dir="$cache" --include="$pkgs" \
      "$suite" "$d/stage0" "$MIRROR" > "$d/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $d/debootstrap.log"
    echo "$stamp" > "$d/stage0/.lab-stage0"
  fi
  say "configuring the $suite image"
  rm -rf --one-file-system "$d/rootfs.new"
  cp -a "$d/stage0" "$d/rootfs.new"
  image_configure "$d/rootfs.new"
  echo "$want" > "$d/rootfs.new/.lab-recipe"
  # every writable layer on the old rootfs must go with it: the hosts and VMs of this suite
  local h
  for h in "$LAB"/hosts/*/; do
    if [ ! -d "$h" ] || [ "$(host_suite "$(basename "$h")")" != "$suite" ]; then continue; fi
    host_stop "$(basename "$h")"; rm -rf "$h/upper"
  done
  for h in "$LAB"/vms/*/; do
    if [ ! -d "$h" ] || [ "$(vm_suite "$(basename "$h")")" != "$suite" ]; then continue; fi
    vm_stop "$(basename "$h")"; rm -f "$h/disk.qcow2"
  done
  rm -rf --one-file-system "$d/rootfs"
  mv "$d/rootfs.new" "$d/rootfs"
  say "writing $d/base.raw"
  rm -f "$d/base.raw"
  truncate -s 8G "$d/base.raw"
  mkfs.ext4 -q -L labroot -d "$d/rootfs" "$d/base.raw"
  chmod 444 "$d/base.raw"
  image_kernel "$d/rootfs" "$d"
  image_boot_seed "$d/rootfs" "$d"
  say "image $suite ready in $((SECONDS - t0)) s (recipe $want)"
}

# The newest kernel of the rootfs and its initrd, beside base.raw, for QEMU's -kernel/-initrd.
image_kernel() {  # ROOTFS DIR
  local r=$1 kver
  kver=$(find "$r/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
  if [ -z "$kver" ] || [ ! -e "$r/boot/vmlinuz-$kver" ] || [ ! -e "$r/boot/initrd.img-$kver" ]; then
    die "no kernel and initrd in the image (/boot/vmlinuz-$kver, /boot/initrd.img-$kver)"
  fi
  cp "$r/boot/vmlinuz-$kver" "$2/vmlinuz"
  cp "$r/boot/initrd.img-$kver" "$2/initrd.img"
}

# What every host's /boot filesystem starts with (boot_fs_make): the systemd-boot layout the
# initial generation installed (loader/, EFI/), without Debian's kernel files.
image_boot_seed() {  # ROOTFS DIR
  rm -rf "$2/boot-seed"; mkdir -p "$2/boot-seed"
  cp -a "$1/boot/loader" "$1/boot/EFI" "$2/boot-seed/"
}

# A host's /boot: an ext2 filesystem of its own in FILE, LAB_BOOT_MB MiB (default 32), made
# from the image's boot seed; kept until the host (or VM) is reset.
boot_fs_make() {  # FILE SUITE
  local mb=${LAB_BOOT_MB:-32} seed; seed=$(image_dir "$2")/boot-seed
  [[ $mb =~ ^[0-9]{1,4}$ && $mb -ge 4 ]] || die "LAB_BOOT_MB must be a number of MiB >= 4 (not '$mb')"
  [ -d "$seed" ] || die "no $seed; run 'lab/lab build --suite $2' again"
  mkdir -p "$(dirname "$1")"; rm -f "$1"; truncate -s "${mb}M" "$1"
  mkfs.ext2 -q -L labboot -m 0 -d "$seed" "$1" || die "cannot make the /boot filesystem $1"
}

image_configure() {  # ROOTFS
  local r=$1
  printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"; chmod 755 "$r/usr/sbin/policy-rc.d"
  echo lab > "$r/etc/hostname"
  touch "$r/etc/NIXOS"  # switch-to-configuration refuses a system without it, as NixOS's does
  printf '127.0.0.1 localhost\n::1       localhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
  echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$r/etc/fstab"
  mkdir -p "$r/etc/systemd/network"
  printf '[Match]\nName=en* eth*\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
    > "$r/etc/systemd/network/10-lab.network"
  chroot "$r" systemctl enable systemd-networkd.service >/dev/null 2>&1
  chroot "$r" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer dpkg-db-backup.timer >/dev/null 2>&1 || true
  # sshd belongs to the NixOS-like configuration (sshd.service in the closure), not to Debian
  chroot "$r" systemctl disable ssh.service >/dev/null 2>&1 || true
  rm -f "$r"/etc/ssh/ssh_host_*
  # /etc/ssh/sshd_config, /etc/sudoers and the users' keys belong to the configuration:
  # its activation serves them from the system's etc (fixture-flake/scripts/activate.sh)
  install -D -m 755 "$LAB_SRC/image/lab-hostkey" "$r/usr/local/sbin/lab-hostkey"
  install -D -m 644 "$LAB_SRC/image/lab-hostkey.service" "$r/etc/systemd/system/lab-hostkey.service"
  chroot "$r" systemctl enable lab-hostkey.service >/dev/null 2>&1
  install -D -m 755 "$LAB_SRC/image/fixture-nixos-generator" "$r/etc/systemd/system-generators/fixture-nixos-generator"
  # the lab's EFI variables (a model of efivarfs, from /var/lib/fixture-efivars)
  install -D -m 755 "$LAB_SRC/image/lab-efivars" "$r/usr/local/sbin/lab-efivars"
  install -D -m 644 "$LAB_SRC/image/lab-efivars.service" "$r/etc/systemd/system/lab-efivars.service"
  chroot "$r" systemctl enable lab-efivars.service >/dev/null 2>&1

  # the lab's client key: the snakeoil pair whose public half the configurations carry
  install -m 600 "$LAB_SRC/image/lab-client-key" "$KEY"
  install -m 644 "$LAB_SRC/fixture-flake/lab-client-key.pub" "$KEY.pub"
  # deploy: in wheel (NOPASSWD in the lab's sudoers); sudopw: its sudo rule needs its password
  chroot "$r" groupadd wheel
  chroot "$r" useradd -m -s /bin/bash -G nix-users,wheel deploy
  chroot "$r" useradd -m -s /bin/bash -G nix-users sudopw
  echo "sudopw:$LAB_SUDO_PASSWORD" | chroot "$r" chpasswd
  rm -f "$r"/etc/sudoers.d/* "$r/etc/ssh/sshd_config" "$r"/etc/ssh/sshd_config.d/*
  image_nixos_paths "$r"
  chroot "$r" passwd -l root >/dev/null

  image_container_units "$r"
  mount -t proc proc "$r/proc"
  mount --rbind /dev "$r/dev"; mount --make-rslave "$r/dev"
  # shellcheck disable=SC2064
  trap "umount -R '$r/dev' 2>/dev/null; umount '$r/proc' 2>/dev/null || true" EXIT
  image_initrd "$r"
  image_nix_conf "$r"
  image_initial_generation "$r"
  umount -R "$r/dev"; umount "$r/proc"; trap - EXIT

  rm -f "$r/usr/sbin/policy-rc.d"
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r/debootstrap" "$r/run/fixture-nixos"
  : > "$r/etc/machine-id"
}

# NixOS's PATHs and tools (lab/README.md, "Tools and PATHs"): a login's PATH is the system's
# /etc/set-environment (wrappers, Nix profiles, /run/current-system/sw/bin), read by
# /etc/profile and, for an ssh command, by bash's /etc/bash.bashrc (Debian's bash reads it
# there, as NixOS's does); sudo keeps the caller's PATH (no secure_path); a unit's PATH is
# only systemd's own bin/ (DefaultEnvironment, set by image_initial_generation: the booted
# systemd's package). /usr/bin stays (Debian's packages live there) but is on no such PATH.
# shellcheck disable=SC2016  # lines written for the hosts' shells, expanded there
image_nixos_paths() {  # ROOTFS
  local r=$1 f
  ln -sfn /etc/static/set-environment "$r/etc/set-environment"
  printf '%s\n' '# NixOS-like (deploy-flake lab): the PATH of every login is the system'"'"'s' \
    '[ -r /etc/set-environment ] && . /etc/set-environment' \
    'for i in /etc/profile.d/*.sh; do [ -r "$i" ] && . "$i"; done; unset i' > "$r/etc/profile"
  f=$r/etc/bash.bashrc
  { echo '# NixOS-like (deploy-flake lab): ssh commands and interactive shells get the system'"'"'s PATH'
    echo 'if [ -z "${__NIXOS_SET_ENVIRONMENT_DONE:-}" ] && [ -r /etc/set-environment ]; then . /etc/set-environment; fi'
    cat "$f"; } > "$f.new" && mv "$f.new" "$f"
  sed -i '/secure_path/d' "$r/etc/sudoers"
  # the lab's own unit (not the configuration's) keeps Debian's tools
  mkdir -p "$r/etc/systemd/system/lab-hostkey.service.d"
  printf '[Service]\nEnvironment=PATH=/usr/sbin:/usr/bin\n' > "$r/etc/systemd/system/lab-hostkey.service.d/path.conf"
}

# The generation every host boots into first: nixosConfigurations.base of the
# fixture flake, built in the image's own store and made the boot default, so
# every host has a previous configuration to return to.
image_initial_generation() {  # ROOTFS
  local r=$1 out
  rm -rf "$r/var/lib/lab-fixture"; mkdir -p "$r/var/lib/lab-fixture"
  cp -r "$LAB_SRC/fixture-flake/." "$r/var/lib/lab-fixture/"
  out=$(chroot "$r" env HOME=/root nix "${NIXF[@]}" build --no-link --json \
        'path:/var/lib/lab-fixture#nixosConfigurations.base.config.system.build.toplevel' \
        | sed 's/.*"out":"\([^"]*\)".*/\1/') || die "building the initial generation failed"
  chroot "$r" nix-env -p /nix/var/nix/profiles/system --set "$out"
  # as nixos-install does: the boot loader installed (systemd-boot's layout under /boot, which
  # image_boot_seed takes for every host's /boot filesystem), not recorded as a later install
  chroot "$r" env NIXOS_INSTALL_BOOTLOADER=1 "$out/bin/switch-to-configuration" boot 2>/dev/null \
    || die "initial boot entry failed"
  rm -f "$r/boot/loader/fixture-installed"
  sed -i '/^machine-id /d' "$r"/boot/loader/entries/*.conf  # the build's, no host's (machine-id is blanked below)
  # its etc as its activation leaves it (sudoers, sshd_config, keys, wheel), before any boot
  chroot "$r" "$out/activate" >/dev/null 2>&1 || die "activating the initial generation in the image failed"
  rm -f "$r/run/current-system"
  # what its activation does to /etc and /bin, done here already: the generator activates the
  # boot default at boot, but on systemd 256 and later it runs sandboxed (only /run writable)
  # and the activation is done again a moment later by the firmware unit it makes
  ln -sfn "$out/etc" "$r/etc/static"
  ln -sfn "$out/sw/bin/sh" "$r/bin/sh"
  # a unit's PATH: only the systemd package's bin/, as NixOS patches systemd's DEFAULT_PATH_NORMAL
  mkdir -p "$r/etc/systemd/system.conf.d"
  printf '[Manager]\nDefaultEnvironment=PATH=%s/bin\n' "$(readlink "$r$out/systemd")" > "$r/etc/systemd/system.conf.d/lab-path.conf"
  say "initial generation: $out"
}

# A small initrd for the VM: only what mounts ext4 on virtio-blk. initramfs-tools
# (bookworm, trixie) or dracut (sid), whichever the suite's kernel came with.
image_initrd() {  # ROOTFS (with /proc and /dev mounted)
  local r=$1
  if [ -d "$r/etc/initramfs-tools" ]; then
    sed -i 's/^MODULES=.*/MODULES=list/' "$r/etc/initramfs-tools/initramfs.conf"
    printf 'virtio_pci\nvirtio_blk\next4\n' > "$r/etc/initramfs-tools/modules"
    chroot "$r" update-initramfs -u -k all >/dev/null 2>&1 || die "update-initramfs failed in the image"
  else
    # not host-only (it is built in a chroot), and `drivers` replaces the generic driver set
    printf 'hostonly="no"\ndrivers=" virtio_pci virtio_blk ext4 "\ncompress="zstd"\n' \
      > "$r/etc/dracut.conf.d/90-lab.conf"
    chroot "$r" dracut --force --regenerate-all >"$r/var/log/lab-dracut.log" 2>&1 \
      || die "dracut failed in the image; see $r/var/log/lab-dracut.log"
  fi
}

# Units that cannot work in a container must not leave the nspawn hosts `degraded`:
# systemd-remount-fs fails on the overlay root with newer systemd (the fstab line names
# /dev/vda, the VM's disk). The VM (not a container) still runs it.
image_container_units() {  # ROOTFS
  local r=$1
  mkdir -p "$r/etc/systemd/system/systemd-remount-fs.service.d"
  printf '[Unit]\nConditionVirtualization=!container\n' \
    > "$r/etc/systemd/system/systemd-remount-fs.service.d/lab-container.conf"
}

# nix.conf without flakes enabled (on purpose, see image/nix.conf). From Nix 2.26 on,
# flake-registry is a setting of the flakes feature: with flakes off, every nix call warns
# "Ignoring setting 'flake-registry'". It stays only where this Nix understands it
# without flakes; the system registry (/etc/nix/registry.json) is empty either way.
image_nix_conf() {  # ROOTFS
  local r=$1
  echo '{"flakes":[],"version":2}' > "$r/etc/nix/registry.json"
  install -m 644 "$LAB_SRC/image/nix.conf" "$r/etc/nix/nix.conf"
  if chroot "$r" env HOME=/root nix --version 2>&1 >/dev/null | grep -q "Ignoring setting 'flake-registry'"; then
    sed -i '/^flake-registry/d' "$r/etc/nix/nix.conf"
  fi
  if chroot "$r" env HOME=/root nix --version 2>&1 >/dev/null | grep -q .; then
    die "nix in the image still warns: $(chroot "$r" env HOME=/root nix --version 2>&1 >/dev/null)"
  fi
}
