# shellcheck shell=bash
# Shared settings and helpers of the lab scripts (sourced by lab/lab).
# shellcheck disable=SC2034  # used by the files sourced after this one
LAB=${DEPLOY_FLAKE_LAB:-/var/tmp/deploy-flake-lab}
LAB_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
KEY=$LAB/keys/id_ed25519
LAB_SUDO_PASSWORD=Pw-7f3a9c-never-shown  # the lab user sudopw's (its sudo asks for it)
MACHINE_KNOWN=$LAB/known_hosts  # the VMs' (they are the machine's, whatever the pool)
# A pool (LAB_POOL, empty: the default one) is a set of nspawn hosts of its own beside the
# others, names included (each test worker has its own alpha): its hosts, ssh config and
# known hosts are under $LAB/pools/POOL, its network namespaces and cgroups are named
# PREFIXPOOL-NAME. Images, keys, VMs and deployer roots are the lab's, shared by every pool.
# The prefix (LAB_NETNS_PREFIX, default lab) is for a second lab (another DEPLOY_FLAKE_LAB).
use_pool() {  # POOL
  [[ -z $1 || $1 =~ ^[a-z0-9]{1,3}$ ]] || { echo "lab: invalid LAB_POOL '$1' (1-3 letters or digits)" >&2; exit 1; }
  POOL=$1
  POOL_DIR=$LAB${POOL:+/pools/$POOL}
  KNOWN=$POOL_DIR/known_hosts
  NS=${LAB_NETNS_PREFIX:-lab}$POOL
  [[ $NS =~ ^[a-z][a-z0-9]{0,9}$ ]] || { echo "lab: invalid LAB_NETNS_PREFIX '${LAB_NETNS_PREFIX:-}'" >&2; exit 1; }
}
use_pool "${LAB_POOL:-}"

die() { echo "lab: $*" >&2; exit 1; }
say() { echo "lab: $*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it uses debootstrap, network namespaces and systemd-nspawn)"; }

# Host packages the lab needs, installed on demand (fresh Debian 12 machine).
HOST_PKGS=(debootstrap qemu-system-x86 qemu-utils e2fsprogs openssh-client systemd-container
           iproute2 socat nix-bin curl util-linux)
ensure_host_packages() {
  local missing=() p
  for p in "${HOST_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing host packages: ${missing[*]}"
  apt-get update -qq >/dev/null || die "apt-get update failed: check the Debian mirror in /etc/apt/sources.list*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# Nix on the deployer side of the lab: flakes on, no binary cache, no registry download.
ensure_host_nix() {
  mkdir -p /etc/nix
  [ -e /etc/nix/registry-empty.json ] || echo '{"flakes":[],"version":2}' > /etc/nix/registry-empty.json
  grep -q '^# deploy-flake lab' /etc/nix/nix.conf 2>/dev/null && return 0
  cat >> /etc/nix/nix.conf <<'NIXCONF'
# deploy-flake lab: offline machine
experimental-features = nix-command flakes
substituters =
flake-registry = /etc/nix/registry-empty.json
NIXCONF
}

# Writes $KNOWN atomically under a lock: several hosts may start at once.
known_hosts_set() {  # PATTERN LINE
  mkdir -p "${KNOWN%/*}"
  (
    flock 9
    touch "$KNOWN"
    { awk -v p="$1 " 'index($0, p) != 1' "$KNOWN"; echo "$2"; } > "$KNOWN.$$"
    mv "$KNOWN.$$" "$KNOWN"
  ) 9>"$KNOWN.lock"
}

# An ssh config block for a lab machine: strict host keys (known in advance, under
# HostKeyAlias NAME), the lab's client key, no prompts. Extra lines (Port,
# ProxyCommand) are appended as given.
write_ssh_config() {  # FILE NAME [EXTRA_LINE...]
  local f=$1 n=$2 line; shift 2
  {
    printf 'Host %s\n  HostName 127.0.0.1\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n' "$n" "$KEY"
    printf '  BatchMode yes\n  StrictHostKeyChecking yes\n  UserKnownHostsFile %s\n' "$KNOWN"
    printf '  GlobalKnownHostsFile /dev/null\n  HostKeyAlias %s\n  LogLevel ERROR\n' "$n"
    # Plain X25519 key exchange: OpenSSH 9.x's default (sntrup761x25519) costs the client
    # ~150 ms of CPU per connection on this machine, X25519 ~25 ms; the suite makes thousands
    # of fresh logins on two cores. Nothing the lab tests depends on the key exchange.
    printf '  KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org\n'
    for line in "$@"; do printf '  %s\n' "$line"; done
  } > "$f"
}

# The hash of everything a suite's image is made of: rebuild when it changes.
recipe_hash() {  # SUITE
  { echo "suite $1"
    cd "$LAB_SRC" && cat lib/image.sh image/* fixture-flake/flake.nix fixture-flake/lib.nix fixture-flake/scripts/*
  } | sha256sum | cut -c1-16
}
