# Fixture switch-to-configuration ($out, $failBoot and $bootDelay are set by the builder).
# Imitates NixOS's: the verbs switch|boot|test|dry-activate, its messages on
# stderr and its exit codes: 1 usage, lock busy or boot loader failure,
# 2 activation script failed, 3 daemon-reload failed, 4 units failed.
# Extra arguments after the verb are ignored.
#
# Units: the lab image's systemd generator serves the units of
# /run/current-system (as NixOS's /etc/systemd/system does), so activating
# is: stop the units that go away, run <toplevel>/activate (which moves
# /run/current-system), daemon-reload, restart changed units, start new ones,
# then start multi-user.target, which brings back wanted units that are not
# running (NixOS does this by restarting active targets).
# Boot loader: boot and switch write /boot/fixture-nixos/default, which the
# image's generator activates at the next boot (NixOS's stage 2).
set -u
action="${1:-}"
STATE=/run/fixture-nixos
BOOT_DIR=/boot/fixture-nixos
PROFILE_DIR=/nix/var/nix/profiles

case "$action" in
  switch|boot|test|dry-activate) ;;
  *)
    cat >&2 <<USAGE
Usage: $0 [switch|boot|test|dry-activate]

switch:       make the configuration the boot default and activate now
boot:         make the configuration the boot default
test:         activate the configuration, but don't make it the boot default
dry-activate: show what would be done if this configuration were activated
USAGE
    exit 1 ;;
esac

mkdir -p "$STATE"
export NIXOS_ACTION="$action"
echo "$(date +%s) $action $out" >> "$STATE/history"

# Lab fault injection: /run/fixture-faults/VERB holding "TOPLEVEL COUNT" makes
# that system's VERB fail COUNT more times (a rollback or a boot entry restore
# that fails, on demand).
fault=/run/fixture-faults/$action
if [ -f "$fault" ]; then
  read -r fault_system fault_count < "$fault" || true
  if [ "$fault_system" = "$out" ] && [ "${fault_count:-0}" -gt 0 ]; then
    echo "$fault_system $((fault_count - 1))" > "$fault"
    echo "fixture: injected failure of switch-to-configuration $action" >&2
    exit 1
  fi
fi

# Like NixOS (switch-to-configuration-ng): one switch at a time, under
# /run/nixos/switch-to-configuration.lock. Children do not inherit the lock.
mkdir -p /run/nixos
exec 9>>/run/nixos/switch-to-configuration.lock
if ! flock -n 9; then
  echo "Could not acquire lock" >&2
  exit 1
fi

if [ "$action" = switch ] || [ "$action" = boot ]; then
  echo "updating fixture bootloader entries..." >&2
  [ "${bootDelay:-0}" -gt 0 ] && sleep "$bootDelay"
  if [ -n "$failBoot" ]; then
    echo "fixture: cannot write $BOOT_DIR: No space left on device" >&2
    echo "Failed to install bootloader" >&2
    exit 1
  fi
  mkdir -p "$BOOT_DIR/entries" || exit 1
  rm -f "$BOOT_DIR"/entries/nixos-generation-*.conf
  for g in "$PROFILE_DIR"/system-*-link; do
    [ -e "$g" ] || continue
    n=${g##*/system-}; n=${n%-link}
    readlink -f "$g" > "$BOOT_DIR/entries/nixos-generation-$n.conf"
  done
  printf '%s\n' "$out" > "$BOOT_DIR/default.tmp" && mv "$BOOT_DIR/default.tmp" "$BOOT_DIR/default" || exit 1
  sync 2>/dev/null || true
fi
[ "$action" = boot ] && exit 0

# ---- unit changes: old = /run/current-system, new = $out -------------------
old="$(readlink -f /run/current-system 2>/dev/null || true)"
newdir="$out/etc/systemd/system"
olddir="${old:+$old/etc/systemd/system}"
to_stop=""; to_start=""; to_restart=""
if [ -n "$olddir" ] && [ -d "$olddir" ]; then
  for f in "$olddir"/*; do
    [ -f "$f" ] || continue
    u=${f##*/}
    [ -e "$newdir/$u" ] || to_stop="$to_stop $u"
  done
fi
for f in "$newdir"/*; do
  [ -f "$f" ] || continue
  u=${f##*/}
  if [ -n "$olddir" ] && [ -e "$olddir/$u" ]; then
    [ "$(readlink -f "$olddir/$u")" = "$(readlink -f "$f")" ] || to_restart="$to_restart $u"
  elif [ -e "$newdir/multi-user.target.wants/$u" ]; then
    to_start="$to_start $u"
  fi
done
list() { echo "$*" | sed 's/^ *//; s/ \+/, /g'; }

if [ "$action" = dry-activate ]; then
  [ -n "$to_stop" ] && echo "would stop the following units: $(list $to_stop)" >&2
  [ -n "$to_restart" ] && echo "would restart the following units: $(list $to_restart)" >&2
  [ -n "$to_start" ] && echo "would start the following units: $(list $to_start)" >&2
  echo "would activate the configuration $out" >&2
  exit 0
fi

res=0
if [ -n "$to_stop" ]; then
  echo "stopping the following units: $(list $to_stop)" >&2
  systemctl stop -- $to_stop 9>&-
fi

echo "activating the configuration..." >&2
"$out/activate" "$out" 9>&- || res=2

systemctl reset-failed 9>&- >/dev/null 2>&1 || true
echo "reloading the systemd daemon..." >&2
systemctl daemon-reload 9>&- || res=3

if [ -n "$to_restart" ]; then
  echo "restarting the following units: $(list $to_restart)" >&2
  systemctl restart -- $to_restart 9>&- || res=4
fi
if [ -n "$to_start" ]; then
  echo "starting the following units: $(list $to_start)" >&2
  systemctl start -- $to_start 9>&- || res=4
fi
systemctl start multi-user.target 9>&- || res=4

failed=""
for f in "$newdir"/*; do
  [ -f "$f" ] || continue
  u=${f##*/}
  if systemctl is-failed --quiet -- "$u" 9>&- 2>/dev/null; then failed="$failed $u"; fi
done
if [ -n "$failed" ]; then
  echo "warning: the following units failed: $(list $failed)" >&2
  for u in $failed; do systemctl status --no-pager -- "$u" 9>&- >&2 2>/dev/null || true; done
  res=4
fi

if [ "$res" -eq 0 ]; then
  echo "finished switching to system configuration $out" >&2
else
  echo "warning: error(s) occurred while switching to the new configuration" >&2
fi
exit "$res"
