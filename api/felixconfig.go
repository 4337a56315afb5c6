package api

import (
	"slices"
	"strings"
	"time"
)

// FelixConfiguration holds the node agent's dataplane settings: the cluster's, in the
// object named "default", or one node's, in an object named "node.<node name>", whose
// fields win over the default's one by one. A field left out of both keeps the agent's
// own setting (its flag's value).
type FelixConfiguration struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       FelixConfigurationSpec `json:"spec"`
}

// FelixConfigurationSpec is the part of Calico's FelixConfiguration spec that tabby
// implements: the settings operators change. Every other field of Calico's is refused
// when decoded (felixNotImplemented), never silently ignored.
type FelixConfigurationSpec struct {
	// LogSeverityScreen is the agent's log level: Debug, Info, Warning, Error or Fatal.
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
	// IPIPMTU and VXLANMTU are the MTUs of tunl0 and vxlan.tabby; workloads get the
	// smallest MTU of the tunnels their node uses. 0 is automatic (the underlay's MTU less
	// the tunnel's header).
	IPIPMTU  *int `json:"ipipMTU,omitempty"`
	VXLANMTU *int `json:"vxlanMTU,omitempty"`
	// FailsafeInboundHostPorts and FailsafeOutboundHostPorts are the ports host endpoint
	// policy never closes; an empty list is none.
	FailsafeInboundHostPorts  *[]ProtoPort `json:"failsafeInboundHostPorts,omitempty"`
	FailsafeOutboundHostPorts *[]ProtoPort `json:"failsafeOutboundHostPorts,omitempty"`
	// DefaultEndpointToHostAction is what happens to traffic from a workload to its own
	// host once its egress policy allowed it: Drop, Accept or Return (on to the host's
	// INPUT rules).
	DefaultEndpointToHostAction string `json:"defaultEndpointToHostAction,omitempty"`
	// IptablesBackend is the iptables flavour the agent writes: Auto (detected), Legacy
	// or NFT.
	IptablesBackend string `json:"iptablesBackend,omitempty"`
	// RouteRefreshInterval and IptablesRefreshInterval are the periods of full route and
	// iptables passes, which repair what was changed from outside.
	RouteRefreshInterval    *Duration `json:"routeRefreshInterval,omitempty"`
	IptablesRefreshInterval *Duration `json:"iptablesRefreshInterval,omitempty"`
	// WireguardEnabled turns WireGuard encryption between nodes on or off.
	WireguardEnabled *bool `json:"wireguardEnabled,omitempty"`
	// ChainInsertMode says where the hooks into the kernel's chains (FORWARD, INPUT,
	// OUTPUT) stand: Insert (at the top) or Append (at the bottom, after other programs'
	// rules).
	ChainInsertMode string `json:"chainInsertMode,omitempty"`
}

// ProtoPort is one failsafe port.
type ProtoPort struct {
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port"`
	// Net limits the port to peers in a CIDR; tabby does not implement it (refused).
	Net string `json:"net,omitempty"`
}

// FelixConfiguration names and values, as Calico spells them.
const (
	DefaultFelixConfigurationName = "default"
	NodeFelixConfigurationPrefix  = "node."

	EndpointToHostDrop   = "Drop"
	EndpointToHostAccept = "Accept"
	EndpointToHostReturn = "Return"

	IptablesBackendAuto   = "Auto"
	IptablesBackendLegacy = "Legacy"
	IptablesBackendNFT    = "NFT"

	ChainInsertModeInsert = "Insert"
	ChainInsertModeAppend = "Append"

	// MinRefreshInterval is the shortest refresh period accepted: a full pass reads the
	// kernel's whole table.
	MinRefreshInterval = time.Second
)

// LogSeverities are the log levels Calico's logSeverityScreen takes, lowest first.
var LogSeverities = []string{"Debug", "Info", "Warning", "Error", "Fatal"}

var (
	endpointToHostActions = []string{EndpointToHostDrop, EndpointToHostAccept, EndpointToHostReturn}
	iptablesBackends      = []string{IptablesBackendAuto, IptablesBackendLegacy, IptablesBackendNFT}
	chainInsertModes      = []string{ChainInsertModeInsert, ChainInsertModeAppend}
)

func init() {
	register(&Kind{
		Name: "FelixConfiguration", APIVersion: VersionCalico, Plural: "felixconfigurations", Singular: "felixconfiguration",
		Aliases: []string{"felixconfig", "felixconfigs"},
		New: func() Resource {
			return &FelixConfiguration{TypeMeta: TypeMeta{Kind: "FelixConfiguration", APIVersion: VersionCalico}}
		},
	})
}

// IsDefault says whether this is the cluster-wide configuration.
func (c *FelixConfiguration) IsDefault() bool { return c.Name == DefaultFelixConfigurationName }

// NodeName returns the node a "node.<name>" configuration applies to, or "".
func (c *FelixConfiguration) NodeName() string { return overrideNode(c.Name) }

// setDefaults spells the enumerations as Calico does, whatever their case in the
// manifest (Calico matches them case-insensitively: "DROP" and "insert" are common).
// Nothing else is defaulted: a field left out keeps the agent's own setting.
func (c *FelixConfiguration) setDefaults() {
	s := &c.Spec
	s.LogSeverityScreen = canonical(s.LogSeverityScreen, LogSeverities)
	s.DefaultEndpointToHostAction = canonical(s.DefaultEndpointToHostAction, endpointToHostActions)
	s.IptablesBackend = canonical(s.IptablesBackend, iptablesBackends)
	s.ChainInsertMode = canonical(s.ChainInsertMode, chainInsertModes)
	for _, ports := range []*[]ProtoPort{s.FailsafeInboundHostPorts, s.FailsafeOutboundHostPorts} {
		if ports == nil {
			continue
		}
		for i := range *ports {
			(*ports)[i].Protocol = strings.ToUpper((*ports)[i].Protocol)
		}
	}
}

// canonical returns the value of allowed that equals v but for case; v if none does.
func canonical(v string, allowed []string) string {
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	return v
}

func (c *FelixConfiguration) validate(errs *FieldErrors) {
	s := &c.Spec
	if !c.IsDefault() && c.NodeName() == "" {
		errs.add("metadata.name", c.Name, "%q is not a FelixConfiguration name tabby uses: %q for the cluster, %q for one node",
			c.Name, DefaultFelixConfigurationName, NodeFelixConfigurationPrefix+"<node name>")
	}
	checkEnum(errs, "spec.logSeverityScreen", s.LogSeverityScreen, LogSeverities...)
	checkMTU(errs, "spec.ipipMTU", s.IPIPMTU)
	checkMTU(errs, "spec.vxlanMTU", s.VXLANMTU)
	checkProtoPorts(errs, "spec.failsafeInboundHostPorts", s.FailsafeInboundHostPorts)
	checkProtoPorts(errs, "spec.failsafeOutboundHostPorts", s.FailsafeOutboundHostPorts)
	checkEnum(errs, "spec.defaultEndpointToHostAction", s.DefaultEndpointToHostAction, endpointToHostActions...)
	checkEnum(errs, "spec.iptablesBackend", s.IptablesBackend, iptablesBackends...)
	checkRefresh(errs, "spec.routeRefreshInterval", s.RouteRefreshInterval)
	checkRefresh(errs, "spec.iptablesRefreshInterval", s.IptablesRefreshInterval)
	checkEnum(errs, "spec.chainInsertMode", s.ChainInsertMode, chainInsertModes...)
}

// MinMTU and MaxMTU bound a tunnel MTU: IPv4's minimum and the largest a device takes.
const (
	MinMTU = 68
	MaxMTU = 65535
)

func checkMTU(errs *FieldErrors, field string, mtu *int) {
	if mtu != nil && *mtu != 0 && (*mtu < MinMTU || *mtu > MaxMTU) {
		errs.add(field, *mtu, "MTU %d is out of range %d-%d (0 is automatic: the underlay's MTU less the tunnel header)", *mtu, MinMTU, MaxMTU)
	}
}

func checkProtoPorts(errs *FieldErrors, field string, ports *[]ProtoPort) {
	if ports == nil {
		return
	}
	for i, p := range *ports {
		f := index(field, i)
		if p.Protocol != "TCP" && p.Protocol != "UDP" {
			errs.add(f+".protocol", p.Protocol, "%q is not TCP or UDP", p.Protocol)
		}
		if p.Port == 0 {
			errs.add(f+".port", p.Port, "required: a port 1-65535")
		}
		if p.Net != "" {
			errs.add(f+".net", p.Net, "%q: not implemented: tabby's failsafe ports are open to every peer", p.Net)
		}
	}
}

func checkRefresh(errs *FieldErrors, field string, d *Duration) {
	if d != nil && d.Duration < MinRefreshInterval {
		errs.add(field, d.Duration.String(), "%s is shorter than %s (0, Calico's \"never refresh\", is not implemented: tabby always repairs drift)",
			d.Duration, MinRefreshInterval)
	}
}

// felixNotImplemented are the fields of Calico's FelixConfigurationSpec that tabby does
// not implement: decoding one is an error that says so, instead of "unknown field".
var felixNotImplemented = []string{
	"allowIPIPPacketsFromWorkloads", "allowVXLANPacketsFromWorkloads", "awsSrcDstCheck",
	"bpfAttachType", "bpfCTLBLogFilter", "bpfConnectTimeLoadBalancing", "bpfConnectTimeLoadBalancingEnabled",
	"bpfConntrackCleanupMode", "bpfConntrackLogLevel", "bpfConntrackTimeouts", "bpfDSROptoutCIDRs",
	"bpfDataIfacePattern", "bpfDisableGROForIfaces", "bpfDisableUnprivileged", "bpfEnabled", "bpfEnforceRPF",
	"bpfExcludeCIDRsFromNAT", "bpfExportBufferSizeMB", "bpfExtToServiceConnmark", "bpfExternalServiceMode",
	"bpfForceTrackPacketsFromIfaces", "bpfHostConntrackBypass", "bpfHostNetworkedNATWithoutCTLB",
	"bpfKubeProxyEndpointSlicesEnabled", "bpfKubeProxyIptablesCleanupEnabled", "bpfKubeProxyMinSyncPeriod",
	"bpfL3IfacePattern", "bpfLogFilters", "bpfLogLevel", "bpfMapSizeConntrack", "bpfMapSizeConntrackCleanupQueue",
	"bpfMapSizeIPSets", "bpfMapSizeIfState", "bpfMapSizeNATAffinity", "bpfMapSizeNATBackend", "bpfMapSizeNATFrontend",
	"bpfMapSizePerCpuConntrack", "bpfMapSizeRoute", "bpfPSNATPorts", "bpfPolicyDebugEnabled", "bpfProfiling",
	"bpfRedirectToPeer", "cgroupV2Path", "dataplaneDriver", "dataplaneWatchdogTimeout", "debugDisableLogDropping",
	"debugHost", "debugMemoryProfilePath", "debugPort", "debugSimulateCalcGraphHangAfter",
	"debugSimulateDataplaneApplyDelay", "debugSimulateDataplaneHangAfter", "deviceRouteProtocol",
	"deviceRouteSourceAddress", "deviceRouteSourceAddressIPv6", "disableConntrackInvalidCheck",
	"endpointReportingDelay", "endpointReportingEnabled", "endpointStatusPathPrefix", "externalNodesList",
	"featureDetectOverride", "featureGates", "floatingIPs", "flowLogsCollectorDebugTrace", "flowLogsFlushInterval",
	"flowLogsGoldmaneServer", "flowLogsLocalReporter", "flowLogsPolicyEvaluationMode", "genericXDPEnabled",
	"goGCThreshold", "goMaxProcs", "goMemoryLimitMB", "healthEnabled", "healthHost", "healthPort",
	"healthTimeoutOverrides", "interfaceExclude", "interfacePrefix", "interfaceRefreshInterval", "ipForwarding",
	"ipipEnabled", "ipsetsRefreshInterval", "iptablesFilterAllowAction", "iptablesFilterDenyAction",
	"iptablesLockFilePath", "iptablesLockProbeInterval", "iptablesLockTimeout", "iptablesMangleAllowAction",
	"iptablesMarkMask", "iptablesNATOutgoingInterfaceFilter", "iptablesPostWriteCheckInterval", "ipv6Support",
	"kubeNodePortRanges", "logDebugFilenameRegex", "logFilePath", "logPrefix", "logSeverityFile", "logSeveritySys",
	"maxIpsetSize", "metadataAddr", "metadataPort", "mtuIfacePattern", "natOutgoingAddress",
	"natOutgoingExclusions", "natPortRange", "netlinkTimeout", "nftablesFilterAllowAction",
	"nftablesFilterDenyAction", "nftablesMangleAllowAction", "nftablesMarkMask", "nftablesMode",
	"nftablesRefreshInterval", "openstackRegion", "policySyncPathPrefix", "programClusterRoutes",
	"prometheusGoMetricsEnabled", "prometheusMetricsEnabled", "prometheusMetricsHost", "prometheusMetricsPort",
	"prometheusProcessMetricsEnabled", "prometheusWireGuardMetricsEnabled", "removeExternalRoutes",
	"reportingInterval", "reportingTTL", "requireMTUFile", "routeSource", "routeSyncDisabled", "routeTableRange",
	"routeTableRanges", "serviceLoopPrevention", "sidecarAccelerationEnabled", "usageReportingEnabled",
	"usageReportingInitialDelay", "usageReportingInterval", "useInternalDataplaneDriver", "vxlanEnabled",
	"vxlanMTUV6", "vxlanPort", "vxlanVNI", "wireguardEnabledV6", "wireguardHostEncryptionEnabled",
	"wireguardInterfaceName", "wireguardInterfaceNameV6", "wireguardKeepAlive", "wireguardListeningPort",
	"wireguardListeningPortV6", "wireguardMTU", "wireguardMTUV6", "wireguardRoutingRulePriority",
	"wireguardThreadingEnabled", "windowsManageFirewallRules", "xdpEnabled", "xdpRefreshInterval",
}

// notImplemented says whether name is a field of Calico's spec that tabby does not
// implement (strict decoding's hook, notImplementer).
func (FelixConfigurationSpec) notImplemented(name string) bool {
	return slices.Contains(felixNotImplemented, name)
}
