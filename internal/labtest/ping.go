package labtest

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Pinger is a ping running in one of the lab's namespaces until Stop: for tests that
// count the packets lost while something (an agent's restart) happens.
type Pinger struct {
	out syncBuffer
	cmd *exec.Cmd
}

// Reply is one echo reply: its sequence number and when ping printed it.
type Reply struct {
	Seq int
	At  time.Time
}

// StartPinger runs ping -D -n -i interval addr in the lab namespace with the given
// suffix (NS: "node1", "w-<namespace>.<pod>"). It ends at Stop, or with the test.
func (l *Lab) StartPinger(ns, addr string, interval time.Duration) *Pinger {
	l.t.Helper()
	p := &Pinger{}
	p.cmd = exec.Command("ip", "netns", "exec", l.NS(ns), "ping", "-D", "-n",
		"-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64), addr)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		l.t.Fatalf("ping %s from %s: %v", addr, ns, err)
	}
	l.t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
	return p
}

// Replies are the echo replies received so far, in the order ping printed them.
func (p *Pinger) Replies() []Reply {
	return ParseReplies(p.out.String())
}

// Stop ends ping and returns its replies and its whole output.
func (p *Pinger) Stop(t testing.TB) ([]Reply, string) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	_ = p.cmd.Wait()
	out := p.out.String()
	return ParseReplies(out), out
}

var replyLine = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from [^ ]+ icmp_seq=(\d+) `)

// ParseReplies reads the echo replies from the output of ping -D -n: one per line
// "[<unix time>] 64 bytes from <addr>: icmp_seq=<n> ttl=... time=... ms"; duplicates
// ("DUP!") and every other line are left out.
func ParseReplies(out string) []Reply {
	var rs []Reply
	for _, line := range strings.Split(out, "\n") {
		m := replyLine.FindStringSubmatch(line)
		if m == nil || strings.Contains(line, "DUP!") {
			continue
		}
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		frac := (m[2] + "000000000")[:9]
		nsec, _ := strconv.ParseInt(frac, 10, 64)
		seq, _ := strconv.Atoi(m[3])
		rs = append(rs, Reply{Seq: seq, At: time.Unix(sec, nsec)})
	}
	return rs
}

// Lost returns the sequence numbers from 1 to the last one answered that got no reply:
// the echo requests lost while replies kept coming after them. A request still in flight
// when ping stopped is not counted (nothing after it was answered).
func Lost(replies []Reply) []int {
	got := map[int]bool{}
	last := 0
	for _, r := range replies {
		got[r.Seq] = true
		last = max(last, r.Seq)
	}
	var lost []int
	for seq := 1; seq <= last; seq++ {
		if !got[seq] {
			lost = append(lost, seq)
		}
	}
	return lost
}
