#!/bin/sh
# deploy-flake-agent: the target side of a deploy. Runs on the host as root and
# needs only POSIX sh, coreutils, util-linux (flock), systemd and nix.
# Its deployer-side counterpart, with the same protocol, is deploy_flake/agent/.
#
# The activation transaction runs inside a transient systemd unit, so nothing
# that happens to the deployer or its SSH connection can interrupt it, and
# every decision that protects the host is taken here:
#   1. take the host's deploy lock; finish any earlier transaction that was
#      killed before it ended; refuse while another switch is running
#   2. switch-to-configuration test (bounded by the activation timeout)
#   3. the system must become healthy and stay so for SETTLE_S: no unit newly
#      failed, none crash-looping (auto-restart, or its restart count rising)
#   4. wait for the deployer's confirmation, which arrives over a brand-new
#      SSH connection (proof that logins still work)
#   5. only then, if the profile is still the one the deploy found: a new
#      system profile generation and switch-to-configuration boot
# Any failure, timeout, abort request or missing confirmation before step 5
# re-activates the previous system (retried once): the boot entry is never
# touched before the new system was confirmed. If the unit itself is killed,
# its ExecStopPost (`recover`) does the same; and because a kill of the whole
# unit can take its ExecStopPost along (systemd 262 does), a guard outside the
# unit does it too: the transient timer deploy-flake-ID-guard.timer, armed before
# the unit starts and fired at the transaction's deadline, and its service,
# started at once by the unit's OnFailure= when the unit dies. The guard runs in
# a cgroup of its own and only acts on a transaction that nothing carries on.
# Tools always come from the system that ran before the deploy, never from
# the one being tried.
#
# Usage (as root; ID is the deploy's id):
#   agent start ID [MAX_S [STOP]] < SETTINGS
#                              record the settings (KEY=VALUE lines: NEW MODE ACTIVATION_S
#                              HEALTH_S SETTLE_S CONFIRM_S BOOT_S HOLDER GC_ROOT, and
#                              optionally FLAKE, what is recorded as the deploy's source, and
#                              GENERATION, an existing profile generation of NEW to switch
#                              the profile to instead of adding one: a rollback) and run
#                              `agent run ID` in the transient unit deploy-flake-ID; with
#                              MAX_S, then `watch ID 0 MAX_S STOP` (one round trip less)
#   agent run ID               the transaction (the unit's main process)
#   agent recover ID           the unit's ExecStopPost: finish a transaction that was killed
#   agent guard ID             the guard's service: once the unit is gone, `recover`
#   agent rescue ID OFFSET MAX_S  start the guard now (the deployer saw nothing carry the
#                              transaction on), then `watch ID OFFSET MAX_S`
#   agent finish ID            the same, by a newer transaction that holds the deploy lock
#   agent watch ID OFFSET MAX_S [STOP]  the log from byte OFFSET on, then the status, once
#                              the transaction needs the deployer, ended, reached phase STOP
#                              (or MAX_S passed)
#   agent confirm ID [OFFSET MAX_S]  confirm; print the status once the transaction took it
#                              (with OFFSET: `watch ID OFFSET MAX_S` from then on). Sent early,
#                              while the new system is being checked after its activation,
#                              it waits for the transaction to ask for it.
#   agent abort ID             roll back now, or never start (the deployer was interrupted)
#   agent status ID            print the status
# Every verb but run, recover and guard ends with one status line:
#   @@deploy-flake-state<TAB>PHASE<TAB>PREVIOUS<TAB>NEW<TAB>KEEPER<TAB>REASON
# PHASE: none pending starting activating checking awaiting-confirmation committing
# rolling-back (in progress) or activated rolled-back failed rollback-failed
# restore-failed (final). KEEPER: what carries the transaction on: unit (its own
# unit, its ExecStopPost included), guard (the guard's service), none (nothing:
# both were killed; a transaction in progress then needs `rescue`).
set -u
export LC_ALL=C
PATH="${PATH:-/usr/bin:/bin}:/run/current-system/sw/bin:/usr/bin:/bin"

BASE=/run/deploy-flake
PROFILE=/nix/var/nix/profiles/system
LAST_DEPLOY=/var/lib/deploy-flake/last-deploy  # target.py LAST_DEPLOY_FILE
SWITCH_LOCK=/run/nixos/switch-to-configuration.lock
OTHER_SWITCHES="nixos-upgrade.service nixos-rebuild-switch-to-configuration.service"
KEEP_RUNS=20
LOCK_WAIT_S=30   # agent/settings.py LOCK_WAIT_S
PROFILE_SET_S=120  # agent/settings.py PROFILE_SET_S
KILL_GRACE_S=10
GUARD_MARGIN_S=30  # agent/settings.py GUARD_MARGIN_S
CONFIRM_HOLD_MARGIN_S=10  # agent/settings.py CONFIRM_HOLD_MARGIN_S: an early confirm's wait, beyond the checks
CONFIRM_TAKEN_S=10  # agent/settings.py CONFIRM_TAKEN_S: how long confirm waits for the transaction to take it

die() { echo "deploy-flake-agent: $*" >&2; exit 2; }

cmd=${1:-}
[ $# -ge 2 ] || die "usage: agent start|run|recover|guard|rescue|watch|confirm|abort|status ID ..."
ID=$2
case $ID in '' | .* | *[!A-Za-z0-9_.-]*) die "bad deploy id '$ID'" ;; esac
DIR=$BASE/$ID
AGENT=$0
case $AGENT in /*) ;; *) die "run the agent by its absolute path" ;; esac

# Every tool from SYSTEM (the one that ran before the deploy), then NixOS's
# wrappers and the base directories; never from a system being activated.
use_tools_of() {
  PATH="${1:+$1/sw/bin:}/run/wrappers/bin:/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  export PATH
}
PREV=""
if [ -r "$DIR/previous" ]; then read -r PREV < "$DIR/previous" || :; fi
use_tools_of "${PREV:-$(readlink -f /run/current-system 2>/dev/null)}"

# ---------------------------------------------------------------- state
# Sets STATE without starting a process (read is a builtin): the waits below call it every
# few centiseconds, on every host of a fleet at once.
read_state() {  # [DIR]: another transaction's
  rs_dir=${1:-$DIR}
  if [ -r "$rs_dir/state" ]; then read -r STATE < "$rs_dir/state" || STATE=""
  elif [ -d "$rs_dir" ]; then STATE=pending
  else STATE=none
  fi
}
state_of() { read_state; echo "$STATE"; }
state_is_not() { read_state; [ "$STATE" != "$1" ]; }  # PHASE (a poll's condition)
moved_on_from() { state_is_not "$1" || { keeper; [ "$KEEPER" != unit ]; }; }  # ... or its unit died
is_final() { case $1 in activated | rolled-back | failed | rollback-failed | restore-failed) return 0 ;; esac; return 1; }

print_status() {  # [PHASE]
  st=${1:-$(state_of)}
  prev=$(cat "$DIR/previous" 2>/dev/null)
  new=$(param NEW)
  reason=$(head -n 1 "$DIR/reason" 2>/dev/null | tr '\t' ' ')
  keeper
  printf '@@deploy-flake-state\t%s\t%s\t%s\t%s\t%s\n' "$st" "$prev" "$new" "$KEEPER" "$reason"
}

log() { echo "[deploy-flake] $*" >> "$DIR/log"; }
set_reason() { printf '%s\n' "$*" > "$DIR/reason"; }
set_state() {
  printf '%s\n' "$1" > "$DIR/state.tmp" && mv -f "$DIR/state.tmp" "$DIR/state"
  log "state: $1"
  if is_final "$1"; then drop_gc_root; disarm_guard; fi
}

# ---------------------------------------------------------------- who carries it on
# The transaction's unit records its cgroup when it starts; the guard's service lives
# beside it. A directory that exists is a unit with processes in it (an ExecStopPost
# included); both looks are builtins, so a watch makes them every second.
GUARD=deploy-flake-$ID-guard
keeper() {  # sets KEEPER: unit, guard or none
  KEEPER=unit
  [ -r "$DIR/cgroup" ] || return 0  # its unit has not run yet (or never will: then it is final)
  read -r cg < "$DIR/cgroup" || return 0
  if [ -d "$cg" ]; then KEEPER=unit
  elif [ -d "${cg%/*}/$GUARD.service" ]; then KEEPER=guard
  else KEEPER=none
  fi
}
keeper_rank() { case $1 in unit) echo 2 ;; guard) echo 1 ;; *) echo 0 ;; esac; }
record_cgroup() {  # the cgroup directory of the calling process's unit, into $DIR/cgroup
  while IFS= read -r line; do
    path=/${line#*:*:/}
    for root in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
      case $path in */deploy-flake-"$ID".service) ;; *) continue 2 ;; esac
      if [ -d "$root$path" ]; then printf '%s\n' "$root$path" > "$DIR/cgroup"; return 0; fi
    done
  done < /proc/self/cgroup
  log "warning: the unit's cgroup was not found; the deployer cannot see whether it is alive"
}
# The guard's deadline: the end of the confirmation window (or of the boot entry's
# writing), and a margin. Fired earlier by the unit's death (OnFailure=).
guard_s() {
  if [ "$MODE" = boot ]; then
    echo $((LOCK_WAIT_S + PROFILE_SET_S + BOOT_S + KILL_GRACE_S + GUARD_MARGIN_S))
  else
    echo $((LOCK_WAIT_S + ACT_S + KILL_GRACE_S + 2 * HEALTH_S + SETTLE_S + CONFIRM_S + GUARD_MARGIN_S))
  fi
}
arm_guard() {  # prints why it could not; false when armed
  systemd-run --unit="$GUARD" --description="deploy-flake guard $ID" \
    --on-active="$(guard_s)" --timer-property=AccuracySec=1s --timer-property=RemainAfterElapse=no \
    --property=CollectMode=inactive-or-failed --service-type=exec --property=SuccessExitStatus=1 \
    -- /bin/sh "$AGENT" guard "$ID" 8>&- 2>&1 >/dev/null || return 0
  return 1
}
disarm_guard() {  # and a killed unit's failed state goes: the transaction is over
  systemctl stop "$GUARD.timer" 8>&- >/dev/null 2>&1
  systemctl reset-failed "deploy-flake-$ID.service" "$GUARD.service" 8>&- >/dev/null 2>&1 || :
}

# The deployer's build result link kept the new system from garbage collection
# until the transaction ended; the profile holds it if it was committed, and
# the new generation's link is kept if the boot entry may still name it.
drop_gc_root() {
  gc=$(param GC_ROOT)
  case $gc in
    /tmp/deploy-flake-*.system) [ -L "$gc" ] && rm -f "$gc" ;;
  esac
  return 0
}

# ---------------------------------------------------------------- settings
param() {  # KEY: the value of its first line in the settings (builtins only: no process)
  [ -r "$DIR/settings" ] || return 0
  while IFS= read -r kv || [ -n "$kv" ]; do
    case $kv in "$1="*) printf '%s\n' "${kv#*=}"; return 0 ;; esac
  done < "$DIR/settings"
}
load_settings() {
  NEW=$(param NEW) MODE=$(param MODE) ACT_S=$(param ACTIVATION_S) HEALTH_S=$(param HEALTH_S)
  SETTLE_S=$(param SETTLE_S) CONFIRM_S=$(param CONFIRM_S) BOOT_S=$(param BOOT_S) HOLDER=$(param HOLDER)
  GENERATION=$(param GENERATION)
}
is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; esac; return 0; }
settings_problem() {  # prints what is wrong with the settings; false when nothing is
  [ -r "$DIR/settings" ] || { echo "no settings for deploy $ID"; return 0; }
  case $NEW in
    /nix/store/?*) case $NEW in *[!A-Za-z0-9/+._?=-]* | */../* | */..) echo "NEW is not a store path: '$NEW'"; return 0 ;; esac ;;
    *) echo "NEW is not a store path: '$NEW'"; return 0 ;;
  esac
  case $MODE in test | boot) ;; *) echo "MODE must be test or boot, not '$MODE'"; return 0 ;; esac
  for kv in "ACTIVATION_S=$ACT_S" "HEALTH_S=$HEALTH_S" "CONFIRM_S=$CONFIRM_S" "BOOT_S=$BOOT_S"; do
    v=${kv#*=}
    if ! is_uint "$v" || [ "$v" -lt 1 ]; then
      echo "${kv%%=*} must be a whole number of seconds, at least 1 (not '$v'): a zero limit would be no limit"; return 0
    fi
  done
  is_uint "$SETTLE_S" || { echo "SETTLE_S must be a whole number of seconds (not '$SETTLE_S')"; return 0; }
  if [ -n "$GENERATION" ]; then
    is_uint "$GENERATION" || { echo "GENERATION must be a generation number (not '$GENERATION')"; return 0; }
    [ "$(readlink -f "${PROFILE%/*}/system-$GENERATION-link" 2>/dev/null)" = "$NEW" ] \
      || { echo "generation $GENERATION of $PROFILE is not $NEW"; return 0; }
  fi
  case $(param GC_ROOT) in '' | /tmp/deploy-flake-*.system) ;; *) echo "GC_ROOT is not a deploy-flake result link"; return 0 ;; esac
  return 1
}
# The longest recovery of a killed transaction: the unit's stop timeout must cover it.
recovery_s() { echo $((2 * LOCK_WAIT_S + PROFILE_SET_S + BOOT_S + KILL_GRACE_S + 2 * (LOCK_WAIT_S + ACT_S + KILL_GRACE_S + HEALTH_S) + 60)); }

# ---------------------------------------------------------------- health
# One poll loop for every wait: CMD runs every INTERVAL s until it succeeds (0) or MAX_S passed (1).
# Waits on a file (a confirmation, a state) poll fast, as they are cheap and someone waits
# on the other end: every BRISK s for their first second (the answer usually comes within
# it), then every FAST s. The settle window's unit checks run systemctl: they poll SLOW.
BRISK=0.02 FAST=0.05 SLOW=0.2
tick() { read -r UP _ < /proc/uptime; UP=${UP%.*}${UP#*.}; UP=${UP#"${UP%%[!0]*}"}; UP=${UP:-0}; }  # centiseconds
poll() {  # MAX_S INTERVAL CMD...
  poll_max=$1 poll_every=$2; shift 2; tick; poll_end=$((UP + poll_max * 100)) poll_brisk=$((UP + 100))
  while :; do
    "$@" && return 0
    tick; [ "$UP" -lt "$poll_end" ] || return 1
    if [ "$poll_every" = "$FAST" ] && [ "$UP" -lt "$poll_brisk" ]; then sleep "$BRISK"; else sleep "$poll_every"; fi
  done
}

# One systemctl call for both: a unit that failed (ACTIVE), one waiting to be restarted after
# a crash (SUB auto-restart).
unit_states() { systemctl list-units --all --plain --no-legend --no-pager 8>&- 2>/dev/null; }
# deploy-flake's own units (a killed transaction's, its guard's) are not the system's health:
# the transaction that left them is finished by its guard or by the next deploy.
failed_in() { printf '%s\n' "$1" | awk '$3 == "failed" && $1 !~ /^deploy-flake-/ { print $1 }' | sort -u; }
crashing_in() { printf '%s\n' "$1" | awk '$4 == "auto-restart" && $1 !~ /^deploy-flake-/ { print $1 }' | sort -u; }
restart_counts() {  # "UNIT NRESTARTS" for every loaded service
  systemctl show -p Id -p NRestarts '*.service' 8>&- 2>/dev/null | awk -F= '
    $1 == "Id" { id = $2 } $1 == "NRestarts" { n = $2 }
    /^$/ { if (id != "") print id, n + 0; id = ""; n = 0 }
    END { if (id != "") print id, n + 0 }' | sort
}
# Sets states (unit_states) and writes the services' restart counts to FILE, both looks at once.
look_at_units() {  # FILE
  restart_counts > "$1" &  # the slower look, beside the other
  states=$(unit_states)
  wait "$!"
}
snapshot_units() {  # what was already wrong before the deploy does not count against it
  look_at_units "$DIR/restarts-before"
  failed_in "$states" > "$DIR/failed-before"
  crashing_in "$states" > "$DIR/crashing-before"
}
# What is wrong with the units since the deploy began; false when nothing is.
# With "counts", a service whose restart count rose since the snapshot counts too.
unit_problems() {  # [counts]
  counts=${1:-}
  if [ "$counts" = counts ]; then look_at_units "$DIR/restarts-now"; else states=$(unit_states); fi
  failed=$(failed_in "$states" | comm -13 "$DIR/failed-before" - | tr '\n' ' ')
  looping=$({
    crashing_in "$states"
    if [ "$counts" = counts ]; then
      awk 'NR == FNR { b[$1] = $2; next } $2 > (($1 in b) ? b[$1] : 0) { print $1 }' "$DIR/restarts-before" "$DIR/restarts-now"
    fi
  } | sort -u | comm -13 "$DIR/crashing-before" - | tr '\n' ' ')
  [ -n "$failed$looping" ] || return 1
  msg=${failed:+units failed: ${failed% }}
  [ -n "$looping" ] && msg="${msg:+$msg; }units keep crashing and restarting: ${looping% }"
  echo "$msg"
}
# Healthy: the system settles within TIMEOUT_S and no unit failed or crash-loops
# since the deploy began. Prints what is wrong; false when healthy.
health_problem() {  # TIMEOUT_S [counts]
  st=$(timeout -k 5 "$1" systemctl is-system-running --wait 8>&- 2>/dev/null)
  if unit_problems "${2:-}"; then return 0; fi
  case $st in
    running | degraded) return 1 ;;  # degraded: only units that had failed before the deploy
    starting | initializing | "") echo "the system did not finish starting within ${1}s (state: ${st:-no answer})" ;;
    *) echo "the system is $st" ;;
  esac
  return 0
}

other_switch() {  # prints what else is switching this host's system; false when nothing is
  # shellcheck disable=SC2086  # a list of unit names
  set -- $OTHER_SWITCHES
  for s in $(systemctl is-active "$@" 8>&- 2>/dev/null); do  # a line per unit, in order
    [ $# -gt 0 ] || break
    case $s in active | activating | reloading | deactivating | refreshing) echo "$1 is $s"; return 0 ;; esac
    shift
  done
  if [ -e "$SWITCH_LOCK" ] && ! flock -n "$SWITCH_LOCK" true 8>&-; then
    echo "another switch-to-configuration holds $SWITCH_LOCK"; return 0
  fi
  return 1
}

# ---------------------------------------------------------------- transaction steps
activate() {  # SYSTEM: switch-to-configuration test, bounded; returns its exit code
  timeout -k "$KILL_GRACE_S" "$ACT_S" "$1/bin/switch-to-configuration" test 8>&-
}

# Why switch-to-configuration refused to start, changing nothing, judged by its exit
# code and its output in the log from byte OFFSET on; false when it did not refuse.
# NixOS's (ng, and the Perl one before it) checks these before anything else, and
# exits with errno: EWOULDBLOCK (11) when another switch holds the lock.
stc_refusal() {  # RC OFFSET
  out=$(tail -c +"$(($2 + 1))" "$DIR/log" 2>/dev/null)
  if [ "$1" = 11 ] && printf '%s\n' "$out" | grep -Eq '^Could not acquire lock( - .*)?$'; then
    echo "another switch is in progress on this host: another switch-to-configuration holds $SWITCH_LOCK (Could not acquire lock)"
    return 0
  fi
  if printf '%s\n' "$out" | grep -Eq '^This is not a NixOS installation!'; then
    echo "switch-to-configuration refused: This is not a NixOS installation! (no /etc/NIXOS, and /etc/os-release's ID is not nixos)"
    return 0
  fi
  return 1
}
log_size() { stat -c %s "$DIR/log" 2>/dev/null || echo 0; }

# Before a switch the transaction cannot give up (a rollback, the boot entry): another
# switch-to-configuration holding its lock would make it fail at once (exit 11), so wait
# for that one to finish, up to LOCK_WAIT_S. Only looked at, never held across the call.
await_other_switch() {
  [ -e "$SWITCH_LOCK" ] || return 0
  flock -n "$SWITCH_LOCK" true 8>&- && return 0
  log "another switch-to-configuration holds $SWITCH_LOCK: waiting up to ${LOCK_WAIT_S}s for it"
  flock -w "$LOCK_WAIT_S" "$SWITCH_LOCK" true 8>&- || log "it still holds the lock"
}

# Back to the previous system, retried once; exits with the final state.
rollback() {  # REASON
  set_reason "$1"
  set_state rolling-back
  attempt=1
  while :; do
    log "rolling back to $PREV (attempt $attempt): $1"
    await_other_switch
    activate "$PREV"; rc=$?
    if [ "$rc" -ne 0 ]; then
      why="re-activating the previous system failed (exit $rc)"
    elif why=$(health_problem "$HEALTH_S"); then
      why="after the rollback the system is not healthy: $why"
    else
      break
    fi
    log "$why"
    if [ "$attempt" -ge 2 ]; then
      set_reason "$1; $why, twice"
      set_state rollback-failed; exit 1
    fi
    attempt=2
  done
  log "back on $PREV and healthy"
  if [ -n "${RESTORE_PROBLEM:-}" ]; then
    set_reason "$1; $RESTORE_PROBLEM"; set_state restore-failed; exit 1
  fi
  set_state rolled-back; exit 1
}

# Nothing changed on the running system: failed (or restore-failed, if the
# profile or boot entry could not be put back).
conclude_unchanged() {  # REASON
  log "$1"
  if [ -n "${RESTORE_PROBLEM:-}" ]; then
    set_reason "$1; $RESTORE_PROBLEM"; set_state restore-failed; exit 1
  fi
  set_reason "$1"; set_state failed; exit 1
}

aborted() { [ -e "$DIR/abort" ]; }
settle_problem() {  # the settle window's check: interrupted, or units failing since the deploy
  if aborted; then PROBLEM="the deploy was interrupted before it was confirmed"; return 0; fi
  if PROBLEM=$(unit_problems counts); then PROBLEM="within ${SETTLE_S}s of the activation $PROBLEM"; return 0; fi
  return 1
}
confirmed_or_aborted() { [ -e "$DIR/confirm" ] || aborted; }

profile_generation() { readlink "$PROFILE" 2>/dev/null || true; }

# The profile and the boot entry as the deploy found them. The new
# generation's link goes last: until the old boot entry is written again, the
# boot loader may still name the new system, and that link keeps it alive.
restore_profile() {
  old=$(cat "$DIR/old-generation" 2>/dev/null)
  now=$(profile_generation)
  new=$(cat "$DIR/new-generation" 2>/dev/null)  # written only for a generation this deploy added
  if [ -z "$old" ]; then
    RESTORE_PROBLEM="there was no system profile before the deploy to put back; check $PROFILE"
    return 1
  fi
  if [ "$now" != "$old" ]; then
    if ! { ln -sfn "$old" "$PROFILE.tmp" && mv -fT "$PROFILE.tmp" "$PROFILE"; }; then
      RESTORE_PROBLEM="putting $PROFILE back to $old failed; check \`readlink $PROFILE\`"
      return 1
    fi
  fi
  await_other_switch
  if ! timeout -k "$KILL_GRACE_S" "$BOOT_S" "$PROFILE/bin/switch-to-configuration" boot 8>&-; then
    RESTORE_PROBLEM="writing the previous boot entry again failed: the boot loader may still default to $NEW; run \`$PROFILE/bin/switch-to-configuration boot\` on the host"
    return 1
  fi
  if [ -n "$new" ] && [ "$new" != "$old" ]; then rm -f "${PROFILE%/*}/$new"; fi
  log "the system profile and the boot entry are back on $old"
  return 0
}

changed_profile() {  # the profile as someone else left it
  g=$(profile_generation)
  when=$(stat -c %y "$PROFILE" 2>/dev/null | cut -d. -f1)
  echo "it is now $g -> $(readlink -f "$PROFILE" 2>/dev/null), changed at ${when:-an unknown time}; $(other_switch || echo "no other switch is running now")"
}

commit() {  # profile generation + boot entry, undone if either step fails
  set_state committing
  if [ "$(profile_generation)" != "$(cat "$DIR/old-generation" 2>/dev/null)" ]; then
    why="the system profile was changed by someone else during the deploy ($(changed_profile))"
    [ "$MODE" = test ] && rollback "$why"
    conclude_unchanged "$why"
  fi
  if [ "$MODE" = test ] && [ "$(readlink -f /run/current-system)" != "$NEW" ]; then
    rollback "another switch replaced the running system during the deploy (it runs $(readlink -f /run/current-system))"
  fi
  old_gen=$(cat "$DIR/old-generation" 2>/dev/null)
  if [ -n "$GENERATION" ]; then  # a rollback: back to a generation the profile has
    timeout -k "$KILL_GRACE_S" "$PROFILE_SET_S" nix-env -p "$PROFILE" --switch-generation "$GENERATION" 8>&-
  else
    timeout -k "$KILL_GRACE_S" "$PROFILE_SET_S" nix-env -p "$PROFILE" --set "$NEW" 8>&-
  fi
  rc=$?
  if [ -z "$GENERATION" ] && [ "$(profile_generation)" != "$old_gen" ]; then
    profile_generation > "$DIR/new-generation"  # ours: removed again if the deploy is undone
  fi
  if [ "$rc" -ne 0 ] || [ "$(readlink -f "$PROFILE")" != "$NEW" ]; then
    why="could not point $PROFILE at the new system (nix-env exit $rc)"
    [ "$(profile_generation)" = "$old_gen" ] || restore_profile
    [ "$MODE" = test ] && rollback "$why"
    conclude_unchanged "$why"
  fi
  await_other_switch
  if ! timeout -k "$KILL_GRACE_S" "$BOOT_S" "$NEW/bin/switch-to-configuration" boot 8>&-; then
    log "the boot step failed: putting the system profile and the boot entry back"
    why="switch-to-configuration boot failed; the profile and boot entry were put back"
    restore_profile || why="switch-to-configuration boot failed"
    [ "$MODE" = test ] && rollback "$why"
    conclude_unchanged "$why"
  fi
  record_deploy
  set_state activated
}

record_deploy() {  # what `deploy-flake status` shows as the last deploy; never fails the deploy
  { mkdir -p "${LAST_DEPLOY%/*}" &&
    printf 'system=%s\nflake=%s\ntime=%s\ndeploy=%s\nby=%s\ngeneration=%s\n' "$NEW" "$(param FLAKE)" \
      "$(date -u +%FT%TZ)" "$ID" "$HOLDER" "$(profile_generation)" > "$LAST_DEPLOY.tmp" &&
    chmod 0644 "$LAST_DEPLOY.tmp" && mv -f "$LAST_DEPLOY.tmp" "$LAST_DEPLOY"; } ||
    log "warning: could not record the deploy in $LAST_DEPLOY"
}

# Transactions that never reached a final state (their unit was killed, and
# this deploy took the lock before their own recovery could): finish them
# first, or this deploy would take their unconfirmed system for "previous".
finish_earlier() {
  for d in "$BASE"/*/; do
    d=${d%/}
    if [ "$d" = "$DIR" ] || [ ! -f "$d/state" ]; then continue; fi
    read_state "$d"; st=$STATE
    is_final "$st" && continue
    log "finishing the earlier deploy ${d##*/}, left in state $st"
    /bin/sh "$AGENT" finish "${d##*/}" >> "$d/log" 2>&1  # inherits the lock (fd 8)
    log "the earlier deploy ${d##*/} is now $(cat "$d/state" 2>/dev/null)"
  done
}

forget_old_runs() {  # keep the last few finished transactions; never a live one
  # shellcheck disable=SC2012  # deploy ids have no odd characters
  ls -1dt "$BASE"/*/ 2>/dev/null | while read -r d; do
    d=${d%/}
    [ "$d" != "$DIR" ] && read_state "$d" && is_final "$STATE" && echo "$d"
  done | tail -n +$((KEEP_RUNS + 1)) | while read -r d; do rm -rf "$d"; done
}

run() {
  [ -d "$DIR" ] || die "no deploy $ID on this host"
  exec >>"$DIR/log" 2>&1
  is_final "$(state_of)" && exit 0  # settled before it ran (the deploy was interrupted)
  record_cgroup
  load_settings
  if problem=$(settings_problem); then conclude_unchanged "$problem"; fi
  set_state starting
  exec 8>>"$BASE/lock"
  if ! flock -n 8; then
    conclude_unchanged "another deploy is in progress on this host: $(cat "$BASE/holder" 2>/dev/null || echo unknown)"
  fi
  aborted && conclude_unchanged "the deploy was interrupted before anything was changed"
  printf '%s (deploy %s, since %s)\n' "$HOLDER" "$ID" "$(date -u +%FT%TZ)" > "$BASE/holder"
  finish_earlier
  forget_old_runs

  PREV=$(readlink -f /run/current-system 2>/dev/null || true)
  use_tools_of "$PREV"
  printf '%s\n' "$PREV" > "$DIR/previous"
  profile_generation > "$DIR/old-generation"
  [ -x "$NEW/bin/switch-to-configuration" ] || conclude_unchanged "$NEW has no bin/switch-to-configuration"
  if busy=$(other_switch); then conclude_unchanged "another switch is in progress on this host: $busy"; fi
  snapshot_units

  if [ "$MODE" = boot ]; then commit; exit 0; fi
  if [ -z "$PREV" ] || [ ! -x "$PREV/bin/switch-to-configuration" ]; then
    conclude_unchanged "no previous system (/run/current-system) to return to; deploy with --test=skip and reboot"
  fi

  set_state activating
  log "activating $NEW (previous: $PREV)"
  log_from=$(log_size)
  activate "$NEW"; rc=$?
  if [ "$rc" -ne 0 ] && why=$(stc_refusal "$rc" "$log_from"); then
    conclude_unchanged "$why; switch-to-configuration test (exit $rc) changed nothing"
  fi
  case $rc in
    0) ;;
    124 | 137) rollback "the activation did not finish within ${ACT_S}s and was stopped" ;;
    *) rollback "switch-to-configuration test failed (exit $rc)$(p=$(unit_problems counts) && echo "; $p")" ;;
  esac
  set_state checking
  if problem=$(health_problem "$HEALTH_S" counts); then rollback "after the activation $problem"; fi
  # (no settle window: the health check just now was its one look)
  if [ "$SETTLE_S" -gt 0 ] && poll "$SETTLE_S" "$SLOW" settle_problem; then rollback "$PROBLEM"; fi
  set_state awaiting-confirmation
  poll "$CONFIRM_S" "$FAST" confirmed_or_aborted
  aborted && rollback "the deploy was interrupted before it was confirmed"
  [ -e "$DIR/confirm" ] || rollback "no confirmation over a new SSH connection within ${CONFIRM_S}s (did the new configuration break SSH access?)"
  if problem=$(health_problem "$HEALTH_S" counts); then rollback "while waiting for confirmation $problem"; fi
  commit
}

# The unit stopped (killed, OOM, systemctl stop) before the transaction ended:
# nothing may be left half-done. Runs as the unit's ExecStopPost.
recover() {
  [ -d "$DIR" ] || exit 0
  is_final "$(state_of)" && exit 0
  exec >>"$DIR/log" 2>&1
  exec 8>>"$BASE/lock"
  if ! flock -w "$LOCK_WAIT_S" 8; then
    log "recover: the deploy lock is still held by $(cat "$BASE/holder" 2>/dev/null); the next deploy finishes this one"
    exit 1
  fi
  is_final "$(state_of)" && exit 0  # a newer deploy finished it meanwhile
  recover_locked
}

recover_locked() {  # with the deploy lock held, for the transaction in $DIR
  st=$(state_of)
  load_settings
  PREV=$(cat "$DIR/previous" 2>/dev/null)
  use_tools_of "$PREV"
  log "the activation unit stopped in state $st: recovering"
  case $st in
    pending | starting)
      set_reason "the activation unit stopped before anything was changed"; set_state failed; exit 1 ;;
    committing)
      restore_profile ;;
  esac
  if [ "$MODE" = boot ]; then
    conclude_unchanged "the activation unit was stopped while writing the boot entry; it was put back"
  fi
  rollback "the activation unit was stopped before the deploy was confirmed (state $st)"
}

# The longest a transaction may stay in PHASE (its own waits and limits, with a margin):
# a unit still in it after that is wedged (frozen, stopped by a signal, hung in a kernel call).
phase_budget_s() {  # PHASE
  case $1 in
    activating) b=$((ACT_S + KILL_GRACE_S)) ;;
    checking) b=$((2 * HEALTH_S + SETTLE_S)) ;;
    awaiting-confirmation) b=$((CONFIRM_S + HEALTH_S)) ;;
    committing) b=$((2 * (PROFILE_SET_S + LOCK_WAIT_S + BOOT_S + KILL_GRACE_S) + 2 * (LOCK_WAIT_S + ACT_S + KILL_GRACE_S + HEALTH_S))) ;;
    rolling-back) b=$((2 * (LOCK_WAIT_S + ACT_S + KILL_GRACE_S + HEALTH_S))) ;;
    *) b=$((LOCK_WAIT_S + $(recovery_s))) ;;  # pending, starting: an earlier transaction may be finished first
  esac
  echo $((b + GUARD_MARGIN_S))
}
overdue() {  # true when the transaction has been in its phase for longer than it may
  since=$(stat -c %Y "$DIR/state" 2>/dev/null) || return 1
  [ $(($(date +%s) - since)) -gt "$(phase_budget_s "$STATE")" ]
}

# The guard's service: started by its timer at the transaction's deadline, at once by the
# unit's OnFailure= when the unit dies, or by the deployer's `rescue`. While the unit lives,
# it only watches: a unit that stays in a phase longer than the phase may take is stopped
# (which runs its ExecStopPost). Once the unit is gone, it recovers as the ExecStopPost would.
guard() {
  trap disarm_guard EXIT
  [ -d "$DIR" ] || exit 0
  is_final "$(state_of)" && exit 0
  load_settings
  stopped=""
  while keeper; [ "$KEEPER" = unit ] && read_state && ! is_final "$STATE"; do
    if [ -z "$stopped" ] && overdue; then
      log "guard: the activation unit is still $STATE, longer than it may be ($(phase_budget_s "$STATE")s): stopping it"
      # systemd refuses to stop a frozen unit ("Cannot perform operation on frozen unit")
      systemctl thaw "deploy-flake-$ID.service" 8>&- >/dev/null 2>&1
      systemctl stop --no-block "deploy-flake-$ID.service" 8>&- 2>/dev/null
      stopped=1
    fi
    sleep 1
  done
  is_final "$(state_of)" && exit 0
  exec >>"$DIR/log" 2>&1
  log "guard: the activation unit is gone and the transaction is $(state_of): recovering"
  recover
}

rescue() {  # OFFSET MAX_S
  read_state
  if ! is_final "$STATE" && [ -d "$DIR" ]; then
    keeper
    if [ "$KEEPER" = none ]; then
      log "the deployer found nothing carrying the transaction on (state $STATE): starting its guard"
      systemctl start --no-block "$GUARD.service" 8>&- 2>/dev/null ||
        systemd-run --unit="$GUARD" --description="deploy-flake guard $ID" \
          --property=CollectMode=inactive-or-failed --service-type=exec --property=SuccessExitStatus=1 \
          -- /bin/sh "$AGENT" guard "$ID" 8>&- >/dev/null 2>&1 ||
        log "starting the guard failed"
      poll 5 "$FAST" keeper_is_not none || :
    fi
  fi
  watch "$1" "$2"
}
keeper_is_not() { keeper; [ "$KEEPER" != "$1" ]; }

# ---------------------------------------------------------------- deployer-facing verbs
start() {
  umask 077
  mkdir -p "$DIR" || die "cannot create $DIR"
  exec 7>>"$DIR/start.lock"
  flock 7
  [ -e "$DIR/settings" ] && die "deploy $ID was started already"
  if ! { cat > "$DIR/settings.tmp" && mv -f "$DIR/settings.tmp" "$DIR/settings"; }; then
    die "cannot write the settings of deploy $ID"
  fi
  load_settings
  if problem=$(settings_problem); then
    set_reason "$problem"; set_state failed; print_status; exit 0
  fi
  if aborted; then
    set_reason "interrupted before the activation unit started; nothing was changed"; set_state failed
    print_status; exit 0
  fi
  # The guard first: no transaction runs without it.
  if why=$(arm_guard); then
    set_reason "could not arm the transaction's guard timer, so nothing was started: $(echo "$why" | tail -n 1)"
    set_state failed
  # Nothing from the deployer is in this command line but the (checked) id: systemd
  # would expand '$' in it. The settings travel in $DIR/settings. Exit 1 is a transaction
  # that ended as it should (rolled back, failed): only a death starts the guard.
  elif ! out=$(systemd-run --unit="deploy-flake-$ID" --description="deploy-flake activation $ID" \
      --collect --service-type=exec --property=KillMode=control-group \
      --property="ExecStopPost=/bin/sh $AGENT recover $ID" \
      --property="TimeoutStopSec=$(recovery_s)" \
      --property=SuccessExitStatus=1 --property="OnFailure=$GUARD.service" \
      -- /bin/sh "$AGENT" run "$ID" 2>&1); then
    if [ ! -e "$DIR/state" ]; then
      set_reason "systemd-run failed: $(echo "$out" | tail -n 1)"; set_state failed
    fi
  fi
  if [ -n "${1:-}" ]; then
    exec 7>&-
    watch 0 "$1" "${2:-}"
  else
    print_status
  fi
}

watch_ends() {  # PHASE: where a watch hands back to the deployer
  case $1 in none | awaiting-confirmation | "$stop") return 0 ;; esac
  is_final "$1" && return 0
  # ... and where what carries the transaction on changed for the worse (the unit died)
  keeper
  [ "$KEEPER" = none ] || [ "$(keeper_rank "$KEEPER")" -lt "$watch_rank" ]
}
show_log() {  # prints the log from byte $off to its current end; $off follows
  size=$(log_size)
  if [ "$size" -gt "$off" ]; then tail -c +"$((off + 1))" "$DIR/log" | head -c "$((size - off))"; off=$size; fi
}
# The log to its end as seen after the state was read (so whatever led to that state is
# printed before it), then the status.
watch_end() {  # PHASE
  show_log
  echo
  print_status "$1"
}
# Waits on the log, not on a clock: `tail -F` (inotify) streams it as it grows, and each
# state line it shows makes the watch read the state file (the truth: an activation's own
# output could look like a state line). Every second the stream is started again from where
# it was and the state read anyway (a state written without its line). Without mkfifo,
# polls every FAST s instead.
watch() {  # OFFSET MAX_S [STOP]
  off=$1 stop=${3:-}
  if ! is_uint "$off" || ! is_uint "$2"; then die "watch: OFFSET and MAX_S are numbers"; fi
  tick; watch_stop=$((UP + $2 * 100))
  keeper; watch_rank=$(keeper_rank "$KEEPER")
  fifo=$DIR/watch.$$
  trap 'rm -f "$fifo"' EXIT
  { rm -f "$fifo" && mkfifo -m 600 "$fifo"; } 2>/dev/null || fifo=""
  while :; do
    read_state; watch_ends "$STATE" && break
    tick; [ "$UP" -lt "$watch_stop" ] || break
    if [ -z "$fifo" ]; then show_log; sleep "$FAST"; continue; fi
    timeout 1 tail -s "$FAST" -c +"$((off + 1))" -F "$DIR/log" 8>&- 2>/dev/null > "$fifo" &
    tailer=$!
    while IFS= read -r line; do  # a last line without its newline yet: read again next time
      printf '%s\n' "$line"
      off=$((off + ${#line} + 1))  # bytes: LC_ALL=C
      case $line in *"[deploy-flake] state: "*) read_state; watch_ends "$STATE" && break ;; esac
    done < "$fifo"
    kill "$tailer" 2>/dev/null
    wait "$tailer" 2>/dev/null
  done
  watch_end "$STATE"
}

confirm() {  # [OFFSET MAX_S]
  # Early (the activation finished, its health check runs): wait until the transaction asks,
  # at most as long as that check may take. The login was made after the activation either way.
  if [ "$(state_of)" = checking ]; then
    load_settings
    is_uint "$HEALTH_S" || HEALTH_S=30
    is_uint "$SETTLE_S" || SETTLE_S=0
    poll "$((2 * HEALTH_S + SETTLE_S + CONFIRM_HOLD_MARGIN_S))" "$FAST" moved_on_from checking || :
  fi
  # the transaction takes it within a poll ($BRISK s), unless its window just closed
  if [ "$(state_of)" = awaiting-confirmation ]; then
    : > "$DIR/confirm"
    poll "$CONFIRM_TAKEN_S" "$FAST" moved_on_from awaiting-confirmation || :
  fi
  if [ -n "${1:-}" ]; then watch "$1" "${2:-0}"; else print_status; fi
}

abort() {
  [ -d "$BASE" ] || { print_status; exit 0; }
  mkdir -p "$DIR" && : > "$DIR/abort"
  # A start in progress finishes first; a transaction that was asked for but
  # whose unit never ran is settled here, so that nobody waits for it.
  exec 7>>"$DIR/start.lock"
  flock -w "$LOCK_WAIT_S" 7 || :
  if [ ! -e "$DIR/state" ] && [ "$(systemctl show -p LoadState --value "deploy-flake-$ID.service" 2>/dev/null)" != loaded ]; then
    set_reason "interrupted before the activation unit started; nothing was changed"; set_state failed
  fi
  print_status
}

case $cmd in
  run) run ;;
  recover) recover ;;
  finish)
    flock -n 8 2>/dev/null || die "finish: only for a transaction that holds the deploy lock"
    recover_locked ;;  # internal: a newer transaction, holding the lock, finishes this one
  start) start "${3:-}" "${4:-}" ;;
  guard) guard ;;
  rescue) rescue "${3:-0}" "${4:-30}" ;;
  watch) watch "${3:-0}" "${4:-30}" "${5:-}" ;;
  confirm) confirm "${3:-}" "${4:-}" ;;
  abort) abort ;;
  status) print_status ;;
  *) die "unknown command '$cmd'" ;;
esac
