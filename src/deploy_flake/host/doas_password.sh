# shellcheck shell=sh
# A command run as root through doas where doas asks for a password (deploy-flake's
# --elevate=doas with --ask-sudo-password). doas reads a password only from a terminal
# (readpassphrase), never from stdin, so it runs in a pseudo-terminal of its own (util-linux
# `script`) that carries nothing but its prompt and the password; the command it starts
# takes its stdin, stdout and stderr from FIFOs relayed to this script's own.
#   $1: the command, shell-quoted (it runs as `/bin/sh -c STARTED DIR $1`)
#   stdin: a first line, the password, sent by deploy-flake only once the prompt came
#     (an empty line where the command started without one), then the command's own input
#   stderr: the terminal's output, broken at every ':' (a prompt ends in ': ' with no newline
#     to end its line) and passed on a whole line at a time (sed -u), never its blank lines
#     (so that no part of a line is left to be joined to the started marker), then the
#     started marker, then the command's stderr
# Exit status: the command's, doas's (1: not permitted, a wrong password), 125: no FIFOs.
d=$(mktemp -d /tmp/deploy-flake-doas.XXXXXXXX) || exit 125
trap 'rm -rf "$d"' EXIT
trap 'exit 129' HUP INT TERM
mkfifo "$d/tty" "$d/in" "$d/out" "$d/err" || exit 125
exec 3<>"$d/tty"
# as root: the FIFOs first, then the marker (deploy-flake's stdin follows it), then the command
# shellcheck disable=SC2016  # expanded by the root shell, not this one
started='exec >"$0/out" 2>"$0/err" || exit 125; : >"$0/started"; echo @@deploy-flake-sudo-started >&2; exec <"$0/in" || exit 125; exec "$@"'
{
  SHELL=/bin/sh script -qec "doas -- /bin/sh -c '$started' $d $1" /dev/null <&3 2>&1
  echo $? >"$d/rc"
} | stdbuf -o0 tr ':\r' '\n\n' | sed -u '/^[[:space:]]*$/d' >&2 &
pty=$!
cat "$d/out" &
o=$!
cat "$d/err" >&2 &
e=$!
# (an asynchronous list's stdin is /dev/null, but for a copy made before)
exec 4<&0
{
  IFS= read -r pw || exit 0
  if [ -n "$pw" ]; then printf '%s\n' "$pw" >&3; fi
  exec 3>&- cat >"$d/in" 2>/dev/null
} <&4 &
i=$!
exec 3>&- 4<&-
wait "$pty"
# doas never started the command (not permitted, a wrong password): no FIFO will be opened
if [ ! -e "$d/started" ]; then kill "$o" "$e" 2>/dev/null; fi
kill "$i" 2>/dev/null
wait "$o" "$e"
exit "$(cat "$d/rc" 2>/dev/null || echo 125)"
