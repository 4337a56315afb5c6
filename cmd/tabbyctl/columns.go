package main

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tabby-net/tabby/api"
)

// column is one table column of `tabbyctl get`; wide columns appear only with -o wide.
type column struct {
	header string
	wide   bool
	value  func(api.Resource) string
}

// storedEndpoints lists an Endpoints resource's ready addresses with each port.
func storedEndpoints(e *api.Endpoints) string {
	var eps []string
	for _, s := range e.Subsets {
		for _, a := range s.Addresses {
			for _, p := range s.Ports {
				eps = append(eps, net.JoinHostPort(a.IP, strconv.Itoa(int(p.Port))))
			}
		}
	}
	return strings.Join(eps, ",")
}

// columnsFor returns the columns after NAME for a kind's table, as calicoctl and kubectl
// show them.
func columnsFor(kind *api.Kind, wide bool) []column {
	var out []column
	for _, c := range kindColumns[kind.Plural] {
		if !c.wide || wide {
			out = append(out, c)
		}
	}
	if wide {
		out = append(out, column{header: "LABELS", value: func(r api.Resource) string {
			return formatLabels(r.GetObjectMeta().Labels)
		}})
	}
	return append(out, column{header: "AGE", value: age})
}

var kindColumns = map[string][]column{
	"ippools": {
		{header: "CIDR", value: func(r api.Resource) string { return r.(*api.IPPool).Spec.CIDR }},
		{header: "NAT", wide: true, value: func(r api.Resource) string { return strconv.FormatBool(r.(*api.IPPool).Spec.NATOutgoing) }},
		{header: "IPIPMODE", wide: true, value: func(r api.Resource) string { return string(r.(*api.IPPool).Spec.IPIPMode) }},
		{header: "VXLANMODE", wide: true, value: func(r api.Resource) string { return string(r.(*api.IPPool).Spec.VXLANMode) }},
		{header: "DISABLED", wide: true, value: func(r api.Resource) string { return strconv.FormatBool(r.(*api.IPPool).Spec.Disabled) }},
		{header: "DISABLEBGPEXPORT", wide: true, value: func(r api.Resource) string {
			return strconv.FormatBool(r.(*api.IPPool).Spec.DisableBGPExport)
		}},
		{header: "BLOCKSIZE", wide: true, value: func(r api.Resource) string { return strconv.Itoa(r.(*api.IPPool).Spec.BlockSize) }},
		{header: "SELECTOR", value: func(r api.Resource) string { return r.(*api.IPPool).Spec.NodeSelector }},
	},
	"nodes": {
		{header: "ASN", value: func(r api.Resource) string {
			if b := r.(*api.Node).Spec.BGP; b != nil && b.ASNumber != nil {
				return b.ASNumber.String()
			}
			return "(64512)"
		}},
		{header: "IPV4", value: func(r api.Resource) string { return nodeBGP(r).IPv4Address }},
		{header: "IPV6", wide: true, value: func(r api.Resource) string { return nodeBGP(r).IPv6Address }},
		{header: "RR-CLUSTER-ID", wide: true, value: func(r api.Resource) string { return nodeBGP(r).RouteReflectorClusterID }},
	},
	"bgpconfigurations": {
		{header: "MESH", value: func(r api.Resource) string {
			if m := r.(*api.BGPConfiguration).Spec.NodeToNodeMeshEnabled; m != nil {
				return strconv.FormatBool(*m)
			}
			return ""
		}},
		{header: "ASN", value: func(r api.Resource) string {
			if a := r.(*api.BGPConfiguration).Spec.ASNumber; a != nil {
				return a.String()
			}
			return ""
		}},
		{header: "LISTENPORT", wide: true, value: func(r api.Resource) string {
			if p := r.(*api.BGPConfiguration).Spec.ListenPort; p != 0 {
				return strconv.Itoa(int(p))
			}
			return ""
		}},
		{header: "SERVICECLUSTERIPS", wide: true, value: func(r api.Resource) string {
			var cidrs []string
			for _, b := range r.(*api.BGPConfiguration).Spec.ServiceClusterIPs {
				cidrs = append(cidrs, b.CIDR)
			}
			return strings.Join(cidrs, ",")
		}},
	},
	"bgppeers": {
		{header: "PEERIP", value: func(r api.Resource) string { return r.(*api.BGPPeer).Spec.PeerIP }},
		{header: "NODE", value: func(r api.Resource) string {
			s := r.(*api.BGPPeer).Spec
			switch {
			case s.Node != "":
				return s.Node
			case s.NodeSelector != "":
				return "(selector) " + s.NodeSelector
			}
			return "(global)"
		}},
		{header: "ASN", value: func(r api.Resource) string {
			if a := r.(*api.BGPPeer).Spec.ASNumber; a != 0 {
				return a.String()
			}
			return ""
		}},
		{header: "PEERSELECTOR", wide: true, value: func(r api.Resource) string { return r.(*api.BGPPeer).Spec.PeerSelector }},
	},
	"workloadendpoints": {
		{header: "WORKLOAD", value: func(r api.Resource) string { return r.(*api.WorkloadEndpoint).Spec.Workload }},
		{header: "NODE", value: func(r api.Resource) string { return r.(*api.WorkloadEndpoint).Spec.Node }},
		{header: "NETWORKS", value: func(r api.Resource) string {
			return strings.Join(r.(*api.WorkloadEndpoint).Spec.IPNetworks, ",")
		}},
		{header: "INTERFACE", value: func(r api.Resource) string { return r.(*api.WorkloadEndpoint).Spec.InterfaceName }},
		{header: "PROFILES", wide: true, value: func(r api.Resource) string {
			return strings.Join(r.(*api.WorkloadEndpoint).Spec.Profiles, ",")
		}},
	},
	"networkpolicies": {
		{header: "ORDER", value: func(r api.Resource) string { return formatOrder(r.(*api.NetworkPolicy).Spec.Order) }},
		{header: "SELECTOR", value: func(r api.Resource) string { return r.(*api.NetworkPolicy).Spec.Selector }},
		{header: "TYPES", wide: true, value: func(r api.Resource) string { return formatTypes(r.(*api.NetworkPolicy).Spec.Types) }},
	},
	"globalnetworkpolicies": {
		{header: "ORDER", value: func(r api.Resource) string { return formatOrder(r.(*api.GlobalNetworkPolicy).Spec.Order) }},
		{header: "SELECTOR", value: func(r api.Resource) string { return r.(*api.GlobalNetworkPolicy).Spec.Selector }},
		{header: "TYPES", wide: true, value: func(r api.Resource) string {
			return formatTypes(r.(*api.GlobalNetworkPolicy).Spec.Types)
		}},
		{header: "NAMESPACESELECTOR", wide: true, value: func(r api.Resource) string {
			return r.(*api.GlobalNetworkPolicy).Spec.NamespaceSelector
		}},
	},
	"tiers": {
		{header: "ORDER", value: func(r api.Resource) string { return formatOrder(r.(*api.Tier).Spec.Order) }},
		{header: "DEFAULTACTION", value: func(r api.Resource) string { return string(r.(*api.Tier).Spec.DefaultAction) }},
	},
	"globalnetworksets": {
		{header: "NETS", value: func(r api.Resource) string { return strings.Join(r.(*api.GlobalNetworkSet).Spec.Nets, ",") }},
	},
	"networksets": {
		{header: "NETS", value: func(r api.Resource) string { return strings.Join(r.(*api.NetworkSet).Spec.Nets, ",") }},
	},
	"profiles": {
		{header: "INGRESS", value: func(r api.Resource) string { return strconv.Itoa(len(r.(*api.Profile).Spec.Ingress)) }},
		{header: "EGRESS", value: func(r api.Resource) string { return strconv.Itoa(len(r.(*api.Profile).Spec.Egress)) }},
	},
	"services": {
		{header: "TYPE", value: func(r api.Resource) string { return string(r.(*api.Service).Spec.Type) }},
		{header: "CLUSTER-IP", value: func(r api.Resource) string { return r.(*api.Service).Spec.ClusterIP }},
		{header: "PORTS", value: func(r api.Resource) string {
			var ports []string
			for _, p := range r.(*api.Service).Spec.Ports {
				s := strconv.Itoa(int(p.Port))
				if p.NodePort != 0 {
					s += ":" + strconv.Itoa(int(p.NodePort))
				}
				ports = append(ports, s+"/"+string(p.Protocol))
			}
			return strings.Join(ports, ",")
		}},
		{header: "SELECTOR", wide: true, value: func(r api.Resource) string { return formatLabels(r.(*api.Service).Spec.Selector) }},
	},
	"endpoints": {
		{header: "ENDPOINTS", value: func(r api.Resource) string { return storedEndpoints(r.(*api.Endpoints)) }},
	},
	"endpointslices": {
		{header: "ADDRESSTYPE", value: func(r api.Resource) string { return string(r.(*api.EndpointSlice).AddressType) }},
		{header: "PORTS", value: func(r api.Resource) string {
			var ports []string
			for _, p := range r.(*api.EndpointSlice).Ports {
				ports = append(ports, strconv.Itoa(int(p.Port)))
			}
			return strings.Join(ports, ",")
		}},
		{header: "ENDPOINTS", value: func(r api.Resource) string {
			var addrs []string
			for _, ep := range r.(*api.EndpointSlice).Endpoints {
				if len(ep.Addresses) > 0 {
					addrs = append(addrs, ep.Addresses[0])
				}
			}
			return strings.Join(addrs, ",")
		}},
		{header: "SERVICE", wide: true, value: func(r api.Resource) string { return r.(*api.EndpointSlice).ServiceName() }},
	},
	"k8snetworkpolicies": {
		{header: "POD-SELECTOR", value: func(r api.Resource) string {
			s := r.(*api.K8sNetworkPolicy).Spec.PodSelector
			if len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0 {
				return "<none>"
			}
			out := formatLabels(s.MatchLabels)
			if n := len(s.MatchExpressions); n > 0 {
				out = strings.TrimPrefix(out+fmt.Sprintf(",+%d expressions", n), ",")
			}
			return out
		}},
		{header: "TYPES", wide: true, value: func(r api.Resource) string {
			return formatTypes(r.(*api.K8sNetworkPolicy).Spec.PolicyTypes)
		}},
	},
}

func nodeBGP(r api.Resource) api.NodeBGPSpec {
	if b := r.(*api.Node).Spec.BGP; b != nil {
		return *b
	}
	return api.NodeBGPSpec{}
}

func formatOrder(o *float64) string {
	if o == nil {
		return ""
	}
	return strconv.FormatFloat(*o, 'g', -1, 64)
}

func formatTypes(ts []api.PolicyType) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s, ",")
}

func formatLabels(l map[string]string) string {
	kv := make([]string, 0, len(l))
	for k, v := range l {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

// age formats how long ago a resource was created, as kubectl does.
func age(r api.Resource) string {
	ts := r.GetObjectMeta().CreationTimestamp
	if ts == nil {
		return ""
	}
	d := time.Since(*ts)
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
