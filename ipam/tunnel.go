package ipam

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/tabby-net/tabby/api"
)

// Tunnel is a kind of tunnel whose device needs an address of its own on every node.
type Tunnel string

// The tunnels that take addresses from IPAM.
const (
	TunnelIPIP      Tunnel = "ipip"
	TunnelVXLAN     Tunnel = "vxlan"
	TunnelVXLANV6   Tunnel = "vxlan-v6" // vxlan-v6.tabby's address, from an IPv6 pool
	TunnelWireGuard Tunnel = "wireguard"
)

// Handle is the IPAM handle of node's tunnel address: "ipip-tunnel-addr-<node>", as Calico.
func (t Tunnel) Handle(node string) string { return string(t) + "-tunnel-addr-" + node }

// attrType is the allocation's "type" attribute, as Calico writes it
// ("vxlanV6TunnelAddress" for TunnelVXLANV6).
func (t Tunnel) attrType() string {
	if t == TunnelVXLANV6 {
		return "vxlanV6TunnelAddress"
	}
	return string(t) + "TunnelAddress"
}

// v6 says whether the tunnel's address is an IPv6 one.
func (t Tunnel) v6() bool { return t == TunnelVXLANV6 }

// TunnelAddrs allocates and releases one node's tunnel addresses. It remembers what it
// allocated, so that a caller whose view of the Node lags behind its own write does not
// take the address for lost and churn it.
type TunnelAddrs struct {
	c    *Client
	node string
	log  *slog.Logger

	mu        sync.Mutex
	allocated map[Tunnel]netip.Addr
}

// TunnelAddrs returns the tunnel address allocator of node.
func (c *Client) TunnelAddrs(node string, log *slog.Logger) *TunnelAddrs {
	if log == nil {
		log = c.log
	}
	return &TunnelAddrs{c: c, node: node, log: log, allocated: map[Tunnel]netip.Addr{}}
}

// Ensure returns the address t's handle holds: recorded (what the Node says) or, while the
// caller's Node lags, the one allocated last; if the handle holds neither, whatever it
// holds is released and a new address is allocated from pools (use Tunnel).
func (t *TunnelAddrs) Ensure(ctx context.Context, tun Tunnel, recorded netip.Addr, pools []string) (netip.Addr, error) {
	handle := tun.Handle(t.node)
	cur := recorded
	if !cur.IsValid() {
		t.mu.Lock()
		cur = t.allocated[tun]
		t.mu.Unlock()
	}
	if t.holds(ctx, cur, handle) {
		return cur, nil
	}
	// A pass that read an older Node, whose update then lost the compare-and-swap, would
	// otherwise leave the handle with a second address that no Node records.
	t.release(ctx, handle)
	args := AutoAssignArgs{Num4: 1, Handle: handle, Node: t.node,
		IPv4Pools: pools, Use: api.IPPoolAllowedUseTunnel, Attrs: map[string]string{"type": tun.attrType()}}
	if tun.v6() {
		args.Num4, args.Num6, args.IPv4Pools, args.IPv6Pools = 0, 1, nil, pools
	}
	res, err := t.c.AutoAssign(ctx, args)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate tunnel address (handle %s) from pools %v: %w", handle, pools, err)
	}
	var addr netip.Addr
	if tun.v6() {
		addr = res.IPv6[0].Addr
	} else {
		addr = res.IPv4[0].Addr
	}
	t.mu.Lock()
	t.allocated[tun] = addr
	t.mu.Unlock()
	t.log.Info("tunnel address allocated", "handle", handle, "addr", addr)
	return addr, nil
}

// Release frees whatever tun's handle holds: no pool needs the tunnel any more, and the
// address would keep its pool from being deleted.
func (t *TunnelAddrs) Release(ctx context.Context, tun Tunnel) {
	t.release(ctx, tun.Handle(t.node))
	t.mu.Lock()
	delete(t.allocated, tun)
	t.mu.Unlock()
}

func (t *TunnelAddrs) release(ctx context.Context, handle string) {
	if addrs, err := t.c.ReleaseByHandle(ctx, handle); err != nil {
		t.log.Debug("release tunnel handle", "handle", handle, "err", err)
	} else if len(addrs) > 0 {
		t.log.Info("tunnel addresses released", "handle", handle, "addrs", addrs)
	}
}

// holds says whether addr is allocated to handle.
func (t *TunnelAddrs) holds(ctx context.Context, addr netip.Addr, handle string) bool {
	if !addr.IsValid() {
		return false
	}
	al, err := t.c.GetAllocation(ctx, addr)
	return err == nil && al != nil && al.Handle == handle
}
