// Package ops runs tabby's operations end to end in tabby-lab labs through
// internal/labtest: etcd outages and clusters with TLS, first boot, node lifecycle and
// diagnostics, health, readiness and metrics. They are apart from e2e so that the two
// packages' labs run side by side in `make test`. The tests need root; they skip without
// it unless CI is set. Every lab has a unique name and is torn down by t.Cleanup.
package ops

import (
	"testing"

	"github.com/tabby-net/tabby/internal/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }
