# shellcheck shell=sh disable=SC2154  # systemConfig is set by the builder
# Fixture <toplevel>/activate, like NixOS's: points /etc/static and
# /run/current-system at this system. $systemConfig is set by the builder.
echo "fixture: setting up /etc/static and /run/current-system..." >&2
mkdir -p /etc /run
ln -sfn "$systemConfig/etc" /etc/static.tmp && mv -T /etc/static.tmp /etc/static
ln -sfn "$systemConfig" /run/current-system.tmp && mv -T /run/current-system.tmp /run/current-system
# sudo rules named fixture-* belong to the configuration (as NixOS's security.sudo does)
rm -f /etc/sudoers.d/fixture-*
# ---- per-configuration activation snippets follow ----
