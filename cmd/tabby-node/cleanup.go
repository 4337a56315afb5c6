package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netns"

	"github.com/tabby-net/tabby/felix"
)

// newCleanupCommand is `tabby-node cleanup`: it removes what tabby programmed on this
// host, for a node leaving tabby. Nothing of anyone else's is touched.
func newCleanupCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "remove every iptables chain and rule, ipset and route tabby owns on this host",
		Long: `cleanup removes tabby's iptables chains (tby-*: policy's, and tby-k-* of the Service
proxy's iptables mode) and the rules that jump to them from the filter, nat and raw
tables of both families and both iptables backends, its ipsets (tby*), the
addresses it put on lo (the node-local DNS server's: IPv4 ones labelled lo:tby,
IPv6 ones of address protocol ` + fmt.Sprint(felix.LoopbackProto) + `), the Service proxy's
nftables table (ip tabby), wireguard.tabby with its rule, and every route of
tabby's route protocol (` + fmt.Sprint(felix.RouteProtocol) + `) in every table. Stop the agent first, or it puts them back.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			chains, sets, err := felix.RemoveAll(cmd.Context(), felix.Runner{})
			if err != nil {
				return fmt.Errorf("iptables and ipsets: %w", err)
			}
			routes, err := felix.RemoveRoutes(slog.Default())
			if err != nil {
				return err
			}
			sp, err := felix.NewServiceProxy(felix.ServiceProxyConfig{Log: slog.Default()})
			if err == nil {
				err = sp.Remove(cmd.Context())
			}
			if err != nil {
				return fmt.Errorf("nftables table ip tabby: %w", err)
			}
			lo, err := felix.NewLoopbackReconciler(netns.None())
			if err != nil {
				return fmt.Errorf("lo addresses: %w", err)
			}
			defer lo.Close()
			addrs, err := lo.Apply(nil)
			if err != nil {
				return fmt.Errorf("lo addresses: %w", err)
			}
			wg, err := felix.NewWireGuardReconciler(nil, nil, slog.Default()).Apply(nil)
			if err != nil {
				return fmt.Errorf("wireguard: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d chains, %d ipsets, %d routes, %d lo addresses, %d wireguard objects\n", chains, sets, routes, addrs, wg)
			return nil
		},
	}
}
