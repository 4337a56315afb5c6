package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	gobgpapi "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/tabby-net/tabby/internal/routekey"
)

// Options configure a Speaker.
type Options struct {
	Self       Self
	ListenPort uint16
	// GRPCAddress, when set, serves GoBGP's gRPC API there (for the gobgp CLI).
	GRPCAddress string
	// PasswordDir holds TCP MD5 keys: BGPPeer password secretKeyRef {name, key} is read
	// from <PasswordDir>/<name>/<key>, trailing newline trimmed.
	PasswordDir string
	// Timers of every session; zero values mean BGP's usual 90 s hold, 30 s keepalive and
	// 120 s connect retry.
	HoldTime, KeepaliveTime, ConnectRetry time.Duration
	// NoGracefulRestart turns graceful restart off for every session.
	NoGracefulRestart bool
	// SyncTimeout bounds how long Synced waits for End-of-RIB from a peer without graceful
	// restart (default 30 s); a graceful-restart peer is waited for as long as its restart
	// time if that is longer. It is also GoBGP's selection deferral time: how long a
	// restarted speaker holds back its updates while waiting for its peers' End-of-RIB.
	SyncTimeout time.Duration
	Log         *slog.Logger
}

// LearnedRoute is a best path this node learned from a peer.
type LearnedRoute struct {
	Dst     netip.Prefix
	NextHop netip.Addr
	Peer    netip.Addr
}

// PeerStatus is one row of node status.
type PeerStatus struct {
	Address    string    `json:"address"`
	Port       uint16    `json:"port,omitempty"`
	ASN        uint32    `json:"asn"`
	Type       PeerType  `json:"type"`
	Source     string    `json:"source"`
	State      string    `json:"state"`
	Since      time.Time `json:"since,omitzero"`
	Info       string    `json:"info,omitempty"`
	Received   uint64    `json:"received"`
	Advertised uint64    `json:"advertised"`
}

// Speaker is tabby's BGP speaker: an embedded GoBGP server whose peers and originated
// prefixes follow SetPeers and SetAdvertisements, and whose best paths learned from peers
// are reported on Changed. GoBGP never touches the kernel: the caller installs routes.
type Speaker struct {
	opts   Options
	srv    *server.BgpServer
	log    *slog.Logger
	glog   *slogLogger
	start  time.Time
	cancel context.CancelFunc

	mu      sync.Mutex
	peers   map[netip.Addr]Peer      // applied
	since   map[netip.Addr]time.Time // last state change
	adverts map[netip.Prefix]advert  // originated prefixes
	sets    [2][]string              // applied neighbor sets: ibgp, keep-next-hop
	// learned are the learned best paths by destination, dirty the destinations whose
	// learned route changed since the last Changes: pointer-free keys, as a full table is
	// 100k entries and more.
	learned map[routekey.Prefix]learnedPath
	dirty   map[routekey.Prefix]struct{}
	eor     map[netip.Addr]bool // End-of-RIB received since the session came up
	up      map[netip.Addr]bool // established
	synced  bool
	changed chan struct{}
	// filters are the BGPFilter rules applied (SetFilters), as GoBGP policies of
	// generation filterGen.
	filters        map[netip.Addr]PeerFilters
	filterGen      int
	filterPolicies []*filterPolicy
}

// learnedPath is a LearnedRoute without its destination, the key it is kept under.
type learnedPath struct {
	nextHop, peer routekey.Addr
}

func (p learnedPath) route(dst routekey.Prefix) LearnedRoute {
	return LearnedRoute{Dst: dst.Prefix(), NextHop: p.nextHop.Addr(), Peer: p.peer.Addr()}
}

// advert is one originated path as applied.
type advert struct {
	uuid        []byte // GoBGP's path UUID
	communities Communities
}

var (
	familyV4 = &gobgpapi.Family{Afi: gobgpapi.Family_AFI_IP, Safi: gobgpapi.Family_SAFI_UNICAST}
	familyV6 = &gobgpapi.Family{Afi: gobgpapi.Family_AFI_IP6, Safi: gobgpapi.Family_SAFI_UNICAST}
)

// familyOf is the unicast family of a: each family has sessions of its own, as Calico's.
func familyOf(a netip.Addr) *gobgpapi.Family {
	if a.Is4() {
		return familyV4
	}
	return familyV6
}

// Start starts a speaker with no peers and nothing to advertise.
func Start(ctx context.Context, o Options) (*Speaker, error) {
	if !o.Self.RouterID.IsValid() {
		o.Self.RouterID = o.Self.Addr
	}
	if !o.Self.RouterID.Is4() {
		return nil, fmt.Errorf("BGP router ID %v: want an IPv4 address", o.Self.RouterID)
	}
	if o.SyncTimeout <= 0 {
		o.SyncTimeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Speaker{
		opts: o, log: o.Log, glog: newSlogLogger(o.Log.With("component", "gobgp")), start: time.Now(),
		peers: map[netip.Addr]Peer{}, since: map[netip.Addr]time.Time{}, adverts: map[netip.Prefix]advert{},
		learned: map[routekey.Prefix]learnedPath{}, dirty: map[routekey.Prefix]struct{}{}, eor: map[netip.Addr]bool{}, up: map[netip.Addr]bool{},
		changed: make(chan struct{}, 1),
	}
	sopts := []server.ServerOption{server.LoggerOption(s.glog)}
	if o.GRPCAddress != "" {
		sopts = append(sopts, server.GrpcListenAddress(o.GRPCAddress))
	}
	s.srv = server.NewBgpServer(sopts...)
	go s.srv.Serve()
	port := int32(o.ListenPort)
	if port == 0 {
		port = 179
	}
	listen := []string{"0.0.0.0"}
	if o.Self.Addr6.IsValid() {
		listen = append(listen, "::") // GoBGP listens with tcp6: IPv6 only
	}
	err := s.srv.StartBgp(ctx, &gobgpapi.StartBgpRequest{Global: &gobgpapi.Global{
		Asn:             o.Self.ASN,
		RouterId:        o.Self.RouterID.String(),
		ListenPort:      port,
		ListenAddresses: listen,
	}})
	if err != nil {
		s.srv.Stop()
		return nil, fmt.Errorf("start BGP (AS %d, router ID %s, port %d): %w", o.Self.ASN, o.Self.RouterID, port, err)
	}
	if err := s.setupPolicy(ctx); err != nil {
		s.srv.Stop()
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	err = s.srv.WatchEvent(wctx, &gobgpapi.WatchEventRequest{
		Peer: &gobgpapi.WatchEventRequest_Peer{},
		Table: &gobgpapi.WatchEventRequest_Table{Filters: []*gobgpapi.WatchEventRequest_Table_Filter{
			{Type: gobgpapi.WatchEventRequest_Table_Filter_BEST, Init: true},
			{Type: gobgpapi.WatchEventRequest_Table_Filter_EOR, Init: true},
		}},
	}, s.onEvent)
	if err != nil {
		cancel()
		s.srv.Stop()
		return nil, fmt.Errorf("watch BGP events: %w", err)
	}
	go s.syncTimer(wctx)
	return s, nil
}

// Stop ends every session with a CEASE and stops the server: peers withdraw this node's
// routes at once. Use it when the node leaves for good; Close when it restarts.
func (s *Speaker) Stop(ctx context.Context) {
	s.cancel()
	if err := s.srv.StopBgp(ctx, &gobgpapi.StopBgpRequest{}); err != nil {
		s.log.Warn("stop BGP", "err", err)
	}
	s.srv.Stop()
}

// Close stops the speaker without telling peers: no CEASE is sent, the TCP sessions just
// close with the process, so peers with graceful restart keep this node's routes for its
// restart time. (GoBGP's StopBgp would send CEASE to every peer, ending graceful restart.)
func (s *Speaker) Close() {
	s.cancel()
}

// SetLogSeverity sets the level of GoBGP's messages written, from BGPConfiguration
// logSeverityScreen (Debug, Info, Warning, Error, Fatal; "" is Info), at once. It is
// GoBGP's level alone, independent of the slog handler's (the agent's --log-level).
func (s *Speaker) SetLogSeverity(severity string) error { return s.glog.setScreen(severity) }

// Changed is poked after every change of the learned routes or of Synced.
func (s *Speaker) Changed() <-chan struct{} { return s.changed }

// Learned returns the learned best paths, sorted by destination, and whether the speaker
// has synced: every configured peer is established and sent End-of-RIB, or was given up
// on at its deadline (peerSynced).
func (s *Speaker) Learned() ([]LearnedRoute, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]LearnedRoute, 0, len(s.learned))
	for dst, p := range s.learned {
		out = append(out, p.route(dst))
	}
	slices.SortFunc(out, func(a, b LearnedRoute) int { return comparePrefix(a.Dst, b.Dst) })
	return out, s.synced
}

// Changes returns, for every destination whose learned route changed since the last call,
// its route now, in no particular order: a route without a NextHop is a withdrawal. A
// destination that changed several times is reported once, as it is now; one that
// changed and changed back may be reported unchanged. Between calls the changes cost a set
// of destinations, however large the table: the caller keeps the routes (felix does).
func (s *Speaker) Changes() []LearnedRoute {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.dirty) == 0 {
		return nil
	}
	out := make([]LearnedRoute, 0, len(s.dirty))
	for dst := range s.dirty {
		r := LearnedRoute{Dst: dst.Prefix()}
		if p, ok := s.learned[dst]; ok {
			r = p.route(dst)
		}
		out = append(out, r)
	}
	// A new map rather than clear: clear keeps a full table's buckets for good.
	s.dirty = map[routekey.Prefix]struct{}{}
	return out
}

// Synced reports whether the speaker has synced (see Learned).
func (s *Speaker) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// LearnedCount is how many destinations have a learned route.
func (s *Speaker) LearnedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.learned)
}

func (s *Speaker) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *Speaker) syncTimer(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		was := s.synced
		s.checkSyncedLocked()
		done := s.synced
		s.mu.Unlock()
		if done && !was {
			s.poke()
		}
		if done {
			return
		}
	}
}

// How long after a session comes up the speaker waits for its End-of-RIB: a peer with
// graceful restart sends one (BIRD, FRR, GoBGP), so this only bounds a peer that
// negotiated it but does not; without graceful restart GoBGP sends none.
const (
	noEORGrace   = 10 * time.Second
	noGREORGrace = 1 * time.Second
)

// peerSync is what the speaker knows of one configured peer's sync.
type peerSync struct {
	up      bool      // established
	upSince time.Time // when it came up
	eor     bool      // End-of-RIB received since it came up
	// restartTime is the peer's graceful restart time; 0 without graceful restart.
	restartTime time.Duration
}

// peerSynced says whether the speaker has heard all it is going to hear from one peer at
// now: the peer sent End-of-RIB; or it has been up for the grace of a peer that sends
// none; or its deadline passed since start: SyncTimeout, or for a graceful-restart peer
// its restart time if that is longer. Until then the previous run's routes stay in the
// kernel: the peer keeps this node's routes for as long while it is away (graceful
// restart), so this node keeps the peer's routes while the peer (or only the session) is
// still coming back, rather than cutting them at a fixed timeout.
func peerSynced(p peerSync, now, start time.Time, timeout time.Duration) bool {
	if p.up && p.eor {
		return true
	}
	grace, deadline := noGREORGrace, timeout
	if p.restartTime > 0 {
		grace, deadline = noEORGrace, max(timeout, p.restartTime)
	}
	if p.up && now.Sub(p.upSince) >= grace {
		return true
	}
	return now.Sub(start) >= deadline
}

// checkSyncedLocked sets synced once the speaker has heard all it is going to hear from
// every configured peer (peerSynced).
func (s *Speaker) checkSyncedLocked() {
	if s.synced {
		return
	}
	now := time.Now()
	if len(s.peers) == 0 {
		// Wait a moment for the first SetPeers: an agent feeds peers right after start.
		if now.Sub(s.start) > 2*time.Second {
			s.synced = true
		}
		return
	}
	var late []string // peers given up on: no End-of-RIB by their deadline
	for a, p := range s.peers {
		ps := peerSync{up: s.up[a], upSince: s.since[a], eor: s.eor[a]}
		if !s.opts.NoGracefulRestart {
			ps.restartTime = p.RestartTime
		}
		if !peerSynced(ps, now, s.start, s.opts.SyncTimeout) {
			return
		}
		if !ps.up {
			late = append(late, a.String())
		}
	}
	s.synced = true
	if len(late) > 0 {
		slices.Sort(late)
		s.log.Info("BGP synced without these peers: not established by their deadline (--bgp-sync-timeout, or the restart time)", "peers", late)
		return
	}
	s.log.Info("BGP synced: End-of-RIB from every peer", "peers", len(s.peers))
}

func (s *Speaker) onEvent(r *gobgpapi.WatchEventResponse) {
	switch ev := r.Event.(type) {
	case *gobgpapi.WatchEventResponse_Peer:
		st := ev.Peer.GetPeer().GetState()
		addr, err := netip.ParseAddr(st.GetNeighborAddress())
		if err != nil {
			return
		}
		up := st.GetSessionState() == gobgpapi.PeerState_ESTABLISHED
		s.mu.Lock()
		if s.up[addr] != up {
			s.since[addr] = time.Now()
			if up {
				s.glog.forget(addr.String())
			}
		}
		s.up[addr] = up
		if !up {
			s.eor[addr] = false
		}
		s.mu.Unlock()
		s.log.Info("BGP session", "peer", addr, "state", sessionState(st.GetSessionState()))
	case *gobgpapi.WatchEventResponse_Table:
		changed := false
		s.mu.Lock()
		for _, p := range ev.Table.GetPaths() {
			if p.GetNlri() == nil { // End-of-RIB
				if a, err := netip.ParseAddr(p.GetNeighborIp()); err == nil {
					s.eor[a] = true
				}
				wasSynced := s.synced
				s.checkSyncedLocked()
				changed = changed || s.synced != wasSynced
				continue
			}
			changed = s.notePathLocked(p) || changed
		}
		s.mu.Unlock()
		if changed {
			s.poke()
		}
	}
}

// notePathLocked records a best-path change; it reports whether learned changed.
func (s *Speaker) notePathLocked(p *gobgpapi.Path) bool {
	dst, err := pathDst(p)
	if err != nil {
		return false
	}
	peer, err := netip.ParseAddr(p.GetNeighborIp())
	if p.GetIsWithdraw() || err != nil || !peer.IsValid() || peer.IsUnspecified() {
		// Withdrawn, or the best path is now this node's own: nothing learned.
		return s.forgetLocked(dst)
	}
	nh := pathNextHop(p)
	if !nh.IsValid() || nh.IsUnspecified() || nh == s.opts.Self.Addr || nh == s.opts.Self.Addr6 {
		return s.forgetLocked(dst)
	}
	k, lp := routekey.PrefixOf(dst), learnedPath{nextHop: routekey.AddrOf(nh), peer: routekey.AddrOf(peer)}
	if old, ok := s.learned[k]; ok && old == lp {
		return false
	}
	s.learned[k] = lp
	s.dirty[k] = struct{}{}
	return true
}

// forgetLocked removes dst's learned route; it reports whether there was one.
func (s *Speaker) forgetLocked(dst netip.Prefix) bool {
	k := routekey.PrefixOf(dst)
	if _, had := s.learned[k]; !had {
		return false
	}
	delete(s.learned, k)
	if len(s.learned) == 0 {
		s.learned = map[routekey.Prefix]learnedPath{} // a map keeps a full table's buckets for good
	}
	s.dirty[k] = struct{}{}
	return true
}

// SetPeers makes the speaker's peers equal to peers, adding, replacing and removing only
// those that differ: a session whose Peer is unchanged is never touched. Errors for single
// peers are joined; the others are applied regardless.
func (s *Speaker) SetPeers(ctx context.Context, peers []Peer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[netip.Addr]Peer{}
	for _, p := range peers {
		want[p.Addr] = p
	}
	var errs []error
	ibgp, keep := neighborSets(peers, s.opts.Self.ASN)
	// Sets first, so a new peer's first UPDATE already follows the policy.
	if err := s.updateSet(ctx, 0, ibgpSetName, ibgp); err != nil {
		errs = append(errs, err)
	}
	if err := s.updateSet(ctx, 1, keepNextHopSet, keep); err != nil {
		errs = append(errs, err)
	}
	for a, old := range s.peers {
		if p, ok := want[a]; ok && p == old {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &gobgpapi.DeletePeerRequest{Address: a.String()}); err != nil {
			errs = append(errs, fmt.Errorf("delete BGP peer %s: %w", a, err))
			continue
		}
		delete(s.peers, a)
		delete(s.up, a)
		delete(s.eor, a)
		s.glog.forget(a.String())
		s.log.Info("BGP peer removed", "peer", a, "type", old.Type, "source", old.Source)
	}
	for _, p := range peers {
		if _, ok := s.peers[p.Addr]; ok {
			continue
		}
		ap, err := s.apiPeer(p)
		if err == nil {
			err = s.srv.AddPeer(ctx, &gobgpapi.AddPeerRequest{Peer: ap})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("add BGP peer %s (%s): %w", p.Addr, p.Source, err))
			continue
		}
		s.peers[p.Addr] = p
		s.since[p.Addr] = time.Now()
		s.log.Info("BGP peer added", "peer", p.Addr, "asn", p.ASN, "type", p.Type, "source", p.Source, "rr-client", p.RRClient)
	}
	return errors.Join(errs...)
}

func (s *Speaker) updateSet(ctx context.Context, i int, name string, members []string) error {
	old := s.sets[i]
	if slices.Equal(old, members) {
		return nil
	}
	var add, del []string
	for _, m := range members {
		if !slices.Contains(old, m) {
			add = append(add, m)
		}
	}
	for _, m := range old {
		if !slices.Contains(members, m) {
			del = append(del, m)
		}
	}
	if len(add) > 0 {
		if err := s.srv.AddDefinedSet(ctx, &gobgpapi.AddDefinedSetRequest{DefinedSet: &gobgpapi.DefinedSet{
			DefinedType: gobgpapi.DefinedType_NEIGHBOR, Name: name, List: add}}); err != nil {
			return fmt.Errorf("neighbor set %s: add %v: %w", name, add, err)
		}
	}
	if len(del) > 0 {
		if err := s.srv.DeleteDefinedSet(ctx, &gobgpapi.DeleteDefinedSetRequest{DefinedSet: &gobgpapi.DefinedSet{
			DefinedType: gobgpapi.DefinedType_NEIGHBOR, Name: name, List: del}}); err != nil {
			return fmt.Errorf("neighbor set %s: delete %v: %w", name, del, err)
		}
	}
	s.sets[i] = members
	return nil
}

func (s *Speaker) setupPolicy(ctx context.Context) error {
	for i, name := range []string{ibgpSetName, keepNextHopSet} {
		if err := s.srv.AddDefinedSet(ctx, &gobgpapi.AddDefinedSetRequest{DefinedSet: &gobgpapi.DefinedSet{
			DefinedType: gobgpapi.DefinedType_NEIGHBOR, Name: name, List: []string{placeholder}}}); err != nil {
			return fmt.Errorf("BGP neighbor set %s: %w", name, err)
		}
		s.sets[i] = []string{placeholder}
	}
	if err := s.srv.AddPolicy(ctx, &gobgpapi.AddPolicyRequest{Policy: exportPolicy(), ReferExistingStatements: false}); err != nil {
		return fmt.Errorf("BGP export policy: %w", err)
	}
	err := s.srv.AddPolicyAssignment(ctx, &gobgpapi.AddPolicyAssignmentRequest{Assignment: &gobgpapi.PolicyAssignment{
		Name: "global", Direction: gobgpapi.PolicyDirection_EXPORT,
		Policies:      []*gobgpapi.Policy{{Name: exportPolicyName}},
		DefaultAction: gobgpapi.RouteAction_REJECT,
	}})
	if err != nil {
		return fmt.Errorf("BGP export policy assignment: %w", err)
	}
	return nil
}

// password reads a peer's TCP MD5 key from the password directory.
func (s *Speaker) password(ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	if s.opts.PasswordDir == "" {
		return "", fmt.Errorf("password %s: no --bgp-password-dir to read it from", ref)
	}
	name, key, _ := strings.Cut(ref, "/")
	if name == "" || key == "" || strings.Contains(key, "/") || name == ".." || key == ".." {
		return "", fmt.Errorf("password %q: want <secret name>/<key>", ref)
	}
	b, err := os.ReadFile(filepath.Join(s.opts.PasswordDir, name, key))
	if err != nil {
		return "", fmt.Errorf("password %s: %w", ref, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func seconds(d, def time.Duration) uint64 {
	if d <= 0 {
		d = def
	}
	return uint64(max(d.Round(time.Second)/time.Second, 1))
}

// apiPeer converts a Peer to GoBGP's configuration.
func (s *Speaker) apiPeer(p Peer) (*gobgpapi.Peer, error) {
	pw, err := s.password(p.Password)
	if err != nil {
		return nil, err
	}
	gr := !s.opts.NoGracefulRestart && p.RestartTime > 0
	restartTime := uint32(seconds(p.RestartTime, time.Second))
	port := uint32(p.Port)
	if port == 0 {
		port = 179
	}
	ap := &gobgpapi.Peer{
		Conf: &gobgpapi.PeerConf{
			NeighborAddress: p.Addr.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    pw,
			Description:     string(p.Type) + ": " + p.Source,
		},
		Transport: &gobgpapi.Transport{RemotePort: port, PassiveMode: p.Passive},
		Timers: &gobgpapi.Timers{Config: &gobgpapi.TimersConfig{
			HoldTime:          seconds(s.opts.HoldTime, 90*time.Second),
			KeepaliveInterval: seconds(s.opts.KeepaliveTime, 30*time.Second),
			ConnectRetry:      seconds(s.opts.ConnectRetry, 120*time.Second),
		}},
		AfiSafis: []*gobgpapi.AfiSafi{{
			Config:            &gobgpapi.AfiSafiConfig{Family: familyOf(p.Addr), Enabled: true},
			MpGracefulRestart: &gobgpapi.MpGracefulRestart{Config: &gobgpapi.MpGracefulRestartConfig{Enabled: gr}},
		}},
	}
	if p.LocalAddr.IsValid() {
		ap.Transport.LocalAddress = p.LocalAddr.String()
	}
	if gr {
		// LocalRestarting: a peer configured before the speaker first synced is taken as
		// one this node had before a restart (every start may be one; Calico starts BIRD
		// with -R for the same reason). The OPEN then carries the Restart State bit and
		// the Forwarding State bit (felix kept the routes), so a helper keeps this node's
		// routes rather than flushing them when the session comes back (BIRD and FRR
		// flush them at once on a new session without the F bit), and GoBGP defers this
		// node's updates until the peers' End-of-RIB (or DeferralTime), so that it never
		// sends a table without the routes it is still to learn.
		ap.GracefulRestart = &gobgpapi.GracefulRestart{Enabled: true, RestartTime: restartTime,
			LocalRestarting: !s.synced, DeferralTime: uint32(seconds(s.opts.SyncTimeout, time.Second)),
			LonglivedEnabled: p.LongLived}
		if p.LongLived {
			ap.AfiSafis[0].LongLivedGracefulRestart = &gobgpapi.LongLivedGracefulRestart{
				Config: &gobgpapi.LongLivedGracefulRestartConfig{Enabled: true, RestartTime: restartTime}}
		}
	}
	if p.RRClient {
		ap.RouteReflector = &gobgpapi.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: s.opts.Self.ClusterID.String()}
	}
	return ap, nil
}

// SetAdvertisements makes the paths this node originates equal to adverts: it adds new
// prefixes, withdraws those no longer wanted, and re-advertises a prefix whose
// communities changed (the new path replaces the old one at the peers, with no
// withdrawal between).
func (s *Speaker) SetAdvertisements(ctx context.Context, adverts []Advertisement) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[netip.Prefix]bool{}
	var errs []error
	for _, a := range adverts {
		p := a.Prefix
		nh := s.opts.Self.addrFor(p.Addr())
		if !nh.IsValid() {
			continue // no session of the prefix's family to carry it
		}
		want[p] = true
		if old, ok := s.adverts[p]; ok && old.communities.Equal(a.Communities) {
			continue
		}
		attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
		var nlri bgp.AddrPrefixInterface
		if p.Addr().Is4() {
			nlri = bgp.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String())
			attrs = append(attrs, bgp.NewPathAttributeNextHop(nh.String()))
		} else {
			nlri = bgp.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String())
			attrs = append(attrs, bgp.NewPathAttributeMpReachNLRI(nh.String(), []bgp.AddrPrefixInterface{nlri}))
		}
		if c := a.Communities.Standard; len(c) > 0 {
			attrs = append(attrs, bgp.NewPathAttributeCommunities(c))
		}
		if c := a.Communities.Large; len(c) > 0 {
			large := make([]*bgp.LargeCommunity, 0, len(c))
			for _, l := range c {
				large = append(large, bgp.NewLargeCommunity(l.ASN, l.Local1, l.Local2))
			}
			attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(large))
		}
		path, err := apiutil.NewPath(nlri, false, attrs, time.Now())
		if err == nil {
			// GoBGP keys local paths by prefix: adding one again replaces the old path.
			var resp *gobgpapi.AddPathResponse
			if resp, err = s.srv.AddPath(ctx, &gobgpapi.AddPathRequest{TableType: gobgpapi.TableType_GLOBAL, Path: path}); err == nil {
				s.adverts[p] = advert{uuid: resp.Uuid, communities: a.Communities}
				if a.Communities.IsZero() {
					s.log.Info("BGP advertising", "prefix", p)
				} else {
					s.log.Info("BGP advertising", "prefix", p, "communities", a.Communities.String())
				}
				continue
			}
		}
		errs = append(errs, fmt.Errorf("advertise %s: %w", p, err))
	}
	for p, a := range s.adverts {
		if want[p] {
			continue
		}
		if err := s.srv.DeletePath(ctx, &gobgpapi.DeletePathRequest{TableType: gobgpapi.TableType_GLOBAL, Family: familyOf(p.Addr()), Uuid: a.uuid}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(s.adverts, p)
		s.log.Info("BGP withdrew", "prefix", p)
	}
	return errors.Join(errs...)
}

// Advertised returns the prefixes this node originates, sorted.
func (s *Speaker) Advertised() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Prefix, 0, len(s.adverts))
	for p := range s.adverts {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

func sessionState(st gobgpapi.PeerState_SessionState) string {
	switch st {
	case gobgpapi.PeerState_IDLE:
		return "Idle"
	case gobgpapi.PeerState_CONNECT:
		return "Connect"
	case gobgpapi.PeerState_ACTIVE:
		return "Active"
	case gobgpapi.PeerState_OPENSENT:
		return "OpenSent"
	case gobgpapi.PeerState_OPENCONFIRM:
		return "OpenConfirm"
	case gobgpapi.PeerState_ESTABLISHED:
		return "Established"
	}
	return "Unknown"
}

// Status returns the peer table, sorted by address.
func (s *Speaker) Status(ctx context.Context) ([]PeerStatus, error) {
	states := map[string]*gobgpapi.Peer{}
	err := s.srv.ListPeer(ctx, &gobgpapi.ListPeerRequest{EnableAdvertised: true}, func(p *gobgpapi.Peer) {
		states[p.GetConf().GetNeighborAddress()] = p
	})
	if err != nil {
		return nil, fmt.Errorf("list BGP peers: %w", err)
	}
	s.mu.Lock()
	peers, since := maps.Clone(s.peers), maps.Clone(s.since)
	s.mu.Unlock()
	out := make([]PeerStatus, 0, len(peers))
	for a, p := range peers {
		ps := PeerStatus{Address: a.String(), Port: p.Port, ASN: p.ASN, Type: p.Type, Source: p.Source, State: "Unknown", Since: since[a]}
		if gp := states[a.String()]; gp != nil {
			ps.State = sessionState(gp.GetState().GetSessionState())
			if t := gp.GetTimers().GetState(); t != nil {
				if ps.State == "Established" && t.GetUptime() != nil {
					ps.Since = t.GetUptime().AsTime()
				}
			}
			for _, af := range gp.GetAfiSafis() {
				if st := af.GetState(); st != nil {
					ps.Received += st.GetAccepted()
				}
			}
			if ps.State == "Established" {
				ps.Advertised = s.countAdjOut(ctx, a)
			}
		}
		if ps.State != "Established" {
			ps.Info = s.glog.lastProblem(a.String())
			if ps.Info == "" {
				ps.Info = "no session yet"
				if p.Passive {
					ps.Info = "waiting for the peer to connect (between nodes the lower address dials)"
				}
			}
			if p.Password != "" && !strings.Contains(ps.Info, "notification") {
				// A TCP MD5 mismatch is silent: each side's kernel drops the other's segments.
				ps.Info += " (TCP MD5 password set: a password that differs from the peer's looks like this)"
			}
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int {
		return netip.MustParseAddr(a.Address).Compare(netip.MustParseAddr(b.Address))
	})
	return out, nil
}

// countAdjOut counts the prefixes sent to a peer after the export policy.
func (s *Speaker) countAdjOut(ctx context.Context, peer netip.Addr) uint64 {
	var n uint64
	_ = s.srv.ListPath(ctx, &gobgpapi.ListPathRequest{TableType: gobgpapi.TableType_ADJ_OUT, Name: peer.String(), Family: familyOf(peer)},
		func(d *gobgpapi.Destination) {
			for _, p := range d.GetPaths() {
				if !p.GetIsWithdraw() {
					n++
					break
				}
			}
		})
	return n
}
