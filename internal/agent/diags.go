package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/ipam"
	"github.com/tabby-net/tabby/proxy"
)

// DiagEntries are the files of a diagnostics archive, in order.
var DiagEntries = []string{
	"version.txt", "flags.txt", "status.json", "readiness.json", "bgp-peers.json", "logs.txt",
	"routes.txt", "iptables.txt", "ip6tables.txt", "nftables.txt", "ipsets.txt", "ipam-check.json",
}

// diagTimeout bounds each command and the IPAM check of a collection.
const diagTimeout = 10 * time.Second

// diagRunner runs a command and returns its standard output: a seam for the tests.
type diagRunner func(ctx context.Context, name string, args ...string) ([]byte, error)

func runDiagCommand(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// diagCollector gathers what `tabbyctl node diags` archives, on the node.
type diagCollector struct {
	status  *statusServer
	version string
	flags   []string
	logs    *LogRing // nil: no logs kept
	ipam    *ipam.Client
	run     diagRunner
}

// write writes the archive (tar.gz of DiagEntries) to w. A command that fails leaves its
// error in its entry, so every entry is there and says something.
func (d *diagCollector) write(ctx context.Context, w io.Writer) error {
	files := d.collect(ctx)
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	now := time.Now()
	for _, name := range DiagEntries {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: now}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func (d *diagCollector) collect(ctx context.Context) map[string][]byte {
	files := map[string][]byte{}
	jsonOf := func(v any) []byte {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return []byte(fmt.Sprintf("{\"error\": %q}\n", err.Error()))
		}
		return append(b, '\n')
	}
	files["version.txt"] = fmt.Appendf(nil, "tabby-node %s\n%s %s/%s\nnode %s, role %s\ncollected %s\n",
		d.version, runtime.Version(), runtime.GOOS, runtime.GOARCH, d.status.node, d.status.role, time.Now().UTC().Format(time.RFC3339))
	files["flags.txt"] = []byte(strings.Join(d.flags, "\n") + "\n")
	st, _ := d.status.status(ctx)
	files["status.json"] = jsonOf(st)
	files["readiness.json"] = jsonOf(d.status.readiness())
	files["bgp-peers.json"] = jsonOf(st.Peers)
	files["logs.txt"] = []byte("# tabby-node keeps no log lines\n")
	if d.logs != nil {
		files["logs.txt"] = d.logs.Bytes()
	}
	// cmd runs a command, filtered; its entry holds the command line and, if it failed,
	// the error.
	cmd := func(filter func([]byte) []byte, name string, args ...string) []byte {
		ctx, cancel := context.WithTimeout(ctx, diagTimeout)
		defer cancel()
		out, err := d.run(ctx, name, args...)
		head := fmt.Sprintf("# %s %s\n", name, strings.Join(args, " "))
		if err != nil {
			return []byte(head + "# error: " + err.Error() + "\n")
		}
		if filter != nil {
			out = filter(out)
		}
		return append([]byte(head), out...)
	}
	files["routes.txt"] = append(cmd(nil, "ip", "-4", "route", "show", "table", "all"), cmd(nil, "ip", "-6", "route", "show", "table", "all")...)
	files["iptables.txt"] = cmd(felix.OwnIPTables, "iptables-save")
	files["ip6tables.txt"] = cmd(felix.OwnIPTables, "ip6tables-save")
	files["nftables.txt"] = append(cmd(nil, "nft", "list", "table", "ip", proxy.TableName), cmd(nil, "nft", "list", "table", "ip6", proxy.TableName)...)
	files["ipsets.txt"] = cmd(felix.OwnIPSets, "ipset", "save")
	ictx, cancel := context.WithTimeout(ctx, diagTimeout)
	defer cancel()
	if rep, err := d.ipam.Check(ictx, ipam.CheckOptions{}); err != nil {
		files["ipam-check.json"] = jsonOf(map[string]string{"error": err.Error()})
	} else {
		files["ipam-check.json"] = jsonOf(rep)
	}
	return files
}
