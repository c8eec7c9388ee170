#!/bin/sh
# deploy-flake-agent: the target side of a deploy. Runs on the host as root,
# needs only POSIX sh, coreutils, util-linux (flock), systemd and nix.
#
# The activation transaction runs inside a transient systemd unit, so nothing
# that happens to the deployer or its SSH connection can interrupt it, and
# every decision that protects the host is taken here:
#   1. take the host's deploy lock; record the running system
#   2. switch-to-configuration test (bounded by the activation timeout)
#   3. the system must become healthy and stay so for SETTLE_S: no unit newly failed
#   4. wait for the deployer's confirmation, which arrives over a brand-new
#      SSH connection (proof that logins still work)
#   5. only then: new system profile generation + switch-to-configuration boot
# Any failure, timeout, abort request or missing confirmation before step 5
# re-activates the previous system: the boot entry is never touched before
# the new system was confirmed working.
#
# Usage:
#   agent run ID NEW_SYSTEM MODE ACTIVATION_S HEALTH_S SETTLE_S CONFIRM_S BOOT_S HOLDER
#       MODE: test (the whole transaction) or boot (profile + boot entry only)
#   agent watch ID OFFSET [MAX_S]  print the log from byte OFFSET on, then
#                                  "@@deploy-flake-state STATE" once the state
#                                  needs the deployer or is final (or MAX_S passed)
#   agent confirm ID               confirm; wait for the commit; print the final state
#   agent abort ID                 roll back now (the deployer was interrupted)
#   agent recover ID               the unit's ExecStopPost: if the transaction was
#                                  killed before it ended, roll back (or put back)
#   agent status ID                print the state
set -u
PATH="$PATH:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
BASE=/run/deploy-flake
PROFILE=/nix/var/nix/profiles/system
KEEP_RUNS=20

die() { echo "deploy-flake-agent: $*" >&2; exit 2; }
valid_id() { case $1 in *[!A-Za-z0-9_.-]* | '') die "bad deploy id '$1'" ;; esac; }

cmd=${1:-}; [ $# -ge 2 ] || die "usage: agent run|watch|confirm|abort|status|recover ID ..."
ID=$2; valid_id "$ID"
DIR=$BASE/$ID

state_of() { cat "$DIR/state" 2>/dev/null || echo unknown; }
print_state() { echo "@@deploy-flake-state ${1:-$(state_of)} $(head -n 1 "$DIR/reason" 2>/dev/null)"; }
is_final() { case $1 in activated | rolled-back | rollback-failed | failed) return 0 ;; esac; return 1; }

# ---------------------------------------------------------------- the transaction
log() { echo "[deploy-flake] $*"; }
set_state() {
  printf '%s\n' "$1" > "$DIR/state.tmp" && mv "$DIR/state.tmp" "$DIR/state"; log "state: $1"
  if is_final "$1"; then drop_gc_root; fi
}

# The deployer's build result link kept the new system from garbage collection
# until now; the profile holds it if it was committed.
drop_gc_root() {
  case ${DEPLOY_FLAKE_GC_ROOT:-} in
    /tmp/deploy-flake-*.system) [ -L "$DEPLOY_FLAKE_GC_ROOT" ] && rm -f "$DEPLOY_FLAKE_GC_ROOT" ;;
  esac
  return 0
}
set_reason() { printf '%s\n' "$*" > "$DIR/reason"; }

failed_units() {  # names of failed units, one per line
  systemctl list-units --failed --plain --no-legend --no-pager 8>&- 2>/dev/null | awk '{print $1}' | sort
}

# Healthy: the system settles as "running" within the bound, or only units
# that had failed before the deploy are failed. Prints what is wrong.
health_problem() {  # TIMEOUT_S
  st=$(timeout "$1" systemctl is-system-running --wait 8>&- 2>/dev/null)
  [ "$st" = running ] && return 1
  new=$(failed_units | comm -13 "$DIR/failed-before" - | tr '\n' ' ')
  if [ -n "$new" ]; then echo "units failed: ${new% }"; return 0; fi
  case $st in
    degraded) return 1 ;;  # only units that were already failed before the deploy
    starting | initializing | "") echo "the system did not finish starting within ${1}s (state: ${st:-no answer})"; return 0 ;;
    *) echo "the system is $st"; return 0 ;;
  esac
}

activate() {  # SYSTEM TIMEOUT_S: switch-to-configuration test, bounded; prints nothing, returns its exit code
  timeout -k 10 "$2" "$1/bin/switch-to-configuration" test 8>&-
}

rollback() {  # REASON
  set_reason "$1"
  set_state rolling-back
  log "rolling back to $PREV: $1"
  activate "$PREV" "$ACT_S"; rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '%s\n' "$1; re-activating the previous system failed too (exit $rc)" > "$DIR/reason"
    set_state rollback-failed; exit 1
  fi
  if problem=$(health_problem "$HEALTH_S"); then
    printf '%s\n' "$1; after the rollback the system is still not healthy: $problem" > "$DIR/reason"
    set_state rollback-failed; exit 1
  fi
  log "back on $PREV and healthy"
  set_state rolled-back; exit 1
}

fail_unchanged() {  # REASON: nothing was changed
  set_reason "$1"; log "$1"; set_state failed; exit 1
}

settle() {  # the system must stay healthy for SETTLE_S: units that crash soon after starting count
  i=0
  while [ "$i" -lt "$((SETTLE_S * 5))" ]; do
    [ -e "$DIR/abort" ] && rollback "the deploy was interrupted before it was confirmed"
    new=$(failed_units | comm -13 "$DIR/failed-before" - | tr '\n' ' ')
    [ -n "$new" ] && rollback "within ${SETTLE_S}s of the activation units failed: ${new% }"
    sleep 0.2; i=$((i + 1))
  done
}

wait_confirmation() {  # returns 0 when confirmed; rolls back otherwise
  i=0
  while [ "$i" -lt "$((CONFIRM_S * 5))" ]; do
    [ -e "$DIR/abort" ] && rollback "the deploy was interrupted before it was confirmed"
    [ -e "$DIR/confirm" ] && return 0
    sleep 0.2; i=$((i + 1))
  done
  rollback "no confirmation over a new SSH connection within ${CONFIRM_S}s (did the new configuration break SSH access?)"
}

restore_profile() {  # OLD_GENERATION BOOT_S: the profile and boot entry as they were
  new_gen=$(readlink "$PROFILE" 2>/dev/null || true)
  [ -n "$1" ] && [ "$new_gen" != "$1" ] || return 0
  ln -sfn "$1" "$PROFILE.tmp" && mv -T "$PROFILE.tmp" "$PROFILE"
  rm -f "${PROFILE%/*}/$new_gen"
  timeout -k 10 "$2" "$PROFILE/bin/switch-to-configuration" boot 8>&- \
    || log "warning: restoring the previous boot entry failed too"
}

commit() {  # profile generation + boot entry, undone if the boot step fails
  set_state committing
  old_gen=$(readlink "$PROFILE" 2>/dev/null || true)
  printf '%s\n' "$old_gen" > "$DIR/old-generation"
  if ! nix-env -p "$PROFILE" --set "$NEW" 8>&-; then
    [ "$MODE" = test ] && rollback "could not add the new generation to $PROFILE"
    fail_unchanged "could not add the new generation to $PROFILE"
  fi
  if ! timeout -k 10 "$BOOT_S" "$NEW/bin/switch-to-configuration" boot 8>&-; then
    log "the boot step failed: putting the system profile back"
    restore_profile "$old_gen" "$BOOT_S"
    [ "$MODE" = test ] && rollback "switch-to-configuration boot failed; the profile and boot entry were put back"
    fail_unchanged "switch-to-configuration boot failed; the profile and boot entry were put back"
  fi
  set_state activated
}

run() {
  [ $# -eq 9 ] || die "usage: agent run ID NEW MODE ACTIVATION_S HEALTH_S SETTLE_S CONFIRM_S BOOT_S HOLDER"
  NEW=$2 MODE=$3 ACT_S=$4 HEALTH_S=$5 SETTLE_S=$6 CONFIRM_S=$7 BOOT_S=$8 HOLDER=$9
  mkdir -p "$DIR"
  exec >>"$DIR/log" 2>&1
  set_state starting
  exec 8>>"$BASE/lock"
  if ! flock -n 8; then
    fail_unchanged "another deploy is in progress on this host: $(cat "$BASE/holder" 2>/dev/null || echo unknown)"
  fi
  printf '%s (deploy %s, since %s)\n' "$HOLDER" "$ID" "$(date -u +%FT%TZ)" > "$BASE/holder"
  # keep the state of the last few deploys only
  # shellcheck disable=SC2012  # run ids have no odd characters
  ls -1dt "$BASE"/*/ 2>/dev/null | tail -n +$((KEEP_RUNS + 1)) | while read -r d; do rm -rf "$d"; done

  PREV=$(readlink -f /run/current-system 2>/dev/null || true)
  [ -x "$NEW/bin/switch-to-configuration" ] || fail_unchanged "$NEW has no bin/switch-to-configuration"
  printf '%s\n' "$PREV" > "$DIR/previous"
  printf '%s %s %s %s\n' "$NEW" "$MODE" "$ACT_S" "$HEALTH_S" > "$DIR/params"
  failed_units > "$DIR/failed-before"

  if [ "$MODE" = boot ]; then
    commit; exit 0
  fi
  if [ -z "$PREV" ] || [ ! -x "$PREV/bin/switch-to-configuration" ]; then
    fail_unchanged "no previous system (/run/current-system) to return to; deploy with --test=skip and reboot"
  fi

  set_state activating
  log "activating $NEW (previous: $PREV)"
  activate "$NEW" "$ACT_S"; rc=$?
  case $rc in
    0) ;;
    124 | 137) rollback "the activation did not finish within ${ACT_S}s and was stopped" ;;
    *) rollback "switch-to-configuration test failed (exit $rc)$(units=$(failed_units | comm -13 "$DIR/failed-before" - | tr '\n' ' '); [ -n "$units" ] && echo "; units failed: ${units% }")" ;;
  esac
  set_state checking
  if problem=$(health_problem "$HEALTH_S"); then rollback "after the activation $problem"; fi
  settle
  set_state awaiting-confirmation
  wait_confirmation
  if problem=$(health_problem "$HEALTH_S"); then rollback "while waiting for confirmation $problem"; fi
  commit
}

# The unit stopped (killed, OOM, systemctl stop) before the transaction ended:
# nothing may be left half-done. Runs as the unit's ExecStopPost.
recover() {
  st=$(state_of)
  is_final "$st" && exit 0
  exec >>"$DIR/log" 2>&1
  exec 8>>"$BASE/lock"
  flock -w 30 8 || { log "recover: the deploy lock is held by someone else; not touching the system"; exit 1; }
  # shellcheck disable=SC2034  # MODE is part of the saved parameters
  read -r NEW MODE ACT_S HEALTH_S < "$DIR/params" 2>/dev/null || { set_reason "the activation unit stopped before it began"; set_state failed; exit 1; }
  PREV=$(cat "$DIR/previous")
  log "the activation unit stopped in state $st: recovering"
  case $st in
    starting) set_reason "the activation unit stopped before it began"; set_state failed; exit 1 ;;
    committing) restore_profile "$(cat "$DIR/old-generation" 2>/dev/null)" "$ACT_S" ;;
  esac
  if [ "$MODE" = boot ]; then set_reason "the activation unit was stopped while writing the boot entry; it was put back"; set_state failed; exit 1; fi
  rollback "the activation unit was stopped before the deploy was confirmed (state $st)"
}

# ---------------------------------------------------------------- deployer-facing commands
watch() {  # OFFSET [MAX_S]
  off=$1 max=${2:-30} i=0
  while :; do
    st=$(state_of)          # read the state before the log: what led to it is printed first
    size=$(stat -c %s "$DIR/log" 2>/dev/null || echo 0)
    if [ "$size" -gt "$off" ]; then tail -c +"$((off + 1))" "$DIR/log" | head -c "$((size - off))"; off=$size; fi
    case $st in
      awaiting-confirmation | activated | rolled-back | rollback-failed | failed) break ;;
    esac
    [ "$i" -ge "$((max * 5))" ] && break
    sleep 0.2; i=$((i + 1))
  done
  echo; print_state "$st"  # the state read before the last of the log was printed
}

confirm() {
  st=$(state_of)
  if [ "$st" != awaiting-confirmation ]; then print_state; exit 1; fi
  : > "$DIR/confirm"
  while ! is_final "$(state_of)"; do sleep 0.2; done
  print_state
}

case $cmd in
  run) shift 2; run "$ID" "$@" ;;
  watch)
    # right after systemd-run returns, a slow host may not have run the agent's first line yet
    i=0; while [ ! -d "$DIR" ] && [ "$i" -lt 100 ]; do sleep 0.2; i=$((i + 1)); done
    [ -d "$DIR" ] || die "no deploy $ID on this host"
    watch "${3:-0}" "${4:-30}" ;;
  confirm) [ -d "$DIR" ] || die "no deploy $ID on this host"; confirm ;;
  abort) [ -d "$DIR" ] || die "no deploy $ID on this host"; : > "$DIR/abort"; print_state ;;
  status) print_state ;;
  recover) [ -d "$DIR" ] || exit 0; recover ;;
  *) die "unknown command '$cmd'" ;;
esac
