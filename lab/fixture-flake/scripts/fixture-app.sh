# shellcheck shell=sh
# fixture-app (FIXTURE_APP_VERSION is set above by the builder)
case "${1:-serve}" in
  serve) echo "fixture-app $FIXTURE_APP_VERSION serving"; exec sleep infinity ;;
  ok)    echo "fixture-app $FIXTURE_APP_VERSION oneshot ok"; exit 0 ;;
  *)     echo "usage: fixture-app serve|ok" >&2; exit 64 ;;
esac
