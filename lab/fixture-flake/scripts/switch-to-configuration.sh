# shellcheck shell=bash
# SC2154: out, failBoot, bootDelay and preSwitchFail are set by the builder;
# SC2034: SKIP, FILTER and the lists are written here and read through namerefs.
# shellcheck disable=SC2154,SC2034
#
# Fixture switch-to-configuration: the lab's imitation of NixOS's
# switch-to-configuration-ng (nixpkgs pkgs/by-name/sw/switch-to-configuration-ng),
# written from its contract; lab/README.md lists what is modelled, what is not,
# and the lines of ng's src/main.rs each part comes from.
#
# In short, in ng's order: the verbs check|switch|boot|test|dry-activate (anything
# else: usage, exit 1); root only; refuses a system without /etc/NIXOS (or an
# os-release ID of nixos); one switch at a time under
# /run/nixos/switch-to-configuration.lock ("Could not acquire lock", exit 11: ng
# exits with errno); the pre-switch check (skipped with NIXOS_NO_CHECK=1); the boot
# loader (switch, boot); then, for the units of the old system
# (/run/current-system) against the new one, ng's unit keys X-StopOnRemoval,
# X-ReloadIfChanged, X-RestartIfChanged, X-StopIfChanged, X-NotSocketActivated,
# X-Reload-Triggers, its socket activation and template instances (an active
# sshd@N-….service is judged by sshd@.service), with the start/restart/reload list
# files under /run/nixos that let the next switch finish an interrupted one.
# Exit codes: 1 usage, lock file, pre-switch check or boot loader; 11 lock busy;
# 2 not NixOS (ng: errno of the failed stat) or activation script failed;
# 3 daemon-reload failed (the Perl implementation's; ng ignores it); 4 units failed.
#
# The lab image's systemd generator serves the units of /run/current-system (as
# NixOS's /etc/systemd/system does), so <toplevel>/activate moving that link and
# a daemon-reload switch the unit set. Boot loader: systemd-boot's layout as NixOS's
# systemd-boot-builder.py writes it (install_bootloader below: /boot/loader/loader.conf,
# /boot/loader/entries/nixos-generation-N.conf, kernel and initrd copies in /boot/EFI/nixos);
# the image's generator boots from it at the next boot as systemd-boot would.
#
# Lab additions, not ng's: fault injection (/run/fixture-faults/VERB holding
# "TOPLEVEL COUNT" makes that system's VERB fail COUNT more times;
# /run/fixture-faults/lock-delay holding SECONDS delays the next lock attempt
# once); new units wanted by multi-user.target are started and listed by name
# (ng leaves them to the targets it restarts); multi-user.target stands for the
# active targets (the fixture's configurations carry no target units); the
# "finished switching" line also goes to stderr (ng: syslog only).
set -u
# its own tools, as ng runs its own systemctl and activation (never /usr/bin)
export PATH="$toolsPath${PATH:+:$PATH}"
argv0=${0##*/}
STATE=/run/fixture-nixos
BOOT=/boot  # systemd-boot's ESP (which is also $BOOT: no XBOOTLDR partition), as NixOS mounts it
PROFILE_DIR=/nix/var/nix/profiles
RUN=/run/nixos
START_LIST=$RUN/start-list
RESTART_LIST=$RUN/restart-list
RELOAD_LIST=$RUN/reload-list
ACT_RESTART_LIST=$RUN/activation-restart-list
ACT_RELOAD_LIST=$RUN/activation-reload-list

# The boot loader installer: what NixOS's systemd-boot-builder.py does (lab/README.md,
# "Boot loader"), in its order: remove the entries of generations no longer listed and the
# copies no entry needs, then for each listed generation (the newest $bootEntryLimit of
# /nix/var/nix/profiles/system, the configurationLimit of the system being installed) copy
# its kernel and initrd to $BOOT/EFI/nixos (unless there; through a temporary file, so a full
# /boot leaves no half copy) and write its entry (and one per specialisation), and write
# loader.conf with the entry of the generation whose toplevel is this one as the default.
efi_name() {  # STORE-FILE: its name under EFI/nixos, as copy_from_file() makes it
  local p rest
  p=$(readlink -f "$1") || return 1
  rest=${p#/nix/store/}
  if [ "$rest" = "${rest%%/*}" ]; then echo "$rest.efi"; else echo "${rest%%/*}-${rest##*/}.efi"; fi
}
copy_if_missing() {  # SOURCE DEST
  [ -e "$2" ] && return 0
  if cp "$(readlink -f "$1")" "$2.tmp" && sync -f "$2.tmp" && mv -f "$2.tmp" "$2"; then return 0; fi
  rm -f "$2.tmp"
  return 1
}
write_entry() {  # GENERATION SYSTEM [SPECIALISATION]
  local gen=$1 sys=$2 spec=${3:-} kernel initrd title=NixOS name label params date
  kernel=$(efi_name "$sys/kernel") && initrd=$(efi_name "$sys/initrd") || return 1
  copy_if_missing "$sys/kernel" "$BOOT/EFI/nixos/$kernel" || return 1
  copy_if_missing "$sys/initrd" "$BOOT/EFI/nixos/$initrd" || return 1
  name=nixos-generation-$gen${spec:+-specialisation-$spec}.conf
  [ -n "$spec" ] && title="NixOS ($spec)"
  label=$(sed -n 's/.*"label":"\([^"]*\)".*/\1/p' "$sys/boot.json" 2>/dev/null)
  params=$(cat "$sys/kernel-params" 2>/dev/null)
  date=$(date -d "@$(stat -L -c %Z "$PROFILE_DIR/system-$gen-link")" +%F)
  {
    echo "title $title"
    echo "sort-key nixos"
    echo "version Generation $gen ${label:-NixOS}, built on $date"
    echo "linux /EFI/nixos/$kernel"
    echo "initrd /EFI/nixos/$initrd"
    echo "options init=$sys/init${params:+ $params}"
    [ -s /etc/machine-id ] && echo "machine-id $(cat /etc/machine-id)"
  } > "$BOOT/loader/entries/$name.tmp" && mv -f "$BOOT/loader/entries/$name.tmp" "$BOOT/loader/entries/$name"
}
write_loader_conf() {  # ENTRY-ID
  printf 'timeout 5\ndefault %s\neditor 0\nconsole-mode keep\n' "$1" > "$BOOT/loader/loader.conf.tmp" \
    && mv -f "$BOOT/loader/loader.conf.tmp" "$BOOT/loader/loader.conf"
}
install_bootloader() {
  local gens g sys known f n s
  # nixos-rebuild --install-bootloader: `bootctl install` (here: the boot loader's files, and a
  # line in $BOOT/loader/fixture-installed, the lab's record of installs)
  if [ "${NIXOS_INSTALL_BOOTLOADER:-}" = 1 ]; then
    echo "installing the fixture boot loader..." >&2
    mkdir -p "$BOOT/EFI/systemd" "$BOOT/EFI/BOOT" "$BOOT/loader" || return 1
    echo "lab fixture: stands for systemd-bootx64.efi (not a boot loader)" > "$BOOT/EFI/systemd/systemd-bootx64.efi" || return 1
    cp "$BOOT/EFI/systemd/systemd-bootx64.efi" "$BOOT/EFI/BOOT/BOOTX64.EFI" || return 1
    printf '%s %s\n' "$(date +%s)" "$out" >> "$BOOT/loader/fixture-installed" || return 1
  fi
  mkdir -p "$BOOT/EFI/nixos" "$BOOT/loader/entries" || return 1
  gens=$(for g in "$PROFILE_DIR"/system-*-link; do
    [ -e "$g" ] || continue
    n=${g##*/system-}; echo "${n%-link}"
  done | sort -n)
  if [ -n "${bootEntryLimit:-}" ]; then gens=$(echo "$gens" | tail -n "$bootEntryLimit"); fi
  # remove_old_entries(): entries of other generations, copies no listed generation needs
  known=" "
  for g in $gens; do
    sys=$(readlink -f "$PROFILE_DIR/system-$g-link")
    known="$known$(efi_name "$sys/kernel") $(efi_name "$sys/initrd") "
  done
  for f in "$BOOT"/loader/entries/nixos-generation-*.conf; do
    [ -e "$f" ] || continue
    n=${f##*/nixos-generation-}; n=${n%.conf}; n=${n%%-specialisation-*}
    case " $gens " in *[[:space:]]"$n"[[:space:]]*) ;; *) rm -f "$f" ;; esac
  done
  for f in "$BOOT"/EFI/nixos/*; do
    [ -f "$f" ] || continue
    case $known in *" ${f##*/} "*) ;; *) rm -f "$f" ;; esac
  done
  for g in $gens; do
    sys=$(readlink -f "$PROFILE_DIR/system-$g-link")
    write_entry "$g" "$sys" || return 1
    for s in "$sys"/specialisation/*; do
      [ -e "$s" ] || continue
      write_entry "$g" "$(readlink -f "$s")" "${s##*/}" || return 1
    done
    [ "$sys" = "$out" ] && { write_loader_conf "nixos-generation-$g.conf" || return 1; }
  done
  return 0
}

usage() {
  cat >&2 <<USAGE
Usage: $argv0 [check|switch|boot|test|dry-activate]
check:        run pre-switch checks and exit
switch:       make the configuration the boot default and activate now
boot:         make the configuration the boot default
test:         activate the configuration, but don't make it the boot default
dry-activate: show what would be done if this configuration were activated

USAGE
  exit 1
}

action="${1:-}"
case "$action" in
  check|switch|boot|test|dry-activate) ;;
  *) usage ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "Error: $argv0 must be run as the root user" >&2
  exit 1
fi
export NIXOS_ACTION="$action"

mkdir -p "$STATE"
echo "$(date +%s) $action $out" >> "$STATE/history"

# Lab fault injection: /run/fixture-faults/VERB holding "TOPLEVEL COUNT".
fault=/run/fixture-faults/$action
if [ -f "$fault" ]; then
  read -r fault_system fault_count < "$fault" || true
  if [ "${fault_system:-}" = "$out" ] && [ "${fault_count:-0}" -gt 0 ]; then
    echo "$fault_system $((fault_count - 1))" > "$fault"
    echo "fixture: injected failure of switch-to-configuration $action" >&2
    exit 1
  fi
fi

# Only on NixOS: /etc/NIXOS, or an os-release whose ID is nixos.
if [ ! -r /etc/os-release ]; then
  echo "Error: Failed to parse os-release" >&2
  exit 1
fi
if [ ! -f /etc/NIXOS ] && ! grep -Eq '^ID="?nixos"?$' /etc/os-release; then
  echo "This is not a NixOS installation!" >&2
  exit 2
fi

# One switch at a time. The lock is ours alone: no child inherits fd 9.
mkdir -p "$RUN" && chmod 0755 "$RUN"
if ! exec 9>>"$RUN/switch-to-configuration.lock"; then
  echo "Could not open lock" >&2
  exit 1
fi
if [ -f /run/fixture-faults/lock-delay ]; then
  read -r delay < /run/fixture-faults/lock-delay || delay=0
  rm -f /run/fixture-faults/lock-delay
  sleep "${delay:-0}"
fi
if ! flock -n 9; then
  echo "Could not acquire lock" >&2
  exit 11
fi
syslog() { logger -t nixos -p "user.$1" -- "$2" 9>&- 2>/dev/null || true; }

if [ "${NIXOS_NO_CHECK:-}" != 1 ]; then
  if [ -n "${preSwitchFail:-}" ]; then
    echo "fixture: pre-switch check 'always-fail' failed for $out ($action)" >&2
    echo "Pre-switch checks failed" >&2
    exit 1
  fi
fi
[ "$action" = check ] && exit 0

if [ "$action" = switch ] || [ "$action" = boot ]; then
  # NixOS's systemd-boot installer (systemd-boot-builder.py) prints nothing here; the
  # fixture's own line stays, tests read it
  echo "updating fixture bootloader entries..." >&2
  [ "${bootDelay:-0}" -gt 0 ] && sleep "$bootDelay"
  if [ -n "$failBoot" ]; then
    echo "fixture: cannot write $BOOT/loader/entries: No space left on device" >&2
    echo "Failed to install bootloader" >&2
    exit 1
  fi
  if ! install_bootloader; then
    echo "Failed to install bootloader" >&2
    exit 1
  fi
fi
[ "${NIXOS_NO_SYNC:-}" = 1 ] || sync -f /nix/store 2>/dev/null || true
[ "$action" = boot ] && exit 0

if [ ! -d /run/current-system/sw/bin ]; then
  echo "Error: /run/current-system/sw/bin is missing" >&2
  exit 1
fi

# A new init that the running one cannot switch to (systemd's interface version differs,
# byte for byte; the running system's file missing reads as empty): nothing is changed,
# the new system takes effect only at the next boot into it. dry-activate too.
if [ ! -r "$out/init-interface-version" ]; then
  echo "Error: File init-interface-version should exist" >&2
  exit 1
fi
cur_init=$(cat /run/current-system/init-interface-version 2>/dev/null; echo .)
new_init=$(cat "$out/init-interface-version"; echo .)
if [ "$cur_init" != "$new_init" ]; then
  cat >&2 <<'WARNING'
Warning: the new NixOS configuration has an ‘init’ that is
incompatible with the current configuration.  The new configuration
won't take effect until you reboot the system.

WARNING
  exit 100
fi

# ---- units: old = /run/current-system, new = $out --------------------------
old=$(readlink -f /run/current-system)
olddir=$old/etc/systemd/system
newdir=$out/etc/systemd/system
TAB=$'\t'
declare -A STOP=() START=() RESTART=() RELOAD=() SKIP=() FILTER=() ACTIVE=()

sc() { systemctl "$@" 9>&-; }

# Lists an interrupted switch left behind are read first (dry-activate too).
read_list() {  # FILE ARRAY
  local -n into=$2
  local u
  [ -r "$1" ] || return 0
  while IFS= read -r u; do [ -n "$u" ] && into["$u"]=1; done < "$1"
}
read_list "$START_LIST" START
read_list "$RESTART_LIST" RESTART
read_list "$RELOAD_LIST" RELOAD

# Recorded so that the next switch finishes what this one started (not for dry-activate).
record() { [ "$action" = dry-activate ] || printf '%s\n' "$2" >> "$1"; }
unrecord() {
  [ "$action" = dry-activate ] && return 0
  [ -f "$1" ] || return 0
  grep -vxF -- "$2" "$1" > "$1.tmp"; mv -f "$1.tmp" "$1"
}

# A unit file as "Section<TAB>Key<TAB>values" lines, sorted by section and key:
# [Install] left out, an empty value clears the key's earlier values, a key's
# values keep their order (joined by \x1f).
unit_norm() {  # FILE
  awk '
    /^[ \t]*([#;]|$)/ { next }
    /^[ \t]*\[.*\][ \t]*$/ { s = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", s); next }
    s == "Install" { next }
    {
      i = index($0, "="); if (!i) next
      k = substr($0, 1, i - 1); v = substr($0, i + 1)
      gsub(/^[ \t]+|[ \t]+$/, "", k); gsub(/^[ \t]+|[ \t]+$/, "", v)
      sk = s "\t" k; seen[sk] = 1
      if (v == "") vals[sk] = ""; else vals[sk] = (vals[sk] == "") ? v : vals[sk] "\037" v
    }
    END { for (sk in seen) print sk "\t" vals[sk] }' "$1" 2>/dev/null | LC_ALL=C sort -t "$TAB" -k1,1 -k2,2
}
# [Unit] keys whose change alone does not restart a unit (X-Reload-Triggers: reload).
IGNORED_UNIT_KEYS='X-Reload-Triggers|Description|Documentation|OnFailure|OnSuccess|OnFailureJobMode|IgnoreOnIsolate|StopWhenUnneeded|RefuseManualStart|RefuseManualStop|AllowIsolate|CollectMode|SourcePath'
compare_units() {  # OLD NEW: prints equal, restart or reload
  local o n
  o=$(unit_norm "$1"); n=$(unit_norm "$2")
  if [ "$(grep -Ev "^Unit${TAB}(${IGNORED_UNIT_KEYS})${TAB}" <<< "$o")" != \
       "$(grep -Ev "^Unit${TAB}(${IGNORED_UNIT_KEYS})${TAB}" <<< "$n")" ]; then
    echo restart
  elif [ "$(grep "^Unit${TAB}X-Reload-Triggers${TAB}" <<< "$o")" != "$(grep "^Unit${TAB}X-Reload-Triggers${TAB}" <<< "$n")" ]; then
    echo reload
  else
    echo equal
  fi
}
unit_value() {  # FILE SECTION KEY: the key's last value
  unit_norm "$1" | awk -F '\t' -v s="$2" -v k="$3" '$1 == s && $2 == k { n = split($3, a, "\037"); print a[n] }'
}
unit_bool() {  # FILE SECTION KEY DEFAULT(true|false)
  local v; v=$(unit_value "$1" "$2" "$3")
  if [ -z "$v" ] && ! unit_norm "$1" | grep -q "^$2${TAB}$3${TAB}"; then
    [ "$4" = true ]; return
  fi
  case $v in 1 | yes | true | on) return 0 ;; esac
  return 1
}

# A changed unit (or one the activation script asked to restart): what to do with it.
handle_modified() {  # UNIT [restart-instead-of-stop-start] [ITS UNIT FILE'S NAME: a template's]
  local u=$1 via_restart=${2:-} f=$newdir/${3:-$1} base=${3:-$1} sockets s activated
  base=${base%.*}
  case $u in
    sysinit.target | basic.target | multi-user.target | graphical.target | *.unit | *.slice) return 0 ;;
    *.socket) return 0 ;;  # ng leaves changed sockets alone
    -.mount | nix.mount) RELOAD[$u]=1; record "$RELOAD_LIST" "$u"; return 0 ;;
    *.mount) RESTART[$u]=1; record "$RESTART_LIST" "$u"; return 0 ;;
  esac
  local stopping=${STOP[$u]:-}
  [ -n "$via_restart" ] && stopping=${RESTART[$u]:-}
  if unit_bool "$f" Service X-ReloadIfChanged false && [ -z "${RESTART[$u]:-}" ] && [ -z "$stopping" ]; then
    RELOAD[$u]=1; record "$RELOAD_LIST" "$u"
  elif ! unit_bool "$f" Service X-RestartIfChanged true || unit_bool "$f" Unit RefuseManualStop false \
       || unit_bool "$f" Unit X-OnlyManualStart false; then
    SKIP[$u]=1
  elif ! unit_bool "$f" Service X-StopIfChanged true || [[ $u != *.service ]]; then
    RESTART[$u]=1; record "$RESTART_LIST" "$u"
    if [ -n "${RELOAD[$u]:-}" ]; then unset 'RELOAD[$u]'; unrecord "$RELOAD_LIST" "$u"; fi
  else
    # socket-activated: its sockets are stopped and started again, the service only stopped
    activated=""
    sockets=$(unit_value "$f" Service Sockets | tr '\037' ' ')
    [ -n "$sockets" ] || sockets="$base.socket"
    for s in $sockets; do
      [ -n "${ACTIVE[$s]:-}" ] || continue
      if [ -n "$via_restart" ]; then RESTART[$s]=1; else STOP[$s]=1; fi
      if [ -e "$newdir/$s" ]; then
        if [ -n "$via_restart" ]; then RESTART[$s]=1; record "$RESTART_LIST" "$s"
        else START[$s]=1; record "$START_LIST" "$s"; fi
        activated=1
      fi
    done
    unit_bool "$f" Service X-NotSocketActivated false && activated=""
    if [ -z "$activated" ]; then
      if [ -n "$via_restart" ]; then RESTART[$u]=1; record "$RESTART_LIST" "$u"
      else START[$u]=1; record "$START_LIST" "$u"; fi
    fi
    if [ -n "$via_restart" ]; then RESTART[$u]=1; else STOP[$u]=1; fi
    if [ -n "${RELOAD[$u]:-}" ]; then unset 'RELOAD[$u]'; unrecord "$RELOAD_LIST" "$u"; fi
  fi
}

# Every unit systemd has that is not inactive: "UNIT LOAD ACTIVE SUB ...".
while read -r u _ a _; do
  [ "$a" = inactive ] && continue
  ACTIVE[$u]=$a
done < <(sc list-units --all --plain --no-legend --full 2>/dev/null)
declare -A ACTIVE_BEFORE=()
for u in "${!ACTIVE[@]}"; do ACTIVE_BEFORE[$u]=1; done

# A template's instance (NAME@INSTANCE.TYPE, e.g. sshd.socket's Accept=yes connections
# sshd@0-127.0.0.1:22-127.0.0.1:40000.service) without a unit file of its own is judged
# by its template's file, NAME@.TYPE, in both systems.
base_unit() {  # UNIT: sets b to the unit whose files stand for it (no subshell: once per unit)
  b=$1
  if [[ $b == *@*.* ]] && [ ! -e "$olddir/$b" ] && [ ! -e "$newdir/$b" ]; then
    b=${b%%@*}@.${b##*.}
  fi
}

for u in "${!ACTIVE[@]}"; do
  case ${ACTIVE[$u]} in active | activating) ;; *) continue ;; esac
  base_unit "$u"
  [ -e "$olddir/$b" ] || continue
  if [ ! -e "$newdir/$b" ] || [ "$(readlink -f "$newdir/$b")" = /dev/null ]; then
    unit_bool "$olddir/$b" Unit X-StopOnRemoval true && STOP[$u]=1
  elif [[ $u == *.target ]]; then
    if ! unit_bool "$newdir/$b" Unit RefuseManualStart false && ! unit_bool "$newdir/$b" Unit X-OnlyManualStart false; then
      START[$u]=1; record "$START_LIST" "$u"; FILTER[$u]=1
    fi
    unit_bool "$newdir/$b" Unit X-StopOnReconfiguration false && STOP[$u]=1
  else
    case $(compare_units "$olddir/$b" "$newdir/$b") in
      restart) handle_modified "$u" "" "$b" ;;
      reload) if [ -z "${RESTART[$u]:-}" ]; then RELOAD[$u]=1; record "$RELOAD_LIST" "$u"; fi ;;
    esac
  fi
done
# The fixture's configurations carry no target units, only their .wants: ng starts
# every active target again (not shown), the fixture the active targets the new
# system adds units to, and multi-user.target always.
for d in "$newdir"/*.target.wants multi-user.target.wants; do
  t=${d##*/}; t=${t%.wants}
  [ -n "${FILTER[$t]:-}" ] && continue
  [ "$t" = multi-user.target ] || [ "${ACTIVE[$t]:-}" = active ] || continue
  START[$t]=1; FILTER[$t]=1; record "$START_LIST" "$t"
done
# Lab addition: new units wanted by multi-user.target are started by name.
for f in "$newdir"/*; do
  [ -f "$f" ] || continue
  u=${f##*/}
  [ -e "$olddir/$u" ] && continue
  [ -e "$newdir/multi-user.target.wants/$u" ] && [ -z "${ACTIVE[$u]:-}" ] && START[$u]=1
done

names() {  # ARRAY [ARRAY OF NAMES TO LEAVE OUT]: the names, sorted, comma-separated
  local -n from=$1
  local leave_out=${2:-} u
  [ -n "$leave_out" ] && local -n hidden=$leave_out
  for u in "${!from[@]}"; do
    [ -n "$leave_out" ] && [ -n "${hidden[$u]:-}" ] && continue
    printf '%s\n' "$u"
  done | LC_ALL=C sort -f | paste -sd, - | sed 's/,/, /g'
}
say_units() {  # MESSAGE ARRAY [FILTER]
  local l; l=$(names "$2" "${3:-}")
  [ -n "$l" ] && echo "$1: $l" >&2
  return 0
}

if [ "$action" = dry-activate ]; then
  say_units "would stop the following units" STOP FILTER
  say_units "would NOT stop the following changed units" SKIP
  echo "would activate the configuration..." >&2
  [ -x "$out/dry-activate" ] && "$out/dry-activate" "$out" 9>&-
  say_units "would reload the following units" RELOAD
  say_units "would restart the following units" RESTART
  say_units "would start the following units" START FILTER
  exit 0
fi

syslog info "switching to system configuration $out"
failed_jobs=""
# VERB UNIT...: the jobs submitted together and waited for, as ng does (one by one, a
# service stopped before its socket would be started again by a waiting connection).
run_jobs() {
  local verb=$1 u
  shift
  [ $# -gt 0 ] || return 0
  sc "$verb" -- "$@" >/dev/null 2>&1 && return 0
  failed_jobs=1
  for u in "$@"; do
    case $verb:$(sc is-active -- "$u" 2>/dev/null) in
      stop:inactive | stop:failed | start:active | restart:active | reload:active | *:activating) ;;
      *) echo "Failed to $verb $u" >&2 ;;
    esac
  done
  return 0
}

if [ "${#STOP[@]}" -gt 0 ]; then
  say_units "stopping the following units" STOP FILTER
  run_jobs stop "${!STOP[@]}"
fi
say_units "NOT restarting the following changed units" SKIP

res=0
echo "activating the configuration..." >&2
if [ -e "$out/activate" ]; then
  "$out/activate" "$out" 9>&- || { echo "Failed to run activate script" >&2; res=2; }
fi

# Restarts and reloads the activation script asked for.
if [ -r "$ACT_RESTART_LIST" ]; then
  while IFS= read -r u; do
    [ -n "$u" ] || continue
    if [ -z "${ACTIVE_BEFORE[$u]:-}" ]; then START[$u]=1; record "$START_LIST" "$u"; continue; fi
    base_unit "$u"
    handle_modified "$u" restart "$b"
  done < "$ACT_RESTART_LIST"
fi
rm -f "$ACT_RESTART_LIST"
if [ -r "$ACT_RELOAD_LIST" ]; then
  while IFS= read -r u; do
    if [ -n "$u" ] && [ -n "${ACTIVE_BEFORE[$u]:-}" ] && [ -z "${RESTART[$u]:-}" ] && [ -z "${STOP[$u]:-}" ]; then
      RELOAD[$u]=1; record "$RELOAD_LIST" "$u"
    fi
  done < "$ACT_RELOAD_LIST"
fi
rm -f "$ACT_RELOAD_LIST"

sc reset-failed >/dev/null 2>&1 || true
sc daemon-reload || res=3

# A unit to reload that is no longer active is started instead.
for u in "${!RELOAD[@]}"; do
  case $(sc is-active -- "$u" 2>/dev/null) in active | activating) continue ;; esac
  if ! unit_bool "$newdir/$u" Unit RefuseManualStart false || unit_bool "$newdir/$u" Unit X-OnlyManualStart false; then
    START[$u]=1; record "$START_LIST" "$u"
  fi
  unset 'RELOAD[$u]'; unrecord "$RELOAD_LIST" "$u"
done
if [ "${#RELOAD[@]}" -gt 0 ]; then
  say_units "reloading the following units" RELOAD
  run_jobs reload "${!RELOAD[@]}"
  rm -f "$RELOAD_LIST"
fi
if [ "${#RESTART[@]}" -gt 0 ]; then
  say_units "restarting the following units" RESTART
  run_jobs restart "${!RESTART[@]}"
  rm -f "$RESTART_LIST"
fi
say_units "starting the following units" START FILTER
# units first, then the targets (which bring back wanted units that were stopped)
units=() targets=()
for u in "${!START[@]}"; do if [[ $u == *.target ]]; then targets+=("$u"); else units+=("$u"); fi; done
run_jobs start "${units[@]}"
run_jobs start "${targets[@]}"
rm -f "$START_LIST"
[ -n "$failed_jobs" ] && res=4

# What failed, and what is new.
sleep 0.25
failed=() new=()
while read -r u _ a sub _; do
  [ "$a" = inactive ] && continue
  if [ "$a" = failed ]; then failed+=("$u"); continue; fi
  if [ "$sub" = auto-restart ] && [[ $u == *.service ]] \
     && [ "$(sc show -p ExecMainStatus --value -- "$u" 2>/dev/null)" != 0 ]; then
    failed+=("$u"); continue
  fi
  [ -z "${ACTIVE_BEFORE[$u]:-}" ] && [[ $u != *.scope ]] && new+=("$u")
done < <(sc list-units --all --plain --no-legend --full 2>/dev/null)
join_sorted() { printf '%s\n' "$@" | LC_ALL=C sort -f | paste -sd, - | sed 's/,/, /g'; }
if [ "${#new[@]}" -gt 0 ]; then
  echo "the following new units were started: $(join_sorted "${new[@]}")" >&2
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "warning: the following units failed: $(join_sorted "${failed[@]}")" >&2
  sc status --no-pager --full -- "${failed[@]}" >&2 2>/dev/null
  res=4
fi

if [ "$res" -eq 0 ]; then
  syslog info "finished switching to system configuration $out"
  echo "finished switching to system configuration $out" >&2
else
  syslog err "switching to system configuration $out failed (status $res)"
fi
exit "$res"
