# ---------------------------------------------------------------- dispatch
case $cmd in
  run) run ;;
  recover) recover ;;
  finish)
    flock -n 8 2>/dev/null || die "finish: only for a transaction that holds the deploy lock"
    recover_locked ;;  # internal: a newer transaction, holding the lock, finishes this one
  start) start "${3:-}" "${4:-}" ;;
  guard) guard ;;
  rescue) rescue "${3:-0}" "${4:-30}" ;;
  watch) watch "${3:-0}" "${4:-30}" "${5:-}" ;;
  confirm) confirm "${3:-}" "${4:-}" ;;
  abort) abort ;;
  status) print_status ;;
  boot-guard) boot_guard ;;
  boot-info) boot_info "${3:-}" "${4:-0}" "${5:-}" ;;
  trial-status) print_trial ;;
  gc) gc "${3:-}" "${4:-0}" "${5:-0}" "${6:-0}" ;;
  trial-commit) trial_commit ;;
  trial-reject) trial_reject "${3:-the deployer found the new system unhealthy}" ;;
  *) die "unknown command '$cmd'" ;;
esac
