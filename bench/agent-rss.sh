#!/usr/bin/env bash
# Agent memory at idle: for each bin dir given (default: bin), a 3-node tabby-lab with one
# workload per node and a policy, idle for IDLE seconds (default 30) after every node is
# ready, then each agent's VmRSS and VmHWM from /proc. Labs run one after another; give
# two bin dirs (base, new) and run the script twice to compare. Needs root; `make build`.
#   bench/agent-rss.sh /tmp/base/bin bin
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${IDLE:-30}
dirs=("$@")
[[ ${#dirs[@]} -gt 0 ]] || dirs=(bin)
for dir in "${dirs[@]}"; do
	lab=rss$RANDOM
	L=("$dir/tabby-lab" --name "$lab")
	trap '"${L[@]}" down >/dev/null 2>&1 || true' EXIT
	"${L[@]}" up --nodes 3 --bin-dir "$dir" >/dev/null
	"${L[@]}" ctl apply -f - >/dev/null <<'YAML'
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.244.0.0/16, blockSize: 26}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: rss-allow-web}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]
YAML
	for n in 1 2 3; do "${L[@]}" workload add "node$n" "default/w$n" --labels app=web >/dev/null; done
	for n in 1 2 3; do
		for _ in $(seq 600); do
			"${L[@]}" ctl --node "node$n" node readiness >/dev/null 2>&1 && break
			sleep 0.1
		done
	done
	sleep "$idle"
	state=/run/tabby-lab/$lab/state.json
	for pid in $(python3 -c 'import json,sys; print(*[n["agent"]["pid"] for n in json.load(open(sys.argv[1]))["nodes"]])' "$state"); do
		rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
		hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
		printf '%s\tagent pid %d\tRSS %d MiB\tpeak %d MiB\n' "$dir" "$pid" $((rss / 1024)) $((hwm / 1024))
	done
	"${L[@]}" down >/dev/null
	trap - EXIT
done
