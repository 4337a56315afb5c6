#!/usr/bin/env bash
# The quick-start demo (make demo): starts tabby-node with its embedded etcd, applies
# examples/*.yaml with tabbyctl, lists what was stored, shows that a bad file changes
# nothing, and stops the node. TABBY_DEMO_KEEP=1 leaves the node running.
set -euo pipefail
cd "$(dirname "$0")/.."

client=${TABBY_DEMO_ETCD_CLIENT:-http://127.0.0.1:2379}
peer=${TABBY_DEMO_ETCD_PEER:-http://127.0.0.1:2380}
data=$(mktemp -d /tmp/tabby-demo.XXXXXX)
export TABBY_ETCD_ENDPOINTS=$client

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

bin/tabby-node --datastore-only --data-dir "$data" \
	--etcd-listen-client "$client" --etcd-listen-peer "$peer" 2>"$data/tabby-node.log" &
node=$!
if [[ -z ${TABBY_DEMO_KEEP:-} ]]; then
	trap 'kill $node 2>/dev/null; wait $node 2>/dev/null; rm -rf "$data"' EXIT
fi

# Wait for the datastore to answer (30 s at most).
for _ in $(seq 300); do
	bin/tabbyctl version >/dev/null 2>&1 && break
	kill -0 $node 2>/dev/null || { cat "$data/tabby-node.log"; exit 1; }
	sleep 0.1
done
step bin/tabbyctl version

step bin/tabbyctl apply -f examples/
step bin/tabbyctl get ippools -o wide
step bin/tabbyctl get globalnetworkpolicies
step bin/tabbyctl get networkpolicies -A -o yaml
step bin/tabbyctl get k8snetworkpolicies -n shop
step bin/tabbyctl get bgppeers

echo; echo "# A file with a typo and a file with an overlapping pool: each is refused whole."
step bin/tabbyctl apply -f examples/invalid/typo.yaml || true
step bin/tabbyctl apply -f examples/invalid/overlap.yaml || true
step bin/tabbyctl get ippools

step bin/tabbyctl delete -f examples/ippool.yaml
step bin/tabbyctl get ippools

if [[ -n ${TABBY_DEMO_KEEP:-} ]]; then
	echo; echo "tabby-node (pid $node) keeps running; data in $data, log in $data/tabby-node.log"
	echo "try: TABBY_ETCD_ENDPOINTS=$client bin/tabbyctl get gnp -o yaml"
fi
