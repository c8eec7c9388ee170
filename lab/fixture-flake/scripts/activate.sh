# shellcheck shell=sh disable=SC2154  # systemConfig is set by the builder
# Fixture <toplevel>/activate, like NixOS's: points /etc/static and
# /run/current-system at this system. $systemConfig and PATH (the tools' package, never
# /usr/bin nor the system's sw/bin: NixOS's activation script sets its own) are set by the builder.
echo "fixture: setting up /etc/static and /run/current-system..." >&2
mkdir -p /etc /run
ln -sfn "$systemConfig/etc" /etc/static.tmp && mv -T /etc/static.tmp /etc/static
ln -sfn "$systemConfig" /run/current-system.tmp && mv -T /run/current-system.tmp /run/current-system
# NixOS's binsh snippet: /bin/sh is this system's bash (run as sh), re-pointed by every activation
[ -d /bin ] || mkdir -m 0755 /bin
ln -sfn "$systemConfig/sw/bin/sh" /bin/.sh.tmp && mv -T /bin/.sh.tmp /bin/sh
# NixOS's security wrappers: sudo is run from /run/wrappers/bin (no sudo in sw/bin)
mkdir -p /run/wrappers/bin
[ -e /run/wrappers/bin/sudo ] || ln -sfn /usr/bin/sudo /run/wrappers/bin/sudo
# where the shims of a toolShims system record which system's tool ran (any user)
[ -d /run/fixture-tools ] || mkdir -m 1777 /run/fixture-tools
# sudo rules named fixture-* belong to the configuration (as NixOS's security.sudo does)
rm -f /etc/sudoers.d/fixture-*
# ---- per-configuration activation snippets follow ----
