package api

// SetDefaults fills in the defaults Calico documents for r's kind (stub: owned by the api work).
func SetDefaults(r Resource) {}

// Validate checks one resource on its own and returns nil or a FieldErrors listing every
// problem with its field path (stub: owned by the api work).
func Validate(r Resource) error { return nil }

// ValidateIPPools checks invariants across a set of pools, such as overlapping CIDRs
// (stub: owned by the api work).
func ValidateIPPools(pools []*IPPool) error { return nil }
