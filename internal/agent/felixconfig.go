package agent

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/nodestatus"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// FelixSettings are the agent's settings a FelixConfiguration changes while it runs,
// in the flags' terms.
type FelixSettings struct {
	LogLevel slog.Level
	// IPIPMTU and VXLANMTU are tunl0's and vxlan.tabby's MTUs; 0 is the underlay's MTU
	// less the tunnel header.
	IPIPMTU, VXLANMTU int
	// FailsafeInbound and FailsafeOutbound are the ports host endpoint policy never
	// closes; empty is none.
	FailsafeInbound, FailsafeOutbound []felix.FailsafePort
	// EndpointToHostAction is ACCEPT, DROP or RETURN.
	EndpointToHostAction string
	// IptablesBackend is auto, legacy or nft.
	IptablesBackend string
	// RouteRefresh and IptablesRefresh are the periods of full route and iptables passes.
	RouteRefresh, IptablesRefresh time.Duration
	WireGuard                     bool
	// ChainInsertMode is insert or append.
	ChainInsertMode string
}

// felixSetting is one FelixConfiguration field: the flag that also sets it, how a spec
// that has the field sets it, and how its value is written.
type felixSetting struct {
	name, flag string
	from       func(spec *api.FelixConfigurationSpec, s *FelixSettings) bool
	format     func(s *FelixSettings) string
}

// Fatal has no slog level: it is above Error, so nothing tabby logs is shown.
const levelFatal = slog.LevelError + 4

var logLevels = map[string]slog.Level{
	"Debug": slog.LevelDebug, "Info": slog.LevelInfo, "Warning": slog.LevelWarn, "Error": slog.LevelError, "Fatal": levelFatal,
}

func formatLevel(l slog.Level) string {
	if l >= levelFatal {
		return "fatal"
	}
	return strings.ToLower(l.String())
}

func failsafePorts(ps []api.ProtoPort) []felix.FailsafePort {
	out := make([]felix.FailsafePort, len(ps))
	for i, p := range ps {
		out[i] = felix.FailsafePort{Protocol: strings.ToLower(p.Protocol), Port: p.Port}
	}
	return out
}

func formatMTU(mtu int) string {
	if mtu == 0 {
		return "auto"
	}
	return strconv.Itoa(mtu)
}

// optional makes a felixSetting's from for a pointer field of the spec (get), which
// set copies into the settings when it is there.
func optional[T any](get func(*api.FelixConfigurationSpec) *T, set func(*FelixSettings, T)) func(*api.FelixConfigurationSpec, *FelixSettings) bool {
	return func(c *api.FelixConfigurationSpec, s *FelixSettings) bool {
		v := get(c)
		if v != nil {
			set(s, *v)
		}
		return v != nil
	}
}

// enumeration makes a felixSetting's from for a string field of the spec (get), which
// set copies into the settings in lower case (upper, with upper), when it is not empty.
func enumeration(get func(*api.FelixConfigurationSpec) string, upper bool, set func(*FelixSettings, string)) func(*api.FelixConfigurationSpec, *FelixSettings) bool {
	return func(c *api.FelixConfigurationSpec, s *FelixSettings) bool {
		v := get(c)
		if v == "" {
			return false
		}
		if upper {
			set(s, strings.ToUpper(v))
		} else {
			set(s, strings.ToLower(v))
		}
		return true
	}
}

// felixSettings lists the fields in the order of Calico's documentation of them.
var felixSettings = []felixSetting{
	{"logSeverityScreen", "log-level",
		func(c *api.FelixConfigurationSpec, s *FelixSettings) bool {
			l, ok := logLevels[c.LogSeverityScreen]
			if ok {
				s.LogLevel = l
			}
			return ok
		},
		func(s *FelixSettings) string { return formatLevel(s.LogLevel) }},
	{"ipipMTU", "ipip-mtu",
		optional(func(c *api.FelixConfigurationSpec) *int { return c.IPIPMTU }, func(s *FelixSettings, v int) { s.IPIPMTU = v }),
		func(s *FelixSettings) string { return formatMTU(s.IPIPMTU) }},
	{"vxlanMTU", "vxlan-mtu",
		optional(func(c *api.FelixConfigurationSpec) *int { return c.VXLANMTU }, func(s *FelixSettings, v int) { s.VXLANMTU = v }),
		func(s *FelixSettings) string { return formatMTU(s.VXLANMTU) }},
	{"failsafeInboundHostPorts", "failsafe-inbound-host-ports",
		optional(func(c *api.FelixConfigurationSpec) *[]api.ProtoPort { return c.FailsafeInboundHostPorts },
			func(s *FelixSettings, v []api.ProtoPort) { s.FailsafeInbound = failsafePorts(v) }),
		func(s *FelixSettings) string { return felix.FormatFailsafePorts(s.FailsafeInbound) }},
	{"failsafeOutboundHostPorts", "failsafe-outbound-host-ports",
		optional(func(c *api.FelixConfigurationSpec) *[]api.ProtoPort { return c.FailsafeOutboundHostPorts },
			func(s *FelixSettings, v []api.ProtoPort) { s.FailsafeOutbound = failsafePorts(v) }),
		func(s *FelixSettings) string { return felix.FormatFailsafePorts(s.FailsafeOutbound) }},
	{"defaultEndpointToHostAction", "default-endpoint-to-host-action",
		enumeration(func(c *api.FelixConfigurationSpec) string { return c.DefaultEndpointToHostAction }, true,
			func(s *FelixSettings, v string) { s.EndpointToHostAction = v }),
		func(s *FelixSettings) string { return s.EndpointToHostAction }},
	{"iptablesBackend", "iptables-backend",
		enumeration(func(c *api.FelixConfigurationSpec) string { return c.IptablesBackend }, false,
			func(s *FelixSettings, v string) { s.IptablesBackend = v }),
		func(s *FelixSettings) string { return s.IptablesBackend }},
	{"routeRefreshInterval", "route-refresh-interval",
		optional(func(c *api.FelixConfigurationSpec) *api.Duration { return c.RouteRefreshInterval },
			func(s *FelixSettings, v api.Duration) { s.RouteRefresh = v.Duration }),
		func(s *FelixSettings) string { return s.RouteRefresh.String() }},
	{"iptablesRefreshInterval", "policy-refresh-interval",
		optional(func(c *api.FelixConfigurationSpec) *api.Duration { return c.IptablesRefreshInterval },
			func(s *FelixSettings, v api.Duration) { s.IptablesRefresh = v.Duration }),
		func(s *FelixSettings) string { return s.IptablesRefresh.String() }},
	{"wireguardEnabled", "wireguard",
		optional(func(c *api.FelixConfigurationSpec) *bool { return c.WireguardEnabled }, func(s *FelixSettings, v bool) { s.WireGuard = v }),
		func(s *FelixSettings) string { return strconv.FormatBool(s.WireGuard) }},
	{"chainInsertMode", "chain-insert-mode",
		enumeration(func(c *api.FelixConfigurationSpec) string { return c.ChainInsertMode }, false,
			func(s *FelixSettings, v string) { s.ChainInsertMode = v }),
		func(s *FelixSettings) string { return s.ChainInsertMode }},
}

// EffectiveFelixSettings merges, setting by setting, the agent's flags (flags, of which
// those in explicit were given on the command line or in the environment), the cluster's
// FelixConfiguration def and this node's node (either may be nil): an explicit flag wins,
// then node, then def, then the flag's default. It returns the settings and, for each,
// where its value came from and what a FelixConfiguration an explicit flag overrides says.
func EffectiveFelixSettings(flags FelixSettings, explicit map[string]bool, def, node *api.FelixConfiguration) (FelixSettings, []nodestatus.Setting) {
	out := flags
	sources := make([]nodestatus.Setting, 0, len(felixSettings))
	for _, fs := range felixSettings {
		st := nodestatus.Setting{Name: fs.name, Source: "default"}
		// The configuration that would decide without the flag.
		var decides *api.FelixConfiguration
		var value FelixSettings
		for _, c := range []*api.FelixConfiguration{node, def} {
			if c != nil && fs.from(&c.Spec, &value) {
				decides = c
				break
			}
		}
		switch {
		case explicit[fs.flag]:
			st.Source = "flag --" + fs.flag
			if decides != nil {
				st.Shadowed = fmt.Sprintf("FelixConfiguration %s says %s", decides.Name, fs.format(&value))
			}
		case decides != nil:
			fs.from(&decides.Spec, &out)
			st.Source = "FelixConfiguration " + decides.Name
		}
		st.Value = fs.format(&out)
		sources = append(sources, st)
	}
	return out, sources
}

// felixConfig computes this node's effective settings from a view.
type felixConfig struct {
	node     string
	flags    FelixSettings
	explicit map[string]bool
}

func (f *felixConfig) effective(v *snapshot.View) (FelixSettings, []nodestatus.Setting) {
	def, _ := snapshot.Get[*api.FelixConfiguration](v, "", api.DefaultFelixConfigurationName)
	node, _ := snapshot.Get[*api.FelixConfiguration](v, "", api.NodeFelixConfigurationPrefix+f.node)
	return EffectiveFelixSettings(f.flags, f.explicit, def, node)
}

// felixConfigSubsystem follows the FelixConfigurations: it sets the log level and the
// route pass period, logs each change of the settings, and keeps their sources for node
// status. The policy and encapsulation subsystems read the settings they own themselves,
// from the same views.
type felixConfigSubsystem struct {
	cfg   *felixConfig
	snap  *snapshot.Snapshot
	level *slog.LevelVar // nil: the log level is not the agent's to set
	dp    interface{ SetResyncInterval(time.Duration) }
	log   *slog.Logger

	mu      sync.Mutex
	sources []nodestatus.Setting
}

func (f *felixConfigSubsystem) Name() string { return "felix-configuration" }

func (f *felixConfigSubsystem) Run(ctx context.Context) error {
	sub := f.snap.Subscribe()
	var prev *snapshot.View
	var last []nodestatus.Setting
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub:
		}
		v := f.snap.View()
		if !v.Synced || !v.Differs(prev, false, kindFelixConfigs) {
			continue
		}
		prev = v
		s, sources := f.cfg.effective(v)
		// Logged at the level before the change, so that raising it still shows why; at
		// start, only the settings that are not the flags' defaults.
		for i, st := range sources {
			if last == nil && st.Source != "default" || last != nil && !reflect.DeepEqual(last[i], st) {
				f.log.Info("felix setting", "setting", st.Name, "value", st.Value, "source", st.Source, "shadowed", st.Shadowed)
			}
		}
		last = sources
		if f.level != nil {
			f.level.Set(s.LogLevel)
		}
		if f.dp != nil {
			f.dp.SetResyncInterval(s.RouteRefresh)
		}
		f.mu.Lock()
		f.sources = sources
		f.mu.Unlock()
	}
}

// Settings returns the effective settings' sources as last computed (nil before the
// first synced view).
func (f *felixConfigSubsystem) Settings() []nodestatus.Setting {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sources
}
