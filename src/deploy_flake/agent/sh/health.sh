# ---------------------------------------------------------------- health
# The system's health since the deploy began (failed and crash-looping units), and
# whether another switch is under way.
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
  # the loaded units whose names match (nixos-rebuild's switch unit may carry a suffix), with
  # their active state: UNIT LOAD ACTIVE SUB ...
  busy=$(set -f
    # shellcheck disable=SC2086  # a list of unit name patterns, not to be expanded as files
    systemctl list-units --all --plain --no-legend --no-pager $OTHER_SWITCHES 8>&- 2>/dev/null |
      awk '$3 ~ /^(active|activating|reloading|deactivating|refreshing)$/ { print $1 " is " $3; exit }')
  if [ -n "$busy" ]; then echo "$busy"; return 0; fi
  if [ -e "$SWITCH_LOCK" ] && ! flock -n "$SWITCH_LOCK" true 8>&-; then
    echo "another switch-to-configuration holds $SWITCH_LOCK"; return 0
  fi
  return 1
}

# system.autoUpgrade.allowReboot ends its unit with `shutdown -r +1`: a deploy started in
# that minute would be cut short by the reboot. logind records the scheduled shutdown in
# SHUTDOWN_SCHEDULED (USEC=, MODE=) until it happens or `shutdown -c` cancels it.
shutdown_scheduled() {  # prints what is scheduled and when; false when nothing is
  [ -r "$SHUTDOWN_SCHEDULED" ] || return 1
  usec="" mode=""
  while IFS='=' read -r k v || [ -n "$k" ]; do
    case $k in USEC) usec=$v ;; MODE) mode=$v ;; esac
  done < "$SHUTDOWN_SCHEDULED"
  when="an unknown time"
  if is_uint "$usec" && [ "$usec" -gt 0 ]; then
    when=$(date -u -d "@$((usec / 1000000))" +%FT%TZ 2>/dev/null) || when="an unknown time"
    now=$(date +%s)
    left=$((usec / 1000000 - now))
    [ "$left" -ge 0 ] && when="$when, in ${left}s"
  fi
  echo "a ${mode:-shutdown} is scheduled on this host for $when ($SHUTDOWN_SCHEDULED)"
}
