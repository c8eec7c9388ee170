# ---------------------------------------------------------------- transaction
# Its steps, its rollback, `run` (the unit's main process) and `recover` (a killed one's).
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
  if [ "$1" = 100 ] && printf '%s\n' "$out" | grep -q "won't take effect until you reboot"; then
    echo "the new system's init is incompatible with the running one's: switch-to-configuration test refused it (\"won't take effect until you reboot\"); deploy it with --test=skip --reboot=if-needed"
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
      set_reason "$1; $why, twice${RESTORE_PROBLEM:+; $RESTORE_PROBLEM}"
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
    "$AGENT_SH" "$AGENT" finish "${d##*/}" >> "$d/log" 2>&1  # inherits the lock (fd 8)
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
  forget_old_roots

  PREV=$(readlink -f /run/current-system 2>/dev/null || true)
  use_tools_of "$PREV"
  printf '%s\n' "$PREV" > "$DIR/previous"
  profile_generation > "$DIR/old-generation"  # the generation this transaction replaces
  if [ -n "$EXPECT" ] && [ "$(profile_generation)" != "$EXPECT" ]; then
    conclude_unchanged "the system profile moved on since deploy-flake looked at it (it was $EXPECT; $(changed_profile)): nothing was changed, so that change is kept"
  fi
  [ -x "$NEW/bin/switch-to-configuration" ] || conclude_unchanged "$NEW has no bin/switch-to-configuration"
  if problem=$(boot_problem); then conclude_unchanged "$problem"; fi
  [ "$BOOT_ONCE" = 1 ] && note_resets
  if busy=$(other_switch); then conclude_unchanged "another switch is in progress on this host: $busy"; fi
  if t=$(trial_pending); then
    conclude_unchanged "a verified reboot (deploy $t) has not ended on this host: $(print_trial | cut -f 2,6 | tr '\t' ' ')"
  fi
  if when=$(shutdown_scheduled); then
    conclude_unchanged "$when: a deploy now would be cut short by it; wait until the host is back, or cancel it with \`shutdown -c\`"
  fi
  snapshot_units

  if [ "$MODE" = boot ]; then commit; exit 0; fi
  if [ -z "$PREV" ] || [ ! -x "$PREV/bin/switch-to-configuration" ]; then
    conclude_unchanged "no previous system (/run/current-system) to return to; deploy with --test=skip and reboot"
  fi

  set_state activating
  active=$(active_system)
  log "activating $active${SPECIALISATION:+ (specialisation $SPECIALISATION of $NEW)} (previous: $PREV)"
  log_from=$(log_size)
  activate "$active"; rc=$?
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
      if [ "$(cat "$TRIAL/id" 2>/dev/null)" = "$ID" ]; then  # a trial half staged
        bootctl set-oneshot "" >/dev/null 2>&1 || :
        disarm_trial_guard; rm -rf "$TRIAL"
      fi
      restore_profile ;;
  esac
  if [ "$MODE" = boot ]; then
    conclude_unchanged "the activation unit was stopped while writing the boot entry; it was put back"
  fi
  rollback "the activation unit was stopped before the deploy was confirmed (state $st)"
}
