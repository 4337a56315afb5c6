package main

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/internal/labstate"
)

// Unit tests of the lab's names, addresses and configuration: no root needed.

func TestValidateLabName(t *testing.T) {
	for _, ok := range []string{"lab", "a", "t1x2", "abcdefghijklmnop"} {
		if err := validateLabName(ok); err != nil {
			t.Errorf("validateLabName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "Lab", "1lab", "my-lab", "my_lab", "a.b", "abcdefghijklmnopq", "lab/x"} {
		if err := validateLabName(bad); err == nil || !strings.Contains(err.Error(), "lab name") {
			t.Errorf("validateLabName(%q) = %v, want an error about the lab name", bad, err)
		}
	}
}

func TestPlanAddresses(t *testing.T) {
	st, err := plan("lab", 5, 2, "/run/tabby-lab/lab", "/var/tmp/tabby-lab/lab")
	if err != nil {
		t.Fatal(err)
	}
	if st.Router.Netns != "tby-lab-router" || st.Etcd.Endpoint != "http://172.31.1.1:2379" {
		t.Errorf("router %q, etcd %q", st.Router.Netns, st.Etcd.Endpoint)
	}
	wantSubnets := []labstate.Subnet{
		{Index: 1, CIDR: netip.MustParsePrefix("172.31.1.0/24"), Bridge: "br1", Gateway: netip.MustParseAddr("172.31.1.1")},
		{Index: 2, CIDR: netip.MustParsePrefix("172.31.2.0/24"), Bridge: "br2", Gateway: netip.MustParseAddr("172.31.2.1")},
	}
	if !reflect.DeepEqual(st.Subnets, wantSubnets) {
		t.Errorf("subnets = %+v, want %+v", st.Subnets, wantSubnets)
	}
	want := []struct {
		name, netns, addr, gw string
		subnet                int
	}{
		{"node1", "tby-lab-node1", "172.31.1.10/24", "172.31.1.1", 1},
		{"node2", "tby-lab-node2", "172.31.2.11/24", "172.31.2.1", 2},
		{"node3", "tby-lab-node3", "172.31.1.12/24", "172.31.1.1", 1},
		{"node4", "tby-lab-node4", "172.31.2.13/24", "172.31.2.1", 2},
		{"node5", "tby-lab-node5", "172.31.1.14/24", "172.31.1.1", 1},
	}
	if len(st.Nodes) != len(want) {
		t.Fatalf("%d nodes, want %d", len(st.Nodes), len(want))
	}
	for i, w := range want {
		n := st.Nodes[i]
		if n.Name != w.name || n.Netns != w.netns || n.Address.String() != w.addr || n.Gateway.String() != w.gw ||
			n.Subnet != w.subnet || n.Interface != "eth0" || n.RouterPort != w.name {
			t.Errorf("node %d = %+v, want %+v", i+1, n, w)
		}
	}
}

func TestPlanLimits(t *testing.T) {
	for _, c := range []struct {
		nodes, subnets int
		want           string
	}{
		{0, 1, "--nodes 0: want 1 to 100"},
		{101, 1, "--nodes 101"},
		{3, 0, "--subnets 0: want 1 to 50"},
		{3, 51, "--subnets 51"},
	} {
		if _, err := plan("lab", c.nodes, c.subnets, "s", "d"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("plan(%d nodes, %d subnets) = %v, want %q", c.nodes, c.subnets, err, c.want)
		}
	}
	// The largest lab still has unique addresses below the hosts' range and short names.
	st, err := plan("abcdefghijklmnop", maxNodes, maxSubnets, "s", "d")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for _, n := range st.Nodes {
		a := n.Address.Addr()
		if seen[a] || a.As4()[3] >= hostHostBase || !st.Subnet(n.Subnet).CIDR.Contains(a) {
			t.Errorf("node %s: address %s reused, in the hosts' range or off its subnet", n.Name, a)
		}
		seen[a] = true
		if len(n.RouterPort) > 15 || len(n.Interface) > 15 {
			t.Errorf("node %s: interface names %q/%q longer than 15", n.Name, n.RouterPort, n.Interface)
		}
	}
}

func TestPlanHost(t *testing.T) {
	st, err := plan("lab", 2, 1, "s", "d")
	if err != nil {
		t.Fatal(err)
	}
	h, err := planHost(st, "bird1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if h.Netns != "tby-lab-h-bird1" || h.Address.String() != "172.31.1.200/24" || h.RouterPort != "h-bird1" || h.Gateway.String() != "172.31.1.1" {
		t.Errorf("host = %+v", h)
	}
	st.Hosts = append(st.Hosts, h)
	h2, err := planHost(st, "internet", 9)
	if err != nil || h2.Address.String() != "172.31.9.200/24" {
		t.Errorf("second host = %+v, %v", h2, err)
	}
	h3, err := planHost(st, "bird2", 1)
	if err != nil || h3.Address.String() != "172.31.1.201/24" {
		t.Errorf("third host = %+v, %v", h3, err)
	}
	for _, c := range []struct {
		name   string
		subnet int
		want   string
	}{
		{"bird1", 1, "already exists"},
		{"router", 1, "names of the lab's router"},
		{"node3", 1, "names of the lab's router"},
		{"Bird", 1, "DNS label"},
		{"waytoolongname", 1, "at most 12"},
		{"x", 0, "--subnet 0"},
		{"x", 255, "--subnet 255"},
	} {
		if _, err := planHost(st, c.name, c.subnet); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("planHost(%q, %d) = %v, want %q", c.name, c.subnet, err, c.want)
		}
	}
	if name := "abcdefghijkl"; len(hostRouterPort(name)) > 15 {
		t.Errorf("router port %q longer than 15", hostRouterPort(name))
	}
}

func TestWorkloadNames(t *testing.T) {
	ns, name, err := parseWorkloadName("kube-system/coredns-1.x")
	if err != nil || ns != "kube-system" || name != "coredns-1.x" {
		t.Errorf("parse = %q %q %v", ns, name, err)
	}
	if got := workloadNetns("lab", ns, name); got != "tby-lab-w-kube-system.coredns-1.x" {
		t.Errorf("workloadNetns = %q", got)
	}
	// "a-b/c" and "a/b-c" must not share a namespace.
	if workloadNetns("lab", "a-b", "c") == workloadNetns("lab", "a", "b-c") {
		t.Error("workloadNetns is ambiguous")
	}
	long := strings.Repeat("x", 253)
	if got := workloadNetns("lab", "default", long); len(got) > 200 || !strings.HasPrefix(got, "tby-lab-w-") {
		t.Errorf("long workloadNetns = %q", got)
	}
	for _, bad := range []string{"web1", "default/", "/web1", "Default/web1", "default/Web1", "a/b/c", "default/-x", strings.Repeat("a", 64) + "/x"} {
		if _, _, err := parseWorkloadName(bad); err == nil {
			t.Errorf("parseWorkloadName(%q) accepted", bad)
		}
	}
}

func TestValidateLabels(t *testing.T) {
	good := map[string]string{"app": "web", "example.com/tier": "front", "empty": "", "a_b.c-d": "X_1.2-3"}
	if err := validateLabels(good); err != nil {
		t.Errorf("validateLabels(%v) = %v", good, err)
	}
	for _, bad := range []map[string]string{
		{"": "x"}, {"-app": "x"}, {"app": "-x"}, {"app": "a b"}, {"Bad_Prefix/app": "x"},
		{strings.Repeat("a", 64): "x"}, {"app": strings.Repeat("a", 64)},
	} {
		if err := validateLabels(bad); err == nil {
			t.Errorf("validateLabels(%v) accepted", bad)
		}
	}
}

func TestCNIConfList(t *testing.T) {
	st, err := plan("lab", 1, 1, "/run/tabby-lab/lab", "d")
	if err != nil {
		t.Fatal(err)
	}
	data, err := cniConfList(st, "node1", map[string]string{"tier": "front", "app": "web"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	var want any
	json.Unmarshal([]byte(`{"cniVersion":"1.1.0","name":"tabby-net","plugins":[{"type":"tabby-cni",
		"etcd_endpoints":"http://172.31.1.1:2379","nodename":"node1","log_level":"debug",
		"log_file":"/run/tabby-lab/lab/cni.log", "cluster_dns":["169.254.20.10"],
		"args":{"cni":{"labels":[{"key":"app","value":"web"},{"key":"tier","value":"front"}]}}}]}`), &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("conflist = %s", data)
	}
	// No labels: no args at all.
	data, _ = cniConfList(st, "node1", nil, nil)
	if strings.Contains(string(data), `"args"`) {
		t.Errorf("conflist without labels has args: %s", data)
	}
	// workload add --cluster-dns: its addresses instead of the node-local one.
	data, _ = cniConfList(st, "node1", nil, []string{"fd00:96::a"})
	if !strings.Contains(string(data), `"cluster_dns":["fd00:96::a"]`) {
		t.Errorf("conflist with --cluster-dns fd00:96::a: %s", data)
	}
}

func TestNsRank(t *testing.T) {
	got := []int{nsRank("lab", "tby-lab-w-default.x"), nsRank("lab", "tby-lab-h-bird"), nsRank("lab", "tby-lab-node1"), nsRank("lab", "tby-lab-router")}
	if !reflect.DeepEqual(got, []int{0, 1, 2, 3}) {
		t.Errorf("ranks = %v", got)
	}
}

func TestPlanEtcd(t *testing.T) {
	st, err := plan("lab", 3, 1, "/run/tabby-lab/lab", "/var/tmp/tabby-lab/lab")
	if err != nil {
		t.Fatal(err)
	}
	st.Binaries.TabbyNode = "/bin/tabby-node"
	// One member, plain: as labs have always been, its peer port on loopback.
	if argv := strings.Join(etcdMemberArgv(st, 0), " "); argv != "/bin/tabby-node --datastore-only --data-dir /var/tmp/tabby-lab/lab/etcd1 --etcd-name etcd1 "+
		"--etcd-listen-client http://172.31.1.1:2379 --etcd-listen-peer http://127.0.0.1:2380 --log-level info" {
		t.Errorf("one member: %s", argv)
	}
	if err := planEtcd(st, 3, true); err != nil {
		t.Fatal(err)
	}
	if st.Etcd.Endpoint != "https://172.31.1.1:2379,https://172.31.1.2:2379,https://172.31.1.3:2379" {
		t.Errorf("endpoint %s", st.Etcd.Endpoint)
	}
	want := "/bin/tabby-node --datastore-only --data-dir /var/tmp/tabby-lab/lab/etcd2 --etcd-name etcd2 " +
		"--etcd-listen-client https://172.31.1.2:2379 --etcd-listen-peer https://172.31.1.2:2380 --log-level info " +
		"--etcd-initial-cluster etcd1=https://172.31.1.1:2380,etcd2=https://172.31.1.2:2380,etcd3=https://172.31.1.3:2380 " +
		"--etcd-server-cert-file /run/tabby-lab/lab/pki/server.pem --etcd-server-key-file /run/tabby-lab/lab/pki/server-key.pem --etcd-client-ca-file /run/tabby-lab/lab/pki/ca.pem " +
		"--etcd-peer-cert-file /run/tabby-lab/lab/pki/server.pem --etcd-peer-key-file /run/tabby-lab/lab/pki/server-key.pem --etcd-peer-ca-file /run/tabby-lab/lab/pki/ca.pem"
	if argv := strings.Join(etcdMemberArgv(st, 1), " "); argv != want {
		t.Errorf("member 2 of 3 with TLS:\n%s\nwant\n%s", argv, want)
	}
	// Every client of the lab gets every member and the client certificate.
	wantArgs := "--etcd-endpoints " + st.Etcd.Endpoint + " --etcd-ca-cert-file /run/tabby-lab/lab/pki/ca.pem --etcd-cert-file /run/tabby-lab/lab/pki/client.pem --etcd-key-file /run/tabby-lab/lab/pki/client-key.pem"
	if args := strings.Join(st.Etcd.ClientArgs(), " "); args != wantArgs {
		t.Errorf("client args %s", args)
	}
	st.Nodes[0].DataDir = "/d"
	if argv := strings.Join(agentArgv(st, &st.Nodes[0]), " "); !strings.Contains(argv, wantArgs) {
		t.Errorf("agent argv %s lacks %s", argv, wantArgs)
	}
	conf, err := cniConfList(st, "node1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{`"etcd_endpoints":"` + st.Etcd.Endpoint + `"`, `"etcd_ca_cert_file":"/run/tabby-lab/lab/pki/ca.pem"`,
		`"etcd_cert_file":"/run/tabby-lab/lab/pki/client.pem"`, `"etcd_key_file":"/run/tabby-lab/lab/pki/client-key.pem"`} {
		if !strings.Contains(string(conf), f) {
			t.Errorf("CNI config lacks %s: %s", f, conf)
		}
	}
	for _, bad := range []int{0, 8} {
		if err := planEtcd(st, bad, false); err == nil || !strings.Contains(err.Error(), "--etcd-members") {
			t.Errorf("planEtcd(%d): %v", bad, err)
		}
	}
}
