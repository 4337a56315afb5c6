package main

import (
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

// Indexes of the interfaces in an ADD result.
const (
	resultHostIface      = 0
	resultContainerIface = 1
)

// buildResult is ADD's result (in the current spec version; the caller converts it to the
// configuration's): the host end and the container end (with its sandbox), the workload's
// addresses on the container end with their gateways, the container's routes, and the
// configuration's DNS settings.
func buildResult(a *attachment, li linkInfo, dns types.DNS) *types100.Result {
	r := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			resultHostIface:      {Name: a.HostVeth, Mac: hostMAC.String()},
			resultContainerIface: {Name: a.IfName, Mac: li.MAC, Mtu: li.MTU, Sandbox: a.NetNS},
		},
		DNS: dns,
	}
	for _, addr := range a.Addrs {
		gw := gatewayV4
		if addr.Is6() {
			gw = gatewayV6
		}
		r.IPs = append(r.IPs, &types100.IPConfig{
			Interface: types100.Int(resultContainerIface),
			Address:   *hostPrefix(addr),
			Gateway:   gw.AsSlice(),
		})
	}
	for _, cr := range containerRoutes(a.Addrs) {
		rt := &types.Route{Dst: *prefixIPNet(cr.Dst)}
		if cr.GW.IsValid() {
			rt.GW = cr.GW.AsSlice()
		} else {
			rt.Scope = types100.Int(int(netlink.SCOPE_LINK))
		}
		r.Routes = append(r.Routes, rt)
	}
	return r
}

// resultAddrs are the addresses a result gave the container interface (CHECK's expected
// addresses, from prevResult).
func resultAddrs(r *types100.Result, ifName string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, ip := range r.IPs {
		if ip.Interface == nil || *ip.Interface < 0 || *ip.Interface >= len(r.Interfaces) || r.Interfaces[*ip.Interface].Name != ifName {
			continue
		}
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			return nil, fmt.Errorf("prevResult: address %v does not parse", ip.Address)
		}
		out = append(out, a.Unmap())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("prevResult names no address on interface %s", ifName)
	}
	return out, nil
}
