# shellcheck shell=bash
# `lab build`: the Debian 12 base image of the lab hosts, cached under $LAB.
#   $LAB/stage0/   debootstrap output (kept; redone only when the package list changes)
#   $LAB/rootfs/   stage0 + lab configuration + the initial NixOS-like generation
#   $LAB/base.raw  ext4 image of rootfs for the VM; vmlinuz, initrd.img beside it
IMAGE_PKGS=systemd-sysv,udev,dbus,libpam-systemd,libnss-myhostname,openssh-server,sudo,nix-bin,nix-setup-systemd,libdbi-perl,linux-image-amd64,initramfs-tools,zstd,iproute2,procps,less,ca-certificates,xz-utils,kmod
NIXF=(--extra-experimental-features 'nix-command flakes' --option build-users-group '')

image_build() {
  need_root
  ensure_host_packages
  ensure_host_nix
  local want; want=$(recipe_hash)
  if [ "${1:-}" != --force ] && [ -e "$LAB/rootfs/.lab-recipe" ] && [ "$(cat "$LAB/rootfs/.lab-recipe")" = "$want" ] \
     && [ -e "$LAB/base.raw" ]; then
    say "image up to date ($LAB, recipe $want)"
    return 0
  fi
  mkdir -p "$LAB/debcache" "$LAB/keys"
  local t0=$SECONDS stamp; stamp=$(echo "$IMAGE_PKGS $SUITE" | sha256sum | cut -c1-16)
  if [ "$(cat "$LAB/stage0/.lab-stage0" 2>/dev/null)" != "$stamp" ]; then
    curl -fsS --max-time 20 -o /dev/null "$MIRROR/dists/$SUITE/Release" \
      || die "cannot reach the Debian mirror $MIRROR (set LAB_MIRROR to one that works)"
    rm -rf "$LAB/stage0"
    say "debootstrap $SUITE from $MIRROR (about 90 s)"
    debootstrap --variant=minbase --cache-dir="$LAB/debcache" --include="$IMAGE_PKGS" \
      "$SUITE" "$LAB/stage0" "$MIRROR" > "$LAB/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $LAB/debootstrap.log"
    echo "$stamp" > "$LAB/stage0/.lab-stage0"
  fi
  say "configuring the image"
  rm -rf "$LAB/rootfs.new"
  cp -a "$LAB/stage0" "$LAB/rootfs.new"
  image_configure "$LAB/rootfs.new"
  echo "$want" > "$LAB/rootfs.new/.lab-recipe"
  # every host's writable layer sits on the old rootfs: they must go with it
  lab_stop_all_hosts
  vm_stop_all
  rm -rf "$LAB/hosts"/*/upper "$LAB/vms"/*/disk.qcow2 "$LAB/rootfs"
  mv "$LAB/rootfs.new" "$LAB/rootfs"
  say "writing $LAB/base.raw"
  rm -f "$LAB/base.raw"
  truncate -s 8G "$LAB/base.raw"
  mkfs.ext4 -q -L labroot -d "$LAB/rootfs" "$LAB/base.raw"
  chmod 444 "$LAB/base.raw"
  cp -L "$LAB/rootfs/vmlinuz" "$LAB/vmlinuz"
  cp -L "$LAB/rootfs/initrd.img" "$LAB/initrd.img"
  say "image ready in $((SECONDS - t0)) s (recipe $want)"
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
  install -D -m 644 "$LAB_SRC/image/sshd-lab.conf" "$r/etc/ssh/sshd_config.d/lab.conf"
  install -D -m 755 "$LAB_SRC/image/lab-hostkey" "$r/usr/local/sbin/lab-hostkey"
  install -D -m 644 "$LAB_SRC/image/lab-hostkey.service" "$r/etc/systemd/system/lab-hostkey.service"
  chroot "$r" systemctl enable lab-hostkey.service >/dev/null 2>&1
  install -D -m 755 "$LAB_SRC/image/fixture-nixos-generator" "$r/etc/systemd/system-generators/fixture-nixos-generator"

  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C deploy-flake-lab -f "$KEY"
  chroot "$r" useradd -m -s /bin/bash -G nix-users,sudo deploy
  local h
  for h in root home/deploy; do
    install -d -m 700 "$r/$h/.ssh"
    install -m 600 "$KEY.pub" "$r/$h/.ssh/authorized_keys"
  done
  chroot "$r" chown -R deploy: /home/deploy/.ssh
  echo 'deploy ALL=(ALL:ALL) NOPASSWD: ALL' > "$r/etc/sudoers.d/deploy"; chmod 440 "$r/etc/sudoers.d/deploy"
  chroot "$r" passwd -l root >/dev/null

  echo '{"flakes":[],"version":2}' > "$r/etc/nix/registry.json"
  install -m 644 "$LAB_SRC/image/nix.conf" "$r/etc/nix/nix.conf"

  # small initrd for the VM: only what mounts ext4 on virtio-blk
  sed -i 's/^MODULES=.*/MODULES=list/' "$r/etc/initramfs-tools/initramfs.conf"
  printf 'virtio_pci\nvirtio_blk\next4\n' > "$r/etc/initramfs-tools/modules"
  mount -t proc proc "$r/proc"
  mount --rbind /dev "$r/dev"; mount --make-rslave "$r/dev"
  # shellcheck disable=SC2064
  trap "umount -R '$r/dev' 2>/dev/null; umount '$r/proc' 2>/dev/null || true" EXIT
  chroot "$r" update-initramfs -u -k all >/dev/null 2>&1 || die "update-initramfs failed in the image"
  image_initial_generation "$r"
  umount -R "$r/dev"; umount "$r/proc"; trap - EXIT

  rm -f "$r/usr/sbin/policy-rc.d"
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r/debootstrap" "$r/run/fixture-nixos"
  : > "$r/etc/machine-id"
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
  chroot "$r" "$out/bin/switch-to-configuration" boot 2>/dev/null || die "initial boot entry failed"
  say "initial generation: $out"
}
