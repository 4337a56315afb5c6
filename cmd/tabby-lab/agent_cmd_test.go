package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestLabAgentKillStart: agent kill leaves the node's agent gone and a second kill is
// refused; agent start runs it again with the command line up gave it, in the node's
// namespace, recorded in the lab's state; a second start is refused while it runs.
func TestLabAgentKillStart(t *testing.T) {
	labtest.Need(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "1")
	first := l.State().Node("node1").Agent
	l.OK("agent", "kill", "node1")
	if alive(first) {
		t.Errorf("the agent (pid %d) still runs after agent kill", first.PID)
	}
	if stderr := l.Fails("agent", "kill", "node1"); !strings.Contains(stderr, "is not running") {
		t.Errorf("a second agent kill: %s", stderr)
	}
	l.OK("agent", "start", "node1")
	again := l.State().Node("node1").Agent
	if !alive(again) || again.PID == first.PID || !slices.Equal(again.Argv, first.Argv) || again.Log != first.Log {
		t.Errorf("after agent start: %+v, first %+v", again, first)
	}
	if inNS, _ := pidsIn([]string{l.NS("node1")}); !slices.Contains(inNS[l.NS("node1")], again.PID) {
		t.Errorf("agent pid %d is not in node1's namespace (%v)", again.PID, inNS)
	}
	if stderr := l.Fails("agent", "start", "node1"); !strings.Contains(stderr, "is running already") {
		t.Errorf("agent start with the agent running: %s", stderr)
	}
	if stderr := l.Fails("agent", "kill", "node9"); !strings.Contains(stderr, "has no node node9") {
		t.Errorf("agent kill of an unknown node: %s", stderr)
	}
}
