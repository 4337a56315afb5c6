package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

// ipamOn connects an IPAM client to the node, for the allocations tabby-cni would make.
func ipamOn(t *testing.T, n *node) *ipam.Client {
	t.Helper()
	return ipam.New(dsOn(t, n), slog.New(slog.DiscardHandler))
}

// dsOn connects a datastore client to the node.
func dsOn(t *testing.T, n *node) *datastore.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ds, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{n.endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	return ds
}

func apply(t *testing.T, n *node, manifest string) {
	t.Helper()
	if _, errOut, err := n.ctl(t, manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v: %s", err, errOut)
	}
}

func workloadEndpoint(name, containerID string, addr netip.Addr) string {
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: %s, namespace: default}
spec: {node: n1, containerID: %s, interfaceName: eth0, ipNetworks: ["%s/32"]}
`, name, containerID, addr)
}

func TestIPAMCommands(t *testing.T) {
	n := startNode(t, t.TempDir())
	apply(t, n, `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: tiny}
spec: {cidr: 10.70.0.0/28, blockSize: 29}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2}
`)
	c := ipamOn(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	assign := func(node, handle string, num int, attrs map[string]string) []ipam.Assignment {
		t.Helper()
		res, err := c.AutoAssign(ctx, ipam.AutoAssignArgs{Num4: num, Handle: handle, Node: node, Attrs: attrs})
		if err != nil {
			t.Fatal(err)
		}
		return res.IPv4
	}
	workload := func(containerID string) map[string]string {
		return map[string]string{ipam.AttrNamespace: "default", ipam.AttrContainerID: containerID}
	}
	live := assign("n1", ipam.WorkloadHandle("tabby-net", "c1"), 1, workload("c1"))[0].Addr
	apply(t, n, workloadEndpoint("pod-1", "c1", live))
	assign("n1", "tunnel-n1", 2, nil)
	assign("n2", "n2-fill", 8, nil)
	borrowed := assign("n2", "n2-borrowed", 1, nil)[0]

	out := n.ok(t, "ipam", "show")
	assertContains(t, "ipam show", out, "GROUPING", "IPS TOTAL", "IPS IN USE", "IPS FREE", "IP Pool tiny", "10.70.0.0/28", "12 (75%)", "4 (25%)")
	out = n.ok(t, "ipam", "show", "--show-blocks")
	assertContains(t, "ipam show --show-blocks", out, "NODE", "Block", "10.70.0.0/29", "10.70.0.8/29", "8 (100%)", "n1", "n2")
	out = n.ok(t, "ipam", "show", "--show-borrowed")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[1]), " ") != fmt.Sprintf("%s n2 %s n1 n2-borrowed", borrowed.Addr, borrowed.Block) {
		t.Errorf("ipam show --show-borrowed:\n%s", out)
	}
	out = n.ok(t, "ipam", "show", "--ip", live.String())
	assertContains(t, "ipam show --ip", out, "is in use", "tabby-net.c1", "containerID=c1", "namespace=default", "node=n1")
	assertContains(t, "ipam show --ip (outside)", n.ok(t, "ipam", "show", "--ip", "10.99.0.1"), "IP 10.99.0.1 is not in any IPPool")

	assertContains(t, "ipam check", n.ok(t, "ipam", "check"), "12 allocations", "No problems found.")

	// A workload's address whose endpoint does not exist is leaked.
	leaked := assign("n1", ipam.WorkloadHandle("tabby-net", "c2"), 1, workload("c2"))[0].Addr
	report := filepath.Join(t.TempDir(), "report.json")
	out, errOut, err := n.ctl(t, "", "ipam", "check", "-o", report)
	if err == nil {
		t.Fatalf("ipam check with a leak succeeded:\n%s", out)
	}
	assertContains(t, "ipam check output", out, "leaked "+leaked.String(), `no workload endpoint in namespace "default" has container ID "c2"`)
	assertContains(t, "ipam check error", errOut, "ipam check found 1 problems")
	var r ipam.Report
	if data, err := os.ReadFile(report); err != nil || json.Unmarshal(data, &r) != nil || len(r.Leaked) != 1 || r.Leaked[0].Addr != leaked {
		t.Errorf("report.json: %v %+v", err, r)
	}

	// release refuses a live workload's address unless forced; a leaked one goes.
	errOut = n.fails(t, "ipam", "release", "--ip", live.String())
	assertContains(t, "release of a live workload's address", errOut, "belongs to workload endpoint default/", "--force")
	assertContains(t, "release", n.ok(t, "ipam", "release", "--ip", leaked.String()), "released "+leaked.String())
	assertContains(t, "release --force", n.ok(t, "ipam", "release", "--ip", live.String(), "--force"), "released "+live.String())
	assertContains(t, "--log-level loud", n.fails(t, "--log-level", "loud", "ipam", "check"), `--log-level "loud": want debug, info, warn or error`)
	out, _, err = n.ctl(t, "", "ipam", "check")
	if err == nil || !strings.Contains(out, "workload endpoint default/pod-1: "+live.String()+" is not allocated") {
		t.Errorf("check after releasing a live workload's address (%v):\n%s", err, out)
	}
	n.ok(t, "delete", "wep", "pod-1")
	n.ok(t, "ipam", "check")
	assertContains(t, "release of a free address", n.fails(t, "ipam", "release", "--ip", live.String()), "not allocated")

	// configure: strict affinity stops n2 borrowing.
	out = n.ok(t, "ipam", "configure", "--strictaffinity=true", "--max-blocks-per-host=3")
	assertContains(t, "ipam configure", out, "strictAffinity:     true", "maxBlocksPerHost:   3", "autoAllocateBlocks: true")
	assertContains(t, "ipam configure (show)", n.ok(t, "ipam", "configure"), "strictAffinity:     true")
	_, err = c.AutoAssign(ctx, ipam.AutoAssignArgs{Num4: 1, Handle: "more", Node: "n2"})
	if !errors.Is(err, ipam.ErrNoFreeAddresses) || !strings.Contains(err.Error(), "strictAffinity forbids borrowing") {
		t.Errorf("borrowing under strict affinity: %v", err)
	}
	n.fails(t, "ipam", "configure", "--max-blocks-per-host=-1")

	// The pool cannot be deleted while addresses are allocated in it.
	errOut = n.fails(t, "delete", "ippool", "tiny")
	assertContains(t, "delete of a pool in use", errOut, `IPPool "tiny" (10.70.0.0/28) still has 11 allocated addresses in 2 blocks: release them first`)
	for _, h := range []string{"tunnel-n1", "n2-fill", "n2-borrowed"} {
		if _, err := c.ReleaseByHandle(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	n.ok(t, "delete", "ippool", "tiny")
}
