// Command svcprobe serves and probes Service ports for the Service proxy tests.
//
//	svcprobe serve NAME PORT...        # TCP: write NAME to each connection; UDP: answer NAME; until killed
//	svcprobe serve-peer NAME PORT...   # as serve, but answer NAME@PEER, the address the packets came from
//	svcprobe tcp N TIMEOUT ADDR:PORT   # N connections one after another
//	svcprobe udp N TIMEOUT ADDR:PORT   # N queries one after another, each from a new socket
//	svcprobe loop DURATION TIMEOUT ADDR:PORT  # TCP connections every 20 ms for DURATION
//
// tcp and udp print one line per outcome: "<name> <count>" for each server that answered,
// and "refused <count>", "timeout <count>" and "error <count>" for the rest, so a test can
// tell a spread over endpoints from a refusal and a refusal from a silent drop. loop
// prints one line per connection, "<unix nanoseconds at its start> <outcome>", so a
// test can tell when an endpoint stopped answering.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2], os.Args[3:], false)
	case "serve-peer":
		serve(os.Args[2], os.Args[3:], true)
	case "tcp", "udp":
		if len(os.Args) != 5 {
			usage()
		}
		n, err1 := strconv.Atoi(os.Args[2])
		d, err2 := time.ParseDuration(os.Args[3])
		if err1 != nil || err2 != nil {
			usage()
		}
		probe(os.Args[1], n, d, os.Args[4])
	case "loop":
		if len(os.Args) != 5 {
			usage()
		}
		total, err1 := time.ParseDuration(os.Args[2])
		d, err2 := time.ParseDuration(os.Args[3])
		if err1 != nil || err2 != nil {
			usage()
		}
		for end := time.Now().Add(total); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			start := time.Now()
			fmt.Println(start.UnixNano(), once("tcp", d, os.Args[4]))
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: svcprobe serve|serve-peer NAME PORT... | tcp|udp N TIMEOUT ADDR:PORT | loop DURATION TIMEOUT ADDR:PORT")
	os.Exit(2)
}

// serve answers name on each port (name@peer with peer set) until killed.
func serve(name string, ports []string, peer bool) {
	answer := func(from net.Addr) []byte {
		if !peer {
			return []byte(name)
		}
		host, _, _ := net.SplitHostPort(from.String())
		return []byte(name + "@" + host)
	}
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
					continue
				}
				c.Write(answer(c.RemoteAddr()))
				c.Close()
			}
		}()
		u, err := net.ListenPacket("udp", ":"+p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			buf := make([]byte, 512)
			for {
				_, from, err := u.ReadFrom(buf)
				if err == nil {
					u.WriteTo(answer(from), from)
				}
			}
		}()
	}
	fmt.Println("serving")
	select {}
}

func probe(proto string, n int, timeout time.Duration, target string) {
	counts := map[string]int{}
	for range n {
		counts[once(proto, timeout, target)]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Println(k, counts[k])
	}
}

// once makes one connection or query and returns the answering server's name, or
// refused, timeout or error.
func once(proto string, timeout time.Duration, target string) string {
	c, err := net.DialTimeout(proto, target, timeout)
	if err != nil {
		return classify(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if proto == "udp" {
		if _, err := c.Write([]byte("?")); err != nil {
			return classify(err)
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			return classify(err)
		}
		return string(buf[:n])
	}
	b, err := io.ReadAll(c)
	if err != nil || len(b) == 0 {
		return classify(err)
	}
	return strings.TrimSpace(string(b))
}

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error"
}
