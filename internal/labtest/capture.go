package labtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/testenv"
)

// syncBuffer is the output of a command that the test reads while the command runs.
type syncBuffer struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (s *syncBuffer) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(b)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// Capture is a tcpdump on one interface of the lab's router.
type Capture struct {
	syncBuffer
	cmd *exec.Cmd
}

// Lines are the packets captured so far, one line each.
func (c *Capture) Lines() []string {
	return strings.Split(strings.TrimSpace(c.String()), "\n")
}

// StartCapture runs tcpdump (IPv4 packets) in the lab's router on a bridge port (a node's
// or a host's underlay link: "node1", "h-inet") and returns once tcpdump says it is
// listening. It needs tcpdump; the capture ends with the test if Stop does not end it.
func (l *Lab) StartCapture(iface string) *Capture {
	l.t.Helper()
	return l.startCapture(iface, "ip")
}

// StartCapture6 is StartCapture for IPv6 packets.
func (l *Lab) StartCapture6(iface string) *Capture {
	l.t.Helper()
	return l.startCapture(iface, "ip6")
}

// startCapture captures the packets of iface that the tcpdump filter expression keeps.
func (l *Lab) startCapture(iface, filter string) *Capture {
	l.t.Helper()
	testenv.RequireTools(l.t, testenv.Tool{Cmd: "tcpdump", Package: "tcpdump"})
	c := &Capture{}
	c.cmd = exec.Command("ip", "netns", "exec", l.NS("router"), "tcpdump", "--immediate-mode", "-l", "-n", "-i", iface, filter)
	c.cmd.Stdout = c
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { _ = c.cmd.Process.Kill(); _ = c.cmd.Wait() })
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				ready <- nil
				for sc.Scan() {
				}
				return
			}
		}
		ready <- fmt.Errorf("tcpdump ended before listening")
	}()
	select {
	case err := <-ready:
		if err != nil {
			l.t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		l.t.Fatal("tcpdump did not start listening within 10s")
	}
	return c
}

// Stop waits until a line matches each of the regular expressions seen (tcpdump prints
// packets a moment after they pass), ends the capture and returns its lines.
func (c *Capture) Stop(t testing.TB, seen ...string) []string {
	t.Helper()
	Poll(t, "capture shows "+strings.Join(seen, ", "), 5*time.Second, func() string {
		lines := c.Lines()
		for _, re := range seen {
			if Count(lines, re) == 0 {
				return "no " + re
			}
		}
		return ""
	})
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	_ = c.cmd.Wait()
	return c.Lines()
}

// Count returns how many lines match the regular expression re.
func Count(lines []string, re string) int {
	n := 0
	r := regexp.MustCompile(re)
	for _, l := range lines {
		if r.MatchString(l) {
			n++
		}
	}
	return n
}
