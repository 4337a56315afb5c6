package felix

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/tabby-net/tabby/policy"
)

// serviceMatch renders a rule's services match for one side ("src" or "dst"): as a
// destination the hash:ip,port set of the Service's endpoints with their ports of the
// Service's ports (tbyv…), as a source the hash:net set of its endpoints' addresses
// (tbyw…). The sets follow the endpoints: every render derives them afresh.
func (r *renderer) serviceMatch(ref policy.ServiceRef, dir string) string {
	svc := r.m.ServiceOf(ref)
	if dir == "dst" {
		name := r.setName('v', "service-ports\x00"+ref.Key())
		if _, ok := r.fs.IPSets[name]; !ok {
			var members []string
			for _, mb := range svc.Ports {
				if r.family(mb.Addr) {
					members = append(members, fmt.Sprintf("%s,%s:%d", mb.Addr, protoArg(mb.Protocol), mb.Port))
				}
			}
			slices.Sort(members)
			r.newSet(name, "hash:ip,port", members)
		}
		return "-m set --match-set " + name + " dst,dst "
	}
	name := r.setName('w', "service-addrs\x00"+ref.Key())
	if _, ok := r.fs.IPSets[name]; !ok {
		var members []string
		for _, a := range svc.Addrs {
			if r.family(a) {
				members = append(members, netip.PrefixFrom(a, a.BitLen()).String())
			}
		}
		r.newSet(name, "hash:net", members)
	}
	return "-m set --match-set " + name + " src "
}
