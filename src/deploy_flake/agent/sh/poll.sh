# ---------------------------------------------------------------- poll
# One poll loop for every wait: CMD runs every INTERVAL s until it succeeds (0) or MAX_S passed (1).
# Waits on a file (a confirmation, a state) poll fast, as they are cheap and someone waits
# on the other end: every BRISK s for their first second (the answer usually comes within
# it), then every FAST s. The settle window's unit checks run systemctl: they poll SLOW.
BRISK=0.02 FAST=0.05 SLOW=0.2
tick() { read -r UP _ < /proc/uptime; UP=${UP%.*}${UP#*.}; UP=${UP#"${UP%%[!0]*}"}; UP=${UP:-0}; }  # centiseconds
poll() {  # MAX_S INTERVAL CMD...
  poll_max=$1 poll_every=$2; shift 2; tick; poll_end=$((UP + poll_max * 100)) poll_brisk=$((UP + 100))
  while :; do
    "$@" && return 0
    tick; [ "$UP" -lt "$poll_end" ] || return 1
    if [ "$poll_every" = "$FAST" ] && [ "$UP" -lt "$poll_brisk" ]; then sleep "$BRISK"; else sleep "$poll_every"; fi
  done
}

