# shellcheck shell=sh
# Fixture /etc/set-environment, as NixOS's (nixos/modules/config/shells-environment.nix,
# read by /etc/profile and, for ssh commands, by bash's /etc/bash.bashrc): the PATH of
# every login, the security wrappers (sudo) first, then the Nix profiles, then the system's
# own sw/bin. Nothing of /usr: on NixOS /usr/bin holds only env.
if [ -z "${__NIXOS_SET_ENVIRONMENT_DONE:-}" ]; then
  __NIXOS_SET_ENVIRONMENT_DONE=1
  export __NIXOS_SET_ENVIRONMENT_DONE
  PATH="/run/wrappers/bin:$HOME/.nix-profile/bin:/nix/profile/bin:$HOME/.local/state/nix/profile/bin:/etc/profiles/per-user/$USER/bin:/nix/var/nix/profiles/default/bin:/run/current-system/sw/bin"
  export PATH
fi
