# ---------------------------------------------------------------- deployer-facing verbs
# start, watch, confirm, abort (status, rescue: see state.sh, keeper-guard.sh).
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
      --property="ExecStopPost=$AGENT_SH $AGENT recover $ID" \
      --property="TimeoutStopSec=$((RECOVERY_S + STOP_MARGIN_S))" \
      --property=SuccessExitStatus=1 --property="OnFailure=$GUARD.service" \
      -- "$AGENT_SH" "$AGENT" run "$ID" 2>&1); then
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
      case $line in *"$STATE_LINE"*) read_state; watch_ends "$STATE" && break ;; esac
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
