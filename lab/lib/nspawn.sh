# shellcheck shell=bash
# Lab hosts as systemd-nspawn containers: systemd as PID 1, own network
# namespace with loopback only, reached by ssh through a ProxyCommand that
# enters the namespace. Per host, under $POOL_DIR/hosts/NAME/ ($LAB/hosts/NAME/ in the
# default pool; see use_pool): upper/ (writable
# layer over the shared rootfs of its suite; reset deletes it), suite (the Debian suite
# of its image; bookworm when missing), hostkey, ssh_config, console.log, super.pid and
# nspawn.pid, forward-*.pid.
BOOT_TIMEOUT=${LAB_BOOT_TIMEOUT:-60}
HOST_MEM_MB=${LAB_HOST_MEM_MB:-300}

host_dir() { echo "$POOL_DIR/hosts/$1"; }
valid_name() { [[ $1 =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "invalid host name '$1' (lower-case letters, digits, '-')"; }
host_suite() { cat "$(host_dir "$1")/suite" 2>/dev/null || echo bookworm; }
host_running() { local d; d=$(host_dir "$1"); [ -e "$d/super.pid" ] && kill -0 "$(cat "$d/super.pid")" 2>/dev/null; }
# PID is alive and its command line has PATTERN: a pid file left behind by a host that died
# may name another process by now, even another pool's host of the same name.
pid_is() { kill -0 "$1" 2>/dev/null && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"; }

write_host_ssh_config() {  # NAME
  local n=$1 d; d=$(host_dir "$1")
  write_ssh_config "$d/ssh_config" "$n" "ProxyCommand ip netns exec $NS-$n socat - TCP:127.0.0.1:22"
  # one file for every host of the pool: ssh -F $POOL_DIR/ssh_config
  printf 'Include %s/hosts/*/ssh_config\n' "$POOL_DIR" > "$POOL_DIR/ssh_config"
}

host_ssh() {  # NAME [USER] -- CMD...
  local n=$1; shift; local user=root
  if [ $# -gt 0 ] && [ "$1" != -- ]; then user=$1; shift; fi
  [ "${1:-}" = -- ] && shift
  ssh -F "$(host_dir "$n")/ssh_config" -o ControlMaster=no -o ControlPath=none -o ConnectTimeout=5 -l "$user" "$n" "$@"
}

child_of() {  # PID: the pid of its first child found (nspawn's: the container's init)
  local stat line ppid
  for stat in /proc/[0-9]*/stat; do
    read -r line < "$stat" 2>/dev/null || continue
    line=${line##*) }      # after "(comm)", which may hold spaces: "STATE PPID ..."
    ppid=${line#* }; ppid=${ppid%% *}
    if [ "$ppid" = "$1" ]; then stat=${stat#/proc/}; echo "${stat%/stat}"; return 0; fi
  done
  return 1
}

# A command inside the host, as on its console: no ssh, so it works when sshd is down
# (a test that kills the deploy's units while a lockout has stopped sshd). It enters
# every namespace of the container's init; its cgroup stays the lab's.
host_console() {  # NAME -- CMD...
  local n=$1 d init; d=$(host_dir "$1"); shift
  [ "${1:-}" = -- ] && shift
  [ $# -gt 0 ] || die "usage: lab console NAME -- CMD..."
  if ! host_running "$n" || [ ! -e "$d/nspawn.pid" ]; then die "$n is not running"; fi
  init=$(child_of "$(cat "$d/nspawn.pid")")
  [ -n "$init" ] || die "$n: its init process was not found"
  nsenter -t "$init" -m -u -i -n -p -- env -i PATH=/run/current-system/sw/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

host_wait() {  # NAME
  local n=$1 d deadline t0=$SECONDS; d=$(host_dir "$1"); deadline=$((SECONDS + BOOT_TIMEOUT))
  until host_ssh "$n" -- test ! -e /run/lab-rebooting 2>/dev/null; do
    host_running "$n" || die "$n: the container died; see $d/console.log"
    [ $SECONDS -lt $deadline ] || die "$n: ssh not up after ${BOOT_TIMEOUT}s; see $d/console.log"
    sleep 0.2
  done
  say "$n: ssh up after $((SECONDS - t0)) s"
}

check_capacity() {  # NUMBER_OF_NEW_HOSTS
  local avail_mb running want
  avail_mb=$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)
  running=$( (find "$LAB/hosts" "$LAB/pools" -maxdepth 4 -name super.pid 2>/dev/null || true) | wc -l)
  want=$1
  if [ $((want * HOST_MEM_MB)) -gt "$avail_mb" ] || [ $((running + want)) -gt "${LAB_MAX_HOSTS:-40}" ]; then
    die "cannot start $want more host(s): $running running, ${avail_mb} MiB available, each needs about ${HOST_MEM_MB} MiB (limit ${LAB_MAX_HOSTS:-40} hosts)"
  fi
}

# Every container's systemd (and its user managers) takes inotify instances from root's
# machine-wide allowance (128 by default): 20-odd hosts exhaust it, and user@0.service then
# fails ("Too many open files"), leaving hosts degraded. Raise it for the lab.
INOTIFY_INSTANCES=4096

host_start() {  # NAME [SUITE]: SUITE (default: the host's own, else bookworm) is remembered
  local n=$1 d suite img recipe unified=; valid_name "$n"; d=$(host_dir "$n")
  suite=${2:-$(host_suite "$n")}; valid_suite "$suite"; img=$(image_dir "$suite")
  [ -e "$img/rootfs/.lab-recipe" ] || die "no $suite image in $img; run 'lab/lab build --suite $suite' first"
  suite_unified_cgroup "$suite" && unified=1
  if [ "$(sysctl -n fs.inotify.max_user_instances)" -lt "$INOTIFY_INSTANCES" ]; then
    sysctl -qw fs.inotify.max_user_instances="$INOTIFY_INSTANCES" || die "cannot raise fs.inotify.max_user_instances"
  fi
  host_running "$n" && die "$n is already running"
  # a writable layer belongs to the rootfs under it: another suite's is discarded, and one
  # made over an older image of the suite (its /bin/sh, its generations name store paths
  # the new image does not have)
  recipe=$(cat "$img/rootfs/.lab-recipe")
  if [ -d "$d/upper" ] && [ "$(host_suite "$n")" != "$suite" ]; then
    say "$n: was $(host_suite "$n"), now $suite: discarding its writable layer"
    rm -rf "$d/upper"
  elif [ -d "$d/upper" ] && [ "$(cat "$d/recipe" 2>/dev/null)" != "$recipe" ]; then
    say "$n: its writable layer was made over an older $suite image: discarding it"
    rm -rf "$d/upper"
  fi
  # /boot: a filesystem of its own (boot_fs_make), loop-mounted here and bound into the
  # container; it goes with the writable layer (a fresh layer gets a fresh /boot)
  if mountpoint -q "$d/boot"; then umount "$d/boot" || die "$n: cannot unmount the stale $d/boot"; fi
  if [ ! -d "$d/upper" ] || [ ! -f "$d/boot.img" ]; then boot_fs_make "$d/boot.img" "$suite"; fi
  mkdir -p "$d/upper/etc" "$d/boot"
  mount -o loop "$d/boot.img" "$d/boot" || die "$n: cannot mount its /boot ($d/boot.img)"
  echo "$suite" > "$d/suite"
  echo "$recipe" > "$d/recipe"
  [ -f "$d/hostkey" ] || ssh-keygen -q -t ed25519 -N '' -C "$n" -f "$d/hostkey"
  known_hosts_set "$n" "$n $(cut -d' ' -f1,2 "$d/hostkey.pub")"
  ip netns list | grep -qw "$NS-$n" || ip netns add "$NS-$n" || die "$n: cannot create network namespace $NS-$n"
  ip -n "$NS-$n" link set lo up
  write_host_ssh_config "$n"
  echo "$n" > "$d/upper/etc/hostname"   # else the image's /etc/hostname wins over --hostname
  rm -f "$d/stopping"
  # nspawn exits with 133 when the container reboots (systemd-nspawn@.service restarts it
  # on that status); without a host systemd this loop does. Each host gets its own cgroup:
  # with --keep-unit, containers started from one cgroup would share payload/system.slice.
  # shellcheck disable=SC2016  # expanded by the inner bash
  setsid bash -c '
    for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
      if [ -e "$h/cgroup.procs" ]; then mkdir -p "$h/$3-$2" && echo $$ > "$h/$3-$2/cgroup.procs"; fi
    done
    while :; do
      # $4: 1 for a unified cgroup hierarchy; empty: nspawn detects it (as without the variable)
      SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=$4 systemd-nspawn --boot --quiet -D "$0/rootfs" --overlay="$0/rootfs:$1/upper:/" \
        --register=no --keep-unit --machine="$2" --hostname="$2" \
        --network-namespace-path="/run/netns/$3-$2" \
        --bind-ro="$1/hostkey:/etc/ssh/ssh_host_ed25519_key" --bind="$1/boot:/boot" --console=read-only </dev/null &
      echo $! > "$1/nspawn.pid"; wait $!; rc=$?
      echo "== nspawn exited rc=$rc $(date +%T)"
      [ "$rc" = 133 ] && [ ! -e "$1/stopping" ] || break
    done' "$img" "$d" "$n" "$NS" "$unified" >"$d/console.log" 2>&1 &
  echo $! > "$d/super.pid"
  host_wait "$n"
}

# SIGTERM, wait, SIGKILL; only if the pid still runs a command line that contains
# PATTERN: a stale pid file must never hit a process that reused the number.
kill_pidfile() {  # FILE SECONDS PATTERN
  local f=$1 t=$2 pattern=$3 pid i
  [ -e "$f" ] || return 0
  pid=$(cat "$f")
  if pid_is "$pid" "$pattern"; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$f"
}

host_stop() {  # NAME
  local n=$1 d h f; d=$(host_dir "$n")
  [ -d "$d" ] || return 0
  touch "$d/stopping"
  for f in "$d"/forward-*.pid; do kill_pidfile "$f" 2 "$NS-$n "; done
  # nspawn turns SIGTERM into a clean poweroff; its namespace's path names the pool too
  kill_pidfile "$d/nspawn.pid" 10 "--network-namespace-path=/run/netns/$NS-$n "
  kill_pidfile "$d/super.pid" 5 "$d "
  if mountpoint -q "$d/boot"; then umount "$d/boot" 2>/dev/null || umount -l "$d/boot" || true; fi
  ip netns del "$NS-$n" 2>/dev/null || true
  for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
    if [ -d "$h/$NS-$n" ]; then find "$h/$NS-$n" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
  return 0
}

# A host about to be discarded needs no clean poweroff (2 s and more under load, for every
# test): its init is killed, and with it every process of its PID namespace; nspawn then
# exits and host_stop finds it gone.
host_kill() {  # NAME
  local d init; d=$(host_dir "$1")
  [ -e "$d/nspawn.pid" ] || return 0
  pid_is "$(cat "$d/nspawn.pid")" "--network-namespace-path=/run/netns/$NS-$1 " || return 0
  touch "$d/stopping"
  init=$(child_of "$(cat "$d/nspawn.pid")") && kill -9 "$init" 2>/dev/null
  return 0
}

host_reset() {  # NAME [SUITE]: a clean host, as the image made it (of SUITE, else its own)
  host_kill "$1"; host_stop "$1"; rm -rf "$(host_dir "$1")/upper"; host_start "$1" "${2:-}"
}

host_reboot() {  # NAME: reboot from inside and wait until it is back
  host_ssh "$1" -- 'touch /run/lab-rebooting && systemctl reboot' || true
  sleep 0.5
  host_wait "$1"
}

# Forwards ADDR:PORT on this machine (loopback only) to the host's sshd, e.g. for IPv6 tests.
host_forward() {  # NAME ADDR PORT
  local n=$1 addr=$2 port=$3 d kh; d=$(host_dir "$n")
  case $addr in 127.*|::1|localhost) ;; *) die "forward: only loopback addresses (127.0.0.0/8, ::1)" ;; esac
  host_running "$n" || die "$n is not running"
  local listen=TCP4-LISTEN; [[ $addr == *:* ]] && listen=TCP6-LISTEN
  if (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then die "forward: $addr:$port is already in use"; fi
  setsid socat "$listen:$port,bind=$addr,reuseaddr,fork" "EXEC:ip netns exec $NS-$n socat - TCP\:127.0.0.1\:22" \
    >/dev/null 2>&1 &
  echo $! > "$d/forward-$port.pid"
  sleep 0.2
  kill -0 "$(cat "$d/forward-$port.pid")" 2>/dev/null || die "forward: cannot listen on $addr:$port"
  if [ "$port" = 22 ]; then kh=$addr; else kh="[$addr]:$port"; fi
  known_hosts_set "$kh" "$kh $(cut -d' ' -f1,2 "$d/hostkey.pub")"
  say "$n: ssh on $addr port $port"
}

# Cuts (down) or restores (up) the host's network: its loopback, the only link it has.
host_net() {  # NAME up|down
  ip -n "$NS-$1" link set lo "$2"
}

lab_stop_pool_hosts() {  # of this pool (LAB_POOL) only
  local d
  for d in "$POOL_DIR"/hosts/*/; do [ -d "$d" ] && host_stop "$(basename "$d")"; done
  return 0
}

lab_stop_all_hosts() {  # of every pool
  local p
  for p in "" "$LAB"/pools/*/; do
    [ -z "$p" ] || [ -d "$p" ] || continue
    p=${p%/}
    (
      use_pool "${p##*/}"
      lab_stop_pool_hosts
    )
  done
  return 0
}
