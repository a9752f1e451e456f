#!/bin/sh
# The benchmarks, set-up first (as root on Debian).
#   sh scripts/bench.sh            both: TUN packet rates, then the tunnel against wireguard-go
#   sh scripts/bench.sh tun ...    benchmarks/run.py only (--help for options)
#   sh scripts/bench.sh tunnel ... benchmarks/tunnel.py only (--quick: one short round; builds upstream wireguard-go once)
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
need=""
for pkg in wireguard-go wireguard-tools iperf3; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
what="${1:-both}"
[ $# -gt 0 ] && shift
case "$what" in
    tun) exec .venv/bin/python benchmarks/run.py "$@" ;;
    tunnel) exec .venv/bin/python benchmarks/tunnel.py "$@" ;;
    both) .venv/bin/python benchmarks/run.py && exec .venv/bin/python benchmarks/tunnel.py ;;
    *) exec .venv/bin/python benchmarks/run.py "$what" "$@" ;;
esac
