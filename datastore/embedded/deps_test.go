package embedded_test

import (
	"os"
	"os/exec"
	"path/filepath"
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
		out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}	{{.Dir}}	{{join .GoFiles " "}}`, cmd).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", cmd, err)
		}
		reported := map[string]bool{} // one error per forbidden prefix, naming a package
		for line := range strings.Lines(string(out)) {
			dep, rest, _ := strings.Cut(strings.TrimSpace(line), "\t")
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) && !reported[f] {
					reported[f] = true
					t.Errorf("%s links %s (forbidden: %s...)", cmd, dep, f)
				}
			}
			// go test caches a pass by the files the test itself reads, not go list's:
			// stat tabby's own files in the graph (a new import edits one of them).
			if strings.HasPrefix(dep, "github.com/tabby-net/tabby/") {
				dir, files, _ := strings.Cut(rest, "\t")
				for _, f := range strings.Fields(files) {
					os.Stat(filepath.Join(dir, f))
				}
			}
		}
	}
	if gomod, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		os.Stat(strings.TrimSpace(string(gomod)))
	}
}
