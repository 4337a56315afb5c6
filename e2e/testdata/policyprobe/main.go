// Command policyprobe serves and probes TCP and UDP ports for the policy matrix tests.
//
//	policyprobe serve 80 81          # accept TCP and answer UDP on each port, until killed
//	policyprobe probe [--sport=N] TIMEOUT T...   # T is proto/addr:port; prints "T ok" or "T fail" per target
//	policyprobe until ok|fail TIMEOUT T
//
// until probes T at least every 5 ms: it prints "ready" once a probe had the other verdict
// (or "already" if the first had the wanted one), then, when the verdict flips, the start
// time of the first probe with the wanted verdict in Unix nanoseconds, and exits. A "fail"
// counts only when the next probe fails too (a slow "ok" is not a flip).
//
// Probes run in parallel; a TCP probe succeeds when the connection is accepted, a UDP
// probe when the echo comes back within TIMEOUT. With --sport=N the i-th target's UDP
// probe is sent from port N+i: a caller that never reuses a port within conntrack's UDP
// timeout gets a new flow for every probe, not one that an earlier, allowed probe with the
// same ephemeral port left established (policy, as Calico's, lets established flows on).
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: policyprobe serve PORT... | probe TIMEOUT TARGET...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "probe":
		args, sport := os.Args[2:], 0
		if v, ok := strings.CutPrefix(args[0], "--sport="); ok {
			var err error
			if sport, err = strconv.Atoi(v); err != nil || sport < 1 || sport > 65535 {
				fmt.Fprintln(os.Stderr, "--sport: a port number, not", v)
				os.Exit(2)
			}
			args = args[1:]
		}
		d, err := time.ParseDuration(args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		probe(d, sport, args[1:])
	case "until":
		d, err := time.ParseDuration(os.Args[3])
		if err != nil || len(os.Args) != 5 {
			fmt.Fprintln(os.Stderr, "usage: policyprobe until ok|fail TIMEOUT TARGET")
			os.Exit(2)
		}
		until(os.Args[2] == "ok", d, os.Args[4])
	}
}

func until(want bool, timeout time.Duration, target string) {
	if probeOne(target, timeout) == want {
		fmt.Println("already")
		return
	}
	fmt.Println("ready")
	for {
		start := time.Now()
		if probeOne(target, timeout) == want && (want || probeOne(target, timeout) == want) {
			fmt.Println(start.UnixNano())
			return
		}
		time.Sleep(time.Until(start.Add(5 * time.Millisecond)))
	}
}

func serve(ports []string) {
	for _, p := range ports {
		l, err := net.Listen("tcp", ":"+p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		u, err := net.ListenPacket("udp", ":"+p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			buf := make([]byte, 64)
			for {
				n, from, err := u.ReadFrom(buf)
				if err != nil {
					return
				}
				u.WriteTo(buf[:n], from)
			}
		}()
	}
	fmt.Println("serving")
	select {}
}

func probe(timeout time.Duration, sport int, targets []string) {
	results := make([]string, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := 0
			if sport != 0 {
				local = sport + i
			}
			results[i] = t + map[bool]string{true: " ok", false: " fail"}[probeFrom(t, local, timeout)]
		}()
	}
	wg.Wait()
	fmt.Println(strings.Join(results, "\n"))
}

// probeOne says whether target (proto/addr:port) answers within timeout: a TCP
// connection accepted, a UDP datagram echoed.
func probeOne(target string, timeout time.Duration) bool { return probeFrom(target, 0, timeout) }

// probeFrom is probeOne with a UDP probe sent from local port sport (0: any).
func probeFrom(target string, sport int, timeout time.Duration) bool {
	proto, addr, _ := strings.Cut(target, "/")
	d := net.Dialer{Timeout: timeout}
	if proto == "tcp" {
		c, err := d.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	if sport != 0 {
		d.LocalAddr = &net.UDPAddr{Port: sport}
	}
	ok := false
	if c, err := d.Dial("udp", addr); err == nil {
		c.SetDeadline(time.Now().Add(timeout))
		buf := make([]byte, 64)
		if _, err := c.Write([]byte("x")); err == nil {
			_, err = c.Read(buf)
			ok = err == nil
		}
		c.Close()
	}
	return ok
}
