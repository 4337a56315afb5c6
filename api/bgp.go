package api

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BGPConfiguration holds BGP settings: the cluster's, in the object named "default", or
// one node's overrides, in an object named "node.<node name>".
type BGPConfiguration struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       BGPConfigurationSpec `json:"spec"`
}

// BGPConfigurationSpec is Calico's BGPConfiguration spec.
type BGPConfigurationSpec struct {
	LogSeverityScreen      string                `json:"logSeverityScreen,omitempty"`
	NodeToNodeMeshEnabled  *bool                 `json:"nodeToNodeMeshEnabled,omitempty"`
	ASNumber               *ASNumber             `json:"asNumber,omitempty"`
	ListenPort             uint16                `json:"listenPort,omitempty"`
	NodeMeshMaxRestartTime *Duration             `json:"nodeMeshMaxRestartTime,omitempty"`
	NodeMeshPassword       *BGPPassword          `json:"nodeMeshPassword,omitempty"`
	ServiceClusterIPs      []ServiceIPBlock      `json:"serviceClusterIPs,omitempty"`
	ServiceExternalIPs     []ServiceIPBlock      `json:"serviceExternalIPs,omitempty"`
	ServiceLoadBalancerIPs []ServiceIPBlock      `json:"serviceLoadBalancerIPs,omitempty"`
	Communities            []Community           `json:"communities,omitempty"`
	PrefixAdvertisements   []PrefixAdvertisement `json:"prefixAdvertisements,omitempty"`
}

// ServiceIPBlock is one CIDR of Service addresses to advertise.
type ServiceIPBlock struct {
	CIDR string `json:"cidr"`
}

// Community names a BGP community value: "aa:nn" (standard) or "aa:nn:mm" (large).
type Community struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// PrefixAdvertisement attaches communities (names from Communities, or literal values) to
// the routes advertised for a CIDR.
type PrefixAdvertisement struct {
	CIDR        string   `json:"cidr"`
	Communities []string `json:"communities"`
}

// BGPConfiguration defaults, as Calico documents them.
const (
	DefaultBGPConfigurationName = "default"
	DefaultASNumber             = ASNumber(64512)
	DefaultBGPListenPort        = 179
	DefaultBGPLogSeverity       = "Info"
	// DefaultMaxRestartTime is the graceful restart time used when a peer does not set one.
	DefaultMaxRestartTime = 120 * time.Second
	// NodeBGPConfigurationPrefix starts the name of a node's override object.
	NodeBGPConfigurationPrefix = "node."
)

// BGPPeer is a BGP session that nodes open, to a fixed address or to other nodes.
type BGPPeer struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec is Calico's BGPPeer spec. Node and NodeSelector pick the local side (neither
// means every node); PeerIP or PeerSelector the remote side.
type BGPPeerSpec struct {
	Node                string        `json:"node,omitempty"`
	NodeSelector        string        `json:"nodeSelector,omitempty"`
	PeerIP              string        `json:"peerIP,omitempty"`
	ASNumber            ASNumber      `json:"asNumber,omitempty"`
	PeerSelector        string        `json:"peerSelector,omitempty"`
	KeepOriginalNextHop bool          `json:"keepOriginalNextHop,omitempty"`
	Password            *BGPPassword  `json:"password,omitempty"`
	SourceAddress       SourceAddress `json:"sourceAddress,omitempty"`
	MaxRestartTime      *Duration     `json:"maxRestartTime,omitempty"`
	// Filters names the BGPFilters applied to the session, in order.
	Filters []string `json:"filters,omitempty"`
}

// BGPPassword says where a session's TCP MD5 password is kept.
type BGPPassword struct {
	SecretKeyRef *SecretKeySelector `json:"secretKeyRef,omitempty"`
}

// SecretKeySelector names one key of a secret.
type SecretKeySelector struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// SourceAddress says whether a session is bound to the node's address.
type SourceAddress string

// Source address modes, as Calico names them.
const (
	SourceAddressUseNodeIP SourceAddress = "UseNodeIP"
	SourceAddressNone      SourceAddress = "None"
)

func init() {
	register(&Kind{
		Name: "BGPConfiguration", APIVersion: VersionCalico, Plural: "bgpconfigurations", Singular: "bgpconfiguration",
		Aliases: []string{"bgpconfig", "bgpconfigs"},
		New: func() Resource {
			return &BGPConfiguration{TypeMeta: TypeMeta{Kind: "BGPConfiguration", APIVersion: VersionCalico}}
		},
	})
	register(&Kind{
		Name: "BGPPeer", APIVersion: VersionCalico, Plural: "bgppeers", Singular: "bgppeer",
		Aliases: []string{"bgpp", "bgpps", "bp", "bps"},
		New:     func() Resource { return &BGPPeer{TypeMeta: TypeMeta{Kind: "BGPPeer", APIVersion: VersionCalico}} },
	})
}

// IsDefault says whether this is the cluster-wide configuration.
func (c *BGPConfiguration) IsDefault() bool { return c.Name == DefaultBGPConfigurationName }

// NodeName returns the node a "node.<name>" override applies to, or "".
func (c *BGPConfiguration) NodeName() string { return overrideNode(c.Name) }

// overrideNode returns the node a configuration object named "node.<name>" (a
// BGPConfiguration's or FelixConfiguration's) applies to, or "".
func overrideNode(name string) string {
	node, ok := strings.CutPrefix(name, NodeBGPConfigurationPrefix)
	if !ok {
		return ""
	}
	return node
}

// Only the default object is defaulted: a node's override inherits what it leaves unset.
func (c *BGPConfiguration) setDefaults() {
	if !c.IsDefault() {
		return
	}
	s := &c.Spec
	if s.LogSeverityScreen == "" {
		s.LogSeverityScreen = DefaultBGPLogSeverity
	}
	if s.NodeToNodeMeshEnabled == nil {
		mesh := true
		s.NodeToNodeMeshEnabled = &mesh
	}
	if s.ASNumber == nil {
		asn := DefaultASNumber
		s.ASNumber = &asn
	}
	if s.ListenPort == 0 {
		s.ListenPort = DefaultBGPListenPort
	}
}

var (
	standardCommunityRE = regexp.MustCompile(`^(\d+):(\d+)$`)
	largeCommunityRE    = regexp.MustCompile(`^(\d+):(\d+):(\d+)$`)
)

// ParseCommunity parses a community value: "aa:nn", a standard community (RFC 1997) with
// 16-bit parts, or "aa:nn:mm", a large community (RFC 8092) with 32-bit parts. It returns
// the two or three parts.
func ParseCommunity(s string) ([]uint32, error) {
	parts, bits := standardCommunityRE.FindStringSubmatch(s), 16
	if parts == nil {
		parts, bits = largeCommunityRE.FindStringSubmatch(s), 32
	}
	if parts == nil {
		return nil, fmt.Errorf("%q is not a community value (\"aa:nn\" with 16-bit numbers, or \"aa:nn:mm\" with 32-bit numbers)", s)
	}
	out := make([]uint32, 0, 3)
	for _, p := range parts[1:] {
		n, err := strconv.ParseUint(p, 10, bits)
		if err != nil {
			return nil, fmt.Errorf("%q is not a community value: %s does not fit in %d bits", s, p, bits)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// isCommunityValue says whether s is "aa:nn" with 16-bit parts or "aa:nn:mm" with 32-bit parts.
func isCommunityValue(s string) bool {
	_, err := ParseCommunity(s)
	return err == nil
}

func (c *BGPConfiguration) validate(errs *FieldErrors) {
	s := &c.Spec
	node := c.NodeName()
	if !c.IsDefault() && node == "" {
		errs.add("metadata.name", c.Name, "%q is not a BGPConfiguration name tabby uses: %q for the cluster, %q for one node",
			c.Name, DefaultBGPConfigurationName, NodeBGPConfigurationPrefix+"<node name>")
	}
	checkEnum(errs, "spec.logSeverityScreen", s.LogSeverityScreen, "Debug", "Info", "Warning", "Error", "Fatal")
	checkASNumber(errs, "spec.asNumber", s.ASNumber)
	if d := s.NodeMeshMaxRestartTime; d != nil {
		checkRestartTime(errs, "spec.nodeMeshMaxRestartTime", d)
		if s.NodeToNodeMeshEnabled != nil && !*s.NodeToNodeMeshEnabled {
			errs.add("spec.nodeMeshMaxRestartTime", d.String(), "set, but the node-to-node mesh is disabled")
		}
	}
	if pw := s.NodeMeshPassword; pw != nil {
		checkPassword(errs, "spec.nodeMeshPassword", pw)
		if s.NodeToNodeMeshEnabled != nil && !*s.NodeToNodeMeshEnabled {
			errs.add("spec.nodeMeshPassword", nil, "set, but the node-to-node mesh is disabled")
		}
	}
	for _, b := range []struct {
		field  string
		blocks []ServiceIPBlock
	}{
		{"spec.serviceClusterIPs", s.ServiceClusterIPs},
		{"spec.serviceExternalIPs", s.ServiceExternalIPs},
		{"spec.serviceLoadBalancerIPs", s.ServiceLoadBalancerIPs},
	} {
		for i, blk := range b.blocks {
			f := index(b.field, i) + ".cidr"
			if checkRequired(errs, f, blk.CIDR) {
				checkNet(errs, f, blk.CIDR)
			}
		}
	}
	names := map[string]bool{}
	for i, cm := range s.Communities {
		f := index("spec.communities", i)
		if checkRequired(errs, f+".name", cm.Name) {
			if names[cm.Name] {
				errs.add(f+".name", cm.Name, "community %q is defined twice", cm.Name)
			}
			names[cm.Name] = true
		}
		if checkRequired(errs, f+".value", cm.Value) && !isCommunityValue(cm.Value) {
			errs.add(f+".value", cm.Value, "%q is not a community value (\"aa:nn\" with 16-bit numbers, or \"aa:nn:mm\" with 32-bit numbers)", cm.Value)
		}
	}
	for i, pa := range s.PrefixAdvertisements {
		f := index("spec.prefixAdvertisements", i)
		if checkRequired(errs, f+".cidr", pa.CIDR) {
			checkNet(errs, f+".cidr", pa.CIDR)
		}
		for j, v := range pa.Communities {
			// A node's override may name communities that the default object defines.
			if !isCommunityValue(v) && !names[v] && node == "" {
				errs.add(index(f+".communities", j), v, "%q is neither a community defined in spec.communities nor a value \"aa:nn\" or \"aa:nn:mm\"", v)
			}
		}
	}
	if node != "" {
		// Calico documents these as settable only on the default object.
		for _, f := range []struct {
			field string
			set   bool
		}{
			{"spec.nodeToNodeMeshEnabled", s.NodeToNodeMeshEnabled != nil},
			{"spec.asNumber", s.ASNumber != nil},
			{"spec.nodeMeshMaxRestartTime", s.NodeMeshMaxRestartTime != nil},
			{"spec.nodeMeshPassword", s.NodeMeshPassword != nil},
			{"spec.serviceClusterIPs", len(s.ServiceClusterIPs) > 0},
			{"spec.serviceExternalIPs", len(s.ServiceExternalIPs) > 0},
			{"spec.serviceLoadBalancerIPs", len(s.ServiceLoadBalancerIPs) > 0},
			{"spec.communities", len(s.Communities) > 0},
		} {
			if f.set {
				errs.add(f.field, nil, "only valid in the BGPConfiguration named %q (a node's AS number is set in its Node resource)", DefaultBGPConfigurationName)
			}
		}
	}
}

// checkPassword checks a password's secretKeyRef, at field.
func checkPassword(errs *FieldErrors, field string, pw *BGPPassword) {
	if pw.SecretKeyRef == nil {
		errs.add(field+".secretKeyRef", nil, "required")
		return
	}
	checkSubdomain(errs, field+".secretKeyRef.name", pw.SecretKeyRef.Name)
	checkRequired(errs, field+".secretKeyRef.key", pw.SecretKeyRef.Key)
}

// PasswordRef names a password's key as "<secret name>/<key>", "" for none.
func (pw *BGPPassword) PasswordRef() string {
	if pw == nil || pw.SecretKeyRef == nil {
		return ""
	}
	return pw.SecretKeyRef.Name + "/" + pw.SecretKeyRef.Key
}

// checkRestartTime bounds a graceful restart time by the 12 bits BGP's capability gives it.
func checkRestartTime(errs *FieldErrors, field string, d *Duration) {
	if d.Duration < 0 || d.Duration > 4095*time.Second || d.Duration%time.Second != 0 {
		errs.add(field, d.String(), "%s is out of range: BGP's graceful restart time is a whole number of seconds, 0s-4095s", d)
	}
}

// PeerAddrPort parses PeerIP: an address, "a.b.c.d:port" or "[v6]:port". Port is 0 when
// not given (the peer's listen port, or 179, applies).
func (s *BGPPeerSpec) PeerAddrPort() (netip.Addr, uint16, error) {
	if ap, err := netip.ParseAddrPort(s.PeerIP); err == nil {
		if ap.Addr().Zone() != "" || ap.Port() == 0 {
			return netip.Addr{}, 0, fmt.Errorf("peerIP %q: want an address, \"<IPv4>:<port>\" or \"[<IPv6>]:<port>\" with port 1-65535", s.PeerIP)
		}
		return ap.Addr(), ap.Port(), nil
	}
	a, err := parseAddr(s.PeerIP)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("peerIP: %w", err)
	}
	return a, 0, nil
}

// RestartTime is the graceful restart time for the peer's sessions.
func (s *BGPPeerSpec) RestartTime() time.Duration {
	if s.MaxRestartTime == nil {
		return DefaultMaxRestartTime
	}
	return s.MaxRestartTime.Duration
}

func (p *BGPPeer) setDefaults() {
	if p.Spec.SourceAddress == "" {
		p.Spec.SourceAddress = SourceAddressUseNodeIP
	}
}

func (p *BGPPeer) validate(errs *FieldErrors) {
	s := &p.Spec
	if s.Node != "" {
		checkSubdomain(errs, "spec.node", s.Node)
		if s.NodeSelector != "" {
			errs.add("spec.node", s.Node, "must be empty when spec.nodeSelector is set")
		}
	}
	checkSelector(errs, "spec.nodeSelector", s.NodeSelector, false)
	checkSelector(errs, "spec.peerSelector", s.PeerSelector, false)
	switch {
	case s.PeerIP == "" && s.PeerSelector == "":
		errs.add("spec.peerIP", "", "one of spec.peerIP or spec.peerSelector is required")
	case s.PeerIP != "" && s.PeerSelector != "":
		errs.add("spec.peerIP", s.PeerIP, "must be empty when spec.peerSelector is set")
	case s.PeerIP != "":
		if _, _, err := s.PeerAddrPort(); err != nil {
			errs.add("spec.peerIP", s.PeerIP, "%q is not an address, \"<IPv4>:<port>\" or \"[<IPv6>]:<port>\" with port 1-65535", s.PeerIP)
		}
		if s.ASNumber == 0 {
			errs.add("spec.asNumber", uint32(0), "required when spec.peerIP is set")
		}
	case s.ASNumber != 0:
		// Calico takes a selected node's AS number from its Node resource.
		errs.add("spec.asNumber", uint32(s.ASNumber), "must be empty when spec.peerSelector is set")
	}
	if s.Password != nil {
		checkPassword(errs, "spec.password", s.Password)
	}
	checkEnum(errs, "spec.sourceAddress", s.SourceAddress, SourceAddressUseNodeIP, SourceAddressNone)
	if s.MaxRestartTime != nil {
		checkRestartTime(errs, "spec.maxRestartTime", s.MaxRestartTime)
	}
	for i, f := range s.Filters {
		checkSubdomain(errs, fmt.Sprintf("spec.filters[%d]", i), f)
		if slices.Contains(s.Filters[:i], f) {
			errs.add(fmt.Sprintf("spec.filters[%d]", i), f, "%q is named twice", f)
		}
	}
}
