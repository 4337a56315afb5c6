#!/usr/bin/env bash
# The quick-start demo (make demo; needs root): a 3-node tabby-lab on this machine (network
# namespaces, one etcd, tabby-node on every node), the IP pool the first agent created, the
# example resources applied with
# tabbyctl, two workloads per node attached through tabby-cni, their endpoints and the
# routes the agents installed, pings between workloads on the same node and, over BGP, on
# different nodes, cluster DNS, a health-checked Service (curl through its ClusterIP, a
# backend killed and skipped), and policy. The lab is removed on exit; TABBY_DEMO_KEEP=1
# leaves it up (and the web servers running). TABBY_DEMO_LAB names it (default demo).
set -euo pipefail
cd "$(dirname "$0")/.."

lab=${TABBY_DEMO_LAB:-demo}
L=(bin/tabby-lab --name "$lab")

if [[ $(id -u) != 0 ]]; then
	echo "the demo builds network namespaces and needs root: sudo make demo" >&2
	exit 1
fi
for tool in ip:iproute2 ping:iputils-ping dig:dnsutils curl:curl nft:nftables iptables:iptables ipset:ipset; do
	command -v "${tool%%:*}" >/dev/null || { echo "the demo needs ${tool%%:*} (Debian package ${tool#*:}): make demo-deps" >&2; exit 1; }
done

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
say() { printf '\n\033[36m# %s\033[0m\n' "$*"; }
# addr prints a workload's IPv4 address.
addr() { "${L[@]}" exec "$1" -- ip -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]}'; }

[[ -x bin/demo-web ]] || { echo "the demo needs bin/demo-web: make demo builds it" >&2; exit 1; }
# wait_until SECONDS WHAT CMD...: run CMD every 0.1 s until it succeeds; fail the demo
# naming WHAT if it has not within SECONDS.
wait_until() {
	local secs=$1 what=$2
	shift 2
	for _ in $(seq $((secs * 10))); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "$what: not within ${secs}s" >&2
	exit 1
}

declare -A servers # web workload → the pid of its demo-web
stop_servers() { for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done; }
if [[ -z ${TABBY_DEMO_KEEP:-} ]]; then
	trap 'stop_servers; say "Removing the lab."; "${L[@]}" down' EXIT
fi

say "A lab of three nodes: network namespaces joined through a router namespace, one etcd, and tabby-node running on every node."
step "${L[@]}" up --nodes 3

say "On an empty datastore the first agent created an IP pool, as calico-node does (the lab's agents ask for 10.244.0.0/16 unencapsulated): workloads need no manifest."
wait_until 5 "the first agent's IP pool" "${L[@]}" ctl get ippool default-ipv4-ippool
step "${L[@]}" ctl get ippools -o wide

say "The example resources, written as a Calico user writes them (the IPv4 pool's changes apply to the pool the agent created). A file with a mistake is refused whole."
step "${L[@]}" ctl apply -f examples/
step "${L[@]}" ctl get ippools -o wide
step "${L[@]}" ctl apply -f examples/invalid/typo.yaml || true

say "Two workloads per node, each a network namespace attached by tabby-cni through libcni, as a container runtime attaches a pod."
for n in 1 2 3; do
	step "${L[@]}" workload add "node$n" "default/web$((2 * n - 1))" --labels app=web
	step "${L[@]}" workload add "node$n" "default/db$((2 * n))" --labels app=db
done
step "${L[@]}" ctl get workloadendpoints -A -o wide
say "Each web workload runs a small HTTP server on port 8080 (bin/demo-web), for the Service below."
for w in web1 web3 web5; do
	"${L[@]}" exec "default/$w" -- bin/demo-web "$w" >/dev/null 2>&1 &
	servers[$w]=$!
done
step "${L[@]}" ctl ipam show --show-blocks

say "node1's agent routes to each of its workloads through the workload's veth, and blackholes the rest of its block (route protocol 116)."
step "${L[@]}" exec node1 -- ip route show proto 116

say "Workloads on the same node reach each other, and their node."
for pair in web1:db2 db4:web3 web5:db6; do
	from=${pair%%:*} to=${pair#*:}
	step "${L[@]}" exec "default/$from" -- ping -c2 -W2 "$(addr "default/$to")"
done
step "${L[@]}" exec default/web1 -- ping -c1 -W2 172.31.1.10

web1=$(addr default/web1)
say "Across nodes, BGP: every agent peers with every other (a node-to-node mesh over embedded GoBGP), advertises its blocks, and installs the blocks it learns via their node."
step "${L[@]}" ctl --node node1 node status
step "${L[@]}" exec node2 -- ip route get "$web1"
for pair in web3:web1 db6:web3 web1:db6; do
	from=${pair%%:*} to=${pair#*:}
	step "${L[@]}" exec "default/$from" -- ping -c2 -W2 "$(addr "default/$to")"
done

say "Cluster DNS: every agent answers the cluster zone on its node (169.254.20.10, in each workload's resolv.conf from the CNI result). A Service resolves by its short name, from a workload on another node."
step "${L[@]}" ctl apply -f examples/demo/web-service.yaml
step "${L[@]}" exec default/db6 -- cat /etc/resolv.conf
resolved=
for _ in $(seq 50); do # the agents serve it within a moment; allow 5 s
	if "${L[@]}" exec default/db6 -- getent hosts web >/dev/null 2>&1; then resolved=1; break; fi
	sleep 0.1
done
step "${L[@]}" exec default/db6 -- getent hosts web
[[ -n $resolved ]] || { echo "web did not resolve" >&2; exit 1; }
step "${L[@]}" exec default/db6 -- dig +short @169.254.20.10 _http._tcp.web.default.svc.cluster.local SRV

say "Service proxy: every node load-balances the ClusterIP 10.96.0.80:80 over the web workloads' port 8080, in nftables (table ip tabby). Each node probes its own web workloads (GET /healthz every second) and records the result in etcd."
# passing N: the endpoints list shows N endpoints of web passing their check.
passing() { [[ $("${L[@]}" ctl get endpoints web | grep -c ' passing') == "$1" ]]; }
wait_until 20 "every web endpoint passing its health check" passing 3
step "${L[@]}" ctl get services -o wide
step "${L[@]}" ctl get endpoints web -o wide
say "curl through the ClusterIP from db6, a workload on node3: the requests spread over web1 (node1), web3 (node2) and web5 (node3)."
for _ in 1 2 3 4 5 6; do
	step "${L[@]}" exec default/db6 -- curl -sS --max-time 2 http://10.96.0.80/
done

say "Kill web3's server. node2 sees its check fail twice in a row (about 2 s), records web3 as failing, and every node leaves it out."
kill "${servers[web3]}"
wait "${servers[web3]}" 2>/dev/null || true
unset 'servers[web3]'
web3=$(addr default/web3)
wait_until 20 "web3 failing its health check" passing 2
# node3's proxy drops web3 a moment after the record changes.
wait_until 5 "node3's nftables without web3" bash -c "! ${L[*]} exec node3 -- nft list table ip tabby | grep -qF '$web3 . 8080'"
step "${L[@]}" ctl get endpoints web -o wide
say "20 requests from db6: every one answered, none by web3."
answers=$(for _ in $(seq 20); do "${L[@]}" exec default/db6 -- curl -sS --max-time 2 http://10.96.0.80/ 2>&1 || echo failed; done | sort | uniq -c)
echo "$answers"
if grep -q 'web3\|failed\|curl' <<<"$answers"; then echo "a request failed or reached web3" >&2; exit 1; fi

say "web3's server back: two passing checks and it is in the Service again."
"${L[@]}" exec default/web3 -- bin/demo-web web3 >/dev/null 2>&1 &
servers[web3]=$!
wait_until 20 "web3 passing its health check again" passing 3
step "${L[@]}" ctl get endpoints web

say "Policy: the example policies select only the shop namespace, so these workloads are open. tabbyctl policy check says which policy and rule decide a flow."
step "${L[@]}" ctl policy check default/web3 default/db2 --port 5432 --protocol tcp

say "Now a policy selects the db workloads: only web workloads, on tcp/5432. Everything else to them is denied, ping included, within a moment on every node."
step "${L[@]}" ctl apply -f examples/demo/db-from-web.yaml
step "${L[@]}" ctl policy check default/web3 default/db2 --port 5432 --protocol tcp
step "${L[@]}" ctl policy check default/web3 default/db2 --protocol icmp
denied=
for _ in $(seq 50); do # the agents apply it within a fraction of a second; allow 5 s
	if ! "${L[@]}" exec default/web3 -- ping -c1 -W1 "$(addr default/db2)" >/dev/null 2>&1; then denied=1; break; fi
	sleep 0.1
done
step "${L[@]}" exec default/web3 -- ping -c1 -W1 "$(addr default/db2)" || echo "(no answer: denied by default/db-from-web)"
[[ -n $denied ]] || { echo "the policy was not enforced" >&2; exit 1; }
step "${L[@]}" ctl delete -f examples/demo/db-from-web.yaml

say "Detaching a workload removes its endpoint, its veth, its route and its address."
step "${L[@]}" workload del default/db2
step "${L[@]}" exec node1 -- ip route show proto 116
step "${L[@]}" ctl ipam check

if [[ -n ${TABBY_DEMO_KEEP:-} ]]; then
	say "The lab stays up. Try: ${L[*]} status; ${L[*]} exec default/web1 -- ping $(addr default/web5). Remove it with: ${L[*]} down"
fi
