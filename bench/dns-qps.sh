#!/usr/bin/env bash
# DNS queries per second, side by side: dnsperf for DURATION seconds (default 10) against
#   (a) tabby's DNS server answering SERVICES names n<i>.svc.cluster.local (default 10000)
#   (b) dnsmasq answering the same names from a hosts file,
# each alone on a 127.0.0.x address, the names queried in random order. Needs dnsperf and
# dnsmasq (apt-get install -y dnsperf dnsmasq).
#
# MIX picks the queries:
#   cluster   (default) the SERVICES names;
#   nxdomain  half of them, half names in the zone that do not exist;
#   external  SERVICES/2 names e<i>.example.test that both servers forward to an upstream
#             (a third dnsmasq on 127.0.0.83) and cache; one pass warms the caches first.
#
# dnsperf runs CLIENTS sockets (default 8: a node's many pods, and what lets the server's
# SO_REUSEPORT sockets share the load) from THREADS threads (default 2), 100 queries in
# flight. CLIENTS=1 THREADS=1 puts the load on one server socket and one dnsperf thread,
# which is then close to the limit (the server used about 60% of a core at 113k QPS): the
# gap between the servers narrows.
#
# Each server runs in a session of its own (setsid), as a service does: the scheduler then
# shares the CPUs between the servers' and dnsperf's sessions (autogroups). In dnsperf's
# own session a multi-socket Go server gets more than its share and looks twice as fast.
#
# (a) is the dns package's test binary (TestServeForBench, the server over a fake
# authority) unless TABBY_DNS_CMD is set: any command that serves those names on
# $DNS_BENCH_LISTEN (addr:port) until killed, e.g. the agent once it serves DNS.
#   bench/dns-qps.sh
#   SERVICES=1000 DURATION=5 bench/dns-qps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
services=${SERVICES:-10000}
duration=${DURATION:-10}
clients=${CLIENTS:-8}
threads=${THREADS:-2}
mix=${MIX:-cluster}
port=${PORT:-5300}
tabby_addr=127.0.0.81
dnsmasq_addr=127.0.0.82
upstream_addr=127.0.0.83

command -v dnsperf >/dev/null && command -v dnsmasq >/dev/null ||
	{ echo "needs dnsperf and dnsmasq (apt-get install -y dnsperf dnsmasq)" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

for ((i = 0; i < services; i++)); do
	echo "10.96.$((i >> 8)).$((i & 255)) n$i.svc.cluster.local"
done >"$tmp/hosts"
for ((i = 0; i < services / 2; i++)); do
	echo "192.0.$((i >> 8 & 255)).$((i & 255)) e$i.example.test"
done >"$tmp/external"
case $mix in
cluster) awk '{print $2, "A"}' "$tmp/hosts" ;;
nxdomain) awk 'NR % 2 {print $2, "A"; next} {print "x" NR ".svc.cluster.local A"}' "$tmp/hosts" ;;
external) awk '{print $2, "A"}' "$tmp/external" ;;
*) echo "MIX is cluster, nxdomain or external" >&2; exit 1 ;;
esac | shuf >"$tmp/queries"
echo "n0.svc.cluster.local A" >"$tmp/probe"

wait_udp() { # addr: until it answers
	for _ in $(seq 100); do
		dnsperf -s "$1" -p "$port" -d "$tmp/probe" -n 1 -t 1 2>/dev/null |
			grep -q 'Queries completed: *[1-9]' && return 0
		sleep 0.1
	done
	echo "nothing answers on $1:$port" >&2
	exit 1
}

run() { # name addr pid: dnsperf's QPS, latency (dnsperf prints no percentiles), codes, RSS
	local out
	if [[ $mix == external ]]; then # warm the cache
		dnsperf -s "$2" -p "$port" -d "$tmp/queries" -n 1 -c "$clients" -T "$threads" -q 100 >/dev/null 2>&1
	fi
	out=$(dnsperf -s "$2" -p "$port" -d "$tmp/queries" -l "$duration" -c "$clients" -T "$threads" -q 100 2>&1)
	local qps lost lat codes rss
	qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
	lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
	lat=$(awk '/Average Latency/ {gsub(/[,)]/, ""); print $4 "s avg, min " $6 "s, max " $8 "s"}' <<<"$out")
	codes=$(awk -F': *' '/Response codes/ {print $2}' <<<"$out")
	rss=$(awk '/^VmRSS/ {printf "%.1f MB", $2 / 1024}' "/proc/$3/status")
	printf '%-8s %12s qps   lost %-8s latency %s   rss %s   %s\n' "$1" "$qps" "$lost" "$lat" "$rss" "$codes"
}

echo "dnsperf: $mix, $services names, ${duration}s, $clients clients, $threads threads"
upstream=()
if [[ $mix == external ]]; then
	dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$tmp/external" \
		--listen-address="$upstream_addr" --bind-interfaces --port="$port" --local-ttl=3600 \
		--user=root --pid-file="$tmp/upstream.pid" --log-facility=/dev/null &
	pids+=($!)
	upstream=(--server="$upstream_addr#$port")
	export DNS_BENCH_UPSTREAM=$upstream_addr:$port
fi

# (a) tabby (with DNS_BENCH_UPSTREAM for the external mix)
if [[ -n ${TABBY_DNS_CMD:-} ]]; then
	DNS_BENCH_LISTEN=$tabby_addr:$port DNS_BENCH_SERVICES=$services setsid bash -c "exec $TABBY_DNS_CMD" &
else
	go test -c -o "$tmp/dns.test" ./dns/
	DNS_BENCH_LISTEN=$tabby_addr:$port DNS_BENCH_SERVICES=$services \
		setsid "$tmp/dns.test" -test.run '^TestServeForBench$' -test.timeout 0 &
fi
pids+=($!)
wait_udp "$tabby_addr"
run tabby "$tabby_addr" "${pids[-1]}"
kill "${pids[-1]}"

# (b) dnsmasq: the same names from a hosts file, TTL 5 as the cluster zone's; it owns the
# zone (NXDOMAIN for other names in it) and forwards the rest
setsid dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$tmp/hosts" \
	--listen-address="$dnsmasq_addr" --bind-interfaces --port="$port" --local-ttl=5 \
	--local=/cluster.local/ "${upstream[@]}" \
	--cache-size=$((services * 2)) --user=root --pid-file="$tmp/dnsmasq.pid" --log-facility=/dev/null &
pids+=($!)
wait_udp "$dnsmasq_addr"
run dnsmasq "$dnsmasq_addr" "${pids[-1]}"
