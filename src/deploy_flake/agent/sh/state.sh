# ---------------------------------------------------------------- state
# The transaction's state, its status line and its log; its settings.
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
is_final() { case $1 in activated | staged | rolled-back | failed | rollback-failed | restore-failed) return 0 ;; esac; return 1; }

print_status() {  # [PHASE]
  st=${1:-$(state_of)}
  prev=$(cat "$DIR/previous" 2>/dev/null)
  new=$(param NEW)
  reason=$(head -n 1 "$DIR/reason" 2>/dev/null | tr '\t' ' ')
  keeper
  killed_in="" replaced="" committed=""
  if [ -r "$DIR/killed-in" ]; then read -r killed_in < "$DIR/killed-in" || :; fi
  if [ -r "$DIR/old-generation" ]; then read -r replaced < "$DIR/old-generation" || :; fi
  if [ -r "$DIR/committed-generation" ]; then read -r committed < "$DIR/committed-generation" || :; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$STATUS_TAG" "$st" "$prev" "$new" "$KEEPER" "$killed_in" \
    "$replaced" "$committed" "$reason"
}

log() { echo "[deploy-flake] $*" >> "$DIR/log"; }
set_reason() { printf '%s\n' "$*" > "$DIR/reason"; }
set_state() {
  printf '%s\n' "$1" > "$DIR/state.tmp" && mv -f "$DIR/state.tmp" "$DIR/state"
  printf '%s%s\n' "$STATE_LINE" "$1" >> "$DIR/log"  # the line a watch looks for
  if is_final "$1"; then drop_gc_root; disarm_guard; fi
}

# The deployer's GC root for the new system (GC_ROOTS/ID.system, made by root once it was
# built) kept it from garbage collection until the transaction ended; the profile holds it
# if it was committed, and the new generation's link is kept if the boot entry may still
# name it.
drop_gc_root() {
  gc=$(param GC_ROOT)
  if [ "$gc" = "$GC_ROOTS/$ID.system" ] && [ -L "$gc" ]; then rm -f "$gc"; fi
  return 0
}
# Roots a deployer left when it lost the host before the transaction started (its own
# removal is on every other path): gone at reboot (/run), and here once a day old, unless
# their transaction is still going.
forget_old_roots() {
  find "$GC_ROOTS" -maxdepth 1 -name '*.system' -type l -mmin +"$ROOT_MAX_AGE_MIN" 2>/dev/null |
    while IFS= read -r gc; do
      id=${gc##*/}; id=${id%.system}
      read_state "$BASE/$id"; case $STATE in none | pending) rm -f "$gc" ;; *) is_final "$STATE" && rm -f "$gc" ;; esac
    done
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
  GENERATION=$(param GENERATION) RECOVERY_S=$(param RECOVERY_S) GUARD_S=$(param GUARD_S)
  SPECIALISATION=$(param SPECIALISATION)
  INSTALL_BOOTLOADER=0; [ "$(param INSTALL_BOOTLOADER)" = 1 ] && INSTALL_BOOTLOADER=1
  EXPECT=$(param EXPECT)
  BOOT_ONCE=0; [ "$(param BOOT_ONCE)" = 1 ] && BOOT_ONCE=1
  TRIAL_WINDOW_S=$(param TRIAL_WINDOW_S)
}
active_system() {  # what `test` activates: NEW, or its specialisation SPECIALISATION
  if [ -n "$SPECIALISATION" ]; then readlink -f "$NEW/specialisation/$SPECIALISATION"; else echo "$NEW"; fi
}
is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; esac; return 0; }
settings_problem() {  # prints what is wrong with the settings; false when nothing is
  [ -r "$DIR/settings" ] || { echo "no settings for deploy $ID"; return 0; }
  case $NEW in
    /nix/store/?*) case $NEW in *[!A-Za-z0-9/+._?=-]* | */../* | */..) echo "NEW is not a store path: '$NEW'"; return 0 ;; esac ;;
    *) echo "NEW is not a store path: '$NEW'"; return 0 ;;
  esac
  case $MODE in test | boot) ;; *) echo "MODE must be test or boot, not '$MODE'"; return 0 ;; esac
  for kv in "ACTIVATION_S=$ACT_S" "HEALTH_S=$HEALTH_S" "CONFIRM_S=$CONFIRM_S" "BOOT_S=$BOOT_S" \
    "RECOVERY_S=$RECOVERY_S" "GUARD_S=$GUARD_S"; do
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
  case $SPECIALISATION in */* | . | ..) echo "SPECIALISATION is not a specialisation's name: '$SPECIALISATION'"; return 0 ;; esac
  if [ -n "$SPECIALISATION" ] && [ ! -x "$NEW/specialisation/$SPECIALISATION/bin/switch-to-configuration" ]; then
    echo "$NEW has no specialisation $SPECIALISATION"; return 0
  fi
  if [ "$BOOT_ONCE" = 1 ] && ! is_uint "$TRIAL_WINDOW_S"; then
    echo "TRIAL_WINDOW_S must be a number of seconds (not '$TRIAL_WINDOW_S')"; return 0
  fi
  case $EXPECT in '' | system-*-link) ;; *) echo "EXPECT must name a generation link (system-N-link), not '$EXPECT'"; return 0 ;; esac
  case $(param GC_ROOT) in '' | "$GC_ROOTS/$ID.system") ;; *) echo "GC_ROOT is not this deploy's root ($GC_ROOTS/$ID.system)"; return 0 ;; esac
  return 1
}
