package bgp

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// envRestartHelper carries a restartHelper's configuration (JSON) to the helper process.
const envRestartHelper = "TABBY_BGP_RESTART_HELPER"

// restartHelper is a speaker run in a process of its own, so that the test can kill it
// with SIGKILL: its kernel closes its connections and no CEASE is sent, as when an
// agent crashes.
type restartHelper struct {
	Addr   netip.Addr
	Port   uint16
	Peer   Peer
	Prefix netip.Prefix
}

// TestHelperSpeakerProcess is not a test of its own: it is the body of a restartHelper.
func TestHelperSpeakerProcess(t *testing.T) {
	cfg := os.Getenv(envRestartHelper)
	if cfg == "" {
		t.Skip("helper process for TestGracefulRestartThroughFailedReconnect")
	}
	var h restartHelper
	if err := json.Unmarshal([]byte(cfg), &h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := t.Context()
	s, err := Start(ctx, Options{Self: Self{Name: h.Addr.String(), Addr: h.Addr, ASN: h.Peer.ASN}, ListenPort: h.Port,
		ConnectRetry: time.Second, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second})
	if err == nil {
		err = s.SetAdvertisements(ctx, []Advertisement{{Prefix: h.Prefix}})
	}
	if err == nil {
		err = s.SetPeers(ctx, []Peer{h.Peer})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	select {} // until killed
}

// startRestartHelper starts a restartHelper and waits until its speaker runs; it is
// killed at the test's end if the test has not killed it.
func startRestartHelper(t *testing.T, h restartHelper) *exec.Cmd {
	t.Helper()
	cfg, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSpeakerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envRestartHelper+"="+string(cfg))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper speaker %s: %q, %v", h.Addr, line, err)
	}
	return cmd
}

// TestGracefulRestartThroughFailedReconnect: speaker a (127.0.0.5 or .7) learns a prefix
// from peer b (the next address up, in a process of its own, so the session between
// nodes is dialed by a only). b is killed with SIGKILL, and a listener on b's address
// accepts a's next connection and closes it at once, as a restarted GoBGP does with a
// connection from a peer it has not been told of yet: a falls back from OpenSent to Idle
// while b is restarting.
//
//   - with long-lived graceful restart (sessions between nodes): a keeps b's route
//     through the failed attempt, and when b is back the session comes up (a dials again
//     after its 5 s idle hold) and a learns the route afresh without ever losing it;
//   - without it (a control that shows why sessions between nodes negotiate it): GoBGP
//     drops b's route at the failed attempt, long before b's restart time (60 s).
func TestGracefulRestartThroughFailedReconnect(t *testing.T) {
	for _, tc := range []struct {
		name      string
		a, b      string
		longLived bool
	}{
		{"long-lived", "127.0.0.5", "127.0.0.6", true},
		{"without-long-lived", "127.0.0.7", "127.0.0.8", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := startSpeaker(t, tc.a, 64512, Options{})
			bAddr, bPort := netip.MustParseAddr(tc.b), freePort(t)
			prefix := netip.MustParsePrefix("10.65.9.0/26")
			toB := Peer{Addr: bAddr, Port: bPort, ASN: 64512, Type: PeerMesh, Source: "b", RestartTime: time.Minute,
				LocalAddr: a.addr, LongLived: tc.longLived}
			b := restartHelper{Addr: bAddr, Port: bPort, Prefix: prefix, Peer: Peer{Addr: a.addr, Port: a.port, ASN: 64512,
				Type: PeerMesh, Source: "a", RestartTime: time.Minute, LocalAddr: bAddr, LongLived: tc.longLived, Passive: true}}
			if err := a.SetPeers(t.Context(), []Peer{toB}); err != nil {
				t.Fatal(err)
			}
			proc := startRestartHelper(t, b)
			want := prefix.String() + " via " + tc.b
			waitLearned(t, a, want)

			// From the kill on, a must never be without b's route (with long-lived GR).
			var lost atomic.Bool
			done := make(chan struct{})
			defer close(done)
			go func() {
				for {
					select {
					case <-done:
						return
					case <-time.After(20 * time.Millisecond):
					}
					if learnedString(a) != want {
						lost.Store(true)
					}
				}
			}()
			if err := proc.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = proc.Wait()
			ln, err := net.Listen("tcp", netip.AddrPortFrom(bAddr, bPort).String())
			if err != nil {
				t.Fatal(err)
			}
			refused := closeAccepted(ln)
			waitFor(t, "a dials b again and its connection is closed", 20*time.Second, func() (bool, string) {
				return refused.Load() > 0, "no connection yet"
			})
			// a was dialing (Active); Idle now means the attempt failed (OpenSent, read
			// failed), and GoBGP has decided about b's routes.
			waitFor(t, "a's session to b falls back to Idle", 5*time.Second, func() (bool, string) {
				st, _ := a.Status(t.Context())
				return len(st) == 1 && st[0].State == "Idle", fmt.Sprint(st)
			})
			if !tc.longLived {
				waitFor(t, "without long-lived GR, a drops b's route at the failed attempt", 5*time.Second, func() (bool, string) {
					got := learnedString(a)
					return got == "", got
				})
				return
			}
			if lost.Load() {
				t.Fatalf("a dropped b's route by the failed attempt (now %q)", learnedString(a))
			}
			ln.Close()
			startRestartHelper(t, b)
			waitFor(t, "a's session to b is back", 30*time.Second, func() (bool, string) {
				st, _ := a.Status(t.Context())
				return len(st) == 1 && st[0].State == "Established" && st[0].Received == 1, fmt.Sprint(st)
			})
			if lost.Load() || learnedString(a) != want {
				t.Errorf("a lost b's route while b came back (now %q)", learnedString(a))
			}
		})
	}
}

// closeAccepted closes every connection ln accepts, until ln is closed, and counts them.
func closeAccepted(ln net.Listener) *atomic.Int32 {
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			n.Add(1)
		}
	}()
	return &n
}

// TestSpeakerPassivePeerWaits: a Passive peer is never dialed (a listener at its address
// sees no connection over three connect-retry intervals), and status says the session
// waits for the peer.
func TestSpeakerPassivePeerWaits(t *testing.T) {
	a := startSpeaker(t, "127.0.0.10", 64512, Options{})
	ln, err := net.Listen("tcp", "127.0.0.9:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed := closeAccepted(ln)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	p := Peer{Addr: netip.MustParseAddr("127.0.0.9"), Port: port, ASN: 64512, Type: PeerMesh, Source: "node9",
		RestartTime: time.Minute, LocalAddr: a.addr, Passive: true, LongLived: true}
	if err := a.SetPeers(t.Context(), []Peer{p}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if n := dialed.Load(); n > 0 {
			t.Fatalf("a passive peer was dialed %d times", n)
		}
	}
	st, err := a.Status(t.Context())
	if err != nil || len(st) != 1 || st[0].State == "Established" || !strings.Contains(st[0].Info, "waiting for the peer to connect") {
		t.Errorf("status %+v, %v", st, err)
	}
}
