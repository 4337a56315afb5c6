package ipam

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Prefix is the etcd prefix of every IPAM key.
const Prefix = "/tabby/ipam/v1/"

const (
	blocksPrefix     = Prefix + "blocks/"     // blocks/<cidr key>: a block
	affinitiesPrefix = Prefix + "affinities/" // affinities/<node>/<cidr key>: a node's claim on a block
	handlesPrefix    = Prefix + "handles/"    // handles/<handle>: a handle's address count per block
	configKey        = Prefix + "config"      // the cluster's IPAM Config
	gcLeaderPrefix   = Prefix + "gc-leader"   // election of the garbage collector
)

// cidrKey is a block CIDR as a key element: "10.244.0.64-26", "fd00::40-122".
func cidrKey(p netip.Prefix) string {
	return p.Addr().String() + "-" + strconv.Itoa(p.Bits())
}

// parseCIDRKey is cidrKey's inverse; it refuses host bits, so a key names one block.
func parseCIDRKey(s string) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("block key %q: want <address>-<prefix length>", s)
	}
	a, err := netip.ParseAddr(s[:i])
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("block key %q: %w", s, err)
	}
	bits, err := strconv.Atoi(s[i+1:])
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("block key %q: %w", s, err)
	}
	p, err := a.Prefix(bits)
	if err != nil || p.Addr() != a {
		return netip.Prefix{}, fmt.Errorf("block key %q: not a network address", s)
	}
	return p, nil
}

func blockKey(p netip.Prefix) string { return blocksPrefix + cidrKey(p) }

func nodeAffinitiesPrefix(node string) string { return affinitiesPrefix + node + "/" }

func affinityKey(node string, p netip.Prefix) string { return nodeAffinitiesPrefix(node) + cidrKey(p) }

// parseAffinityKey splits a full affinity key into its node and block.
func parseAffinityKey(key string) (string, netip.Prefix, error) {
	rest, ok := strings.CutPrefix(key, affinitiesPrefix)
	node, cidr, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || node == "" {
		return "", netip.Prefix{}, fmt.Errorf("affinity key %q: want %s<node>/<block>", key, affinitiesPrefix)
	}
	p, err := parseCIDRKey(cidr)
	return node, p, err
}

func handleKey(handle string) string { return handlesPrefix + handle }

// checkName refuses a node or handle name that would not make one key element.
func checkName(what, s string) error {
	if s == "" || strings.ContainsAny(s, "/\x00") {
		return fmt.Errorf("%s %q: must be non-empty, without '/'", what, s)
	}
	return nil
}
