package felix

import (
	"context"
	"errors"
	"strings"
)

// Backend is the iptables flavour felix drives: its save and restore commands.
type Backend struct {
	Name            string // "nft" or "legacy"
	Save, Restore   string
	Save6, Restore6 string // ip6tables
}

// Backends tabby knows, by name.
var (
	BackendNFT = Backend{Name: "nft", Save: "iptables-nft-save", Restore: "iptables-nft-restore",
		Save6: "ip6tables-nft-save", Restore6: "ip6tables-nft-restore"}
	BackendLegacy = Backend{Name: "legacy", Save: "iptables-legacy-save", Restore: "iptables-legacy-restore",
		Save6: "ip6tables-legacy-save", Restore6: "ip6tables-legacy-restore"}
)

// DetectBackend picks nft or legacy as Calico's auto mode does: kubelet's hint chain
// (KUBE-IPTABLES-HINT) or tabby's own chains say which one is in use; otherwise the one
// with more rules wins, and nft on a tie (Debian's default). A backend whose save
// command is missing or fails does not count.
func DetectBackend(ctx context.Context, r CommandRunner) (Backend, error) {
	type count struct {
		ok          bool
		rules, hint int
	}
	counts := map[string]count{}
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		out, err := r.Run(ctx, nil, b.Save)
		if err != nil {
			continue
		}
		c := count{ok: true}
		for line := range strings.SplitSeq(string(out), "\n") {
			switch {
			case strings.HasPrefix(line, "-A "):
				c.rules++
			case strings.HasPrefix(line, ":KUBE-IPTABLES-HINT "), strings.HasPrefix(line, ":"+ChainForward+" "):
				c.hint++
			}
		}
		counts[b.Name] = c
	}
	nft, legacy := counts["nft"], counts["legacy"]
	switch {
	case !nft.ok && !legacy.ok:
		return Backend{}, errors.New("neither iptables-nft-save nor iptables-legacy-save works: install iptables")
	case !nft.ok:
		return BackendLegacy, nil
	case !legacy.ok:
		return BackendNFT, nil
	case legacy.hint > 0 && nft.hint == 0:
		return BackendLegacy, nil
	case nft.hint > 0 && legacy.hint == 0:
		return BackendNFT, nil
	case legacy.rules > nft.rules:
		return BackendLegacy, nil
	}
	return BackendNFT, nil
}
