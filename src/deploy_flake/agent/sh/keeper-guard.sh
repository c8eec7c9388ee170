# ---------------------------------------------------------------- who carries it on
# The keeper (the transaction's unit, its guard, or nothing) and the guard itself.
#
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
# The guard's timer fires at the transaction's deadline (GUARD_S, from the deployer: the
# end of the confirmation window, or of the boot entry's writing, and GUARD_MARGIN_S);
# the unit's death (OnFailure=) starts its service earlier.
arm_guard() {  # prints why it could not; false when armed
  systemd-run --unit="$GUARD" --description="deploy-flake guard $ID" \
    --on-active="$GUARD_S" --timer-property=AccuracySec=1s --timer-property=RemainAfterElapse=no \
    --property=CollectMode=inactive-or-failed --service-type=exec --property=SuccessExitStatus=1 \
    -- "$AGENT_SH" "$AGENT" guard "$ID" 8>&- 2>&1 >/dev/null || return 0
  return 1
}
disarm_guard() {  # and a killed unit's failed state goes: the transaction is over
  systemctl stop "$GUARD.timer" 8>&- >/dev/null 2>&1
  systemctl reset-failed "deploy-flake-$ID.service" "$GUARD.service" 8>&- >/dev/null 2>&1 || :
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
    # pending, starting: an earlier transaction may be finished first (within its stop timeout)
    *) b=$((LOCK_WAIT_S + RECOVERY_S + STOP_MARGIN_S)) ;;
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
  read_state; is_final "$STATE" && exit 0
  exec >>"$DIR/log" 2>&1
  [ -e "$DIR/killed-in" ] || printf '%s\n' "$STATE" > "$DIR/killed-in"
  log "guard: the activation unit is gone and the transaction is $STATE: recovering"
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
          -- "$AGENT_SH" "$AGENT" guard "$ID" 8>&- >/dev/null 2>&1 ||
        log "starting the guard failed"
      poll 5 "$FAST" keeper_is_not none || :
    fi
  fi
  watch "$1" "$2"
}
keeper_is_not() { keeper; [ "$KEEPER" != "$1" ]; }
