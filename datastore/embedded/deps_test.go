package embedded_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientsDoNotLinkServer: the programs that are only etcd clients must not link the
// etcd server this package wraps, nor what only the server or tabby-node needs. Each
// of these added tens of milliseconds of package init to every tabby-cni and tabbyctl
// run.
func TestClientsDoNotLinkServer(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command:", err)
	}
	clients := []string{"github.com/tabby-net/tabby/cmd/tabby-cni", "github.com/tabby-net/tabby/cmd/tabbyctl"}
	forbidden := []string{
		"go.etcd.io/etcd/server/", // the embedded etcd server (this package)
		"go.etcd.io/raft/",
		"go.etcd.io/bbolt",
		"go.opentelemetry.io/", // etcd server's tracing
		"github.com/prometheus/",
		"github.com/osrg/gobgp/", // tabby-node's BGP speaker
		"github.com/tabby-net/tabby/datastore/embedded",
	}
	for _, cmd := range clients {
		out, err := exec.Command("go", "list", "-deps", cmd).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", cmd, err)
		}
		reported := map[string]bool{} // one error per forbidden prefix, naming a package
		for dep := range strings.Lines(string(out)) {
			dep = strings.TrimSpace(dep)
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) && !reported[f] {
					reported[f] = true
					t.Errorf("%s links %s (forbidden: %s...)", cmd, dep, f)
				}
			}
		}
	}
}
