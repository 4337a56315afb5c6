package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/internal/labtest"
)

// The agents are stood in for by testdata/fakeagent.sh until tabby-node's agent mode exists:
// it registers its Node with tabbyctl from inside its node and sleeps.

func TestLabAgents(t *testing.T) {
	labtest.Need(t)
	before := takeSnapshot(t)
	l := labtest.New(t)
	l.Env = []string{"FAKE_AGENT_TABBYCTL=" + labtest.Bin(t, "tabbyctl")}
	l.OK("up", "--nodes", "3", "--subnets", "2", "--agent-binary", fakeAgent)

	// up returned once every agent had registered, each from its own node.
	nodes := l.OK("ctl", "get", "nodes")
	assertContains(t, "ctl get nodes", nodes, "node1", "node2", "node3")
	s := l.Status()
	for _, n := range s.Nodes {
		if n.Agent == nil || !n.Agent.Alive || n.Agent.Log != filepath.Join(l.StateDir(), n.Name+".log") {
			t.Errorf("status of %s's agent: %+v", n.Name, n.Agent)
			continue
		}
		if inNS, _ := pidsIn([]string{n.Netns}); !slices.Contains(inNS[n.Netns], n.Agent.PID) {
			t.Errorf("agent pid %d is not in %s", n.Agent.PID, n.Netns)
		}
		log, err := os.ReadFile(n.Agent.Log)
		if err != nil || !strings.Contains(string(log), "fake agent "+n.Name+": registered") ||
			!strings.Contains(string(log), netnsInode(t, n.Netns)) {
			t.Errorf("%s's agent log: %s %v", n.Name, log, err)
		}
	}
	if len(s.Problems) > 0 {
		t.Errorf("status problems: %v", s.Problems)
	}
	l.OK("down")
	assertGone(t, before, l)
}

func TestLabAgentDies(t *testing.T) {
	labtest.Need(t)
	before := takeSnapshot(t)
	l := labtest.New(t)
	l.Env = []string{"FAKE_AGENT=die"}
	stdout, stderr, code := l.Run("", "up", "--nodes", "2", "--agent-binary", fakeAgent)
	if code == 0 {
		t.Fatalf("up with dying agents succeeded:\n%s", stdout)
	}
	assertContains(t, "up's output", stdout, "fake agent node1: cannot start: boom", "fake agent node2: cannot start: boom", "PROBLEMS")
	assertContains(t, "up's errors", stderr, "node1: agent", "exited", "2 of 2 agents are not running", "tabby-lab down --name "+l.Name)

	// The lab stays for inspection; status says what is wrong.
	s := l.Status()
	if a := s.Nodes[0].Agent; a == nil || a.Alive || !strings.Contains(a.LogTail, "boom") {
		t.Errorf("status of node1's agent: %+v", a)
	}
	if len(s.Problems) != 2 || !strings.Contains(s.Problems[0], "agent of node1") {
		t.Errorf("status problems: %v", s.Problems)
	}
	assertContains(t, "status", l.OK("status"), "exited", "boom")
	l.Ping("node1", "172.31.1.11")
	l.OK("down")
	assertGone(t, before, l)
}

func TestLabAgentNeverRegisters(t *testing.T) {
	labtest.Need(t)
	before := takeSnapshot(t)
	l := labtest.New(t)
	l.Env = []string{"FAKE_AGENT=mute"}
	_, stderr, code := l.Run("", "up", "--nodes", "1", "--agent-binary", fakeAgent, "--wait", "1s")
	if code == 0 {
		t.Fatal("up with an agent that never registers succeeded")
	}
	assertContains(t, "up's errors", stderr, "has not registered Node node1 in etcd within 1s", "fake agent node1: starting")
	if s := l.Status(); !s.Nodes[0].Agent.Alive {
		t.Errorf("the silent agent is not running: %+v", s.Nodes[0].Agent)
	}
	// down stops it.
	l.OK("down")
	assertGone(t, before, l)
}
