// Command connlat measures TCP connect latency for the Service proxy benchmarks.
//
//	connlat serve PORT     # accept connections and close them, until killed
//	connlat N ADDR:PORT    # N connections one after another
//
// The client times each connect() (SYN to SYN-ACK, through whatever DNAT lies between)
// and closes the connection with a reset (no TIME_WAIT left behind). It prints one line, the times in microseconds:
//
//	n 2000 errors 0 p50 210 p90 260 p99 480 max 1900
//
// It exits 1 if every connection failed.
package main

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"time"
)

func main() {
	switch {
	case len(os.Args) == 3 && os.Args[1] == "serve":
		serve(os.Args[2])
	case len(os.Args) == 3:
		n, err := strconv.Atoi(os.Args[1])
		if err != nil || n < 1 {
			usage()
		}
		probe(n, os.Args[2])
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: connlat serve PORT | connlat N ADDR:PORT")
	os.Exit(2)
}

func serve(port string) {
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		c.Close()
	}
}

func probe(n int, addr string) {
	d := net.Dialer{Timeout: time.Second}
	var lat []time.Duration
	errs := 0
	for range n {
		start := time.Now()
		c, err := d.Dial("tcp", addr)
		took := time.Since(start)
		if err != nil {
			errs++
			continue
		}
		lat = append(lat, took)
		// Close with a reset: thousands of connections in TIME_WAIT would slow the
		// choice of a source port, and so the later runs' connect().
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	if len(lat) == 0 {
		fmt.Printf("n %d errors %d\n", n, errs)
		os.Exit(1)
	}
	slices.Sort(lat)
	q := func(p float64) int64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds() }
	fmt.Printf("n %d errors %d p50 %d p90 %d p99 %d max %d\n", n, errs, q(0.50), q(0.90), q(0.99), lat[len(lat)-1].Microseconds())
}
