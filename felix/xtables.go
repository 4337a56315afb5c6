package felix

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netns"
)

// go-iptables (github.com/coreos/go-iptables) runs one iptables command per call and
// starts the binary itself, not through a CommandRunner. felix uses it where that fits:
// the version of a backend's binaries, whether a chain exists and whether one rule is in
// place. Reading and writing whole tables (DetectBackend's rule counts, every sync) stays
// on iptables-save and iptables-restore --noflush through the CommandRunner: go-iptables
// has neither, and one save replaces a command per chain and rule.

// ErrNeedsRunner says a check needs the real Runner: go-iptables starts iptables itself,
// so a fake CommandRunner cannot stand in for it.
var ErrNeedsRunner = errors.New("needs felix.Runner: go-iptables runs iptables itself")

// BackendVersion is the version of b's iptables (ip6tables with v6), e.g. "1.8.9", as
// go-iptables reads it from `iptables-nft --version`.
func BackendVersion(b Backend, v6 bool) (string, error) {
	ipt, err := newIPTables(b, v6)
	if err != nil {
		return "", err
	}
	v1, v2, v3 := ipt.GetIptablesVersion()
	return fmt.Sprintf("%d.%d.%d", v1, v2, v3), nil
}

// newIPTables returns go-iptables for b's iptables-nft or iptables-legacy (ip6tables with
// v6), never for plain "iptables", whose backend is whatever the system's alternative says.
func newIPTables(b Backend, v6 bool) (*iptables.IPTables, error) {
	save, proto := b.Save, iptables.ProtocolIPv4
	if v6 {
		save, proto = b.Save6, iptables.ProtocolIPv6
	}
	bin := strings.TrimSuffix(save, "-save")
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Path(bin), iptables.Timeout(5))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bin, err)
	}
	return ipt, nil
}

// inNamedNetNS is inNetNS for the namespace named netNS (/run/netns/netNS), as
// Runner.NetNS names it; "" runs fn where the agent is. Commands go-iptables starts in fn
// run in that namespace.
func inNamedNetNS(netNS string, fn func() error) error {
	if netNS == "" {
		return fn()
	}
	h, err := netns.GetFromName(netNS)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", netNS, err)
	}
	defer h.Close()
	return inNetNS(h, fn)
}

// Hooked reports whether every hook of the desired filter state (IPv4, and IPv6 where
// ip6tables works) is in place and jumps to an existing chain: one `iptables -C` and one
// `iptables -S chain 1` per hook through go-iptables, cheap enough for a readiness probe,
// where a sync reads whole tables. Before the first Update it reports false. It needs the
// real Runner (ErrNeedsRunner).
func (s *PolicySyncer) Hooked(ctx context.Context) (bool, error) {
	r, ok := s.run.(Runner)
	if !ok {
		return false, ErrNeedsRunner
	}
	s.mu.Lock()
	fs := s.desired
	s.mu.Unlock()
	if fs == nil {
		return false, nil
	}
	type family struct {
		v6    bool
		hooks []Hook
	}
	fams := []family{{false, fs.Hooks}}
	if fs.IPv6 != nil && !s.noIPv6 {
		fams = append(fams, family{true, fs.IPv6.Hooks})
	}
	hooked := true
	err := inNamedNetNS(r.NetNS, func() error {
		for _, f := range fams {
			ipt, err := newIPTables(s.backend, f.v6)
			if err != nil {
				return err
			}
			for _, h := range f.hooks {
				if err := ctx.Err(); err != nil {
					return err
				}
				ok, err := ipt.ChainExists("filter", h.Target)
				if err != nil {
					return fmt.Errorf("chain %s: %w", h.Target, err)
				}
				if ok {
					ok, err = ipt.Exists("filter", h.Chain, strings.Fields(h.Rule())...)
					if err != nil {
						return fmt.Errorf("hook in %s: %w", h.Chain, err)
					}
				}
				if !ok {
					hooked = false
					return nil
				}
			}
		}
		return nil
	})
	return hooked && err == nil, err
}
