// Package teststats owns the small statistics tests and benchmarks share: quantiles of
// measured durations and the chi-square statistic of a spread.
package teststats

import (
	"slices"
	"time"
)

// Quantile is the q-quantile of ds by nearest rank (q 0.5: the median, 1: the largest);
// 0 for none.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ChiSquare is Pearson's statistic of counts (of n draws) against an even spread over
// keys. With 3 keys (2 degrees of freedom), above 13.8 means p < 0.001.
func ChiSquare(counts map[string]int, keys []string, n int) float64 {
	want := float64(n) / float64(len(keys))
	var x float64
	for _, k := range keys {
		d := float64(counts[k]) - want
		x += d * d / want
	}
	return x
}
