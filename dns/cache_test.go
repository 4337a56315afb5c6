package dns

import (
	"fmt"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func query(name string, qtype uint16) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func rr(t testing.TB, s string) mdns.RR {
	t.Helper()
	r, err := mdns.NewRR(s)
	if err != nil {
		t.Fatalf("NewRR(%q): %v", s, err)
	}
	return r
}

func reply(req *mdns.Msg, rcode int, answer, ns []mdns.RR) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	m.Answer = answer
	m.Ns = ns
	return m
}

const soaRR = "example.org. 3600 IN SOA ns.example.org. admin.example.org. 1 7200 3600 1209600 60"

func TestCachePositiveAgesTTLAndKeepsRequestCase(t *testing.T) {
	clk := newFakeClock()
	c := NewCache(CacheConfig{Now: clk.Now})
	req := query("www.example.org.", mdns.TypeA)
	c.Set(req, reply(req, mdns.RcodeSuccess, []mdns.RR{
		rr(t, "www.example.org. 300 IN A 192.0.2.1"),
		rr(t, "www.example.org. 100 IN A 192.0.2.2"),
	}, nil))

	clk.Advance(30*time.Second + 500*time.Millisecond)
	req2 := query("WWW.Example.ORG.", mdns.TypeA)
	req2.Id = 4242
	got := c.Get(req2)
	if got == nil {
		t.Fatal("miss, want hit")
	}
	if got.Id != 4242 || got.Question[0].Name != "WWW.Example.ORG." {
		t.Errorf("id %d question %q, want the request's", got.Id, got.Question[0].Name)
	}
	// The entry's TTL is the smallest (100); records are capped at it, then aged by 30 s.
	for _, a := range got.Answer {
		if a.Header().Ttl != 70 {
			t.Errorf("ttl %d, want 70: %v", a.Header().Ttl, a)
		}
	}
	// The hit is a copy: changing it leaves the entry alone.
	got.Answer[0].Header().Ttl = 9999
	if again := c.Get(req2); again.Answer[0].Header().Ttl != 70 {
		t.Errorf("entry changed through a returned answer: ttl %d", again.Answer[0].Header().Ttl)
	}

	clk.Advance(70 * time.Second)
	if got := c.Get(req2); got != nil {
		t.Errorf("hit after expiry: %v", got)
	}
	if c.Len() != 0 {
		t.Errorf("Len %d after the expired entry was looked up, want 0", c.Len())
	}
}

func TestCacheKey(t *testing.T) {
	c := NewCache(CacheConfig{})
	req := query("a.example.org.", mdns.TypeA)
	c.Set(req, reply(req, mdns.RcodeSuccess, []mdns.RR{rr(t, "a.example.org. 60 IN A 192.0.2.1")}, nil))

	if c.Get(query("a.example.org.", mdns.TypeAAAA)) != nil {
		t.Error("AAAA hit the A entry")
	}
	do := query("a.example.org.", mdns.TypeA)
	do.SetEdns0(1232, true)
	if c.Get(do) != nil {
		t.Error("a DO query hit the non-DO entry")
	}
	noDO := query("a.example.org.", mdns.TypeA)
	noDO.SetEdns0(1232, false)
	if c.Get(noDO) == nil {
		t.Error("an EDNS query without DO missed the entry")
	}
	ch := query("a.example.org.", mdns.TypeA)
	ch.Question[0].Qclass = mdns.ClassCHAOS
	if c.Get(ch) != nil {
		t.Error("class CH hit the IN entry")
	}
}

func TestCacheNegative(t *testing.T) {
	clk := newFakeClock()
	c := NewCache(CacheConfig{Now: clk.Now})
	soa := rr(t, soaRR) // TTL 3600, minimum 60: the negative TTL is 60

	nx := query("nope.example.org.", mdns.TypeA)
	c.Set(nx, reply(nx, mdns.RcodeNameError, nil, []mdns.RR{soa}))
	nodata := query("www.example.org.", mdns.TypeMX)
	c.Set(nodata, reply(nodata, mdns.RcodeSuccess, nil, []mdns.RR{soa}))
	noSOA := query("nosoa.example.org.", mdns.TypeA)
	c.Set(noSOA, reply(noSOA, mdns.RcodeNameError, nil, nil))

	clk.Advance(59 * time.Second)
	got := c.Get(nx)
	if got == nil || got.Rcode != mdns.RcodeNameError || len(got.Ns) != 1 || got.Ns[0].Header().Ttl != 1 {
		t.Errorf("NXDOMAIN entry: %v", got)
	}
	if got := c.Get(nodata); got == nil || got.Rcode != mdns.RcodeSuccess || len(got.Answer) != 0 {
		t.Errorf("NODATA entry: %v", got)
	}
	if got := c.Get(noSOA); got != nil {
		t.Errorf("NXDOMAIN without SOA was cached: %v", got)
	}
	clk.Advance(time.Second)
	if got := c.Get(nx); got != nil {
		t.Errorf("NXDOMAIN kept beyond the SOA minimum: %v", got)
	}
}

func TestCacheTTLCapsAndUncacheable(t *testing.T) {
	clk := newFakeClock()
	c := NewCache(CacheConfig{Now: clk.Now, MaxTTL: 10 * time.Second})
	req := query("long.example.org.", mdns.TypeA)
	c.Set(req, reply(req, mdns.RcodeSuccess, []mdns.RR{rr(t, "long.example.org. 86400 IN A 192.0.2.1")}, nil))
	if got := c.Get(req); got == nil || got.Answer[0].Header().Ttl != 10 {
		t.Fatalf("capped entry: %v", got)
	}
	clk.Advance(10 * time.Second)
	if c.Get(req) != nil {
		t.Error("entry outlived MaxTTL")
	}

	for _, tc := range []struct {
		name string
		resp func(*mdns.Msg) *mdns.Msg
	}{
		{"refused", func(q *mdns.Msg) *mdns.Msg { return reply(q, mdns.RcodeRefused, nil, nil) }},
		{"ttl 0", func(q *mdns.Msg) *mdns.Msg {
			return reply(q, mdns.RcodeSuccess, []mdns.RR{rr(t, "x.example.org. 0 IN A 192.0.2.1")}, nil)
		}},
		{"truncated", func(q *mdns.Msg) *mdns.Msg {
			m := reply(q, mdns.RcodeSuccess, []mdns.RR{rr(t, "x.example.org. 60 IN A 192.0.2.1")}, nil)
			m.Truncated = true
			return m
		}},
	} {
		q := query("x.example.org.", mdns.TypeA)
		c.Set(q, tc.resp(q))
		if got := c.Get(q); got != nil {
			t.Errorf("%s: cached: %v", tc.name, got)
		}
	}
}

func TestCacheServfail(t *testing.T) {
	clk := newFakeClock()
	c := NewCache(CacheConfig{Now: clk.Now, ServfailTTL: time.Hour}) // capped at 5 s
	req := query("broken.example.org.", mdns.TypeA)
	c.Set(req, reply(req, mdns.RcodeServerFailure, nil, nil))
	clk.Advance(4 * time.Second)
	if got := c.Get(req); got == nil || got.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("SERVFAIL entry: %v", got)
	}
	clk.Advance(time.Second)
	if got := c.Get(req); got != nil {
		t.Errorf("SERVFAIL kept beyond 5 s: %v", got)
	}

	never := NewCache(CacheConfig{Now: clk.Now, ServfailTTL: -1})
	never.Set(req, reply(req, mdns.RcodeServerFailure, nil, nil))
	if got := never.Get(req); got != nil {
		t.Errorf("SERVFAIL cached with ServfailTTL < 0: %v", got)
	}
}

func TestCacheEvictsWithinSize(t *testing.T) {
	clk := newFakeClock()
	for _, size := range []int{3, 1000} {
		c := NewCache(CacheConfig{Now: clk.Now, Size: size})
		var hot *mdns.Msg
		for i := range 5 * size {
			req := query(fmt.Sprintf("n%d.example.org.", i), mdns.TypeA)
			c.Set(req, reply(req, mdns.RcodeSuccess, []mdns.RR{rr(t, req.Question[0].Name+" 60 IN A 192.0.2.1")}, nil))
			if i == 0 {
				hot = req
			}
			clk.Advance(time.Millisecond)
			c.Get(hot) // keeps n0 recently used
		}
		if c.Len() > size {
			t.Errorf("size %d: Len %d", size, c.Len())
		}
		if size == 3 && c.Get(hot) == nil {
			t.Errorf("size %d: the recently used entry was evicted", size)
		}
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := NewCache(CacheConfig{Size: 500})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				req := query(fmt.Sprintf("n%d.example.org.", (i*7+g)%800), mdns.TypeA)
				if c.Get(req) == nil {
					c.Set(req, reply(req, mdns.RcodeSuccess, []mdns.RR{rr(t, req.Question[0].Name+" 60 IN A 192.0.2.1")}, nil))
				}
			}
		})
	}
	wg.Wait()
	if c.Len() > 500 {
		t.Errorf("Len %d > 500", c.Len())
	}
}
