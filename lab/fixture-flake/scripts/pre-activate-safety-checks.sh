# shellcheck shell=sh disable=SC2154  # out and mode are set by the builder
# Fixture pre-activate-safety-checks ($out and $mode are set by the builder):
# exit 0 means the configuration is safe to activate.
# The "ok" variant fails too while /run/fixture-nixos/precheck-fail exists.
echo "fixture: running pre-activation safety checks for $out" >&2
if [ "$mode" = fail ]; then
  echo "fixture: check 'always-fail' FAILED: this configuration is not safe to activate" >&2
  exit 1
fi
if [ -e /run/fixture-nixos/precheck-fail ]; then
  echo "fixture: check 'toggle-file' FAILED: /run/fixture-nixos/precheck-fail exists" >&2
  exit 1
fi
echo "fixture: all checks passed" >&2
exit 0
