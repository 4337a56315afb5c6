// Package nodestatus owns the status that tabby-node serves on its Unix socket and its
// health port, and the client that tabbyctl and the tests read it with: one type for the
// agent, the CLI and the tests. It links neither GoBGP nor etcd, so the CLI stays small.
package nodestatus

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// SocketName is the agent's status socket in its data directory.
const SocketName = "status.sock"

// DefaultSocket is the status socket under tabby-node's default --data-dir.
const DefaultSocket = "/var/lib/tabby/" + SocketName

// Status is what GET /bgp serves: the BGP speaker's report (empty with BGP off), the
// problems that stand, and readiness.
type Status struct {
	Node       string   `json:"node"`
	Role       string   `json:"role"`
	ASN        uint32   `json:"asn"`
	Address    string   `json:"address"`
	Address6   string   `json:"address6,omitempty"` // the IPv6 session address, if any
	RouterID   string   `json:"routerID"`
	ClusterID  string   `json:"clusterID,omitempty"`
	Synced     bool     `json:"synced"`
	Peers      []Peer   `json:"peers"`
	Advertised []string `json:"advertised"`
	Learned    int      `json:"learned"`
	Problems   []string `json:"problems,omitempty"`
	Err        string   `json:"error,omitempty"`
	BGPOff     bool     `json:"bgpOff,omitempty"`
	Ready      bool     `json:"ready"`
	NotReady   []string `json:"notReady,omitempty"`
	// Settings are the agent's effective FelixConfiguration settings and where each
	// came from (none on a route reflector).
	Settings []Setting `json:"settings,omitempty"`
}

// Setting is one effective agent setting that a FelixConfiguration may change.
type Setting struct {
	Name   string `json:"name"`   // Calico's field name: "ipipMTU"
	Value  string `json:"value"`  // as the flag writes it: "1400", "tcp:22,udp:68"
	Source string `json:"source"` // "flag --ipip-mtu", "FelixConfiguration node.n1", "FelixConfiguration default" or "default"
	// Shadowed is what a FelixConfiguration says when a flag wins over it:
	// "FelixConfiguration default says 1380".
	Shadowed string `json:"shadowed,omitempty"`
}

// String is the setting as node status prints it: "ipipMTU: 1400 from flag --ipip-mtu
// (FelixConfiguration default says 1380)".
func (s Setting) String() string {
	out := s.Name + ": " + s.Value + " from " + s.Source
	if s.Shadowed != "" {
		out += " (" + s.Shadowed + ")"
	}
	return out
}

// Peer is one row of the BGP peer table.
type Peer struct {
	Address    string    `json:"address"`
	Port       uint16    `json:"port,omitempty"`
	ASN        uint32    `json:"asn"`
	Type       string    `json:"type"`
	Source     string    `json:"source"`
	State      string    `json:"state"`
	Since      time.Time `json:"since,omitzero"`
	Info       string    `json:"info,omitempty"`
	Received   uint64    `json:"received"`
	Advertised uint64    `json:"advertised"`
}

// NodeHeader names the node whose agent answered GET /diags.
const NodeHeader = "X-Tabby-Node"

// Readiness is what GET /readiness serves: 200 when Ready, else 503 with the reasons.
type Readiness struct {
	Node    string   `json:"node"`
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons,omitempty"`
}

// Client reads an agent's status over its Unix socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client of the agent listening on socket.
func NewClient(socket string) *Client {
	return &Client{Socket: socket, http: &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}}
}

// Status fetches GET /bgp.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.get(ctx, "/bgp", &st, http.StatusOK); err != nil {
		return nil, fmt.Errorf("tabby-node status: %w", err)
	}
	return &st, nil
}

// Readiness fetches GET /readiness; a 503 is a Readiness with Ready false, not an error.
func (c *Client) Readiness(ctx context.Context) (*Readiness, error) {
	var rr Readiness
	if err := c.get(ctx, "/readiness", &rr, http.StatusOK, http.StatusServiceUnavailable); err != nil {
		return nil, fmt.Errorf("tabby-node readiness: %w", err)
	}
	return &rr, nil
}

// Diags fetches GET /diags: the diagnostics archive (tar.gz) of the agent, and its node.
// The caller closes the body.
func (c *Client) Diags(ctx context.Context) (node string, body io.ReadCloser, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://tabby-node/diags", nil)
	if err != nil {
		return "", nil, err
	}
	// Collecting runs commands and an IPAM check: allow more than a status read.
	hc := *c.http
	hc.Timeout = 2 * time.Minute
	resp, err := hc.Do(req)
	if err != nil {
		return "", nil, fmt.Errorf("tabby-node diags: status socket %s: %w (is the agent running on this host? --socket names another)", c.Socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return "", nil, fmt.Errorf("tabby-node diags: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return resp.Header.Get(NodeHeader), resp.Body, nil
}

func (c *Client) get(ctx context.Context, path string, out any, okCodes ...int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://tabby-node"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("status socket %s: %w (is the agent running on this host? --socket names another)", c.Socket, err)
	}
	defer resp.Body.Close()
	ok := false
	for _, code := range okCodes {
		ok = ok || resp.StatusCode == code
	}
	if !ok {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}
