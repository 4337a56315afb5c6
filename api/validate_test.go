package api

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// decodeOne decodes a manifest holding exactly one resource.
func decodeOne(t *testing.T, manifest string) Resource {
	t.Helper()
	rs, err := Decode([]byte(manifest), "test.yaml")
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(rs) != 1 {
		t.Fatalf("decoded %d resources", len(rs))
	}
	inDefaultNamespace(rs[0])
	return rs[0]
}

// A namespaced manifest without a namespace decodes without one (the caller chooses it)
// and does not validate until it has one.
func TestNamespaceIsTheCallersChoice(t *testing.T) {
	rs, err := Decode([]byte(calico+"kind: NetworkSet\nmetadata: {name: s}\n"), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if ns := rs[0].GetObjectMeta().Namespace; ns != "" {
		t.Errorf("Decode gave namespace %q, want none", ns)
	}
	if err := Validate(rs[0]); err == nil || err.Error() != "metadata.namespace: required: NetworkSet is namespaced" {
		t.Errorf("Validate = %v", err)
	}
}

const (
	calico  = "apiVersion: projectcalico.org/v3\n"
	core    = "apiVersion: v1\n"
	netv1   = "apiVersion: networking.k8s.io/v1\n"
	discv1  = "apiVersion: discovery.k8s.io/v1\n"
	tabbyv1 = "apiVersion: tabby.io/v1\n"
)

// gnpRule wraps one ingress rule (indented YAML) in a GlobalNetworkPolicy.
func gnpRule(rule string) string {
	return calico + "kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - " +
		strings.ReplaceAll(strings.TrimSpace(rule), "\n", "\n    ") + "\n"
}

// validationCases are resources that decode but do not validate, with every message
// Validate must give, in order. A want ending in "…" is matched as a prefix (used where
// the selector parser's wording is not this package's to fix).
var validationCases = []struct {
	name     string
	manifest string
	want     []string
}{
	// Metadata.
	{"bad name", calico + "kind: IPPool\nmetadata: {name: Bad_Name}\nspec: {cidr: 10.0.0.0/16}\n",
		[]string{`metadata.name: "Bad_Name" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`}},
	{"missing name", calico + "kind: IPPool\nspec: {cidr: 10.0.0.0/16}\n",
		[]string{`metadata.name: required`}},
	{"name too long", calico + "kind: GlobalNetworkSet\nmetadata: {name: " + strings.Repeat("a", 254) + "}\n",
		[]string{`metadata.name: "` + strings.Repeat("a", 254) + `" is longer than 253 characters`}},
	{"namespace on a global kind", calico + "kind: IPPool\nmetadata: {name: p, namespace: prod}\nspec: {cidr: 10.0.0.0/16}\n",
		[]string{`metadata.namespace: must be empty: IPPool is not namespaced`}},
	{"bad namespace", calico + "kind: NetworkSet\nmetadata: {name: s, namespace: Prod.A}\n",
		[]string{`metadata.namespace: "Prod.A" is not a valid DNS-1123 label (lower case alphanumerics and '-')`}},
	{"bad labels and annotations", calico + "kind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels: {\"-bad\": x, ok: \"not ok\"}\n  annotations: {\"a/b/c\": x}\n",
		[]string{
			`metadata.labels["-bad"]: "-bad" is not a valid label key (an optional DNS subdomain and '/', then at most 63 alphanumerics, '-', '_' or '.')`,
			`metadata.labels.ok: "not ok" is not a valid label value (at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric)`,
			`metadata.annotations["a/b/c"]: "a/b/c" is not a valid annotation key`,
		}},

	// IPPool.
	{"host bits", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.1/24}\n",
		[]string{`spec.cidr: "10.0.0.1/24" has host bits set (did you mean 10.0.0.0/24?)`}},
	{"not a CIDR", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0}\n",
		[]string{`spec.cidr: "10.0.0.0" is not a valid CIDR`}},
	{"garbage CIDR", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/33}\n",
		[]string{`spec.cidr: "10.0.0.0/33" is not a valid CIDR`}},
	{"missing CIDR", calico + "kind: IPPool\nmetadata: {name: p}\n",
		[]string{`spec.cidr: required`}},
	{"block size out of range", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/8, blockSize: 19}\n",
		[]string{`spec.blockSize: 19 is out of range 20-32 for an IPv4 pool`}},
	{"IPv6 block size out of range", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: \"fd00::/48\", blockSize: 64}\n",
		[]string{`spec.blockSize: 64 is out of range 116-128 for an IPv6 pool`}},
	{"pool smaller than a block", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/28}\n",
		[]string{`spec.blockSize: 26 is smaller than the pool's prefix length 28: a block must fit in the pool`}},
	{"both encapsulations", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, ipipMode: Always, vxlanMode: CrossSubnet}\n",
		[]string{`spec.ipipMode: ipipMode and vxlanMode cannot both be enabled (vxlanMode is CrossSubnet)`}},
	{"IPIP on IPv6", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: \"fd00::/64\", ipipMode: CrossSubnet}\n",
		[]string{`spec.ipipMode: IPIP is not supported on an IPv6 pool; use vxlanMode (VXLAN over the IPv6 underlay) or Never`}},
	{"both encapsulations on IPv6", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: \"fd00::/64\", ipipMode: Always, vxlanMode: Always}\n",
		[]string{
			`spec.ipipMode: IPIP is not supported on an IPv6 pool; use vxlanMode (VXLAN over the IPv6 underlay) or Never`,
			`spec.ipipMode: ipipMode and vxlanMode cannot both be enabled (vxlanMode is Always)`,
		}},
	{"unknown modes and uses", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, ipipMode: Sometimes, vxlanMode: always, allowedUses: [Workload, LoadBalancer, Workload]}\n",
		[]string{
			`spec.ipipMode: "Sometimes" is not one of Never, Always, CrossSubnet`,
			`spec.vxlanMode: "always" is not one of Never, Always, CrossSubnet`,
			`spec.allowedUses[1]: "LoadBalancer" is not one of Workload, Tunnel`,
			`spec.allowedUses[2]: "Workload" is listed twice`,
		}},
	{"link-local pool", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 169.254.0.0/16}\n",
		[]string{`spec.cidr: 169.254.0.0/16 overlaps the link-local range 169.254.0.0/16`}},
	{"bad node selector", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, nodeSelector: \"rack ==\"}\n",
		[]string{`spec.nodeSelector: selector "rack ==": …`}},
	{"global() outside namespaceSelector", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, nodeSelector: global()}\n",
		[]string{`spec.nodeSelector: global() can only be used in a rule's namespaceSelector`}},
	{"every problem at once", calico + "kind: IPPool\nmetadata: {name: Pool_1}\nspec: {cidr: 10.1.2.3/16, blockSize: 40, ipipMode: Sometimes}\n",
		[]string{
			`metadata.name: "Pool_1" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`,
			`spec.cidr: "10.1.2.3/16" has host bits set (did you mean 10.1.0.0/16?)`,
			`spec.ipipMode: "Sometimes" is not one of Never, Always, CrossSubnet`,
		}},

	// Node.
	{"node addresses", calico + "kind: Node\nmetadata: {name: node1}\nspec:\n  bgp: {asNumber: 0, ipv4Address: \"2001:db8::1/64\", ipv6Address: 10.0.0.1/24, ipv4IPIPTunnelAddr: 10.0.0.1/32, routeReflectorClusterID: x}\n  ipv4VXLANTunnelAddr: 10.0.0.256\n  vxlanTunnelMACAddr: 66:d1:f3:0e:6a\n  ipv6VXLANTunnelAddr: 10.0.0.1\n  vxlanTunnelMACAddrV6: \"01:02\"\n  orchRefs: [{nodeName: a}]\n",
		[]string{
			`spec.bgp.asNumber: AS number 0 is reserved; use 1-4294967295`,
			`spec.bgp.ipv4Address: "2001:db8::1/64" is not an IPv4 address`,
			`spec.bgp.ipv6Address: "10.0.0.1/24" is not an IPv6 address`,
			`spec.bgp.ipv4IPIPTunnelAddr: "10.0.0.1/32" is not a valid IP address`,
			`spec.bgp.routeReflectorClusterID: "x" is not a valid IP address`,
			`spec.ipv4VXLANTunnelAddr: "10.0.0.256" is not a valid IP address`,
			`spec.vxlanTunnelMACAddr: "66:d1:f3:0e:6a" is not a valid MAC address (six bytes, like 66:6a:2b:00:00:01)`,
			`spec.ipv6VXLANTunnelAddr: "10.0.0.1" is not an IPv6 address`,
			`spec.vxlanTunnelMACAddrV6: "01:02" is not a valid MAC address (six bytes, like 66:6a:2b:00:00:01)`,
			`spec.orchRefs[0].orchestrator: required`,
		}},
	{"empty node BGP", calico + "kind: Node\nmetadata: {name: node1}\nspec: {bgp: {}}\n",
		[]string{`spec.bgp: empty; omit it for a node without BGP`}},
	{"node address not parseable", calico + "kind: Node\nmetadata: {name: node1}\nspec: {bgp: {ipv4Address: 10.0.0.1/99}}\n",
		[]string{`spec.bgp.ipv4Address: "10.0.0.1/99" is not an address with optional prefix length, like "10.0.0.1/24"`}},
	{"node wireguard key", calico + "kind: Node\nmetadata: {name: node1}\nspec: {}\nstatus: {wireguardPublicKey: c2hvcnQ=}\n",
		[]string{`status.wireguardPublicKey: "c2hvcnQ=" is not a WireGuard key (32 bytes in base64)`}},

	// BGPConfiguration.
	{"BGP configuration name", calico + "kind: BGPConfiguration\nmetadata: {name: global}\n",
		[]string{`metadata.name: "global" is not a BGPConfiguration name tabby uses: "default" for the cluster, "node.<node name>" for one node`}},
	{"node override of cluster-only fields", calico + "kind: BGPConfiguration\nmetadata: {name: node.n1}\nspec: {asNumber: 65000, nodeToNodeMeshEnabled: true, serviceClusterIPs: [{cidr: 10.96.0.0/12}], logSeverityScreen: Verbose}\n",
		[]string{
			`spec.logSeverityScreen: "Verbose" is not one of Debug, Info, Warning, Error, Fatal`,
			`spec.nodeToNodeMeshEnabled: only valid in the BGPConfiguration named "default" (a node's AS number is set in its Node resource)`,
			`spec.asNumber: only valid in the BGPConfiguration named "default" (a node's AS number is set in its Node resource)`,
			`spec.serviceClusterIPs: only valid in the BGPConfiguration named "default" (a node's AS number is set in its Node resource)`,
		}},
	{"communities", calico + "kind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  serviceExternalIPs: [{cidr: 10.0.0.1/8}, {}]\n  communities: [{name: a, value: \"65536:1\"}, {name: a, value: \"1:2:3\"}, {value: \"1:2\"}]\n  prefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [a, b, \"1:2\"]}]\n",
		[]string{
			`spec.serviceExternalIPs[0].cidr: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`,
			`spec.serviceExternalIPs[1].cidr: required`,
			`spec.communities[0].value: "65536:1" is not a community value ("aa:nn" with 16-bit numbers, or "aa:nn:mm" with 32-bit numbers)`,
			`spec.communities[1].name: community "a" is defined twice`,
			`spec.communities[2].name: required`,
			`spec.prefixAdvertisements[0].communities[1]: "b" is neither a community defined in spec.communities nor a value "aa:nn" or "aa:nn:mm"`,
		}},
	{"restart time and password without the mesh (communities only node overrides use are fine)", calico + "kind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: false, nodeMeshMaxRestartTime: 2h, nodeMeshPassword: {secretKeyRef: {name: bgp, key: mesh}}, communities: [{name: a, value: \"1:2\"}]}\n",
		[]string{
			`spec.nodeMeshMaxRestartTime: 2h0m0s is out of range: BGP's graceful restart time is a whole number of seconds, 0s-4095s`,
			`spec.nodeMeshMaxRestartTime: set, but the node-to-node mesh is disabled`,
			`spec.nodeMeshPassword: set, but the node-to-node mesh is disabled`,
		}},
	{"mesh password without a key", calico + "kind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeMeshPassword: {secretKeyRef: {name: Bgp}}}\n",
		[]string{
			`spec.nodeMeshPassword.secretKeyRef.name: "Bgp" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`,
			`spec.nodeMeshPassword.secretKeyRef.key: required`,
		}},
	{"mesh password in a node's override", calico + "kind: BGPConfiguration\nmetadata: {name: node.n1}\nspec: {nodeMeshPassword: {}}\n",
		[]string{
			`spec.nodeMeshPassword.secretKeyRef: required`,
			`spec.nodeMeshPassword: only valid in the BGPConfiguration named "default" (a node's AS number is set in its Node resource)`,
		}},

	// BGPPeer.
	{"peer scope conflicts", calico + "kind: BGPPeer\nmetadata: {name: p}\nspec: {node: n1, nodeSelector: all(), peerIP: 10.0.0.1, peerSelector: rr == 'true', asNumber: 65000}\n",
		[]string{
			`spec.node: must be empty when spec.nodeSelector is set`,
			`spec.peerIP: must be empty when spec.peerSelector is set`,
		}},
	{"peer without a remote", calico + "kind: BGPPeer\nmetadata: {name: p}\nspec: {node: n1}\n",
		[]string{`spec.peerIP: one of spec.peerIP or spec.peerSelector is required`}},
	{"peer IP forms", calico + "kind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: \"10.0.0.1:0\"}\n",
		[]string{
			`spec.peerIP: "10.0.0.1:0" is not an address, "<IPv4>:<port>" or "[<IPv6>]:<port>" with port 1-65535`,
			`spec.asNumber: required when spec.peerIP is set`,
		}},
	{"unbracketed IPv6 with port is an address", calico + "kind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: \"[fe80::1%eth0]:179\", asNumber: 65000}\n",
		[]string{`spec.peerIP: "[fe80::1%eth0]:179" is not an address, "<IPv4>:<port>" or "[<IPv6>]:<port>" with port 1-65535`}},
	{"peer selector with AS number", calico + "kind: BGPPeer\nmetadata: {name: p}\nspec: {peerSelector: rr == 'true', asNumber: 65000}\n",
		[]string{`spec.asNumber: must be empty when spec.peerSelector is set`}},
	{"peer options", calico + "kind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: 65000, sourceAddress: NodeIP, maxRestartTime: 1.5s, password: {secretKeyRef: {name: Secrets}}}\n",
		[]string{
			`spec.password.secretKeyRef.name: "Secrets" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`,
			`spec.password.secretKeyRef.key: required`,
			`spec.sourceAddress: "NodeIP" is not one of UseNodeIP, None`,
			`spec.maxRestartTime: 1.5s is out of range: BGP's graceful restart time is a whole number of seconds, 0s-4095s`,
		}},
	{"password without a secret", calico + "kind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: 65000, password: {}}\n",
		[]string{`spec.password.secretKeyRef: required`}},
	{"peer filters", calico + "kind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: 65000, filters: [f, F, f]}\n",
		[]string{
			`spec.filters[1]: "F" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`,
			`spec.filters[2]: "f" is named twice`,
		}},

	// BGPFilter.
	{"filter rule without action, operator without cidr, interface", calico + "kind: BGPFilter\nmetadata: {name: f}\nspec: {exportV4: [{matchOperator: In}, {action: Accept, interface: eth0}]}\n",
		[]string{
			`spec.exportV4[0].action: required: Accept or Reject`,
			`spec.exportV4[0].cidr: required when matchOperator is set`,
			`spec.exportV4[1].interface: "eth0": not implemented: tabby matches no routes by interface`,
		}},
	{"filter wrong family, bad operator and action, source on import", calico + "kind: BGPFilter\nmetadata: {name: f}\nspec: {importV6: [{action: Drop, matchOperator: Within, cidr: 10.0.0.0/8, source: RemotePeers}], importV4: [{action: Accept, matchOperator: In, cidr: 10.0.0.1/8}]}\n",
		[]string{
			`spec.importV4[0].cidr: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`,
			`spec.importV6[0].action: "Drop" is not one of Accept, Reject`,
			`spec.importV6[0].matchOperator: "Within" is not one of Equal, NotEqual, In, NotIn`,
			`spec.importV6[0].cidr: 10.0.0.0/8 is not an IPv6 network`,
			`spec.importV6[0].source: only export rules take a source`,
		}},

	// WorkloadEndpoint.
	{"workload endpoint", calico + "kind: WorkloadEndpoint\nmetadata: {name: w}\nspec:\n  containerID: -abc\n  mac: zz:zz\n  ipNetworks: [10.0.0.0/24, 10.0.1.5]\n  ipNATs: [{internalIP: 10.9.9.9, externalIP: \"2001:db8::1\"}]\n  profiles: [Kns]\n  ports: [{port: 0, protocol: ICMP}, {name: HTTP, port: 80}]\n",
		[]string{
			`spec.node: required`,
			`spec.containerID: "-abc" is not a valid container ID (alphanumerics and '-')`,
			`spec.interfaceName: required`,
			`spec.mac: "zz:zz" is not a valid MAC address (six bytes, like 66:6a:2b:00:00:01)`,
			`spec.ipNetworks[0]: 10.0.0.0/24 holds more than one address; a workload's networks are /32 or /128`,
			`spec.ipNATs[0].externalIP: 2001:db8::1 and internalIP 10.9.9.9 are of different IP versions`,
			`spec.ipNATs[0].internalIP: 10.9.9.9 is not one of the endpoint's ipNetworks`,
			`spec.profiles[0]: "Kns" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`,
			`spec.ports[0].name: required unless hostPort is set`,
			`spec.ports[0].protocol: ICMP has no ports; use TCP, UDP or SCTP`,
			`spec.ports[0].port: port 0 is out of range 1-65535`,
			`spec.ports[1].name: "HTTP" is not a valid port name (at most 15 lower case alphanumerics and '-', with a letter, no '--')`,
		}},
	{"interface name too long", calico + "kind: WorkloadEndpoint\nmetadata: {name: w}\nspec: {node: n1, interfaceName: cali0123456789abcdef}\n",
		[]string{`spec.interfaceName: "cali0123456789abcdef" is not a valid interface name (at most 15 alphanumerics, '_', '.' or '-')`}},

	// Policy rules.
	{"ports without protocol", gnpRule("action: Allow\ndestination: {ports: [80]}"),
		[]string{`spec.ingress[0].destination.ports: ports need protocol tcp, udp or sctp`}},
	{"ports with ICMP", gnpRule("action: Allow\nprotocol: ICMP\nsource: {notPorts: [80]}"),
		[]string{`spec.ingress[0].source.notPorts: ports need protocol tcp, udp or sctp`}},
	{"unknown action", gnpRule("action: Accept"),
		[]string{`spec.ingress[0].action: "Accept" is not one of Allow, Deny, Log, Pass`}},
	{"missing action", gnpRule("protocol: TCP"),
		[]string{`spec.ingress[0].action: required: one of Allow, Deny, Log, Pass`}},
	{"unknown protocol", gnpRule("action: Allow\nprotocol: tcpp\nnotProtocol: 0\ndestination: {ports: [80]}"),
		[]string{
			`spec.ingress[0].protocol: "tcpp" is not one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255`,
			`spec.ingress[0].notProtocol: protocol number 0 is not valid; use 1-255`,
		}},
	{"ICMP code without type", gnpRule("action: Allow\nprotocol: ICMP\nicmp: {code: 3}"),
		[]string{`spec.ingress[0].icmp.code: an ICMP code needs an ICMP type`}},
	{"ICMP fields out of range", gnpRule("action: Allow\nprotocol: ICMPv6\nnotICMP: {type: 255, code: 256}"),
		[]string{
			`spec.ingress[0].notICMP.type: ICMP type 255 is out of range 0-254`,
			`spec.ingress[0].notICMP.code: ICMP code 256 is out of range 0-255`,
		}},
	{"ICMP fields without ICMP", gnpRule("action: Allow\nprotocol: TCP\nicmp: {type: 8}\nnotICMP: {type: 0}"),
		[]string{
			`spec.ingress[0].icmp: needs protocol ICMP or ICMPv6, not TCP`,
			`spec.ingress[0].notICMP: needs protocol ICMP or ICMPv6, not TCP`,
		}},
	{"ICMP fields without protocol", gnpRule("action: Allow\nicmp: {type: 8}"),
		[]string{`spec.ingress[0].icmp: needs protocol ICMP or ICMPv6`}},
	{"IP version against protocol and nets", gnpRule("action: Allow\nipVersion: 6\nprotocol: ICMP\nsource: {nets: [10.0.0.0/8]}"),
		[]string{
			`spec.ingress[0].ipVersion: must be 4 with protocol ICMP`,
			`spec.ingress[0].ipVersion: is 6 but the rule's networks are of the other IP version`,
		}},
	{"bad IP version", gnpRule("action: Allow\nipVersion: 5"),
		[]string{`spec.ingress[0].ipVersion: 5 is not 4 or 6`}},
	{"mixed IP versions", gnpRule("action: Allow\nsource: {nets: [10.0.0.0/8]}\ndestination: {notNets: [\"2001:db8::/32\", 10.0.0.1/8]}"),
		[]string{
			`spec.ingress[0].destination.notNets[1]: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`,
			`spec.ingress[0]: the rule mixes IPv4 and IPv6 networks; split it by ipVersion`,
		}},
	{"bad ports", gnpRule("action: Allow\nprotocol: UDP\ndestination: {ports: [\"90:80\", 0, HTTP_PORT, \"80-90\"]}"),
		[]string{
			`spec.ingress[0].destination.ports[0]: port range 90:80 is reversed (first > last)`,
			`spec.ingress[0].destination.ports[1]: port 0 is out of range 1-65535`,
			`spec.ingress[0].destination.ports[2]: "HTTP_PORT" is not a valid port name (at most 15 lower case alphanumerics and '-', with a letter, no '--')`,
			`spec.ingress[0].destination.ports[3]: "80-90" is not a valid port name (at most 15 lower case alphanumerics and '-', with a letter, no '--')`,
		}},
	{"bad rule selectors", gnpRule("action: Allow\nsource: {selector: \"a ==\", notSelector: global(), namespaceSelector: global()}\ndestination: {serviceAccounts: {names: [Bad], selector: \"has(\"}}"),
		[]string{
			`spec.ingress[0].source.selector: selector "a ==": …`,
			`spec.ingress[0].source.notSelector: global() can only be used in a rule's namespaceSelector`,
			`spec.ingress[0].destination.serviceAccounts.names[0]: "Bad" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`,
			`spec.ingress[0].destination.serviceAccounts.selector: selector "has(": …`,
		}},
	{"rule annotations", gnpRule("action: Allow\nmetadata: {annotations: {\"bad key\": x}}"),
		[]string{`spec.ingress[0].metadata.annotations["bad key"]: "bad key" is not a valid annotation key`}},
	{"service match conflicts", calico + "kind: NetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {services: {name: web}}\n  egress:\n  - action: Allow\n    protocol: TCP\n    source: {services: {name: web}}\n    destination: {services: {name: Web}, selector: a == 'b', ports: [80]}\n",
		[]string{
			`spec.ingress[0].destination.services: not allowed in an ingress rule's destination`,
			`spec.egress[0].destination.services.name: "Web" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`,
			`spec.egress[0].destination.services: cannot be combined with nets, notNets, selector, notSelector, namespaceSelector or serviceAccounts`,
			`spec.egress[0].destination.services: cannot be combined with ports or notPorts: the service's ports apply`,
			`spec.egress[0].source.services: not allowed in an egress rule's source`,
		}},

	// Policies.
	{"policy types", calico + "kind: NetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  types: [Ingress, Forward, Ingress]\n  egress: [{action: Allow}]\n",
		[]string{
			`spec.types[1]: "Forward" is not one of Ingress, Egress`,
			`spec.types[2]: "Ingress" is listed twice`,
			`spec.types: egress rules are given but types does not include Egress, so they would be ignored`,
		}},
	{"policy name and tier", calico + "kind: NetworkPolicy\nmetadata: {name: a.b.c, namespace: prod}\nspec: {tier: Security, selector: global(), serviceAccountSelector: \"x in\"}\n",
		[]string{
			`metadata.name: "a.b.c" is not a valid policy name (a DNS-1123 label: lower case alphanumerics and '-', optionally prefixed by "<tier>.")`,
			`spec.tier: "Security" is not a valid DNS-1123 label (lower case alphanumerics and '-')`,
			`spec.selector: global() can only be used in a rule's namespaceSelector`,
			`spec.serviceAccountSelector: selector "x in": …`,
		}},
	{"policy name prefixed with another tier", calico + "kind: GlobalNetworkPolicy\nmetadata: {name: security.p}\nspec: {tier: ops}\n",
		[]string{`metadata.name: "security.p" is prefixed with tier "security" but the policy's spec.tier is "ops"`}},
	{"policy name prefixed without a tier", calico + "kind: NetworkPolicy\nmetadata: {name: security.p, namespace: prod}\n",
		[]string{`metadata.name: "security.p" is prefixed with tier "security" but the policy's spec.tier is "default"`}},
	{"tier", calico + "kind: Tier\nmetadata: {name: Ops.x}\nspec: {defaultAction: Allow}\n",
		[]string{
			`metadata.name: "Ops.x" is not a valid DNS-1123 label (lower case alphanumerics and '-')`,
			`spec.defaultAction: "Allow" is not one of Deny, Pass`,
		}},
	{"default tier's order", calico + "kind: Tier\nmetadata: {name: default}\nspec: {order: 5}\n",
		[]string{`spec.order: the default tier's order is 1000000`}},
	{"felix configuration", calico + "kind: FelixConfiguration\nmetadata: {name: node-1}\nspec:\n  logSeverityScreen: Verbose\n  ipipMTU: 40\n  vxlanMTU: 70000\n  failsafeInboundHostPorts: [{protocol: SCTP, port: 22}, {protocol: tcp, port: 0, net: 10.0.0.0/8}]\n  defaultEndpointToHostAction: Allow\n  iptablesBackend: nftables\n  routeRefreshInterval: 0s\n  iptablesRefreshInterval: 100ms\n  chainInsertMode: prepend\n",
		[]string{
			`metadata.name: "node-1" is not a FelixConfiguration name tabby uses: "default" for the cluster, "node.<node name>" for one node`,
			`spec.logSeverityScreen: "Verbose" is not one of Debug, Info, Warning, Error, Fatal`,
			`spec.ipipMTU: MTU 40 is out of range 68-65535 (0 is automatic: the underlay's MTU less the tunnel header)`,
			`spec.vxlanMTU: MTU 70000 is out of range 68-65535 (0 is automatic: the underlay's MTU less the tunnel header)`,
			`spec.failsafeInboundHostPorts[0].protocol: "SCTP" is not TCP or UDP`,
			`spec.failsafeInboundHostPorts[1].port: required: a port 1-65535`,
			`spec.failsafeInboundHostPorts[1].net: "10.0.0.0/8": not implemented: tabby's failsafe ports are open to every peer`,
			`spec.defaultEndpointToHostAction: "Allow" is not one of Drop, Accept, Return`,
			`spec.iptablesBackend: "nftables" is not one of Auto, Legacy, NFT`,
			`spec.routeRefreshInterval: 0s is shorter than 1s (0, Calico's "never refresh", is not implemented: tabby always repairs drift)`,
			`spec.iptablesRefreshInterval: 100ms is shorter than 1s (0, Calico's "never refresh", is not implemented: tabby always repairs drift)`,
			`spec.chainInsertMode: "prepend" is not one of Insert, Append`,
		}},
	{"global policy flags", calico + "kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  doNotTrack: true\n  preDNAT: true\n  types: [Ingress, Egress]\n  namespaceSelector: \"!\"\n  ingress: [{action: Allow, source: {services: {name: web}}}]\n  egress: [{action: Allow}]\n",
		[]string{
			`spec.namespaceSelector: selector "!": …`,
			`spec.preDNAT: preDNAT and doNotTrack cannot both be true`,
			`spec.egress: a preDNAT policy cannot have egress rules`,
			`spec.types: a preDNAT policy cannot have type Egress`,
			`spec.applyOnForward: must be true when doNotTrack or preDNAT is`,
			`spec.ingress[0].source.services.namespace: required in a global policy`,
		}},

	// Network sets and profiles.
	{"network set", calico + "kind: NetworkSet\nmetadata:\n  name: s\n  labels: {projectcalico.org/namespace: x}\nspec: {nets: [10.0.0.1/8, nonsense]}\n",
		[]string{
			`spec.nets[0]: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`,
			`spec.nets[1]: "nonsense" is not a valid CIDR`,
			`metadata.labels["projectcalico.org/namespace"]: projectcalico.org/namespace is reserved`,
		}},
	{"profile", calico + "kind: Profile\nmetadata: {name: kns.prod}\nspec:\n  egress: [{action: allow}]\n  labelsToApply: {\"a b\": c}\n",
		[]string{
			`spec.egress[0].action: "allow" is not one of Allow, Deny, Log, Pass`,
			`spec.labelsToApply["a b"]: "a b" is not a valid label key (an optional DNS subdomain and '/', then at most 63 alphanumerics, '-', '_' or '.')`,
		}},

	// Kubernetes kinds.
	{"namespace name", core + "kind: Namespace\nmetadata: {name: prod.eu}\nspec: {finalizers: [\"x/y/z\"]}\n",
		[]string{
			`metadata.name: "prod.eu" is not a valid DNS-1123 label (lower case alphanumerics and '-')`,
			`spec.finalizers[0]: "x/y/z" is not a valid label key (an optional DNS subdomain and '/', then at most 63 alphanumerics, '-', '_' or '.')`,
		}},
	{"service", core + "kind: Service\nmetadata: {name: 1web}\nspec:\n  type: Internal\n  clusterIP: 10.0.0.300\n  sessionAffinity: Sticky\n  externalTrafficPolicy: Local\n  ports:\n  - {port: 80, targetPort: HTTP_PORT, nodePort: 30080, protocol: tcp}\n  - {port: 0}\n",
		[]string{
			`metadata.name: "1web" is not a valid DNS-1035 label (lower case alphanumerics and '-', starting with a letter)`,
			`spec.type: "Internal" is not one of ClusterIP, NodePort, LoadBalancer, ExternalName`,
			`spec.clusterIP: "10.0.0.300" is not a valid IP address`,
			`spec.ports[0].name: required when a Service has more than one port`,
			`spec.ports[0].protocol: "tcp" is not one of TCP, UDP, SCTP`,
			`spec.ports[0].targetPort: "HTTP_PORT" is not a valid port name (at most 15 lower case alphanumerics and '-', with a letter, no '--')`,
			`spec.ports[0].nodePort: only valid for type NodePort or LoadBalancer`,
			`spec.ports[1].name: required when a Service has more than one port`,
			`spec.ports[1].port: port 0 is out of range 1-65535`,
			`spec.ports[1].targetPort: port 0 is out of range 1-65535`,
			`spec.sessionAffinity: "Sticky" is not one of None, ClientIP`,
			`spec.externalTrafficPolicy: only valid for type NodePort or LoadBalancer, or with externalIPs`,
		}},
	{"node port service", core + "kind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  clusterIPs: [10.0.0.1, 10.0.0.2, 10.0.0.3]\n  ports: [{name: a, port: 80, nodePort: 8080}, {name: a, port: 81}]\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 10}}\n  ipFamilies: [IPv4, IPv4]\n  ipFamilyPolicy: DualStack\n  loadBalancerIP: 10.0.0.9\n  externalIPs: [example.com]\n",
		[]string{
			`spec.clusterIPs: at most two addresses, one per IP family`,
			`spec.ports[0].nodePort: 8080 is out of the node port range 30000-32767`,
			`spec.ports[1].name: "a" is used by another port`,
			`spec.sessionAffinityConfig: only valid with sessionAffinity ClientIP`,
			`spec.externalIPs[0]: "example.com" is not a valid IP address`,
			`spec.ipFamilyPolicy: "DualStack" is not one of SingleStack, PreferDualStack, RequireDualStack`,
			`spec.ipFamilies[1]: "IPv4" is listed twice`,
			`spec.loadBalancerIP: only valid for type LoadBalancer`,
		}},
	{"cluster IPs", core + "kind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: 10.0.0.1\n  clusterIPs: [10.0.0.2, 10.0.0.3]\n  ports: [{port: 80}]\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n",
		[]string{
			`spec.clusterIPs[0]: must equal spec.clusterIP "10.0.0.1"`,
			`spec.clusterIPs[1]: must be of the other IP family than clusterIPs[0]`,
			`spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range 1-86400`,
		}},
	{"service without ports", core + "kind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, externalName: example.com}\n",
		[]string{
			`spec.externalName: only valid for type ExternalName`,
			`spec.ports: required: a Service with a cluster IP needs at least one port`,
		}},
	{"external name service", core + "kind: Service\nmetadata: {name: web}\nspec: {type: ExternalName, clusterIP: 10.0.0.1}\n",
		[]string{
			`spec.externalName: required`,
			`spec.clusterIP: must be empty for type ExternalName`,
		}},
	{"health check", core + "kind: Service\nmetadata:\n  name: web\n  annotations: {tabby.io/health-check: \"http:healthz\", tabby.io/health-check-interval: \"2\", tabby.io/health-check-threshold: \"0\"}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
		[]string{
			`metadata.annotations["tabby.io/health-check"]: "http:healthz": want tcp or http:/path (an absolute path, no spaces or fragment)`,
			`metadata.annotations["tabby.io/health-check-interval"]: "2" is not a duration (like 2s or 500ms)`,
			`metadata.annotations["tabby.io/health-check-threshold"]: "0": want a whole number of probes, 1-100`,
		}},
	{"health check range", core + "kind: Service\nmetadata:\n  name: web\n  annotations: {tabby.io/health-check: udp, tabby.io/health-check-interval: 10ms, tabby.io/health-check-threshold: \"101\"}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
		[]string{
			`metadata.annotations["tabby.io/health-check"]: "udp": want tcp or http:/path (an absolute path, no spaces or fragment)`,
			`metadata.annotations["tabby.io/health-check-interval"]: "10ms" is out of range 100ms-1h0m0s`,
			`metadata.annotations["tabby.io/health-check-threshold"]: "101": want a whole number of probes, 1-100`,
		}},
	{"health check settings without a check", core + "kind: Service\nmetadata:\n  name: web\n  annotations: {tabby.io/health-check-interval: 1s, tabby.io/health-check-threshold: \"3\"}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
		[]string{
			`metadata.annotations["tabby.io/health-check-interval"]: only valid with tabby.io/health-check`,
			`metadata.annotations["tabby.io/health-check-threshold"]: only valid with tabby.io/health-check`,
		}},
	{"health check without a selector", core + "kind: Service\nmetadata:\n  name: web\n  annotations: {tabby.io/health-check: tcp}\nspec: {ports: [{port: 80}]}\n",
		[]string{
			`metadata.annotations["tabby.io/health-check"]: needs spec.selector: tabby probes the WorkloadEndpoints a selector picks`,
		}},
	{"health check of a UDP port", core + "kind: Service\nmetadata:\n  name: web\n  annotations: {tabby.io/health-check: \"http:/\"}\nspec: {selector: {app: web}, ports: [{name: dns, port: 53, protocol: UDP}, {name: http, port: 80}]}\n",
		[]string{
			`metadata.annotations["tabby.io/health-check"]: the check probes the first port's targetPort over TCP, but spec.ports[0] is UDP`,
		}},
	{"health check of an external name", core + "kind: Service\nmetadata:\n  name: web\n  annotations: {tabby.io/health-check: tcp}\nspec: {type: ExternalName, externalName: example.com}\n",
		[]string{
			`metadata.annotations["tabby.io/health-check"]: not valid for type ExternalName: it has no endpoints`,
		}},
	{"endpoint health", tabbyv1 + "kind: EndpointHealth\nmetadata: {name: web.w1}\nspec: {service: web, workload: w2, node: Node1}\n",
		[]string{
			`spec.node: "Node1" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`,
			`metadata.name: must be "web.w2": <spec.service>.<spec.workload>`,
			`spec.reason: required when the check is not passing`,
			`spec.check: required`,
		}},
	{"endpoints", core + "kind: Endpoints\nmetadata: {name: web}\nsubsets:\n- addresses: [{ip: 10.0.0.300, hostname: Web, nodeName: Node_1}, {}]\n  notReadyAddresses: [{ip: \"fe80::1%eth0\"}]\n  ports: [{port: 0, protocol: tcp}, {port: 80}]\n",
		[]string{
			`subsets[0].addresses[0].ip: "10.0.0.300" is not a valid IP address`,
			`subsets[0].addresses[0].hostname: "Web" is not a valid DNS-1123 label (lower case alphanumerics and '-')`,
			`subsets[0].addresses[0].nodeName: "Node_1" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`,
			`subsets[0].addresses[1].ip: required`,
			`subsets[0].notReadyAddresses[0].ip: "fe80::1%eth0" must not have a zone`,
			`subsets[0].ports[0].name: required when a subset has more than one port`,
			`subsets[0].ports[0].port: port 0 is out of range 1-65535`,
			`subsets[0].ports[0].protocol: "tcp" is not one of TCP, UDP, SCTP`,
			`subsets[0].ports[1].name: required when a subset has more than one port`,
		}},
	{"endpoint slice", discv1 + "kind: EndpointSlice\nmetadata: {name: web-1, labels: {kubernetes.io/service-name: 1web}}\naddressType: IPv4\nendpoints:\n- addresses: [10.0.0.300, \"fd00::1\"]\n  hostname: Web\n  nodeName: Node_1\n  zone: \"zone a\"\n- conditions: {ready: false}\nports: [{port: 0, protocol: tcp}, {name: Http, port: 70000, appProtocol: \"a b\"}, {name: Http, port: 80}]\n",
		[]string{
			`metadata.labels["kubernetes.io/service-name"]: "1web" is not a valid DNS-1035 label (lower case alphanumerics and '-', starting with a letter)`,
			`endpoints[0].addresses[0]: "10.0.0.300" is not a valid IP address`,
			`endpoints[0].addresses[1]: "fd00::1" is not an IPv4 address`,
			`endpoints[0].hostname: "Web" is not a valid DNS-1123 label (lower case alphanumerics and '-')`,
			`endpoints[0].nodeName: "Node_1" is not a valid DNS-1123 subdomain (lower case alphanumerics, '-' and '.')`,
			`endpoints[0].zone: "zone a" is not a valid label value (at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric)`,
			`endpoints[1].addresses: required: at least one address`,
			`ports[0].protocol: "tcp" is not one of TCP, UDP, SCTP`,
			`ports[0].port: required: tabby cannot forward every port of an endpoint`,
			`ports[1].name: "Http" is not a valid DNS-1123 label (lower case alphanumerics and '-')`,
			`ports[1].port: port 70000 is out of range 1-65535`,
			`ports[1].appProtocol: "a b" is not a valid label key (an optional DNS subdomain and '/', then at most 63 alphanumerics, '-', '_' or '.')`,
			`ports[2].name: "Http" is not a valid DNS-1123 label (lower case alphanumerics and '-')`,
			`ports[2].name: "Http" is used by another port`,
		}},
	{"FQDN endpoint slice", discv1 + "kind: EndpointSlice\nmetadata: {name: web}\naddressType: FQDN\nendpoints: [{addresses: [example.com]}]\n",
		[]string{
			`addressType: FQDN is not supported: tabby routes to addresses, not names; use IPv4 or IPv6`,
		}},
	{"endpoint slice without address type", discv1 + "kind: EndpointSlice\nmetadata: {name: web}\nendpoints: [{addresses: [\"fd00::1\"]}]\n",
		[]string{
			`addressType: required: one of IPv4, IPv6`,
		}},
	{"IPv6 endpoint slice", discv1 + "kind: EndpointSlice\nmetadata: {name: web}\naddressType: IPv6\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{port: 80}, {port: 81}]\n",
		[]string{
			`endpoints[0].addresses[0]: "10.0.0.1" is not an IPv6 address`,
			`ports[1].name: "" is used by another port`,
		}},
	{"k8s network policy", netv1 + "kind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector:\n    matchLabels: {role: \"-db\"}\n    matchExpressions:\n    - {key: tier, operator: Equals, values: [a]}\n    - {key: tier, operator: In}\n    - {key: tier, operator: Exists, values: [a]}\n    - {key: \"\", operator: NotIn, values: [\"a b\"]}\n  policyTypes: [Egress]\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24, 10.0.0.0/16]}\n    - ipBlock: {cidr: 10.0.0.0/8}\n      podSelector: {}\n    - {}\n    ports:\n    - {port: 80, endPort: 79}\n    - {port: http, endPort: 90}\n    - {endPort: 90, protocol: ICMP}\n",
		[]string{
			`spec.podSelector.matchLabels.role: "-db" is not a valid label value (at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric)`,
			`spec.podSelector.matchExpressions[0].operator: "Equals" is not one of In, NotIn, Exists, DoesNotExist`,
			`spec.podSelector.matchExpressions[1].values: required for operator In`,
			`spec.podSelector.matchExpressions[2].values: must be empty for operator Exists`,
			`spec.podSelector.matchExpressions[3].key: required`,
			`spec.podSelector.matchExpressions[3].values[0]: "a b" is not a valid label value (at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric)`,
			`spec.policyTypes: ingress rules are given but types does not include Ingress, so they would be ignored`,
			`spec.ingress[0].ports[0].endPort: 79 is less than port 80`,
			`spec.ingress[0].ports[1].endPort: needs a numeric port`,
			`spec.ingress[0].ports[2].protocol: "ICMP" is not one of TCP, UDP, SCTP`,
			`spec.ingress[0].ports[2].endPort: needs a numeric port`,
			`spec.ingress[0].from[0].ipBlock.except[0]: 10.1.0.0/24 is not strictly inside cidr 10.0.0.0/16`,
			`spec.ingress[0].from[0].ipBlock.except[1]: 10.0.0.0/16 is not strictly inside cidr 10.0.0.0/16`,
			`spec.ingress[0].from[1].ipBlock: cannot be combined with podSelector or namespaceSelector`,
			`spec.ingress[0].from[2]: needs one of podSelector, namespaceSelector or ipBlock`,
		}},
}

func TestValidate(t *testing.T) {
	for _, tt := range validationCases {
		t.Run(tt.name, func(t *testing.T) {
			r := decodeOne(t, tt.manifest)
			err := Validate(r)
			var fes FieldErrors
			if !errors.As(err, &fes) {
				t.Fatalf("Validate = %v, want FieldErrors", err)
			}
			var got []string
			for _, fe := range fes {
				got = append(got, fe.Error())
			}
			ok := len(got) == len(tt.want)
			for i := 0; ok && i < len(got); i++ {
				if prefix, cut := strings.CutSuffix(tt.want[i], "…"); cut {
					ok = strings.HasPrefix(got[i], prefix) && len(got[i]) > len(prefix)
				} else {
					ok = got[i] == tt.want[i]
				}
			}
			if !ok {
				t.Errorf("got:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(tt.want, "\n\t"))
			}
			if want := strings.Join(got, "; "); err.Error() != want {
				t.Errorf("Error() = %q, want the messages joined by \"; \"", err.Error())
			}
		})
	}
}

func TestFieldErrorValue(t *testing.T) {
	err := Validate(decodeOne(t, calico+"kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.1/24}\n"))
	var fes FieldErrors
	if !errors.As(err, &fes) || len(fes) != 1 {
		t.Fatalf("Validate = %v", err)
	}
	if fe := fes[0]; fe.Field != "spec.cidr" || fe.Value != "10.0.0.1/24" {
		t.Errorf("FieldError = %#v", fe)
	}
}

func TestValidateUnregistered(t *testing.T) {
	p := &IPPool{TypeMeta: TypeMeta{Kind: "IPPool", APIVersion: "v9"}}
	if err := Validate(p); err == nil || !strings.HasPrefix(err.Error(), "kind: kind IPPool: apiVersion \"v9\" not supported") {
		t.Errorf("Validate = %v", err)
	}
}

func TestDefaults(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		want     Resource
	}{
		{"IPv4 pool", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16}\n",
			&IPPool{TypeMeta{"IPPool", VersionCalico}, ObjectMeta{Name: "p"}, IPPoolSpec{
				CIDR: "10.0.0.0/16", BlockSize: 26, IPIPMode: EncapNever, VXLANMode: EncapNever, NodeSelector: "all()",
				AllowedUses: []IPPoolAllowedUse{IPPoolAllowedUseWorkload, IPPoolAllowedUseTunnel}}}},
		{"IPv6 VXLAN pool", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: \"fd00::/48\", vxlanMode: CrossSubnet}\n",
			&IPPool{TypeMeta{"IPPool", VersionCalico}, ObjectMeta{Name: "p"}, IPPoolSpec{
				CIDR: "fd00::/48", BlockSize: 122, IPIPMode: EncapNever, VXLANMode: EncapCrossSubnet, NodeSelector: "all()",
				AllowedUses: []IPPoolAllowedUse{IPPoolAllowedUseWorkload, IPPoolAllowedUseTunnel}}}},
		{"IPv6 pool keeps what is set", calico + "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: \"fd00::/48\", natOutgoing: true, nodeSelector: \"!all()\", allowedUses: [Tunnel]}\n",
			&IPPool{TypeMeta{"IPPool", VersionCalico}, ObjectMeta{Name: "p"}, IPPoolSpec{
				CIDR: "fd00::/48", BlockSize: 122, IPIPMode: EncapNever, VXLANMode: EncapNever, NATOutgoing: true, NodeSelector: "!all()",
				AllowedUses: []IPPoolAllowedUse{IPPoolAllowedUseTunnel}}}},
		{"default BGP configuration", calico + "kind: BGPConfiguration\nmetadata: {name: default}\n",
			&BGPConfiguration{TypeMeta{"BGPConfiguration", VersionCalico}, ObjectMeta{Name: "default"}, BGPConfigurationSpec{
				LogSeverityScreen: "Info", NodeToNodeMeshEnabled: ptr(true), ASNumber: ptr(ASNumber(64512)), ListenPort: 179}}},
		{"explicit mesh off is kept", calico + "kind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: false, asNumber: 65000}\n",
			&BGPConfiguration{TypeMeta{"BGPConfiguration", VersionCalico}, ObjectMeta{Name: "default"}, BGPConfigurationSpec{
				LogSeverityScreen: "Info", NodeToNodeMeshEnabled: ptr(false), ASNumber: ptr(ASNumber(65000)), ListenPort: 179}}},
		{"node BGP configuration is not defaulted", calico + "kind: BGPConfiguration\nmetadata: {name: node.n1}\n",
			&BGPConfiguration{TypeMeta{"BGPConfiguration", VersionCalico}, ObjectMeta{Name: "node.n1"}, BGPConfigurationSpec{}}},
		{"felix configuration: Calico's spellings in any case, nothing else defaulted", calico + "kind: FelixConfiguration\nmetadata: {name: node.n1}\nspec: {defaultEndpointToHostAction: DROP, chainInsertMode: append, iptablesBackend: nft, logSeverityScreen: warning, failsafeInboundHostPorts: [{protocol: udp, port: 68}]}\n",
			&FelixConfiguration{TypeMeta{"FelixConfiguration", VersionCalico}, ObjectMeta{Name: "node.n1"}, FelixConfigurationSpec{
				DefaultEndpointToHostAction: "Drop", ChainInsertMode: "Append", IptablesBackend: "NFT", LogSeverityScreen: "Warning",
				FailsafeInboundHostPorts: &[]ProtoPort{{Protocol: "UDP", Port: 68}}}}},
		{"BGP peer", calico + "kind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: 65000}\n",
			&BGPPeer{TypeMeta{"BGPPeer", VersionCalico}, ObjectMeta{Name: "p"}, BGPPeerSpec{
				PeerIP: "10.0.0.1", ASNumber: 65000, SourceAddress: SourceAddressUseNodeIP}}},
		{"policy without rules is ingress", calico + "kind: NetworkPolicy\nmetadata: {name: p}\n",
			&NetworkPolicy{TypeMeta{"NetworkPolicy", VersionCalico}, ObjectMeta{Name: "p", Namespace: "default"}, NetworkPolicySpec{
				Tier: "default", Types: []PolicyType{PolicyTypeIngress}}}},
		{"policy with egress rules only is egress", calico + "kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {egress: [{action: Deny}]}\n",
			&GlobalNetworkPolicy{TypeMeta{"GlobalNetworkPolicy", VersionCalico}, ObjectMeta{Name: "p"}, GlobalNetworkPolicySpec{
				Tier: "default", Types: []PolicyType{PolicyTypeEgress}, Egress: []Rule{{Action: ActionDeny}}}}},
		{"policy with both", calico + "kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {tier: t, ingress: [{action: Allow}], egress: [{action: Deny}]}\n",
			&GlobalNetworkPolicy{TypeMeta{"GlobalNetworkPolicy", VersionCalico}, ObjectMeta{Name: "p"}, GlobalNetworkPolicySpec{
				Tier: "t", Types: []PolicyType{PolicyTypeIngress, PolicyTypeEgress},
				Ingress: []Rule{{Action: ActionAllow}}, Egress: []Rule{{Action: ActionDeny}}}}},
		{"explicit types are kept", calico + "kind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {types: [Egress]}\n",
			&NetworkPolicy{TypeMeta{"NetworkPolicy", VersionCalico}, ObjectMeta{Name: "p", Namespace: "x"}, NetworkPolicySpec{
				Tier: "default", Types: []PolicyType{PolicyTypeEgress}}}},
		{"workload endpoint port protocol", calico + "kind: WorkloadEndpoint\nmetadata: {name: w}\nspec: {ports: [{name: http, port: 80}]}\n",
			&WorkloadEndpoint{TypeMeta{"WorkloadEndpoint", VersionCalico}, ObjectMeta{Name: "w", Namespace: "default"}, WorkloadEndpointSpec{
				Ports: []WorkloadEndpointPort{{Name: "http", Protocol: ProtocolTCP, Port: 80}}}}},
		{"ClusterIP service", core + "kind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}, {port: 53, protocol: UDP, targetPort: dns}]}\n",
			&Service{TypeMeta: TypeMeta{"Service", VersionCore}, ObjectMeta: ObjectMeta{Name: "s", Namespace: "default"}, Spec: ServiceSpec{
				Type: ServiceTypeClusterIP, SessionAffinity: SessionAffinityNone, InternalTrafficPolicy: TrafficPolicyCluster,
				Ports: []ServicePort{
					{Protocol: PortProtocolTCP, Port: 80, TargetPort: IntOrString{IntVal: 80}},
					{Protocol: PortProtocolUDP, Port: 53, TargetPort: IntOrString{StrVal: "dns"}},
				}}}},
		{"NodePort service with affinity", core + "kind: Service\nmetadata: {name: s}\nspec: {type: NodePort, sessionAffinity: ClientIP, ports: [{port: 80, targetPort: 8080}]}\n",
			&Service{TypeMeta: TypeMeta{"Service", VersionCore}, ObjectMeta: ObjectMeta{Name: "s", Namespace: "default"}, Spec: ServiceSpec{
				Type: ServiceTypeNodePort, SessionAffinity: SessionAffinityClientIP,
				SessionAffinityConfig: &SessionAffinityConfig{ClientIP: &ClientIPConfig{TimeoutSeconds: ptr(int32(10800))}},
				ExternalTrafficPolicy: TrafficPolicyCluster, InternalTrafficPolicy: TrafficPolicyCluster,
				Ports: []ServicePort{{Protocol: PortProtocolTCP, Port: 80, TargetPort: IntOrString{IntVal: 8080}}}}}},
		{"endpoints port protocol", core + "kind: Endpoints\nmetadata: {name: s, namespace: x}\nsubsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 80}]}]\n",
			&Endpoints{TypeMeta{"Endpoints", VersionCore}, ObjectMeta{Name: "s", Namespace: "x"}, []EndpointSubset{{
				Addresses: []EndpointAddress{{IP: "10.0.0.1"}}, Ports: []EndpointPort{{Port: 80, Protocol: PortProtocolTCP}}}}}},
		{"endpoint slice port protocol", discv1 + "kind: EndpointSlice\nmetadata: {name: s, namespace: x}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{port: 80}]\n",
			&EndpointSlice{TypeMeta{"EndpointSlice", VersionDiscovery}, ObjectMeta{Name: "s", Namespace: "x"}, AddressTypeIPv4,
				[]EndpointSliceEndpoint{{Addresses: []string{"10.0.0.1"}}}, []EndpointSlicePort{{Port: 80, Protocol: PortProtocolTCP}}}},
		{"k8s policy without rules is ingress", netv1 + "kind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n",
			&K8sNetworkPolicy{TypeMeta{"NetworkPolicy", VersionNetworking}, ObjectMeta{Name: "p", Namespace: "default"}, K8sNetworkPolicySpec{
				PolicyTypes: []PolicyType{PolicyTypeIngress}}}},
		{"k8s policy with egress is both", netv1 + "kind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}, egress: [{ports: [{port: 53}]}]}\n",
			&K8sNetworkPolicy{TypeMeta{"NetworkPolicy", VersionNetworking}, ObjectMeta{Name: "p", Namespace: "default"}, K8sNetworkPolicySpec{
				PolicyTypes: []PolicyType{PolicyTypeIngress, PolicyTypeEgress},
				Egress:      []K8sNetworkPolicyEgressRule{{Ports: []K8sNetworkPolicyPort{{Protocol: ptr(PortProtocolTCP), Port: &IntOrString{IntVal: 53}}}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeOne(t, tt.manifest)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestValidateIPPools(t *testing.T) {
	pool := func(name, cidr string) *IPPool {
		return &IPPool{TypeMeta{"IPPool", VersionCalico}, ObjectMeta{Name: name}, IPPoolSpec{CIDR: cidr}}
	}
	tests := []struct {
		name  string
		pools []*IPPool
		want  string
	}{
		{"disjoint", []*IPPool{pool("a", "10.0.0.0/16"), pool("b", "10.1.0.0/16"), pool("c", "fd00::/48")}, ""},
		{"nested", []*IPPool{pool("a", "10.0.0.0/16"), pool("b", "10.1.0.0/16"), pool("c", "10.0.128.0/17")},
			`IPPool "a" (10.0.0.0/16) overlaps IPPool "c" (10.0.128.0/17)`},
		{"several", []*IPPool{pool("a", "10.0.0.0/8"), pool("b", "10.1.0.0/16"), pool("bad", "x"), pool("c", "10.1.0.0/16")},
			`IPPool "a" (10.0.0.0/8) overlaps IPPool "b" (10.1.0.0/16)` + "\n" +
				`IPPool "a" (10.0.0.0/8) overlaps IPPool "c" (10.1.0.0/16)` + "\n" +
				`IPPool "b" (10.1.0.0/16) overlaps IPPool "c" (10.1.0.0/16)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateIPPools(tt.pools)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestIPPoolPrefix(t *testing.T) {
	p := &IPPool{ObjectMeta: ObjectMeta{Name: "p"}, Spec: IPPoolSpec{CIDR: "10.0.0.1/24"}}
	if _, err := p.Prefix(); err == nil || err.Error() != `IPPool "p": "10.0.0.1/24" has host bits set (did you mean 10.0.0.0/24?)` {
		t.Errorf("Prefix error = %v", err)
	}
	p.Spec.CIDR = "fd00::/64"
	if prefix, err := p.Prefix(); err != nil || prefix.Bits() != 64 {
		t.Errorf("Prefix = %v, %v", prefix, err)
	}
	p.Spec.AllowedUses = []IPPoolAllowedUse{IPPoolAllowedUseTunnel}
	if p.Allows(IPPoolAllowedUseWorkload) || !p.Allows(IPPoolAllowedUseTunnel) {
		t.Error("Allows")
	}
}
