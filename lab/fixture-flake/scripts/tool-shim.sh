# shellcheck shell=bash
# A tool of a system built with toolShims (its #! line, and HOST, TOOL and REAL, are
# written above by the builder): records "HOST TOOL CALLER'S-EXECUTABLE CALLER'S-COMMAND-LINE" in
# /run/fixture-tools/log (when the caller may write there), then runs the real tool
# under the name it was called by.
mapfile -d '' -t caller < "/proc/$PPID/cmdline" 2>/dev/null
exe=$("${REAL%/*}/readlink" "/proc/$PPID/exe" 2>/dev/null)
{ echo "$HOST $TOOL ${exe:--} ${caller[*]}" >> /run/fixture-tools/log; } 2>/dev/null
exec -a "$0" "$REAL" "$@"
