// Command tabby-lab builds a multi-node tabby lab out of network namespaces on one machine:
// the demo, and the base of every end-to-end test.
//
//	tabby-lab up --nodes 3 [--subnets 2] [--ipv6] [--name lab] [--etcd-members 3] [--etcd-tls]
//	tabby-lab workload add node1 NAMESPACE/NAME [--labels k=v,...]
//	tabby-lab workload del NAMESPACE/NAME
//	tabby-lab host add NAME [--subnet N]        # an extra namespace: a BIRD router, an "internet"
//	tabby-lab host del NAME
//	tabby-lab exec TARGET -- CMD [ARG...]       # TARGET: router, nodeN, a host, NAMESPACE/NAME
//	tabby-lab ctl [--node nodeN] ARG...         # tabbyctl inside the lab
//	tabby-lab etcd stop|start [--member etcdK]  # a datastore outage: stop the etcd, start it again
//	tabby-lab agent kill|start NODE            # a crash of a node's agent (SIGKILL); start it again
//	tabby-lab status [-o json]
//	tabby-lab list [-q]                         # every lab here, with leftovers of crashes
//	tabby-lab down
//
// # Topology
//
// Nothing of a lab lives in the machine's own network namespace, so the machine's links and
// routes are never touched and several labs with identical addresses coexist. A lab named
// L is made of these namespaces:
//
//   - tby-L-router: the fabric. It holds one bridge per underlay subnet (br1, br2, ...),
//     with the router's address 172.31.<i>.1/24 on bridge i, and forwards between them. It
//     knows only its connected subnets, never a pod route, as a plain L3 underlay router.
//     The lab's etcd (tabby-node --datastore-only) runs here, serving clients on
//     http://172.31.1.1:2379, so every node reaches it through its gateway. With
//     --etcd-members N, member etcd<k> runs here on an address of its own, 172.31.1.<k>
//     on br1; with --etcd-tls on https only, for clients with the lab's certificate.
//   - tby-L-node<k> (k = 1..N): one per node, named node<k>. Its eth0 is a veth whose peer,
//     named node<k> in the router namespace, is a port of its subnet's bridge. Node k sits on
//     subnet ((k-1) mod S)+1 (round-robin over S subnets) with address 172.31.<s>.<9+k>/24
//     (node1 .10, node2 .11, ...: the last octet names the node whatever its subnet) and a
//     default route via 172.31.<s>.1. IPv4 forwarding is on, as kubeadm requires of a node.
//     Each node runs its own tabby-node agent; the first to start creates the lab's IP
//     pool, default-ipv4-ippool 10.244.0.0/16 without encapsulation (not with up
//     --no-default-pools).
//
// With up --ipv6 the underlay is dual stack: subnet i also has fd00:172:31:<i>::/64 (the
// router at ::1, forwarding IPv6), each node and host the IPv6 address with its IPv4
// address's digits (fd00:172:31:1::10 for 172.31.1.10), the agents --ip6 and the default
// IPv6 pool fd00:10:244::/64, and the CNI configuration assigns IPv6 too.
//   - tby-L-h-<name>: an extra host (host add): a BIRD or FRR router peering with the nodes,
//     or an "internet" host for NAT tests. It is attached like a node (eth0, router port
//     h-<name>) with address 172.31.<s>.<200+j>/24 and a default route via the router, but
//     runs nothing until told to (tabby-lab exec). A host on a subnet no node uses creates
//     that subnet's bridge.
//   - tby-L-w-<namespace>.<name>: a workload, attached through libcni exactly as a container
//     runtime does (see below). The dot cannot occur in a Kubernetes namespace, so the name
//     is unambiguous; names too long for a file name are shortened with a hash.
//
// Lab names are 1-16 lowercase letters and digits starting with a letter: without hyphens,
// "tby-L-" is a prefix no other lab's namespace can share, which is how a lab is found and
// removed without its state file. Only namespaces of the four shapes above count, so a
// namespace another tool named tby-L-something is left alone.
//
// # State
//
//   - /run/tabby-lab/L/state.json: the lab's topology, process ids (with their start times,
//     so a reused pid is never mistaken for ours), binaries and workloads. Written atomically.
//   - /run/tabby-lab/L/etcd<k>.log, node<k>.log: the output of each etcd member and of each agent.
//   - /run/tabby-lab/L/cni.log (the plugin's log file) and cni-cache/ (libcni's cache of
//     results, which DEL reads back).
//   - /var/tmp/tabby-lab/L/: data: datastore/ for etcd, node<k>/ for each agent.
//   - /run/tabby-lab/L.lock: taken by every command that changes the lab.
//
// --state-dir and --data-dir (or TABBY_LAB_STATE_DIR and TABBY_LAB_DATA_DIR) move the roots.
//
// # Processes
//
// The etcd and the agents are started with "ip netns exec" in their namespace, detached in
// their own session, so they outlive the command that started them. "down" finds every
// process by the network namespace it is in (as "ip netns pids" does) as well as by the
// pids recorded in state.json, sends SIGTERM, waits up to 10 s, sends SIGKILL, and fails if
// any is left. A process started by hand in a lab namespace (a BIRD, a ping) goes with it.
//
// # Teardown and stale labs
//
// "down" works from state.json and from discovery: every /run/netns entry with the lab's
// prefix is removed, after the processes in it are gone. So a crashed "up", a killed
// session or a deleted state file still leave nothing behind, and "up" first removes any
// lab of the same name that is there. "down" calls no CNI DEL: the datastore and every
// namespace go with the lab.
//
// # Workloads
//
// "workload add NODE NS/NAME" creates the workload's namespace and then runs libcni's
// AddNetworkList from inside the node's namespace (tabby-lab re-executes itself there with
// "ip netns exec", so the plugin creates the host side of the veth on the node, as on a real
// host). The network configuration is
//
//	{"cniVersion": "1.1.0", "name": "tabby-net", "plugins": [{"type": "tabby-cni",
//	  "etcd_endpoints": "http://172.31.1.1:2379", "nodename": "node1", "log_level": "debug",
//	  "log_file": "/run/tabby-lab/L/cni.log", "cluster_dns": ["169.254.20.10"],
//	  "args": {"cni": {"labels": [{"key": "app", "value": "web"}]}}}]}
//
// (cluster_dns: workload add --cluster-dns, when given) with CNI_ARGS IgnoreUnknown=1,
// K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_INFRA_CONTAINER_ID, as the kubelet passes
// them, CNI_NETNS /run/netns/<workload namespace> and CNI_IFNAME eth0. The plugin directory (CNI_PATH) is the binaries' directory
// unless up --cni-bin-dir says otherwise. A failed ADD is followed by a DEL, as a runtime
// does, and leaves no namespace. The result's dns (the node-local DNS server, the pod's
// search path, ndots:5) becomes /etc/netns/<workload namespace>/resolv.conf, which "ip
// netns exec" (tabby-lab exec) mounts over /etc/resolv.conf, so a workload resolves as a
// pod does. "workload del" runs DEL and removes the namespace and that file.
package main
