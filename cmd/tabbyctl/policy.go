package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/policy"
)

func newPolicyCommand(conn *connection) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "network policy tools",
	}
	cmd.AddCommand(newPolicyCheckCommand(conn))
	return cmd
}

func newPolicyCheckCommand(conn *connection) *cobra.Command {
	var port, srcPort uint16
	var protocol string
	var icmpType, icmpCode int
	cmd := &cobra.Command{
		Use:   "check SRC DST",
		Short: "say whether policy allows a flow, and which policy and rule decide it",
		Long: `check evaluates the cluster's policy for the first packet of a flow from SRC to DST,
each a workload endpoint (namespace/name) or an IP address, as every node enforces it:
the source endpoint's egress and the destination endpoint's ingress must both allow it.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			proto, ok := api.ParseProtocol(protocol).Number()
			if !ok || proto == 0 {
				return fmt.Errorf("--protocol %q: want tcp, udp, sctp, icmp or a number 1-255", protocol)
			}
			ds, err := conn.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer ds.Close()
			m, err := loadPolicyModel(cmd.Context(), ds)
			if err != nil {
				return err
			}
			src, err := resolvePolicyPeer(m, args[0])
			if err != nil {
				return fmt.Errorf("SRC: %w", err)
			}
			dst, err := resolvePolicyPeer(m, args[1])
			if err != nil {
				return fmt.Errorf("DST: %w", err)
			}
			if src.Is4() != dst.Is4() {
				return fmt.Errorf("SRC %s and DST %s are of different IP versions", src, dst)
			}
			p := policy.Packet{Src: src, Dst: dst, Protocol: proto, SrcPort: srcPort, DstPort: port, ICMPType: icmpType, ICMPCode: icmpCode}
			printVerdict(cmd.OutOrStdout(), m, args[0], args[1], p, m.Evaluate(p))
			return nil
		},
	}
	f := cmd.Flags()
	f.Uint16Var(&port, "port", 0, "destination port (tcp, udp, sctp)")
	f.Uint16Var(&srcPort, "source-port", 40000, "source port (tcp, udp, sctp)")
	f.StringVar(&protocol, "protocol", "tcp", "protocol: tcp, udp, sctp, icmp, icmpv6 or a number")
	f.IntVar(&icmpType, "icmp-type", 8, "ICMP type (icmp, icmpv6)")
	f.IntVar(&icmpCode, "icmp-code", 0, "ICMP code (icmp, icmpv6)")
	return cmd
}

// loadPolicyModel reads every resource policy depends on (with the Services whose
// endpoints services matches stand for) and compiles the model. A
// resource that does not compile is reported on the way, not fatal.
func loadPolicyModel(ctx context.Context, ds *datastore.Client) (*policy.Model, error) {
	var in policy.Input
	for _, plural := range slices.Concat(policy.InputKinds, policy.ServiceKinds) {
		kind, err := api.LookupKind(plural)
		if err != nil {
			return nil, err
		}
		rs, _, err := ds.List(ctx, kind, "")
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", plural, err)
		}
		for _, r := range rs {
			in.Add(r)
		}
	}
	m, err := policy.Build(in)
	if m == nil {
		return nil, err
	}
	return m, nil
}

// resolvePolicyPeer turns "namespace/name" or an address into an address.
func resolvePolicyPeer(m *policy.Model, s string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), nil
	}
	if !strings.Contains(s, "/") {
		return netip.Addr{}, fmt.Errorf("%q is neither namespace/name nor an IP address", s)
	}
	e := m.EndpointByKey(s)
	if e == nil {
		return netip.Addr{}, fmt.Errorf("no workload endpoint %s", s)
	}
	if len(e.Addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("workload endpoint %s has no address", s)
	}
	for _, a := range e.Addrs {
		if a.Is4() {
			return a, nil
		}
	}
	return e.Addrs[0], nil
}

func printVerdict(w io.Writer, m *policy.Model, srcArg, dstArg string, p policy.Packet, v policy.Verdict) {
	verdict := "DENIED"
	if v.Allowed {
		verdict = "ALLOWED"
	}
	flow := fmt.Sprintf("%s/%d", strings.ToLower(protoName(p.Protocol)), p.DstPort)
	if p.Protocol == policy.ProtoICMP || p.Protocol == policy.ProtoICMPv6 {
		flow = fmt.Sprintf("%s type %d code %d", strings.ToLower(protoName(p.Protocol)), p.ICMPType, p.ICMPCode)
	}
	fmt.Fprintf(w, "%s (%s) -> %s (%s) %s: %s\n", srcArg, p.Src, dstArg, p.Dst, flow, verdict)
	for _, side := range []struct {
		name string
		d    *policy.Decision
		addr netip.Addr
	}{{"egress", v.Egress, p.Src}, {"ingress", v.Ingress, p.Dst}} {
		if side.d == nil {
			fmt.Fprintf(w, "  %-7s %s is not a workload endpoint: no %s policy\n", side.name, side.addr, side.name)
			continue
		}
		r := "denied"
		if side.d.Allowed {
			r = "allowed"
		}
		fmt.Fprintf(w, "  %-7s of %s: %s by %s\n", side.name, side.d.Endpoint, r, side.d.Reason)
		for _, l := range side.d.Logged {
			fmt.Fprintf(w, "          on the way: %s\n", l)
		}
	}
}

func protoName(n uint8) string {
	for _, p := range []api.Protocol{api.ProtocolTCP, api.ProtocolUDP, api.ProtocolICMP, api.ProtocolICMPv6, api.ProtocolSCTP, api.ProtocolUDPLite} {
		if m, _ := p.Number(); m == n {
			return string(p)
		}
	}
	return fmt.Sprint(n)
}
