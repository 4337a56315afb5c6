package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/internal/nodestatus"
)

func newNodeDiagsCommand() *cobra.Command {
	var socket, output string
	cmd := &cobra.Command{
		Use:   "diags NAME [-o FILE.tar.gz] [--socket PATH]",
		Short: "collect a node's diagnostics into a tar.gz, from its agent's status socket",
		Long: `diags asks the tabby-node agent of node NAME, through its status socket on that
node's host (as tabbyctl node status does; run it there), for a diagnostics archive and
writes it to FILE (default tabby-diags-NAME-<time>.tar.gz). The archive holds:
version.txt, flags.txt (the agent's effective flags), status.json, readiness.json,
bgp-peers.json, logs.txt (the agent's recent log lines), routes.txt (ip route show table
all, IPv4 and IPv6), iptables.txt and ip6tables.txt (tabby's chains and hooks only, in
iptables-save syntax), nftables.txt (tabby's tables), ipsets.txt (tabby's sets, in ipset
save syntax) and ipam-check.json (tabbyctl ipam check's report). A command that failed
leaves its error in its file. An agent of another node than NAME is refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			node, body, err := nodestatus.NewClient(socket).Diags(cmd.Context())
			if err != nil {
				return err
			}
			defer body.Close()
			if node != name {
				return fmt.Errorf("the agent at %s is node %q, not %q: run tabbyctl node diags on %s's host, or give its --socket", socket, node, name, name)
			}
			if output == "" {
				output = fmt.Sprintf("tabby-diags-%s-%s.tar.gz", name, time.Now().UTC().Format("20060102T150405Z"))
			}
			f, err := os.OpenFile(output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			n, err := io.Copy(f, body)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(output)
				return fmt.Errorf("write %s: %w", output, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Diagnostics of node %s written to %s (%d bytes).\n", name, output, n)
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", envOr("TABBY_STATUS_SOCKET", nodestatus.DefaultSocket), "the agent's status socket (env TABBY_STATUS_SOCKET)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "the archive to write (default tabby-diags-NAME-<time>.tar.gz)")
	return cmd
}
