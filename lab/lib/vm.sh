# shellcheck shell=bash
# The lab VM: the same image booted by QEMU (KVM when it really works, else TCG),
# for the tests that need a real kernel and a real reboot.
#
#   lab vm start    [--suite S] NAME PORT [MEM_MB] [CPUS]  create the overlay if missing, boot,
#                   wait for ssh; S: the Debian suite of its image (default: the VM's own, else bookworm)
#   lab vm start-bg [--suite S] NAME PORT [MEM_MB] [CPUS]  boot without waiting (then: lab vm wait NAME)
#   lab vm wait     NAME                       wait until ssh answers (LAB_VM_BOOT_TIMEOUT, 300 s)
#   lab vm stop     NAME                       sync, quit QEMU; the overlay (the VM's state) stays
#   lab vm reset    [--suite S] NAME PORT [MEM_MB] [CPUS]  stop, discard the overlay, start clean
#   lab vm reboot   NAME                       reboot from inside; back when ssh answers with a new boot_id
#   lab vm ssh      NAME [USER] -- CMD...      run a command (fresh connection, no ControlMaster)
#
# Per VM, under $LAB/vms/NAME/: suite, disk.qcow2 (overlay on the read-only base.raw of
# that suite's image: $LAB/base.raw for bookworm, $LAB/images/SUITE/base.raw else),
# hostkey(.pub) (given to the guest through fw_cfg; lab-hostkey.service installs it),
# port, qemu.pid, monitor.sock, console.log (serial console), qemu.err, ssh_config.
# Network: QEMU user mode with restrict=on (the guest reaches nothing) and one
# forward 127.0.0.1:PORT -> guest:22. ssh -F $LAB/vm_ssh_config NAME reaches every VM.
# Environment: LAB_ACCEL=auto|kvm|tcg, LAB_TB_MB (TCG cache, 256), LAB_VM_BOOT_TIMEOUT (300),
# LAB_VM_APPEND (extra kernel command line).
# A guest kernel that oopses or panics reboots after 5 s (panic=5 oops=panic) instead of
# hanging: under multi-threaded TCG a sid kernel once died at boot in its own text patching
# (`Oops: int3` in enqueue_timer; cross-vCPU code modification) and stayed dead until the
# 600 s reboot timeout of the test that rebooted it. One vCPU thread (tcg,thread=single)
# avoids the race but boots sid in 59 s against 42 s, every boot; the rare retry is cheaper.
VM_BOOT_TIMEOUT=${LAB_VM_BOOT_TIMEOUT:-480}

vm_dir() { echo "$LAB/vms/$1"; }
vm_suite() { cat "$(vm_dir "$1")/suite" 2>/dev/null || echo bookworm; }
VM_SUITE=  # lab vm start|start-bg|reset --suite S
vm_now() { date +%s.%N; }
vm_since() { awk -v t0="$1" -v t1="$(vm_now)" 'BEGIN { printf "%.1f", t1 - t0 }'; }

# The pid of NAME's QEMU, if it runs (checked against its command line: pids get reused).
vm_pid() {  # NAME
  local d pid; d=$(vm_dir "$1")
  [ -s "$d/qemu.pid" ] || return 1
  pid=$(tr -dc 0-9 < "$d/qemu.pid")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "file=$d/disk.qcow2," || return 1
  echo "$pid"
}
vm_running() { vm_pid "$1" >/dev/null; }

vm_need() {  # NAME: a VM that was set up by start
  valid_name "$1"
  [ -f "$(vm_dir "$1")/ssh_config" ] || die "no VM '$1'; start it with 'lab/lab vm start $1 PORT'"
}

vm_write_ssh_config() {  # NAME PORT
  local n=$1 d; d=$(vm_dir "$1")
  write_ssh_config "$d/ssh_config" "$n" "Port $2"
  # one file for every VM: ssh -F $LAB/vm_ssh_config NAME
  printf 'Include %s/vms/*/ssh_config\n' "$LAB" > "$LAB/vm_ssh_config"
}

# ssh with a fresh connection (no ControlMaster: each call is a new login).
vm_ssh_cmd() {  # NAME USER CMD...
  local n=$1 user=$2; shift 2
  ssh -F "$(vm_dir "$n")/ssh_config" -o ControlMaster=no -o ControlPath=none -o ConnectTimeout=10 \
    -l "$user" "$n" "$@"
}

vm_ssh() {  # NAME [USER] -- CMD...
  local n=$1; shift; local user=root
  if [ $# -gt 0 ] && [ "$1" != -- ]; then user=$1; shift; fi
  [ "${1:-}" = -- ] && shift
  vm_need "$n"
  vm_ssh_cmd "$n" "$user" "$@"
}

# Prints the guest's boot_id; fails while ssh does not answer (bounded: TCG guests are slow).
vm_boot_id() {  # NAME
  local d; d=$(vm_dir "$1")
  timeout 30 ssh -F "$d/ssh_config" -o ControlMaster=no -o ControlPath=none -o ConnectTimeout=10 \
    "$1" cat /proc/sys/kernel/random/boot_id 2>/dev/null </dev/null
}

vm_wait() {  # NAME [OLD_BOOT_ID]: until ssh answers (with a boot_id other than OLD_BOOT_ID)
  local n=$1 old=${2:-} d t0 deadline id; d=$(vm_dir "$1")
  t0=$(vm_now); deadline=$((SECONDS + VM_BOOT_TIMEOUT))
  while :; do
    id=$(vm_boot_id "$n") || id=
    [ -n "$id" ] && [ "$id" != "$old" ] && break
    vm_running "$n" || die "$n: qemu is not running (died?); see $d/console.log${old:+ (was rebooting)}"
    [ $SECONDS -lt $deadline ] || die "$n: ssh not up after ${VM_BOOT_TIMEOUT}s; see $d/console.log"
    sleep 1
  done
  say "$n: ssh up on 127.0.0.1:$(cat "$d/port") after $(vm_since "$t0") s"
}

vm_accel() {  # prints kvm or tcg
  local a=${LAB_ACCEL:-auto}
  # /dev/kvm alone proves nothing: on this lab's machine it exists without vmx/svm and
  # makes no progress. So KVM only when asked for, or when the CPU shows vmx/svm.
  if [ "$a" = auto ]; then
    if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then a=kvm; else a=tcg; fi
  fi
  case $a in
    kvm|tcg) echo "$a" ;;
    *) die "LAB_ACCEL must be auto, kvm or tcg (not '$a')" ;;
  esac
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

vm_launch() {  # NAME PORT [MEM_MB] [CPUS]: boot, do not wait (suite: VM_SUITE, else the VM's own)
  local n=$1 port=${2:-} mem=${3:-1024} cpus=${4:-2} d recipe avail acc accel=() rc=0 err suite img
  valid_name "$n"; d=$(vm_dir "$n")
  suite=${VM_SUITE:-$(vm_suite "$n")}; valid_suite "$suite"; img=$(image_dir "$suite")
  [[ $port =~ ^[0-9]{1,5}$ && $port -ge 1 && $port -le 65535 ]] \
    || die "usage: lab vm start NAME PORT [MEM_MB] [CPUS] (PORT: 1-65535, not '$port')"
  [[ $mem =~ ^[0-9]{1,7}$ && $mem -ge 256 ]] || die "$n: MEM_MB must be a number >= 256 (not '$mem')"
  [[ $cpus =~ ^[0-9]{1,3}$ && $cpus -ge 1 ]] || die "$n: CPUS must be a number >= 1 (not '$cpus')"
  local f; for f in base.raw vmlinuz initrd.img rootfs/.lab-recipe; do
    [ -s "$img/$f" ] || die "no $suite image in $img ($f missing); run 'lab/lab build --suite $suite' first"
  done
  [ -f "$KEY" ] || die "no client key $KEY; run 'lab/lab build' first"
  [[ $d != *,* ]] || die "the lab directory must not contain ',' (QEMU options): $LAB"
  [ ${#d} -le 90 ] || die "the lab directory is too long for a unix socket path: $LAB"
  acc=$(vm_accel)
  # TCG: cap the translation cache (QEMU's default is 1 GiB per guest)
  if [ "$acc" = kvm ]; then accel=(-machine q35 -accel kvm -cpu host)
  else accel=(-machine q35 -accel "tcg,tb-size=${LAB_TB_MB:-256}" -cpu max); fi

  mkdir -p "$d"
  exec 8>"$d/lock"   # two starts of one VM at once: the second waits, then finds it running
  flock -w 60 8 || die "$n: another lab command holds $d/lock"
  vm_running "$n" && die "$n is already running (port $(cat "$d/port" 2>/dev/null))"
  port_in_use "$port" && die "$n: port $port on 127.0.0.1 is already in use"
  avail=$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)
  # a TCG guest of 1024 MiB takes about 620 MiB (QEMU + the 256 MiB translation cache)
  [ "$avail" -ge $((mem / 2 + 100)) ] || die "$n: only ${avail} MiB available, the VM needs about $((mem / 2 + 100)) MiB"

  # the overlay belongs to one image: a rebuilt base.raw (or another suite's) makes it garbage
  recipe=$(cat "$img/rootfs/.lab-recipe")
  if [ -f "$d/disk.qcow2" ] && [ "$(cat "$d/recipe" 2>/dev/null)" != "$recipe" ]; then
    say "$n: the image changed ($(vm_suite "$n") -> $suite); discarding the old disk"
    rm -f "$d/disk.qcow2"
  fi
  echo "$suite" > "$d/suite"
  # /boot: a disk of its own (vdb, ext2 of LAB_BOOT_MB), made with the VM's disk and kept with it;
  # the image's generator mounts it (lab.boot= below) before it picks the boot entry
  if [ ! -f "$d/disk.qcow2" ] || [ ! -f "$d/boot.img" ]; then boot_fs_make "$d/boot.img" "$suite"; fi
  if [ ! -f "$d/disk.qcow2" ]; then
    qemu-img create -q -f qcow2 -F raw -b "$img/base.raw" "$d/disk.qcow2" \
      || die "$n: cannot create $d/disk.qcow2"
    echo "$recipe" > "$d/recipe"
  fi
  [ -f "$d/hostkey" ] || ssh-keygen -q -t ed25519 -N '' -C "$n" -f "$d/hostkey"
  known_hosts_set "$n" "$n $(cut -d' ' -f1,2 "$d/hostkey.pub")"
  echo "$port" > "$d/port"
  vm_write_ssh_config "$n" "$port"
  rm -f "$d/qemu.pid" "$d/monitor.sock"
  : > "$d/console.log"

  # the generator reads the /boot disk first (on newer systemd, sandboxed, in its own mount
  # namespace; there it also makes a boot.mount unit for the system: lab/README.md, Boot loader)
  local boot_arg="lab.boot=/dev/vdb"
  # -daemonize: QEMU returns once the machine is set up (or failed), in its own session.
  qemu-system-x86_64 "${accel[@]}" -smp "$cpus" -m "$mem" \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0,115200 panic=5 oops=panic systemd.hostname=$n $boot_arg ${LAB_VM_APPEND:-}" \
    -drive "file=$d/disk.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap" \
    -drive "file=$d/boot.img,if=virtio,format=raw,cache=writeback" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0 \
    -device virtio-rng-pci \
    -fw_cfg "name=opt/lab/ssh_host_ed25519_key,file=$d/hostkey" \
    -display none -serial "file:$d/console.log" -monitor "unix:$d/monitor.sock,server,nowait" \
    -pidfile "$d/qemu.pid" -daemonize </dev/null >/dev/null 2>"$d/qemu.err" 8>&- || rc=$?
  exec 8>&-
  if [ $rc != 0 ] || ! vm_running "$n"; then
    vm_kill "$n"
    if grep -q 'host forwarding' "$d/qemu.err"; then die "$n: port $port on 127.0.0.1 is already in use"; fi
    err=$(grep -v '^\s*$' "$d/qemu.err" | tail -n 1)
    die "$n: qemu did not start (rc $rc): ${err:-no message; see $d/console.log}"
  fi
  say "$n: booting $suite ($acc, ${mem} MiB, $cpus CPUs, ssh on 127.0.0.1:$port)"
}

vm_start() {  # NAME PORT [MEM_MB] [CPUS]: boot and wait for ssh; a VM that does not come up is stopped
  vm_launch "$@"
  if ! (vm_wait "$1"); then
    vm_kill "$1"
    die "$1: did not come up; stopped it (console: $(vm_dir "$1")/console.log)"
  fi
}

# QEMU's `quit`, then SIGTERM, then SIGKILL, always by NAME's own pid.
vm_kill() {  # NAME
  local d pid i; d=$(vm_dir "$1")
  if pid=$(vm_pid "$1"); then
    echo quit | socat - "UNIX-CONNECT:$d/monitor.sock" >/dev/null 2>&1 || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
  fi
  rm -f "$d/qemu.pid" "$d/monitor.sock"
  return 0
}

vm_stop() {  # NAME: the guest's writes reach the overlay first (best effort, 10 s)
  local n=$1 d; valid_name "$n"; d=$(vm_dir "$n")
  [ -d "$d" ] || return 0
  if vm_running "$n"; then
    timeout 10 ssh -F "$d/ssh_config" -o ControlMaster=no -o ControlPath=none -o ConnectTimeout=5 \
      "$n" sync </dev/null >/dev/null 2>&1 || true
  fi
  vm_kill "$n"
}

vm_reset() {  # NAME PORT [MEM_MB] [CPUS]: a clean VM, as the image made it (same host key)
  valid_name "$1"
  vm_kill "$1"
  rm -f "$(vm_dir "$1")/disk.qcow2" "$(vm_dir "$1")/recipe" "$(vm_dir "$1")/boot.img"
  vm_start "$@"
}

vm_reboot() {  # NAME: reboot from inside; back when ssh answers with a new boot_id
  local n=$1 old; vm_need "$n"
  vm_running "$n" || die "$n is not running"
  old=$(vm_boot_id "$n") || old=
  [ -n "$old" ] || die "$n: no answer over ssh; cannot reboot it"
  timeout 30 ssh -F "$(vm_dir "$n")/ssh_config" -o ControlMaster=no -o ControlPath=none \
    "$n" systemctl reboot </dev/null >/dev/null 2>&1 || true
  vm_wait "$n" "$old"
}

vm_stop_all() {
  local d
  for d in "$LAB"/vms/*/; do [ -d "$d" ] && vm_stop "$(basename "$d")"; done
  return 0
}

vm_main() {
  local cmd=${1:-}; shift || true
  # shellcheck disable=SC2034  # read by known_hosts_set and write_ssh_config
  KNOWN=$MACHINE_KNOWN  # a VM is the machine's, whatever LAB_POOL says
  case "$cmd:${1:-}" in
    start:--suite|start-bg:--suite|reset:--suite)
      [ $# -ge 2 ] || die "usage: lab vm $cmd --suite SUITE NAME PORT"; VM_SUITE=$2; shift 2 ;;
    start:--suite=*|start-bg:--suite=*|reset:--suite=*) VM_SUITE=${1#--suite=}; shift ;;
  esac
  [ -z "$VM_SUITE" ] || valid_suite "$VM_SUITE"
  case "$cmd" in
    start) (( $# >= 2 && $# <= 4 )) || die "usage: lab vm start NAME PORT [MEM_MB] [CPUS]"; vm_start "$@" ;;
    start-bg) (( $# >= 2 && $# <= 4 )) || die "usage: lab vm start-bg NAME PORT [MEM_MB] [CPUS]"; vm_launch "$@" ;;
    wait) [ $# = 1 ] || die "usage: lab vm wait NAME"; vm_need "$1"; vm_wait "$1" ;;
    stop) [ $# -ge 1 ] || die "usage: lab vm stop NAME..."; local n; for n in "$@"; do vm_stop "$n"; done ;;
    reset) (( $# >= 2 && $# <= 4 )) || die "usage: lab vm reset NAME PORT [MEM_MB] [CPUS]"; vm_reset "$@" ;;
    reboot) [ $# = 1 ] || die "usage: lab vm reboot NAME"; vm_reboot "$1" ;;
    ssh) [ $# -ge 1 ] || die "usage: lab vm ssh NAME [USER] -- CMD..."; vm_ssh "$@" ;;
    *) die "usage: lab vm start|start-bg|wait|stop|reset|reboot|ssh NAME ... (see lab/lib/vm.sh)" ;;
  esac
}
