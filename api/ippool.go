package api

// IPPool is a range of workload addresses, cut into blocks that nodes claim.
type IPPool struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       IPPoolSpec `json:"spec"`
}

// IPPoolSpec is Calico's IPPool spec.
type IPPoolSpec struct {
	CIDR             string    `json:"cidr"`
	BlockSize        int       `json:"blockSize,omitempty"`
	IPIPMode         EncapMode `json:"ipipMode,omitempty"`
	VXLANMode        EncapMode `json:"vxlanMode,omitempty"`
	NATOutgoing      bool      `json:"natOutgoing,omitempty"`
	Disabled         bool      `json:"disabled,omitempty"`
	DisableBGPExport bool      `json:"disableBGPExport,omitempty"`
	NodeSelector     string    `json:"nodeSelector,omitempty"`
}

// EncapMode says when traffic to a pool's addresses is encapsulated.
type EncapMode string

// Encapsulation modes, as Calico names them.
const (
	EncapNever       EncapMode = "Never"
	EncapAlways      EncapMode = "Always"
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

func init() {
	register(&Kind{
		Name: "IPPool", APIVersion: VersionCalico, Plural: "ippools", Singular: "ippool",
		Aliases: []string{"ipp", "ipps", "pool", "pools"},
		New:     func() Resource { return &IPPool{TypeMeta: TypeMeta{Kind: "IPPool", APIVersion: VersionCalico}} },
	})
}
