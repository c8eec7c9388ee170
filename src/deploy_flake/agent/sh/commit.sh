# ---------------------------------------------------------------- commit
# The profile generation and the boot entry, putting them back, and the deploy's record.
profile_generation() { readlink "$PROFILE" 2>/dev/null || true; }
highest_generation() {  # the profile's highest generation number, 0 without one
  hi=0
  for l in "${PROFILE%/*}"/system-*-link; do
    n=${l##*/system-}; n=${n%-link}
    if is_uint "$n" && [ "$n" -gt "$hi" ]; then hi=$n; fi
  done
  echo "$hi"
}

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
  if ! NIXOS_INSTALL_BOOTLOADER=$INSTALL_BOOTLOADER timeout -k "$KILL_GRACE_S" "$BOOT_S" \
      "$PROFILE/bin/switch-to-configuration" boot 8>&-; then
    RESTORE_PROBLEM="writing the previous boot entry again failed: the boot loader may still default to $NEW; run \`$PROFILE/bin/switch-to-configuration boot\` on the host"
    return 1
  fi
  rm -f "$DIR/$BOOT_ENTRY_MARK"
  if [ -n "$new" ] && [ "$new" != "$old" ]; then rm -f "${PROFILE%/*}/$new"; fi
  # a generation nix-env made just before the transaction was killed, before it was noted
  # in new-generation: one above the highest there was, of NEW
  before=$(cat "$DIR/highest-generation" 2>/dev/null)
  if is_uint "$before"; then
    for l in "${PROFILE%/*}"/system-*-link; do
      n=${l##*/system-}; n=${n%-link}
      if is_uint "$n" && [ "$n" -gt "$before" ] && [ "system-$n-link" != "$old" ] \
          && [ "$(readlink -f "$l")" = "$NEW" ]; then
        rm -f "$l"
      fi
    done
  fi
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
  if [ "$MODE" = test ] && [ "$(readlink -f /run/current-system)" != "$(active_system)" ]; then
    rollback "another switch replaced the running system during the deploy (it runs $(readlink -f /run/current-system))"
  fi
  old_gen=$(cat "$DIR/old-generation" 2>/dev/null)
  if [ "$BOOT_ONCE" = 1 ]; then stage_trial "$old_gen"; return 0; fi  # --reboot: boot it once first
  if [ -n "$GENERATION" ]; then  # a rollback: back to a generation the profile has
    timeout -k "$KILL_GRACE_S" "$PROFILE_SET_S" nix-env -p "$PROFILE" --switch-generation "$GENERATION" 8>&-
  else
    highest_generation > "$DIR/highest-generation"  # what is above it and NEW is ours
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
  : > "$DIR/$BOOT_ENTRY_MARK"  # from here on the boot loader may name NEW, until restore_profile
  # --install-bootloader: the boot loader itself is installed again (NixOS's hooks read it)
  boot_from=$(log_size)
  if ! NIXOS_INSTALL_BOOTLOADER=$INSTALL_BOOTLOADER timeout -k "$KILL_GRACE_S" "$BOOT_S" \
      "$NEW/bin/switch-to-configuration" boot 8>&-; then
    log "the boot step failed: putting the system profile and the boot entry back"
    failed="switch-to-configuration boot failed"
    if tail -c +"$((boot_from + 1))" "$DIR/log" 2>/dev/null | grep -q "No space left on device"; then
      failed="$failed: no space on /boot"
    fi
    why="$failed; the profile and boot entry were put back"
    restore_profile || why=$failed
    [ "$MODE" = test ] && rollback "$why"
    conclude_unchanged "$why"
  fi
  # what the boot loader starts next, read back where it can be (systemd-boot's loader.conf)
  if [ "$(boot_loader)" = systemd-boot ] && [ "$(loader_default)" != "$(entry_of "$(profile_generation)")" ]; then
    why="after switch-to-configuration boot the boot loader's default reads '$(loader_default)', not $(entry_of "$(profile_generation)"); the profile and boot entry were put back"
    restore_profile || why="$why; $RESTORE_PROBLEM"
    [ "$MODE" = test ] && rollback "$why"
    conclude_unchanged "$why"
  fi
  profile_generation > "$DIR/committed-generation"  # where this transaction left the profile
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
