#!/usr/bin/env bash
# shellcheck shell=bash
# `lab deployer`: a newer Debian suite as the *deployer* (its Nix runs deploy-flake's local
# Nix calls), without touching this machine's Debian 12. trixie has nix-bin 2.26, sid 2.34.
#   $LAB/deployer-SUITE/          debootstrap minbase + DEPLOYER_PKGS, Nix configured offline
#   $LAB/deployer-SUITE/.lab-recipe   hash of the suite and the recipe: rebuilt when it changes
#   $LAB/deployer-SUITE.wheels/   `lab deployer install`: wheels of deploy-flake and its deps
#
# The root is entered with chroot, not nspawn, so the lab's `ip netns exec` proxies keep
# working from inside. Every mount is made in a mount namespace of its own (unshare), as a
# slave of this machine's: nothing is ever unmounted by hand, the mounts go when the last
# process in the root exits, and no unmount there can reach this machine's /run/netns.
#
# Sourced by lab/lab for its functions; executed (`deployer-root.sh enter ROOT CMD...`) as the
# part that runs inside the new mount namespace.
DEPLOYER_PKGS=nix-bin,python3,python3-venv,openssh-client,socat,iproute2,ca-certificates,libdbi-perl
# Paths that must be the same inside: ssh configs, keys and known_hosts ($LAB is under
# /var/tmp) and flakes; the project's checkout (wherever it is) is added when entering.
DEPLOYER_SHARED=(/tmp /var/tmp)

deployer_main() {  # build|run|install SUITE ...
  local sub=${1:-} suite=${2:-}
  case "$sub" in
    build|run|install) [ -n "$suite" ] || die "usage: lab deployer $sub SUITE" ;;
    *) die "usage: lab deployer build SUITE [--force] | run SUITE -- CMD... | install SUITE" ;;
  esac
  [[ $suite =~ ^[a-z]+$ ]] || die "not a Debian suite name: $suite"
  shift 2
  "deployer_$sub" "$suite" "$@"
}

# What the root is made of (not how it is entered): rebuild when it changes.
deployer_recipe_hash() {  # SUITE
  { echo "$1 $DEPLOYER_PKGS"; declare -f deployer_build deployer_configure; } | sha256sum | cut -c1-16
}

deployer_build() {  # SUITE [--force]
  need_root
  local s=$1 root=$LAB/deployer-$1 want t0=$SECONDS
  want=$(deployer_recipe_hash "$s")
  mkdir -p "$LAB"
  exec 8>"$root.lock"
  flock -n -x 8 || die "the $s deployer root is in use (lab deployer run): stop that first"
  if [ "${2:-}" != --force ] && [ "$(cat "$root/.lab-recipe" 2>/dev/null)" = "$want" ]; then
    say "deployer root $s up to date ($root, recipe $want)"
    return 0
  fi
  command -v debootstrap >/dev/null || ensure_host_packages
  curl -fsS --max-time 20 -o /dev/null "$MIRROR/dists/$s/Release" \
    || die "cannot reach the Debian mirror $MIRROR for $s (set LAB_MIRROR to one that works)"
  rm -rf --one-file-system "$root.new"
  mkdir -p "$LAB/debcache-$s"
  say "debootstrap $s from $MIRROR into $root (a few minutes)"
  # in a mount namespace of its own: a failed debootstrap leaves no /proc or /sys mounted
  # (one debootstrap at a time per package cache: the suite's lab image shares it)
  flock "$LAB/debcache-$s.lock" unshare --mount --propagation private \
    debootstrap --variant=minbase --cache-dir="$LAB/debcache-$s" --include="$DEPLOYER_PKGS" \
    "$s" "$root.new" "$MIRROR" > "$LAB/deployer-$s.log" 2>&1 \
    || die "debootstrap failed; see $LAB/deployer-$s.log"
  deployer_configure "$root.new"
  echo "$want" > "$root.new/.lab-recipe"
  rm -rf --one-file-system "$root" "$root.wheels"
  mv "$root.new" "$root"
  # shellcheck disable=SC2016  # a dpkg-query format
  say "deployer root $s ready in $((SECONDS - t0)) s (nix-bin $(chroot "$root" dpkg-query -W -f='${Version}' nix-bin))"
}

deployer_configure() {  # ROOT
  local r=$1 d
  mkdir -p "$r/etc/nix" "$r/run/netns"
  for d in "${DEPLOYER_SHARED[@]}"; do mkdir -p "$r$d"; done
  echo '{"flakes":[],"version":2}' > "$r/etc/nix/registry-empty.json"
  # no daemon, no nixbld group, no binary cache, no registry download: an offline deployer
  cat > "$r/etc/nix/nix.conf" <<'NIXCONF'
# lab deployer root
experimental-features = nix-command flakes
sandbox = false
substituters =
build-users-group =
flake-registry = /etc/nix/registry-empty.json
NIXCONF
  echo deployer > "$r/etc/hostname"
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r/debootstrap"
}

deployer_run() {  # SUITE [--] CMD...
  need_root
  local s=$1 root=$LAB/deployer-$1; shift
  [ "${1:-}" != -- ] || shift
  [ $# -gt 0 ] || die "usage: lab deployer run SUITE -- CMD..."
  [ -e "$root/.lab-recipe" ] || die "no deployer root for $s: lab deployer build $s"
  [ "$(cat "$root/.lab-recipe")" = "$(deployer_recipe_hash "$s")" ] \
    || say "the $s deployer root is out of date (lab deployer build $s)"
  exec 8>"$root.lock"
  flock -s -n 8 || die "the $s deployer root is being rebuilt"
  # What `ip netns add` does first: /run/netns a shared mount point, so that namespaces of
  # hosts started later reach the root too.
  mkdir -p /run/netns
  if ! mountpoint -q /run/netns; then
    mount --bind /run/netns /run/netns && mount --make-shared /run/netns
  fi
  exec unshare --mount --propagation slave -- "$LAB_SRC/lib/deployer-root.sh" enter "$root" "$@"
}

# Inside the new mount namespace (every mount below is a slave of this machine's).
deployer_enter() {  # ROOT CMD...
  local r=$1 d; shift
  mount --bind "$r" "$r"  # `ip netns exec` remounts / as a slave: / must be a mount point
  for d in proc sys dev; do
    mount --rbind "/$d" "$r/$d"; mount --make-rslave "$r/$d"
  done
  mount --rbind /run/netns "$r/run/netns"; mount --make-rslave "$r/run/netns"
  for d in "${DEPLOYER_SHARED[@]}"; do
    [ -d "$d" ] && mount --bind "$d" "$r$d"
  done
  # the checkout (its fixture flake, its ssh config) at the same path, unless already inside
  d=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
  if [ ! -d "$r$d/lab" ]; then
    mkdir -p "$r$d" && mount --bind "$d" "$r$d"
  fi
  # chroot itself would start in /: keep the caller's directory when it exists inside
  # the caller's Python and PATH are not the root's (a PYTHONPATH into the checkout would make
  # pip inside think deploy-flake is already installed)
  # shellcheck disable=SC2016  # expanded by the shell inside the root
  exec chroot "$r" /usr/bin/env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV HOME=/root \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c 'cd "$1" 2>/dev/null || cd /; shift; exec "$@"' \
    sh "$PWD" "$@"
}

# deploy-flake in the root, in /opt/deploy-flake: wheels built here (the root has no package
# index), installed there with --no-index.
deployer_install() {  # SUITE
  need_root
  local s=$1 root=$LAB/deployer-$1 py want
  # one install at a time (test workers share the root); none when this source is installed
  exec 6>"$root.install.lock"
  flock 6
  want=$(cd "$LAB_SRC/.." && find src pyproject.toml -type f ! -path '*__pycache__*' -print0 \
         | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
  if [ -x "$root/opt/deploy-flake/bin/deploy-flake" ] \
     && [ "$(cat "$root/opt/deploy-flake/.lab-source" 2>/dev/null)" = "$want" ]; then
    say "deploy-flake in the $s root is up to date (source $want)"
    return 0
  fi
  py=$LAB_SRC/../.venv/bin/python; [ -x "$py" ] || py=python3
  rm -rf "$root.wheels"
  "$py" -m pip wheel -q -w "$root.wheels" "$LAB_SRC/.." > "$LAB/deployer-$s.pip.log" 2>&1 \
    || die "building the wheels failed; see $LAB/deployer-$s.pip.log"
  # (a subshell: deployer_run ends in exec)
  # shellcheck disable=SC2016  # expanded by the shell inside the root
  ( deployer_run "$s" -- env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL \
    sh -c 'rm -rf /opt/deploy-flake && python3 -m venv /opt/deploy-flake &&
    /opt/deploy-flake/bin/pip install -q --no-index --find-links "$1" deploy-flake' sh "$root.wheels" ) \
    || die "installing deploy-flake in the $s root failed"
  [ -x "$root/opt/deploy-flake/bin/deploy-flake" ] || die "deploy-flake is not in $root/opt/deploy-flake/bin after install"
  echo "$want" > "$root/opt/deploy-flake/.lab-source"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  if [ "${1:-}" != enter ] || [ $# -lt 3 ]; then
    echo "usage: $0 enter ROOT CMD... (use lab/lab deployer)" >&2; exit 2
  fi
  shift
  deployer_enter "$@"
fi
