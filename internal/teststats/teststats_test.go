package teststats

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 3}, {0.99, 5}, {1, 5}, {0, 1}, {0.2, 1}, {0.21, 2}} {
		if got := Quantile(ds, c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if Quantile(nil, 0.5) != 0 {
		t.Error("Quantile of nothing is not 0")
	}
}

func TestChiSquare(t *testing.T) {
	keys := []string{"a", "b", "c"}
	if x := ChiSquare(map[string]int{"a": 100, "b": 100, "c": 100}, keys, 300); x != 0 {
		t.Errorf("an even spread: %v", x)
	}
	if x := ChiSquare(map[string]int{"a": 300}, keys, 300); x != 600 {
		t.Errorf("everything on one key: %v, want 600", x)
	}
}
