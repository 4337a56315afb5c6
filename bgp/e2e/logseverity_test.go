package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// gobgpBelowWarning matches a GoBGP message at debug or info in an agent's log.
var gobgpBelowWarning = regexp.MustCompile(`(?m)^.*level=(?:DEBUG|INFO) .*component=gobgp.*$`)

// TestLogSeverity: BGPConfiguration logSeverityScreen sets GoBGP's log level live, on its
// own (the lab's agents log at debug). With node1's override at Warning, a new BGPPeer to
// an address where nothing listens writes none of GoBGP's info and debug messages (adding
// the peer, each failed connection), though node status still says why the session is
// down; switched to Debug, each failed connection is written again.
func TestLogSeverity(t *testing.T) {
	l := newLab(t)
	l.OK("up", "--nodes", "1", "--subnets", "1", "--agent-binary", bgpAgent(t))
	l.OK("host", "add", "nobody", "--subnet", "1")
	_, nobody := l.hostAddr("nobody")
	logPath := filepath.Join(l.StateDir(), "node1.log")
	logSince := func(off int) string {
		b, err := os.ReadFile(logPath)
		if err != nil {
			t.Fatal(err)
		}
		return string(b[min(off, len(b)):])
	}
	setSeverity := func(sev string) int {
		t.Helper()
		off := len(logSince(0))
		l.Apply("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.node1}\nspec: {logSeverityScreen: " + sev + "}\n")
		labtest.Poll(t, "node1's agent applies logSeverityScreen "+sev, 20*time.Second, func() string {
			if strings.Contains(logSince(off), `msg="GoBGP's log level (logSeverityScreen)" component=bgp severity=`+sev) {
				return ""
			}
			return "not in node1.log yet"
		})
		return len(logSince(0))
	}

	mark := setSeverity("Warning")
	l.Apply(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: nobody}
spec: {node: node1, peerIP: ` + nobody + `, asNumber: 65001}
`)
	labtest.Poll(t, "node status says why the session to "+nobody+" is down", 30*time.Second, func() string {
		s, err := l.status("node1", l.NodeDataDir("node1"))
		if err != nil {
			return err.Error()
		}
		for _, p := range s.Peers {
			if p.Address == nobody && strings.Contains(p.Info, "failed to connect") {
				return ""
			}
		}
		return fmt.Sprintf("peers: %+v", s.Peers)
	})
	if got := gobgpBelowWarning.FindAllString(logSince(mark), -1); len(got) > 0 {
		t.Errorf("at Warning, GoBGP's info and debug messages were written:\n%s", strings.Join(got, "\n"))
	}

	mark = setSeverity("Debug")
	labtest.Poll(t, "GoBGP's failed connections written at Debug", 20*time.Second, func() string {
		for _, m := range gobgpBelowWarning.FindAllString(logSince(mark), -1) {
			if strings.Contains(m, `msg="failed to connect"`) && strings.Contains(m, nobody) {
				return ""
			}
		}
		return "not in node1.log yet"
	})
}
