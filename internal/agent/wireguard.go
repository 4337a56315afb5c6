package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// WireGuardConfig configures WireGuard encryption between nodes. Enabled is the flag's
// setting (Calico's wireguardEnabled), which a FelixConfiguration may change.
type WireGuardConfig struct {
	Enabled bool
	Port    int
	// KeyFile holds the node's private key; the agent makes it (mode 0600) when it is
	// missing, so the key survives restarts.
	KeyFile string
}

// wireGuard is the encapsulation subsystem's WireGuard part: each pass it keeps
// wireguard.tabby as the view's nodes ask and says which public key to publish on this
// node's Node. Off, its first pass (after start, or after it was on) removes what an
// earlier run or pass left; nothing else makes them, so later passes do no netlink work.
type wireGuard struct {
	cfg     WireGuardConfig
	r       *felix.WireGuardReconciler
	key     *wgtypes.Key // loaded on the first pass that needs it
	removed bool         // off, and what an earlier run or an earlier "on" left is gone
	log     *slog.Logger
}

func newWireGuard(cfg WireGuardConfig, m *Metrics, log *slog.Logger) *wireGuard {
	r := felix.NewWireGuardReconciler(nil, nil, log)
	r.Observe = m.observeApply
	return &wireGuard{cfg: cfg, r: r, log: log}
}

// wireGuardPass is what one pass decided: the key to publish ("" none: the device does
// not work, and needs no address either), the MTU WireGuard allows workloads (0: no
// limit), and problems for readiness.
type wireGuardPass struct {
	publish  string
	mtu      int
	problems []string
}

// pass applies the view's WireGuard state for node self, on or off (enabled). The public
// key is published only once the device works, so no node encrypts to this one before it
// can decrypt.
func (w *wireGuard) pass(v *snapshot.View, self string, underlayMTU int, enabled bool) (wireGuardPass, error) {
	if !enabled {
		if w.removed {
			return wireGuardPass{}, nil
		}
		n, err := w.r.Apply(nil)
		if err != nil {
			return wireGuardPass{}, fmt.Errorf("remove wireguard: %w", err)
		}
		if n > 0 {
			w.log.Info("wireguard removed", "writes", n)
		}
		w.removed = true
		return wireGuardPass{}, nil
	}
	w.removed = false // turned on: when turned off again, the device goes
	if w.key == nil {
		k, err := loadOrCreateKey(w.cfg.KeyFile)
		if err != nil {
			return wireGuardPass{}, err
		}
		w.key = &k
	}
	var nodes []felix.WireGuardNode
	var addr netip.Addr
	for _, n := range snapshot.List[*api.Node](v) {
		if n.Name == self && n.Spec.Wireguard != nil {
			addr, _ = netip.ParseAddr(n.Spec.Wireguard.InterfaceIPv4Address)
		}
		nodes = append(nodes, felix.WireGuardNode{Name: n.Name, Addr: encapNode(n).Addr.Addr(), PublicKey: wireguardKeyOf(n)})
	}
	peers, problems := felix.DesiredWireGuardPeers(self, nodes, v.Affinities, w.cfg.Port)
	out := wireGuardPass{mtu: underlayMTU - felix.WireGuardOverhead, problems: problems}
	cfg := &felix.WireGuardConfig{Addr: addr, PrivateKey: *w.key, ListenPort: w.cfg.Port, MTU: out.mtu, Peers: peers}
	n, err := w.r.Apply(cfg)
	switch {
	case errors.Is(err, felix.ErrNoWireGuard):
		// Tried again every pass; the key stays unpublished, so other nodes send in the
		// clear, as to a node without WireGuard.
		out.problems = append(out.problems, fmt.Sprintf("wireguard: --wireguard needs the kernel's wireguard support, which this kernel lacks (%v): traffic to and from this node is not encrypted", err))
		out.mtu = 0
		return out, nil
	case err != nil:
		return wireGuardPass{}, fmt.Errorf("wireguard: %w", err)
	case n > 0:
		w.log.Info("wireguard updated", "writes", n, "peers", len(peers))
	}
	out.publish = w.key.PublicKey().String()
	return out, nil
}

// loadOrCreateKey reads the private key in path, or makes one there (mode 0600) when the
// file does not exist. A file that holds no key is an error, never overwritten.
func loadOrCreateKey(path string) (wgtypes.Key, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return wgtypes.Key{}, fmt.Errorf("wireguard key file %s: %w (remove it to have a new key made)", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return wgtypes.Key{}, fmt.Errorf("wireguard key file: %w", err)
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("make a wireguard key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard key file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(k.String()+"\n"), 0o600); err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard key file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard key file: %w", err)
	}
	return k, nil
}
