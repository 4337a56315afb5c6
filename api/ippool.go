package api

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// IPPool is a range of workload addresses, cut into blocks that nodes claim.
type IPPool struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       IPPoolSpec `json:"spec"`
}

// IPPoolSpec is Calico's IPPool spec.
type IPPoolSpec struct {
	CIDR             string             `json:"cidr"`
	BlockSize        int                `json:"blockSize,omitempty"`
	IPIPMode         EncapMode          `json:"ipipMode,omitempty"`
	VXLANMode        EncapMode          `json:"vxlanMode,omitempty"`
	NATOutgoing      bool               `json:"natOutgoing,omitempty"`
	Disabled         bool               `json:"disabled,omitempty"`
	DisableBGPExport bool               `json:"disableBGPExport,omitempty"`
	NodeSelector     string             `json:"nodeSelector,omitempty"`
	AllowedUses      []IPPoolAllowedUse `json:"allowedUses,omitempty"`
}

// EncapMode says when traffic to a pool's addresses is encapsulated.
type EncapMode string

// Encapsulation modes, as Calico names them.
const (
	EncapNever       EncapMode = "Never"
	EncapAlways      EncapMode = "Always"
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

// IPPoolAllowedUse says what IPAM may assign a pool's addresses to.
type IPPoolAllowedUse string

// Allowed uses tabby implements (Calico's LoadBalancer use is not among them).
const (
	IPPoolAllowedUseWorkload IPPoolAllowedUse = "Workload"
	IPPoolAllowedUseTunnel   IPPoolAllowedUse = "Tunnel"
)

// Block sizes Calico allows, and its defaults.
const (
	DefaultBlockSizeV4 = 26
	DefaultBlockSizeV6 = 122
	minBlockSizeV4     = 20
	minBlockSizeV6     = 116
)

func init() {
	register(&Kind{
		Name: "IPPool", APIVersion: VersionCalico, Plural: "ippools", Singular: "ippool",
		Aliases: []string{"ipp", "ipps", "pool", "pools"},
		New:     func() Resource { return &IPPool{TypeMeta: TypeMeta{Kind: "IPPool", APIVersion: VersionCalico}} },
	})
}

// Prefix parses the pool's CIDR; it is an error if host bits are set.
func (p *IPPool) Prefix() (netip.Prefix, error) {
	prefix, err := ParseNet(p.Spec.CIDR)
	if err != nil {
		return prefix, fmt.Errorf("IPPool %q: %w", p.Name, err)
	}
	return prefix, nil
}

// Allows says whether IPAM may assign the pool's addresses for use u.
func (p *IPPool) Allows(u IPPoolAllowedUse) bool {
	return slices.Contains(p.Spec.AllowedUses, u)
}

func (p *IPPool) setDefaults() {
	s := &p.Spec
	if s.BlockSize == 0 {
		if prefix, err := parseAddrPrefix(s.CIDR); err == nil && prefix.Addr().Is6() {
			s.BlockSize = DefaultBlockSizeV6
		} else if err == nil {
			s.BlockSize = DefaultBlockSizeV4
		}
	}
	if s.IPIPMode == "" {
		s.IPIPMode = EncapNever
	}
	if s.VXLANMode == "" {
		s.VXLANMode = EncapNever
	}
	if s.NodeSelector == "" {
		s.NodeSelector = "all()"
	}
	if len(s.AllowedUses) == 0 {
		s.AllowedUses = []IPPoolAllowedUse{IPPoolAllowedUseWorkload, IPPoolAllowedUseTunnel}
	}
}

var (
	linkLocalV4 = netip.MustParsePrefix("169.254.0.0/16")
	linkLocalV6 = netip.MustParsePrefix("fe80::/10")
)

func (p *IPPool) validate(errs *FieldErrors) {
	s := &p.Spec
	if checkRequired(errs, "spec.cidr", s.CIDR) {
		if !strings.Contains(s.CIDR, "/") {
			errs.add("spec.cidr", s.CIDR, "%q is not a valid CIDR", s.CIDR)
		} else if prefix, ok := checkNet(errs, "spec.cidr", s.CIDR); ok {
			p.validatePrefix(errs, prefix)
		}
	}
	modes := []EncapMode{EncapNever, EncapAlways, EncapCrossSubnet}
	ipipOK := checkEnum(errs, "spec.ipipMode", s.IPIPMode, modes...)
	vxlanOK := checkEnum(errs, "spec.vxlanMode", s.VXLANMode, modes...)
	if ipipOK && vxlanOK && encapEnabled(s.IPIPMode) && encapEnabled(s.VXLANMode) {
		errs.add("spec.ipipMode", string(s.IPIPMode), "ipipMode and vxlanMode cannot both be enabled (vxlanMode is %s)", s.VXLANMode)
	}
	checkSelector(errs, "spec.nodeSelector", s.NodeSelector, false)
	seen := map[IPPoolAllowedUse]bool{}
	for i, u := range s.AllowedUses {
		f := index("spec.allowedUses", i)
		if u == "" {
			errs.add(f, "", "empty use; one of Workload, Tunnel")
		} else if checkEnum(errs, f, u, IPPoolAllowedUseWorkload, IPPoolAllowedUseTunnel) && seen[u] {
			errs.add(f, string(u), "%q is listed twice", u)
		}
		seen[u] = true
	}
}

// validatePrefix checks what depends on the pool's parsed CIDR.
func (p *IPPool) validatePrefix(errs *FieldErrors, prefix netip.Prefix) {
	s := &p.Spec
	minBlock, linkLocal := minBlockSizeV4, linkLocalV4
	if prefix.Addr().Is6() {
		minBlock, linkLocal = minBlockSizeV6, linkLocalV6
		if encapEnabled(s.IPIPMode) {
			errs.add("spec.ipipMode", string(s.IPIPMode), "IPIP is not supported on an IPv6 pool; use vxlanMode (VXLAN over the IPv6 underlay) or Never")
		}
	}
	maxBlock := prefix.Addr().BitLen()
	switch {
	case s.BlockSize == 0: // unset: SetDefaults picks the default
	case s.BlockSize < minBlock || s.BlockSize > maxBlock:
		errs.add("spec.blockSize", s.BlockSize, "%d is out of range %d-%d for an IPv%d pool", s.BlockSize, minBlock, maxBlock, ipVersion(prefix.Addr()))
	case s.BlockSize < prefix.Bits():
		errs.add("spec.blockSize", s.BlockSize, "%d is smaller than the pool's prefix length %d: a block must fit in the pool", s.BlockSize, prefix.Bits())
	}
	if prefix.Overlaps(linkLocal) {
		errs.add("spec.cidr", s.CIDR, "%s overlaps the link-local range %s", prefix, linkLocal)
	}
}

func encapEnabled(m EncapMode) bool { return m == EncapAlways || m == EncapCrossSubnet }

func ipVersion(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}
