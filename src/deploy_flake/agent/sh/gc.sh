# ---------------------------------------------------------------- gc
# `deploy-flake gc`: old generations of the system profile go, then the boot entries are
# written again (so the boot loader prunes /boot), then, if asked, the store's garbage.
# Under the deploy lock (no deploy runs meanwhile), with the running system's tools. Never
# removed: the profile's generation, the previous one (a rollback's), the generations of
# the running and the booted system, the last deployed one, the newest KEEP.
# Every line it prints for the deployer begins with GC_TAG and a tab:
#   keep N REASON | remove N SYSTEM DATE | end REMOVED BOOT_FREE_BEFORE BOOT_FREE_AFTER STORE PROBLEM
gc_say() { (IFS="$(printf '\t')"; printf '%s\n' "$GC_TAG	$*"); }

gc_end() {  # REMOVED BOOT_BEFORE BOOT_AFTER STORE PROBLEM
  gc_say end "$1" "$2" "$3" "$4" "$5"
  exit 0
}

gc_link_gen() { n=${1##*/}; n=${n#system-}; echo "${n%-link}"; }  # [.../]system-N-link: N

gc() {  # KEEP OLDER_S COLLECT DRY: KEEP newest generations (0: none but those needed),
  #       OLDER_S only generations older than that (0: any age), COLLECT 1: nix-store --gc
  keep=$1 older=$2 collect=$3 dry=$4
  { is_uint "$keep" && is_uint "$older"; } || die "gc: bad KEEP or OLDER_S"
  exec 8>>"$BASE/lock"
  if ! flock -n 8; then
    gc_end 0 "" "" "" "a deploy is in progress on this host ($(cat "$BASE/holder" 2>/dev/null || echo unknown)): nothing was removed"
  fi
  case $(trial_state) in
    staged | booted | returning)
      gc_end 0 "" "" "" "a verified reboot is not over yet (its trial is $(trial_state)): nothing was removed" ;;
  esac
  prof=$(profile_generation)
  [ -n "$prof" ] || gc_end 0 "" "" "" "$PROFILE has no generation: nothing was removed"
  prof_n=$(gc_link_gen "$prof")
  cur=$(readlink -f /run/current-system 2>/dev/null || :)
  booted=$(readlink -f /run/booted-system 2>/dev/null || :)
  last=$(sed -n 's/^generation=//p' "$LAST_DEPLOY" 2>/dev/null | tail -n 1)
  last_n=""; [ -n "$last" ] && last_n=$(gc_link_gen "$last")
  prev_n=""
  # shellcheck disable=SC2012  # generation links have no odd characters
  gens=$(ls -1 "${PROFILE%/*}" | sed -n 's/^system-\([0-9][0-9]*\)-link$/\1/p' | sort -rn)
  for n in $gens; do
    if [ "$n" -lt "$prof_n" ]; then prev_n=$n; break; fi
  done
  now=$(date +%s)
  remove="" removed=0 i=0
  for n in $gens; do
    i=$((i + 1))
    link=${PROFILE%/*}/system-$n-link
    sys=$(readlink -f "$link" 2>/dev/null || :)
    why=""
    runs=""  # the system, or one of its specialisations, is the running / booted one
    for s in "$sys" "$sys"/specialisation/*; do
      [ -e "$s" ] || continue
      s=$(readlink -f "$s")
      if [ "$s" = "$cur" ]; then runs="the running system"; break; fi
      if [ "$s" = "$booted" ]; then runs="the booted system"; fi
    done
    if [ "$n" = "$prof_n" ]; then why="the system profile's generation"
    elif [ -n "$runs" ]; then why=$runs
    elif [ "$n" = "$prev_n" ]; then why="the previous generation (a rollback's)"
    elif [ "$n" = "$last_n" ]; then why="the last deployed generation"
    elif [ "$i" -le "$keep" ]; then why="one of the newest $keep"
    elif [ "$older" -gt 0 ] && [ $((now - $(stat -c %Y "$link" 2>/dev/null || echo "$now"))) -lt "$older" ]; then
      why="newer than --older-than"
    fi
    if [ -n "$why" ]; then
      gc_say keep "$n" "$why"
    else
      gc_say remove "$n" "$sys" "$(date -u -d "@$(stat -c %Y "$link")" +%F 2>/dev/null || echo -)"
      remove="$remove $n" removed=$((removed + 1))
    fi
  done
  before=$(boot_free_kib)
  [ "$dry" = 1 ] && gc_end "$removed" "$before" "" "" ""
  if [ -n "$remove" ]; then
    # shellcheck disable=SC2086  # the generation numbers, one argument each
    if ! nix-env -p "$PROFILE" --delete-generations $remove >&2; then
      gc_end 0 "$before" "" "" "nix-env --delete-generations failed: nothing was removed"
    fi
    # the entries of the removed generations go, and their kernels and initrds on /boot
    # (after another switch-to-configuration that holds its lock, if one does)
    [ ! -e "$SWITCH_LOCK" ] || flock -w "$LOCK_WAIT_S" "$SWITCH_LOCK" true 8>&- || :
    if ! timeout -k "$KILL_GRACE_S" 600 "$PROFILE/bin/switch-to-configuration" boot >&2 8>&-; then
      gc_end "$removed" "$before" "$(boot_free_kib)" "" "the generations were removed, but writing the boot entries again failed (switch-to-configuration boot): the boot menu may still list them, so the store's garbage was not collected; run it by hand: $PROFILE/bin/switch-to-configuration boot"
    fi
  fi
  store=""
  if [ "$collect" = 1 ]; then
    out=$(nix-store --gc 2>&1 8>&-) || gc_end "$removed" "$before" "$(boot_free_kib)" "" "nix-store --gc failed: $(printf '%s\n' "$out" | tail -n 1)"
    store=$(printf '%s\n' "$out" | grep 'store paths deleted' | tail -n 1)
  fi
  gc_end "$removed" "$before" "$(boot_free_kib)" "$store" ""
}
