package datastore_test

import (
	"errors"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/datastore/datastoretest"
)

// TestReconnectsOften: once etcd has gone away, a client keeps trying to reconnect at
// least about once a second, however long the outage, so that it finds etcd within
// seconds of its return. gRPC's default backoff (1 s growing by 1.6 to 120 s) makes two
// attempts between 3 and 7 s into an outage at most, and waits tens of seconds after a
// one-minute outage. The test counts the connections a listener on etcd's address is
// asked for (it closes each at once) in that window: ~4 with the client's backoff.
func TestReconnectsOften(t *testing.T) {
	e := datastoretest.StartEmbedded(t)
	c := datastoretest.Connect(t, e)
	u, err := url.Parse(e.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	e.Close()
	gone := time.Now()
	ln, err := net.Listen("tcp", u.Host)
	if err != nil {
		t.Fatalf("listen on etcd's address %s once it stopped: %v", u.Host, err)
	}
	var mu sync.Mutex
	var attempts []time.Duration
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				mu.Lock()
				attempts = append(attempts, time.Since(gone))
				mu.Unlock()
				conn.Close()
			}
		}
	})
	// The ping keeps the client wanting a connection, as an agent's readiness pings do.
	for time.Since(gone) < 7*time.Second {
		_ = c.Ping(t.Context(), 500*time.Millisecond)
	}
	ln.Close()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	inWindow := 0
	for _, a := range attempts {
		if a >= 3*time.Second && a < 7*time.Second {
			inWindow++
		}
	}
	t.Logf("reconnection attempts after etcd stopped: %v", attempts)
	if inWindow < 3 {
		t.Errorf("%d reconnection attempts between 3 and 7 s after etcd stopped (%v), want at least 3", inWindow, attempts)
	}
}
