package agent

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// TestEffectiveFelixSettings: an explicit flag wins over both FelixConfigurations (and
// says what it overrides), the node's wins over the default's field by field, and a
// field neither sets keeps the flag's default.
func TestEffectiveFelixSettings(t *testing.T) {
	flags := Config{Policy: PolicyConfig{EndpointToHostAction: "ACCEPT", Refresh: 5 * time.Second}}.felixSettings()
	decode := func(manifest string) *api.FelixConfiguration {
		t.Helper()
		rs, err := api.Decode([]byte(manifest), "test.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := api.Validate(rs[0]); err != nil {
			t.Fatal(err)
		}
		return rs[0].(*api.FelixConfiguration)
	}
	def := decode(`apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  logSeverityScreen: Warning
  ipipMTU: 1380
  vxlanMTU: 1400
  defaultEndpointToHostAction: Drop
  iptablesRefreshInterval: 30s
  failsafeInboundHostPorts: [{protocol: TCP, port: 22}]
  chainInsertMode: Append
`)
	node := decode(`apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.n1}
spec:
  logSeverityScreen: Debug
  vxlanMTU: 1300
  failsafeInboundHostPorts: []
  iptablesBackend: Legacy
  wireguardEnabled: true
  routeRefreshInterval: 1m
`)
	tests := []struct {
		name      string
		explicit  []string
		def, node *api.FelixConfiguration
		want      func(s *FelixSettings)
		sources   []string // the settings that are not from "default", as node status prints them
	}{
		{name: "no configuration: the flags' defaults"},
		{name: "default only", def: def,
			want: func(s *FelixSettings) {
				s.LogLevel, s.IPIPMTU, s.VXLANMTU, s.EndpointToHostAction = slog.LevelWarn, 1380, 1400, "DROP"
				s.IptablesRefresh, s.ChainInsertMode = 30*time.Second, "append"
				s.FailsafeInbound = []felix.FailsafePort{{Protocol: "tcp", Port: 22}}
			},
			sources: []string{
				"logSeverityScreen: warn from FelixConfiguration default",
				"ipipMTU: 1380 from FelixConfiguration default",
				"vxlanMTU: 1400 from FelixConfiguration default",
				"failsafeInboundHostPorts: tcp:22 from FelixConfiguration default",
				"defaultEndpointToHostAction: DROP from FelixConfiguration default",
				"iptablesRefreshInterval: 30s from FelixConfiguration default",
				"chainInsertMode: append from FelixConfiguration default",
			}},
		{name: "node wins field by field", def: def, node: node,
			want: func(s *FelixSettings) {
				s.LogLevel, s.IPIPMTU, s.VXLANMTU, s.EndpointToHostAction = slog.LevelDebug, 1380, 1300, "DROP"
				s.IptablesRefresh, s.ChainInsertMode, s.IptablesBackend = 30*time.Second, "append", "legacy"
				s.FailsafeInbound, s.WireGuard, s.RouteRefresh = []felix.FailsafePort{}, true, time.Minute
			},
			sources: []string{
				"logSeverityScreen: debug from FelixConfiguration node.n1",
				"ipipMTU: 1380 from FelixConfiguration default",
				"vxlanMTU: 1300 from FelixConfiguration node.n1",
				"failsafeInboundHostPorts: none from FelixConfiguration node.n1",
				"defaultEndpointToHostAction: DROP from FelixConfiguration default",
				"iptablesBackend: legacy from FelixConfiguration node.n1",
				"routeRefreshInterval: 1m0s from FelixConfiguration node.n1",
				"iptablesRefreshInterval: 30s from FelixConfiguration default",
				"wireguardEnabled: true from FelixConfiguration node.n1",
				"chainInsertMode: append from FelixConfiguration default",
			}},
		{name: "node only", node: node,
			want: func(s *FelixSettings) {
				s.LogLevel, s.VXLANMTU, s.IptablesBackend = slog.LevelDebug, 1300, "legacy"
				s.FailsafeInbound, s.WireGuard, s.RouteRefresh = []felix.FailsafePort{}, true, time.Minute
			},
			sources: []string{
				"logSeverityScreen: debug from FelixConfiguration node.n1",
				"vxlanMTU: 1300 from FelixConfiguration node.n1",
				"failsafeInboundHostPorts: none from FelixConfiguration node.n1",
				"iptablesBackend: legacy from FelixConfiguration node.n1",
				"routeRefreshInterval: 1m0s from FelixConfiguration node.n1",
				"wireguardEnabled: true from FelixConfiguration node.n1",
			}},
		{name: "explicit flags win and say over what", def: def, node: node,
			explicit: []string{"ipip-mtu", "vxlan-mtu", "wireguard", "chain-insert-mode", "dns"},
			want: func(s *FelixSettings) {
				s.LogLevel, s.EndpointToHostAction = slog.LevelDebug, "DROP"
				s.IptablesRefresh, s.IptablesBackend = 30*time.Second, "legacy"
				s.FailsafeInbound, s.RouteRefresh = []felix.FailsafePort{}, time.Minute
			},
			sources: []string{
				"logSeverityScreen: debug from FelixConfiguration node.n1",
				"ipipMTU: auto from flag --ipip-mtu (FelixConfiguration default says 1380)",
				"vxlanMTU: auto from flag --vxlan-mtu (FelixConfiguration node.n1 says 1300)",
				"failsafeInboundHostPorts: none from FelixConfiguration node.n1",
				"defaultEndpointToHostAction: DROP from FelixConfiguration default",
				"iptablesBackend: legacy from FelixConfiguration node.n1",
				"routeRefreshInterval: 1m0s from FelixConfiguration node.n1",
				"iptablesRefreshInterval: 30s from FelixConfiguration default",
				"wireguardEnabled: false from flag --wireguard (FelixConfiguration node.n1 says true)",
				"chainInsertMode: insert from flag --chain-insert-mode (FelixConfiguration default says append)",
			}},
		{name: "an explicit flag no configuration sets", explicit: []string{"log-level"},
			sources: []string{"logSeverityScreen: info from flag --log-level"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			explicit := map[string]bool{}
			for _, f := range tt.explicit {
				explicit[f] = true
			}
			want := flags
			if tt.want != nil {
				tt.want(&want)
			}
			got, sources := EffectiveFelixSettings(flags, explicit, tt.def, tt.node)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("settings\n got %+v\nwant %+v", got, want)
			}
			if len(sources) != len(felixSettings) {
				t.Errorf("%d sources, want one per setting (%d)", len(sources), len(felixSettings))
			}
			var set []string
			for _, s := range sources {
				if s.Source != "default" {
					set = append(set, s.String())
				} else if s.Shadowed != "" {
					t.Errorf("%s: from the default yet shadowing %q", s.Name, s.Shadowed)
				}
			}
			if !reflect.DeepEqual(set, tt.sources) {
				t.Errorf("sources\n got %s\nwant %s", strings.Join(set, "\n     "), strings.Join(tt.sources, "\n     "))
			}
		})
	}
	// The flags' settings are not changed by a merge.
	if base := (Config{Policy: PolicyConfig{EndpointToHostAction: "ACCEPT", Refresh: 5 * time.Second}}.felixSettings()); !reflect.DeepEqual(flags, base) {
		t.Errorf("the flags' settings changed: %+v", flags)
	}
}

// fakeWatches is a snapshot.Source whose watches deliver fixed resources, then Synced,
// then stay open; send delivers more to a kind's watch.
type fakeWatches struct {
	mu    sync.Mutex
	have  map[string][]api.Resource
	chans map[string]chan datastore.Event
}

func (f *fakeWatches) Watch(ctx context.Context, kind *api.Kind, _ string, _ int64) <-chan datastore.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan datastore.Event, 16)
	for _, r := range f.have[kind.Plural] {
		ch <- datastore.Event{Type: datastore.Added, Resource: r}
	}
	ch <- datastore.Event{Type: datastore.Synced}
	f.chans[kind.Plural] = ch
	return ch
}

func (f *fakeWatches) send(kind string, ev datastore.Event) {
	f.mu.Lock()
	ch := f.chans[kind]
	f.mu.Unlock()
	ch <- ev
}

type fakeResync struct{ d atomic.Int64 }

func (f *fakeResync) SetResyncInterval(d time.Duration) { f.d.Store(int64(d)) }

// TestFelixConfigSubsystem: the log level and the route pass period follow the
// FelixConfigurations as they change, and node status gets every setting's source.
func TestFelixConfigSubsystem(t *testing.T) {
	spec := func(name string, s api.FelixConfigurationSpec) *api.FelixConfiguration {
		return &api.FelixConfiguration{TypeMeta: api.TypeMeta{Kind: "FelixConfiguration", APIVersion: api.VersionCalico},
			ObjectMeta: api.ObjectMeta{Name: name}, Spec: s}
	}
	src := &fakeWatches{chans: map[string]chan datastore.Event{}, have: map[string][]api.Resource{"felixconfigurations": {
		spec("default", api.FelixConfigurationSpec{LogSeverityScreen: "Warning", RouteRefreshInterval: &api.Duration{Duration: time.Minute}}),
		spec("node.n1", api.FelixConfigurationSpec{LogSeverityScreen: "Debug"}),
	}}}
	snap := snapshot.New(src, nil, []*api.Kind{kindFelixConfigs}, slog.New(slog.DiscardHandler))
	level := new(slog.LevelVar)
	dp := &fakeResync{}
	cfg := Config{Policy: PolicyConfig{EndpointToHostAction: "ACCEPT"}, LogLevel: level}
	f := &felixConfigSubsystem{cfg: &felixConfig{node: "n1", flags: cfg.felixSettings()}, snap: snap, level: level, dp: dp,
		log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go snap.Run(ctx)
	go f.Run(ctx)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s: level %v, route refresh %v, settings %v", what, level.Level(), time.Duration(dp.d.Load()), f.Settings())
			}
		}
	}
	waitFor("node's level, default's period", func() bool {
		return level.Level() == slog.LevelDebug && dp.d.Load() == int64(time.Minute) && len(f.Settings()) == len(felixSettings)
	})
	if s := f.Settings()[0]; s.String() != "logSeverityScreen: debug from FelixConfiguration node.n1" {
		t.Errorf("logSeverityScreen's source: %s", s)
	}
	src.send("felixconfigurations", datastore.Event{Type: datastore.Deleted, Resource: spec("node.n1", api.FelixConfigurationSpec{})})
	waitFor("the default's level once the node's is deleted", func() bool { return level.Level() == slog.LevelWarn })
	src.send("felixconfigurations", datastore.Event{Type: datastore.Deleted, Resource: spec("default", api.FelixConfigurationSpec{})})
	waitFor("the flags' level and period once both are deleted", func() bool {
		return level.Level() == slog.LevelInfo && dp.d.Load() == int64(felix.DefaultResyncInterval)
	})
}
