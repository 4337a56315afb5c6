// Package e2e runs tabby end to end in tabby-lab labs through internal/labtest: real
// tabby-node agents and the real tabby-cni on several nodes, for what spans subsystems —
// encapsulation (VXLAN; IPIP on a kernel without it), natOutgoing, the Service proxy and
// DNS, the network policy matrix. Operations (outages, first boot, node lifecycle, health)
// are in e2e/ops, BGP's own end-to-end tests in bgp/e2e. The tests need root; they skip
// without it unless CI is set. Every lab has a unique name and is torn down by t.Cleanup;
// traffic stays inside the labs' namespaces.
package e2e

import (
	"testing"

	"github.com/tabby-net/tabby/internal/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }
