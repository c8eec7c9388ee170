# shellcheck shell=sh disable=SC2154  # systemConfig is set by the builder
# Fixture <toplevel>/activate, like NixOS's: points /etc/static and
# /run/current-system at this system. $systemConfig and PATH (the tools' package, never
# /usr/bin nor the system's sw/bin: NixOS's activation script sets its own) are set by the builder.
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
# NixOS's binsh snippet: /bin/sh is this system's bash (run as sh), re-pointed by every activation
[ -d /bin ] || mkdir -m 0755 /bin
ln -sfn "$systemConfig/sw/bin/sh" /bin/.sh.tmp && mv -T /bin/.sh.tmp /bin/sh
# NixOS's security wrappers: sudo is run from /run/wrappers/bin (no sudo in sw/bin)
mkdir -p /run/wrappers/bin
[ -e /run/wrappers/bin/sudo ] || ln -sfn /usr/bin/sudo /run/wrappers/bin/sudo
# where the shims of a toolShims system record which system's tool ran (any user)
[ -d /run/fixture-tools ] || mkdir -m 1777 /run/fixture-tools
# doas, and sudo-rs where the suite has it: from /run/wrappers/bin too (--elevate)
for w in doas sudo-rs; do
  if [ -e "/usr/bin/$w" ] && [ ! -e "/run/wrappers/bin/$w" ]; then ln -sfn "/usr/bin/$w" "/run/wrappers/bin/$w"; fi
done
# ---- per-configuration activation snippets follow ----
