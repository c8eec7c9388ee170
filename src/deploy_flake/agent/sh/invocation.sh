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
[ $# -ge 2 ] || die "usage: agent start|run|recover|guard|rescue|watch|confirm|abort|status ID ..."
ID=$2
case $ID in '' | .* | *[!A-Za-z0-9_.-]* | "${GC_ROOTS##*/}") die "bad deploy id '$ID'" ;; esac
DIR=$BASE/$ID
AGENT=$0
case $AGENT in /*) ;; *) die "run the agent by its absolute path" ;; esac

# Every tool from SYSTEM (the one that ran before the deploy), then NixOS's
# wrappers and the base directories; never from a system being activated.
use_tools_of() {
  PATH="${1:+$1/sw/bin:}/run/wrappers/bin:/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  export PATH
}
PREV=""
if [ -r "$DIR/previous" ]; then read -r PREV < "$DIR/previous" || :; fi
use_tools_of "${PREV:-$(readlink -f /run/current-system 2>/dev/null)}"
