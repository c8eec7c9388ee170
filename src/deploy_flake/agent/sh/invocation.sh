# ---------------------------------------------------------------- invocation
# The host's own paths (the agent's alone: the shared ones are in the header above),
# the verb and the deploy id from the command line, and the tools to run.
PROFILE=/nix/var/nix/profiles/system
SWITCH_LOCK=/run/nixos/switch-to-configuration.lock
# What else switches a NixOS system: the auto-upgrade, and nixos-rebuild's transient unit
# (nixos-rebuild-switch-to-configuration, with a random suffix in newer nixos-rebuild-ng).
OTHER_SWITCHES="nixos-upgrade.service nixos-rebuild-switch-to-configuration*.service"
SHUTDOWN_SCHEDULED=/run/systemd/shutdown/scheduled
KEEP_RUNS=20

die() { echo "deploy-flake-agent: $*" >&2; exit 2; }

cmd=${1:-}
[ $# -ge 2 ] || die "usage: agent start|run|recover|guard|rescue|watch|confirm|abort|status|trial-status|trial-commit|trial-reject|boot-guard|boot-info|gc ID ..."
ID=$2
case $ID in '' | .* | *[!A-Za-z0-9_.-]* | "${GC_ROOTS##*/}") die "bad deploy id '$ID'" ;; esac
DIR=$BASE/$ID
AGENT=$0
case $AGENT in /*) ;; *) die "run the agent by its absolute path" ;; esac

# Every tool from SYSTEM (the one that ran before the deploy), then NixOS's
# wrappers (sudo) and the default profile; never from a system being activated, and
# nothing of /usr (on NixOS /usr/bin holds only env). Only without a system (not NixOS)
# the base directories.
use_tools_of() {
  if [ -n "$1" ]; then
    PATH="$1/sw/bin:/run/wrappers/bin:/nix/var/nix/profiles/default/bin"
  else
    PATH="/run/wrappers/bin:/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  fi
  export PATH
}
PREV=""
if [ -r "$DIR/previous" ]; then read -r PREV < "$DIR/previous" || :
elif [ -r "$TRIAL/prev" ]; then  # a verified reboot's verbs, after the reboot: its old system
  case $cmd in boot-guard | trial-*) read -r PREV < "$TRIAL/prev" || : ;; esac
fi
# (the current system by the shell's own cd and pwd: no tool runs before the re-run below)
TOOLS_OF=${PREV:-$(cd -P /run/current-system 2>/dev/null && pwd -P)}
use_tools_of "$TOOLS_OF"
# The shell too: /bin/sh is re-pointed by every activation (NixOS's binsh), so the agent
# re-runs itself, once, with the previous system's sh (bash in POSIX mode on NixOS), and
# starts every later run of itself (units, the guard, finish) with it. Only a system
# without sw/bin/sh leaves it on the shell it was started with.
AGENT_SH=/bin/sh
if [ -n "$TOOLS_OF" ] && [ -x "$TOOLS_OF/sw/bin/sh" ]; then
  AGENT_SH=$TOOLS_OF/sw/bin/sh
  if [ "${DEPLOY_FLAKE_AGENT_SH:-}" != "$AGENT_SH" ]; then
    DEPLOY_FLAKE_AGENT_SH=$AGENT_SH
    export DEPLOY_FLAKE_AGENT_SH
    exec "$AGENT_SH" "$AGENT" "$@"
  fi
fi
