package main

import (
	"errors"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/internal/labstate"
)

func newHostCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "host",
		Short: "add or remove an extra host namespace (an external router, an internet host)",
		Long: `A host is a namespace on the lab's underlay that runs no agent: a BIRD or FRR router for
the nodes to peer with, or an "internet" host for NAT tests. It is attached like a node
(eth0 on its subnet's bridge, router port h-<name>), gets the lowest free address from
172.31.<subnet>.200 up and a default route via the router, and runs what tabby-lab exec
starts in it. A subnet that does not exist yet is created (a bridge in the router), so
"host add internet --subnet 99" gives a host on a segment of its own.`,
	}
	var subnet int
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "add a host namespace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateHostName(args[0]); err != nil {
				return err
			}
			lk, st, err := g.lockAndLoad()
			if err != nil {
				return err
			}
			defer lk.unlock(false)
			h, err := planHost(st, args[0], subnet)
			if err != nil {
				return err
			}
			if err := addHost(cmd, st, h); err != nil {
				return fmt.Errorf("host add %s: %w", h.Name, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "host %s: namespace %s, address %s on subnet %d (bridge %s)\n",
				h.Name, h.Netns, h.Address, h.Subnet, bridgeName(h.Subnet))
			return nil
		},
	}
	add.Flags().IntVar(&subnet, "subnet", 1, "the underlay subnet (1-254) to attach it to")
	del := &cobra.Command{
		Use:   "del NAME",
		Short: "remove a host namespace and every process in it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lk, st, err := g.lockAndLoad()
			if err != nil {
				return err
			}
			defer lk.unlock(false)
			h := st.Host(args[0])
			if h == nil {
				return fmt.Errorf("lab %s has no host %q", st.Name, args[0])
			}
			if err := removeNetns(h.Netns); err != nil {
				return fmt.Errorf("host del %s: %w", h.Name, err)
			}
			st.Hosts = slices.DeleteFunc(st.Hosts, func(x labstate.Host) bool { return x.Name == args[0] })
			return st.Save()
		},
	}
	cmd.AddCommand(add, del)
	return cmd
}

func addHost(cmd *cobra.Command, st *labstate.State, h labstate.Host) (err error) {
	rh, err := openNetns(st.Router.Netns)
	if err != nil {
		return err
	}
	defer rh.Close()
	if st.Subnet(h.Subnet) == nil {
		s := newSubnet(h.Subnet)
		if st.IPv6 {
			setSubnet6(&s)
		}
		if err := addBridge(rh, s); err != nil {
			return err
		}
		st.Subnets = append(st.Subnets, s)
		slices.SortFunc(st.Subnets, func(a, b labstate.Subnet) int { return a.Index - b.Index })
		if err := st.Save(); err != nil {
			return err
		}
	}
	if err := attach(cmd.Context(), rh, h.Attachment); err != nil {
		return errors.Join(err, removeNetns(h.Netns))
	}
	st.Hosts = append(st.Hosts, h)
	return st.Save()
}

// removeNetns stops every process in a namespace and removes it.
func removeNetns(ns string) error {
	byNS, err := pidsIn([]string{ns})
	if err != nil {
		return err
	}
	if err := stopAll(byNS[ns]); err != nil {
		return err
	}
	return deleteNetns(ns)
}
