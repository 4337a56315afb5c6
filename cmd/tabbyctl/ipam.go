package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

func newIPAMCommand(conn *connection) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ipam",
		Short: "show, check, release and configure IP address management",
	}
	cmd.AddCommand(newIPAMShowCommand(conn), newIPAMCheckCommand(conn), newIPAMReleaseCommand(conn), newIPAMConfigureCommand(conn))
	return cmd
}

// ipamClient connects and returns the datastore (to close) and an IPAM client on it.
func (c *connection) ipamClient(cmd *cobra.Command) (*datastore.Client, *ipam.Client, error) {
	ds, err := c.connect(cmd.Context())
	if err != nil {
		return nil, nil, err
	}
	return ds, ipam.New(ds, nil), nil
}

func newIPAMShowCommand(conn *connection) *cobra.Command {
	var ip string
	var showBlocks, showBorrowed bool
	cmd := &cobra.Command{
		Use:   "show [--ip IP] [--show-blocks] [--show-borrowed]",
		Short: "show how full the IP pools and blocks are, or who holds one address",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, c, err := conn.ipamClient(cmd)
			if err != nil {
				return err
			}
			defer ds.Close()
			out := cmd.OutOrStdout()
			if ip != "" {
				addr, err := netip.ParseAddr(ip)
				if err != nil {
					return fmt.Errorf("--ip %q: not an IP address", ip)
				}
				return showIP(cmd, ds, c, addr)
			}
			u, err := c.Usage(cmd.Context())
			if err != nil {
				return err
			}
			if showBorrowed {
				return printBorrowed(out, u)
			}
			return printUsage(out, u, showBlocks)
		},
	}
	cmd.Flags().StringVar(&ip, "ip", "", "show who holds this address")
	cmd.Flags().BoolVar(&showBlocks, "show-blocks", false, "also show each block, with the node it is affine to")
	cmd.Flags().BoolVar(&showBorrowed, "show-borrowed", false, "list the addresses nodes borrowed from other nodes' blocks")
	return cmd
}

// share formats n of total as "n (p%)".
func share(n, total *big.Int) string {
	if total.Sign() == 0 {
		return n.String()
	}
	p, _ := new(big.Float).Quo(new(big.Float).SetInt(new(big.Int).Mul(n, big.NewInt(100))), new(big.Float).SetInt(total)).Float64()
	return fmt.Sprintf("%s (%.0f%%)", n, p)
}

func usageRow(tw io.Writer, grouping string, cidr netip.Prefix, total *big.Int, inUse int, node string, showNode bool) {
	used := big.NewInt(int64(inUse))
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", grouping, cidr, total, share(used, total), share(new(big.Int).Sub(total, used), total))
	if showNode {
		if node == "" {
			node = "-"
		}
		fmt.Fprintf(tw, "\t%s", node)
	}
	fmt.Fprintln(tw)
}

func printUsage(w io.Writer, u *ipam.Usage, showBlocks bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprint(tw, "GROUPING\tCIDR\tIPS TOTAL\tIPS IN USE\tIPS FREE")
	if showBlocks {
		fmt.Fprint(tw, "\tNODE")
	}
	fmt.Fprintln(tw)
	for _, p := range u.Pools {
		grouping := "IP Pool " + p.Name
		if p.Disabled {
			grouping += " (disabled)"
		}
		usageRow(tw, grouping, p.CIDR, p.Size, p.InUse, "", showBlocks)
		if showBlocks {
			for _, b := range p.Blocks {
				usageRow(tw, "Block", b.CIDR, big.NewInt(int64(b.Size)), b.InUse, b.Node, true)
			}
		}
	}
	if showBlocks {
		for _, b := range u.Orphans {
			usageRow(tw, "Block (in no pool)", b.CIDR, big.NewInt(int64(b.Size)), b.InUse, b.Node, true)
		}
	}
	return tw.Flush()
}

func printBorrowed(w io.Writer, u *ipam.Usage) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "IP\tBORROWING-NODE\tBLOCK\tBLOCK OWNER\tHANDLE")
	blocks := slices.Clone(u.Orphans)
	for _, p := range u.Pools {
		blocks = append(blocks, p.Blocks...)
	}
	for _, b := range blocks {
		for _, a := range b.Borrowed {
			owner := a.BlockNode
			if owner == "" {
				owner = "(none)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Addr, a.Attrs[ipam.AttrNode], b.CIDR, owner, a.Handle)
		}
	}
	return tw.Flush()
}

func showIP(cmd *cobra.Command, ds *datastore.Client, c *ipam.Client, addr netip.Addr) error {
	out := cmd.OutOrStdout()
	a, err := c.GetAllocation(cmd.Context(), addr)
	if errors.Is(err, ipam.ErrNotAllocated) {
		pools, _, err := datastore.ListAs[*api.IPPool](cmd.Context(), ds, "")
		if err != nil {
			return err
		}
		for _, p := range pools {
			if prefix, err := p.Prefix(); err == nil && prefix.Contains(addr) {
				fmt.Fprintf(out, "IP %s is not assigned (IPPool %q, %s)\n", addr, p.Name, prefix)
				return nil
			}
		}
		fmt.Fprintf(out, "IP %s is not in any IPPool\n", addr)
		return nil
	}
	if err != nil {
		return err
	}
	node := a.BlockNode
	if node == "" {
		node = "none"
	}
	fmt.Fprintf(out, "IP %s is in use\n", addr)
	fmt.Fprintf(out, "  handle:          %s\n", a.Handle)
	fmt.Fprintf(out, "  block:           %s (affine to node %s)\n", a.Block, node)
	fmt.Fprintf(out, "  sequence number: %d\n", a.SequenceNumber)
	var attrs []string
	for _, k := range slices.Sorted(maps.Keys(a.Attrs)) {
		attrs = append(attrs, k+"="+a.Attrs[k])
	}
	fmt.Fprintf(out, "  attributes:      %s\n", strings.Join(attrs, " "))
	return nil
}

func newIPAMCheckCommand(conn *connection) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "check [-o report.json]",
		Short: "report leaked, double-allocated or orphaned IPAM state; exit non-zero on problems",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, c, err := conn.ipamClient(cmd)
			if err != nil {
				return err
			}
			defer ds.Close()
			r, err := c.Check(cmd.Context(), ipam.CheckOptions{})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			s := r.Summary
			fmt.Fprintf(out, "Checked %d IP pools, %d blocks, %d allocations, %d handles, %d affinities, %d nodes and %d workload endpoints at revision %d.\n",
				s.Pools, s.Blocks, s.Allocations, s.Handles, s.Affinities, s.Nodes, s.WorkloadEndpoints, r.Revision)
			fmt.Fprint(out, r.String())
			if output != "" {
				data, err := json.MarshalIndent(r, "", "  ")
				if err != nil {
					return err
				}
				if err := os.WriteFile(output, append(data, '\n'), 0o644); err != nil {
					return err
				}
				fmt.Fprintf(out, "Report written to %s.\n", output)
			}
			if n := r.Problems(); n > 0 {
				return fmt.Errorf("ipam check found %d problems", n)
			}
			fmt.Fprintln(out, "No problems found.")
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "also write the report as JSON to this file")
	return cmd
}

func newIPAMReleaseCommand(conn *connection) *cobra.Command {
	var ip string
	var force bool
	cmd := &cobra.Command{
		Use:   "release --ip IP [--force]",
		Short: "release one allocated address (refused for a live workload's unless --force)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr, err := netip.ParseAddr(ip)
			if err != nil {
				return fmt.Errorf("--ip %q: not an IP address", ip)
			}
			ds, c, err := conn.ipamClient(cmd)
			if err != nil {
				return err
			}
			defer ds.Close()
			a, err := c.GetAllocation(cmd.Context(), addr)
			if err != nil {
				return err
			}
			if ns, cid, ok := ipam.WorkloadOf(a.Handle, a.Attrs); ok && !force {
				weps, _, err := datastore.ListAs[*api.WorkloadEndpoint](cmd.Context(), ds, ns)
				if err != nil {
					return err
				}
				for _, w := range weps {
					if w.Spec.ContainerID == cid {
						return fmt.Errorf("IP %s belongs to workload endpoint %s/%s (container %s), which exists: delete the workload, or give --force to release it anyway",
							addr, ns, w.Name, cid)
					}
				}
			}
			// The sequence number makes the release fail if the address changed hands
			// since it was read.
			if _, err := c.ReleaseIPs(cmd.Context(), ipam.ReleaseOptions{Addr: addr, Handle: a.Handle, SequenceNumber: &a.SequenceNumber}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "released %s (handle %s)\n", addr, a.Handle)
			return nil
		},
	}
	cmd.Flags().StringVar(&ip, "ip", "", "the address to release (required)")
	cmd.Flags().BoolVar(&force, "force", false, "release even an address whose workload endpoint exists")
	_ = cmd.MarkFlagRequired("ip")
	return cmd
}

func newIPAMConfigureCommand(conn *connection) *cobra.Command {
	var strict, autoAllocate bool
	var maxBlocks int
	cmd := &cobra.Command{
		Use:   "configure [--strictaffinity=true|false] [--max-blocks-per-host=N] [--auto-allocate-blocks=true|false]",
		Short: "change the IPAM configuration, and print it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, c, err := conn.ipamClient(cmd)
			if err != nil {
				return err
			}
			defer ds.Close()
			f := cmd.Flags()
			var cfg ipam.Config
			if f.Changed("strictaffinity") || f.Changed("max-blocks-per-host") || f.Changed("auto-allocate-blocks") {
				cfg, err = c.UpdateConfig(cmd.Context(), func(cfg *ipam.Config) {
					if f.Changed("strictaffinity") {
						cfg.StrictAffinity = strict
					}
					if f.Changed("max-blocks-per-host") {
						cfg.MaxBlocksPerHost = maxBlocks
					}
					if f.Changed("auto-allocate-blocks") {
						cfg.AutoAllocateBlocks = autoAllocate
					}
				})
			} else {
				cfg, err = c.GetConfig(cmd.Context())
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "strictAffinity:     %t\n", cfg.StrictAffinity)
			fmt.Fprintf(out, "maxBlocksPerHost:   %d\n", cfg.MaxBlocksPerHost)
			fmt.Fprintf(out, "autoAllocateBlocks: %t\n", cfg.AutoAllocateBlocks)
			return nil
		},
	}
	cmd.Flags().BoolVar(&strict, "strictaffinity", false, "nodes allocate only from their own blocks, never borrowing")
	cmd.Flags().IntVar(&maxBlocks, "max-blocks-per-host", 0, "blocks one node may claim per IP version (0: no cap)")
	cmd.Flags().BoolVar(&autoAllocate, "auto-allocate-blocks", true, "nodes claim new blocks when theirs are full")
	return cmd
}
