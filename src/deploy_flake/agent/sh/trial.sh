# ---------------------------------------------------------------- boot trial (--reboot)
# A reboot that cannot strand the host: the new system gets a boot entry beside the old
# one, the old stays the boot loader's default, and the new one is booted ONCE
# (systemd-boot's one-shot entry, the EFI variable LoaderEntryOneShot). Only when it came up,
# healthy, and a new login confirmed it does `trial-commit` make it the default. A guard
# unit that outlives the reboot watches the trial boot: it lives in
# /etc/systemd/system.control (NixOS owns /etc/systemd/system, and /run is gone at boot),
# runs this script from TRIAL (persistent) with the old system's shell and tools, and
#   - in the trial boot, reboots into the old default unless confirmed within the window;
#   - in any other boot (the new system panicked or hung, the host's reset or the guard's
#     reboot brought back the old default), puts the profile and the entries back and
#     records why: the trial ended rolled back.
# The trial's record: TRIAL/state (staged booted returning committed rolled-back failed),
# TRIAL/reason, TRIAL/log, and what `stage_trial` noted (id new prev old-generation
# new-generation entry window boot-s).
ONESHOT_VAR=/sys/firmware/efi/efivars/LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
TRIAL_UNIT=deploy-flake-boot-trial.service
TRIAL_UNIT_DIR=/etc/systemd/system.control

boot_loader() {  # what boots this host: systemd-boot (with EFI variables), grub or none
  if bootctl is-installed >/dev/null 2>&1 && [ -d "${ONESHOT_VAR%/*}" ]; then echo systemd-boot
  elif [ -e /boot/grub/grub.cfg ]; then echo grub
  else echo none
  fi
}
boot_path() { p=$(bootctl --print-boot-path 2>/dev/null) && [ -n "$p" ] && echo "$p" || echo /boot; }
esp_path() { p=$(bootctl --print-esp-path 2>/dev/null) && [ -n "$p" ] && echo "$p" || echo /boot; }
entry_of() {  # GENERATION-LINK [SPECIALISATION]: its systemd-boot entry id (systemd-boot-builder's names)
  n=${1#system-}; n=${n%-link}
  echo "nixos-generation-$n${2:+-specialisation-$2}.conf"
}
loader_default() {  # loader.conf's default entry
  sed -n 's/^default[[:space:]]\{1,\}//p' "$(esp_path)/loader/loader.conf" 2>/dev/null | tail -n 1
}
oneshot_entry() {  # the pending one-shot entry (efivarfs: 4 bytes of attributes, then UTF-16LE)
  [ -r "$ONESHOT_VAR" ] || return 0
  tail -c +5 "$ONESHOT_VAR" | tr -d '\000'
}

# Before anything changes (run): why the boot step could not do what the deploy needs of it,
# printed; false when nothing known stands against it. With BOOT_ONCE (--reboot), a boot
# loader with a one-shot entry; on systemd-boot, a rollback's generation with an entry (only
# the newest configurationLimit generations get one), and room on the boot partition for
# what it copies there: NEW's kernel and initrd (<store dir>-<file>.efi under EFI/nixos, as
# systemd-boot-builder.py names them; a copy that is there already costs nothing).
boot_problem() {
  loader=$(boot_loader)
  if [ "$BOOT_ONCE" = 1 ] && [ "$loader" != systemd-boot ]; then
    echo "--reboot boots the new system once before making it the default, and this host's boot loader ($loader) has no one-shot entry deploy-flake can use (systemd-boot with EFI variables): nothing was changed; --reboot-unverified makes it the default first, then reboots (a new system that does not boot leaves the host down)"
    return 0
  fi
  [ "$loader" = systemd-boot ] || return 1
  bp=$(boot_path)
  if [ "$BOOT_ONCE" = 1 ]; then
    for e in "$bp"/loader/entries/*+*.conf; do
      [ -e "$e" ] || continue
      echo "--reboot boots the new system once before making it the default, and this host's systemd-boot counts boot attempts (entries named like ${e##*/}: boot.loader.systemd-boot.bootCounting), which deploy-flake's one-time boot does not use yet: nothing was changed; --reboot-unverified makes it the default first, then reboots"
      return 0
    done
  fi
  if [ -n "$GENERATION" ]; then
    e=$(entry_of "system-$GENERATION-link")
    [ -e "$bp/loader/entries/$e" ] && return 1
    echo "generation $GENERATION has no boot entry ($e: systemd-boot keeps entries for the newest generations only, boot.loader.systemd-boot.configurationLimit), so its boot step could not make it the default: nothing was changed"
    return 0
  fi
  boot_room "$NEW"
  is_uint "$free" || return 1
  margin=$((need / 10)); [ "$margin" -ge 1024 ] || margin=1024  # KiB
  [ $((need + margin)) -gt "$free" ] || return 1
  echo "no space on /boot: $((free / 1024)) MiB free, and the new system's kernel and initrd need $(((need + 1023) / 1024)) MiB there (and a margin of $(((margin + 1023) / 1024)) MiB): nothing was changed. Free it by removing old system generations (nix-env -p $PROFILE --delete-generations +3) and writing the entries again (switch-to-configuration boot)"
  return 0
}

boot_free_kib() { df -P -k "$(boot_path)" 2>/dev/null | awk 'NR == 2 { print $4 }'; }

boot_room() {  # TOPLEVEL: sets free (KiB on the boot partition, "" unknown) and need (KiB)
  bp=$(boot_path)
  free=$(boot_free_kib)
  need=0
  for f in kernel initrd; do
    src=$(readlink -f "$1/$f" 2>/dev/null) || continue
    [ -f "$src" ] || continue
    rel=${src#/nix/store/}
    case $rel in */*) efi="${rel%%/*}-${src##*/}.efi" ;; *) efi="$rel.efi" ;; esac
    [ -e "$bp/EFI/nixos/$efi" ] || need=$((need + ($(stat -c %s "$src") + 1023) / 1024))
  done
}

# With BOOT_ONCE: say so when the new system cannot reset itself after a kernel panic or hang
# (no panic=N on its kernel command line, no runtime watchdog): a new system that hangs at
# boot would then stay down until someone resets the host.
note_resets() {
  resets_itself "$(active_system)" && return 0
  log "warning: the new system does not reset itself after a kernel panic or hang (no panic= on its kernel command line, no watchdog): if it hangs at boot, the host stays down until someone resets it; set boot.kernelParams = [ \"panic=30\" ] (and systemd.watchdog.runtimeTime)"
}

# TOPLEVEL resets the host by itself after a kernel panic (panic=N, N > 0, on its kernel
# command line) or a hang (systemd's runtime watchdog, RuntimeWatchdogSec in its system.conf).
# Sets panic and watchdog (the values found, "" when none).
resets_itself() {  # TOPLEVEL
  panic=$(tr ' ' '\n' < "$1/kernel-params" 2>/dev/null | sed -n 's/^panic=//p' | tail -n 1)
  watchdog=$(sed -n 's/^[[:space:]]*RuntimeWatchdogSec=[[:space:]]*//p' "$1/etc/systemd/system.conf" 2>/dev/null | tail -n 1)
  case ${panic:-0} in 0) ;; *) return 0 ;; esac
  case ${watchdog:-off} in 0 | off | infinity) return 1 ;; esac
}

tlog() { echo "[deploy-flake] $(date -u +%FT%TZ) $*" >> "$TRIAL/log"; }
trial_state() { cat "$TRIAL/state" 2>/dev/null || echo none; }
set_trial() {  # STATE [REASON]
  [ $# -ge 2 ] && printf '%s\n' "$2" > "$TRIAL/reason"
  printf '%s\n' "$1" > "$TRIAL/state.tmp" && mv -f "$TRIAL/state.tmp" "$TRIAL/state"
  tlog "trial: $1${2:+: $2}"
}
trial_pending() {  # a trial that has not ended: prints its deploy id
  case $(trial_state) in staged | booted | returning) cat "$TRIAL/id" 2>/dev/null || echo unknown ;; *) return 1 ;; esac
}
print_trial() {
  st=$(trial_state)
  booted=$(readlink -f /run/booted-system 2>/dev/null)
  reason=$(head -n 1 "$TRIAL/reason" 2>/dev/null | tr '\t' ' ')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$TRIAL_TAG" "$st" "$(cat "$TRIAL/id" 2>/dev/null)" \
    "$(cat "$TRIAL/active" 2>/dev/null)" "$booted" "$reason"
}

arm_trial_guard() {  # the unit, enabled for the next boots, with the old system's shell
  mkdir -p "$TRIAL_UNIT_DIR/multi-user.target.wants" || return 1
  cat > "$TRIAL_UNIT_DIR/$TRIAL_UNIT.tmp" <<EOF || return 1
[Unit]
Description=deploy-flake: boots the old default again unless the new system is confirmed
DefaultDependencies=no
After=local-fs.target
ConditionPathExists=$TRIAL/state
[Service]
Type=exec
ExecStart=$AGENT_SH $TRIAL/agent.sh boot-guard $(cat "$TRIAL/id")
EOF
  mv -f "$TRIAL_UNIT_DIR/$TRIAL_UNIT.tmp" "$TRIAL_UNIT_DIR/$TRIAL_UNIT" &&
    ln -sfn "../$TRIAL_UNIT" "$TRIAL_UNIT_DIR/multi-user.target.wants/$TRIAL_UNIT"
}
disarm_trial_guard() {
  rm -f "$TRIAL_UNIT_DIR/multi-user.target.wants/$TRIAL_UNIT" "$TRIAL_UNIT_DIR/$TRIAL_UNIT"
  rmdir "$TRIAL_UNIT_DIR/multi-user.target.wants" "$TRIAL_UNIT_DIR" 2>/dev/null || :
  systemctl daemon-reload 2>/dev/null || :
}

# At commit, instead of NEW's boot step: a generation for NEW, entries written by the
# profile's old system (so its default stays), the guard, then the one-shot entry.
# Undone (and the transaction rolled back) if any step fails.
stage_trial() {
  old_gen=$1
  fail_trial() {
    why="$1; nothing of the verified reboot was left"
    bootctl set-oneshot "" >/dev/null 2>&1 || :
    disarm_trial_guard; rm -rf "$TRIAL"
    restore_profile || why="$why; $RESTORE_PROBLEM"
    [ "$MODE" = test ] && rollback "$why"
    conclude_unchanged "$why"
  }
  if [ "$(boot_loader)" != systemd-boot ]; then
    fail_trial "the host's boot loader ($(boot_loader)) has no one-shot entry for a verified reboot"
  fi
  { rm -rf "$TRIAL" && mkdir -p "$TRIAL" && chmod 0700 "$TRIAL"; } || fail_trial "cannot create $TRIAL"
  added=""
  if [ -n "$GENERATION" ]; then  # a rollback: the generation is there, and maybe its entry
    new_gen=system-$GENERATION-link
  else
    highest_generation > "$DIR/highest-generation"
    timeout -k "$KILL_GRACE_S" "$PROFILE_SET_S" nix-env -p "$PROFILE" --set "$NEW" 8>&-
    rc=$?
    new_gen=$(profile_generation)
    if [ "$new_gen" != "$old_gen" ]; then printf '%s\n' "$new_gen" > "$DIR/new-generation"; added=1; fi
    if [ "$rc" -ne 0 ] || [ "$(readlink -f "$PROFILE")" != "$NEW" ]; then
      fail_trial "could not add a profile generation for the new system (nix-env exit $rc)"
    fi
    # the profile back on the old generation: its boot step keeps the old default, and
    # writes an entry for every generation, the new one's too
    { ln -sfn "$old_gen" "$PROFILE.tmp" && mv -fT "$PROFILE.tmp" "$PROFILE"; } ||
      fail_trial "could not put $PROFILE back to $old_gen"
  fi
  : > "$DIR/$BOOT_ENTRY_MARK"
  await_other_switch
  if ! timeout -k "$KILL_GRACE_S" "$BOOT_S" "$PROFILE/bin/switch-to-configuration" boot 8>&-; then
    fail_trial "writing the boot entries (with the old default) failed"
  fi
  entry=$(entry_of "$new_gen" "$SPECIALISATION")
  [ -e "$(boot_path)/loader/entries/$entry" ] ||
    fail_trial "the boot loader has no entry $entry for $new_gen (only the newest generations get one: boot.loader.systemd-boot.configurationLimit)"
  def=$(loader_default)
  [ "$def" != "$entry" ] || fail_trial "the boot loader's default is the new entry $entry, not the old one"
  for kv in "id=$ID" "new=$NEW" "active=$(active_system)" "default-entry=$(entry_of "$new_gen")" "prev=$PREV" "old-generation=$old_gen" "new-generation=$new_gen" \
      "entry=$entry" "window=$TRIAL_WINDOW_S" "boot-s=$BOOT_S" "old-default=$def" \
      "flake=$(param FLAKE)" "holder=$HOLDER" "added=$added"; do
    printf '%s\n' "${kv#*=}" > "$TRIAL/${kv%%=*}" || fail_trial "cannot write $TRIAL"
  done
  cp "$AGENT" "$TRIAL/agent.sh" || fail_trial "cannot copy the agent to $TRIAL"
  set_trial staged
  arm_trial_guard || fail_trial "could not install the boot guard $TRIAL_UNIT_DIR/$TRIAL_UNIT"
  if ! out=$(bootctl set-oneshot "$entry" 2>&1); then
    fail_trial "bootctl set-oneshot $entry failed: $(echo "$out" | tail -n 1)"
  fi
  [ "$(oneshot_entry)" = "$entry" ] || fail_trial "the one-shot entry reads back as '$(oneshot_entry)', not $entry"
  log "staged a verified reboot: the next boot starts $entry once; the default stays $def"
  profile_generation > "$DIR/committed-generation"
  set_state staged
}

# Back to the old generation after a trial that did not end committed: the profile, the
# entries (the new one's dropped by the old system's boot step), the new generation's link.
end_trial() {  # STATE REASON
  old=$(cat "$TRIAL/old-generation" 2>/dev/null) new=$(cat "$TRIAL/new-generation" 2>/dev/null)
  bootctl set-oneshot "" >/dev/null 2>&1 || :
  if [ -n "$old" ] && [ "$(profile_generation)" != "$old" ]; then
    ln -sfn "$old" "$PROFILE.tmp" && mv -fT "$PROFILE.tmp" "$PROFILE"
  fi
  if [ "$(cat "$TRIAL/added" 2>/dev/null)" = 1 ] && [ -n "$new" ] && [ "$new" != "$old" ] &&
      [ "$(profile_generation)" != "$new" ]; then
    rm -f "${PROFILE%/*}/$new"
  fi
  if ! timeout -k "$KILL_GRACE_S" "$(cat "$TRIAL/boot-s" 2>/dev/null || echo 120)" \
      "$PROFILE/bin/switch-to-configuration" boot; then
    tlog "writing the old boot entries again failed; the old default was never changed"
  fi
  set_trial "$1" "$2"
  disarm_trial_guard
}

trial_booted_new() { [ "$(readlink -f /run/booted-system 2>/dev/null)" = "$(cat "$TRIAL/active" 2>/dev/null)" ]; }

# The guard unit's process, at every boot while the trial is armed.
boot_guard() {
  exec 9>>"$TRIAL/lock"
  flock 9
  st=$(trial_state)
  case $st in
    staged)
      if trial_booted_new; then
        window=$(cat "$TRIAL/window" 2>/dev/null); is_uint "$window" || window=300
        set_trial booted
        flock -u 9
        tlog "the new system booted; waiting up to ${window}s for its confirmation"
        waited=0
        while [ "$waited" -lt "$window" ]; do
          [ "$(trial_state)" = booted ] || exit 0  # committed, or sent back
          sleep 1; waited=$((waited + 1))
        done
        flock 9
        [ "$(trial_state)" = booted ] || exit 0
        set_trial returning "no confirmation within ${window}s after the new system booted (did it break SSH access?)"
        flock -u 9
        systemctl reboot
        exit 0
      fi
      end_trial rolled-back "the new system did not boot: the boot loader started $(readlink -f /run/booted-system 2>/dev/null) again (its default)"
      ;;
    booted | returning)
      if trial_booted_new; then  # not back yet: the reboot was refused or did not happen
        systemctl reboot; exit 0
      fi
      end_trial rolled-back "$(head -n 1 "$TRIAL/reason" 2>/dev/null || echo "the new system was not confirmed")"
      ;;
    *) disarm_trial_guard ;;
  esac
}

# The deployer, over a new login after the trial boot: the new system is healthy.
trial_commit() {
  exec 9>>"$TRIAL/lock"
  flock 9
  st=$(trial_state)
  if [ "$st" != booted ] || ! trial_booted_new; then print_trial; return 0; fi
  new=$(cat "$TRIAL/new") new_gen=$(cat "$TRIAL/new-generation")
  if ! { ln -sfn "$new_gen" "$PROFILE.tmp" && mv -fT "$PROFILE.tmp" "$PROFILE"; }; then
    set_trial returning "could not point $PROFILE at $new_gen"; flock -u 9; systemctl reboot; print_trial; return 0
  fi
  if ! timeout -k "$KILL_GRACE_S" "$(cat "$TRIAL/boot-s")" "$new/bin/switch-to-configuration" boot 9>&-; then
    old=$(cat "$TRIAL/old-generation")
    ln -sfn "$old" "$PROFILE.tmp" && mv -fT "$PROFILE.tmp" "$PROFILE"
    set_trial returning "switch-to-configuration boot of the new system failed"
    flock -u 9; systemctl reboot; print_trial; return 0
  fi
  if [ "$(loader_default)" != "$(cat "$TRIAL/default-entry")" ]; then
    set_trial failed "after switch-to-configuration boot the boot loader's default reads '$(loader_default)', not $(cat "$TRIAL/default-entry"): the host runs the new system, and its next boot may start another; check $(esp_path)/loader/loader.conf"
    disarm_trial_guard
    print_trial; return 0
  fi
  set_trial committed ""
  disarm_trial_guard
  { mkdir -p "${LAST_DEPLOY%/*}" &&
    printf 'system=%s\nflake=%s\ntime=%s\ndeploy=%s\nby=%s\ngeneration=%s\n' "$new" \
      "$(cat "$TRIAL/flake")" "$(date -u +%FT%TZ)" "$(cat "$TRIAL/id")" "$(cat "$TRIAL/holder")" \
      "$new_gen" > "$LAST_DEPLOY.tmp" &&
    chmod 0644 "$LAST_DEPLOY.tmp" && mv -f "$LAST_DEPLOY.tmp" "$LAST_DEPLOY"; } || :
  print_trial
}

# The deployer found the trial boot unhealthy: back to the old default now.
trial_reject() {  # REASON
  exec 9>>"$TRIAL/lock"
  flock 9
  if [ "$(trial_state)" = booted ] && trial_booted_new; then
    set_trial returning "$1"
    flock -u 9
    print_trial
    systemctl reboot
    return 0
  fi
  print_trial
}

# For the deployer (plan, status), changing nothing: what boots this host, and for TOPLEVEL
# (a new system, or a rollback's GENERATION) whether it resets itself after a panic or hang
# and what a deploy's host-side check would say of its boot (BOOT_ONCE: with --reboot).
boot_info() {  # [TOPLEVEL [BOOT_ONCE [GENERATION]]]
  echo "loader=$(boot_loader)"
  echo "default=$(loader_default)"
  echo "oneshot=$(oneshot_entry)"
  echo "trial=$(trial_state)"
  for e in "$(boot_path)"/loader/entries/*.conf; do [ -e "$e" ] && echo "entry=${e##*/}"; done
  [ -n "${1:-}" ] || return 0
  NEW=$1 BOOT_ONCE=${2:-0} GENERATION=${3:-}
  boot_room "$NEW"
  echo "boot_free_kib=$free"
  echo "boot_needs_kib=$need"
  if resets_itself "$NEW"; then echo "resets=yes"; else echo "resets=no"; fi
  echo "panic=$panic"
  echo "watchdog=$watchdog"
  if problem=$(boot_problem); then echo "problem=$problem"; fi
}
