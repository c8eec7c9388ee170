# shellcheck shell=sh disable=SC2154  # systemConfig is set by the builder
# Fixture <toplevel>/activate, like NixOS's: points /etc/static and
# /run/current-system at this system. $systemConfig is set by the builder.
echo "fixture: setting up /etc/static and /run/current-system..." >&2
mkdir -p /etc /run
ln -sfn "$systemConfig/etc" /etc/static.tmp && mv -T /etc/static.tmp /etc/static
ln -sfn "$systemConfig" /run/current-system.tmp && mv -T /run/current-system.tmp /run/current-system
# The /etc entries the lab's configurations own, as NixOS's setup-etc.pl serves them:
# sudoers and the keys are copies (their etc entries have a mode), sshd_config a link
# into /etc/static; an entry the new system lacks goes (setup-etc.pl's /etc/.clean).
etc_copy() {  # PATH MODE: /etc/PATH becomes a copy of the system's, with MODE
  cp "$systemConfig/etc/$1" "/etc/$1.tmp" && chmod "$2" "/etc/$1.tmp" && mv -f "/etc/$1.tmp" "/etc/$1"
}
etc_copy sudoers 0440
mkdir -p /etc/ssh/authorized_keys.d
if [ -e "$systemConfig/etc/ssh/sshd_config" ]; then
  ln -sfn /etc/static/ssh/sshd_config /etc/ssh/sshd_config.tmp && mv -T /etc/ssh/sshd_config.tmp /etc/ssh/sshd_config
else
  rm -f /etc/ssh/sshd_config
fi
for f in /etc/ssh/authorized_keys.d/*; do
  if [ -e "$f" ] && [ ! -e "$systemConfig/etc/ssh/authorized_keys.d/${f##*/}" ]; then rm -f "$f"; fi
done
for f in "$systemConfig"/etc/ssh/authorized_keys.d/*; do
  if [ -e "$f" ]; then etc_copy "ssh/authorized_keys.d/${f##*/}" 0444; fi
done
# group wheel's members, as update-users-groups.pl writes /etc/group from users.users
gpasswd -M "$(cat "$systemConfig/etc/fixture-nixos/wheel")" wheel >/dev/null
# ---- per-configuration activation snippets follow ----
