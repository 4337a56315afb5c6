package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/datastore/datastoretest"
	"github.com/tabby-net/tabby/ipam"
)

// untar reads a tar.gz into name → content, in order.
func untar(t *testing.T, data []byte) ([]string, map[string]string) {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		files[h.Name] = string(b)
	}
}

// TestDiagArchive builds an archive with canned command outputs: every entry is there,
// in order and non-empty, the JSON ones parse, the kernel tables are cut to tabby's, a
// command that failed leaves its error, and the IPAM check is the datastore's.
func TestDiagArchive(t *testing.T) {
	ds := datastoretest.Start(t)
	logs := NewLogRing(10)
	fmt.Fprintln(logs, `level=INFO msg="agent running"`)
	outputs := map[string]string{
		"iptables-save":  "*filter\n:FORWARD ACCEPT [0:0]\n:tby-forward - [0:0]\n-A FORWARD -j tby-forward\n-A FORWARD -j OTHER\nCOMMIT\n",
		"ip6tables-save": "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n",
		"ipset":          "create tbyall hash:net\ncreate other hash:ip\n",
		"ip":             "10.244.0.0/26 proto 80 blackhole\n",
	}
	run := func(_ context.Context, name string, args ...string) ([]byte, error) {
		if out, ok := outputs[name]; ok {
			return []byte(out), nil
		}
		return nil, fmt.Errorf("%s: not found", name)
	}
	st := &statusServer{node: "node1", role: RoleNode, ready: NewReadiness()}
	d := &diagCollector{status: st, version: "v1.2.3", flags: []string{"--node-name=node1"}, logs: logs, ipam: ipam.New(ds, slog.New(slog.DiscardHandler)), run: run}
	var buf bytes.Buffer
	if err := d.write(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	names, files := untar(t, buf.Bytes())
	if strings.Join(names, " ") != strings.Join(DiagEntries, " ") {
		t.Errorf("entries %v, want %v", names, DiagEntries)
	}
	for _, name := range DiagEntries {
		if strings.TrimSpace(files[name]) == "" {
			t.Errorf("%s is empty", name)
		}
		if strings.HasSuffix(name, ".json") && !json.Valid([]byte(files[name])) {
			t.Errorf("%s does not parse:\n%s", name, files[name])
		}
	}
	for name, want := range map[string][]string{
		"version.txt":     {"tabby-node v1.2.3", "node node1"},
		"flags.txt":       {"--node-name=node1"},
		"logs.txt":        {"agent running"},
		"routes.txt":      {"# ip -4 route show table all", "blackhole"},
		"iptables.txt":    {":tby-forward", "-A FORWARD -j tby-forward", "COMMIT"},
		"ipsets.txt":      {"create tbyall"},
		"nftables.txt":    {"# nft list table ip tabby", "# error: nft: not found"},
		"status.json":     {`"node": "node1"`},
		"ipam-check.json": {`"revision"`},
	} {
		for _, w := range want {
			if !strings.Contains(files[name], w) {
				t.Errorf("%s lacks %q:\n%s", name, w, files[name])
			}
		}
	}
	for name, not := range map[string]string{"iptables.txt": "OTHER", "ipsets.txt": "other", "ip6tables.txt": "FORWARD"} {
		if strings.Contains(files[name], not) {
			t.Errorf("%s holds %q, not tabby's:\n%s", name, not, files[name])
		}
	}
	var rep ipam.Report
	if err := json.Unmarshal([]byte(files["ipam-check.json"]), &rep); err != nil || rep.Problems() != 0 {
		t.Errorf("ipam-check.json: %v %+v", err, rep)
	}
}
