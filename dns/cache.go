package dns

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// CacheConfig configures a Cache. The zero value is usable: every field has a default.
type CacheConfig struct {
	// Size bounds the number of entries (default 10000). When full, an insert evicts the
	// less recently used of two entries picked at random (cheap, close to LRU).
	Size int
	// MaxTTL caps how long any answer, positive or negative, is kept (default 1h).
	MaxTTL time.Duration
	// ServfailTTL is how long an upstream SERVFAIL is kept (default 2s, at most 5s);
	// negative: SERVFAIL is never cached.
	ServfailTTL time.Duration
	// Now is the clock (default time.Now); tests set a fake one.
	Now func() time.Time
}

const (
	defaultCacheSize   = 10000
	defaultCacheMaxTTL = time.Hour
	defaultServfailTTL = 2 * time.Second
	maxServfailTTL     = 5 * time.Second
	cacheShards        = 32
)

// Cache keeps answers (positive, negative per RFC 2308, and briefly SERVFAIL) keyed by
// the lower-cased query name, type, class and the DO bit. It is safe for concurrent use.
// Entries never change once stored: a hit returns a copy with TTLs decreased by the
// entry's age and the request's ID and question.
type Cache struct {
	now         func() time.Time
	maxTTL      time.Duration
	servfailTTL time.Duration
	perShard    int
	shards      []cacheShard
}

type cacheKey struct {
	name          string
	qtype, qclass uint16
	do            bool
}

type cacheEntry struct {
	msg      *mdns.Msg // without OPT; TTLs capped at the entry's TTL
	stored   time.Time
	expires  time.Time
	lastUsed atomic.Int64 // unix nanoseconds of the last hit (or the insert)
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[cacheKey]*cacheEntry
}

// NewCache returns an empty cache.
func NewCache(cfg CacheConfig) *Cache {
	if cfg.Size <= 0 {
		cfg.Size = defaultCacheSize
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = defaultCacheMaxTTL
	}
	switch {
	case cfg.ServfailTTL == 0:
		cfg.ServfailTTL = defaultServfailTTL
	case cfg.ServfailTTL > maxServfailTTL:
		cfg.ServfailTTL = maxServfailTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// Small caches get one shard so that Size stays an exact bound.
	n := cacheShards
	if cfg.Size < 8*cacheShards {
		n = 1
	}
	c := &Cache{
		now:         cfg.Now,
		maxTTL:      cfg.MaxTTL,
		servfailTTL: cfg.ServfailTTL,
		perShard:    cfg.Size / n,
		shards:      make([]cacheShard, n),
	}
	for i := range c.shards {
		c.shards[i].m = make(map[cacheKey]*cacheEntry)
	}
	return c
}

// keyOf returns the cache key of req and whether req can be cached at all (one question).
func keyOf(req *mdns.Msg) (cacheKey, bool) {
	if len(req.Question) != 1 {
		return cacheKey{}, false
	}
	q := req.Question[0]
	k := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass}
	if opt := req.IsEdns0(); opt != nil {
		k.do = opt.Do()
	}
	return k, true
}

func (c *Cache) shard(k cacheKey) *cacheShard {
	if len(c.shards) == 1 {
		return &c.shards[0]
	}
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(k.name); i++ {
		h ^= uint32(k.name[i])
		h *= 16777619
	}
	h ^= uint32(k.qtype)
	h *= 16777619
	return &c.shards[h%uint32(len(c.shards))]
}

// Get returns a cached answer to req, or nil. The answer is the caller's to change.
func (c *Cache) Get(req *mdns.Msg) *mdns.Msg {
	resp, _ := c.get(req)
	return resp
}

// get is Get, with the moment that answer changes: its TTLs drop by a second with each
// whole second of the entry's age, and it goes when the entry expires.
func (c *Cache) get(req *mdns.Msg) (*mdns.Msg, time.Time) {
	k, ok := keyOf(req)
	if !ok {
		return nil, time.Time{}
	}
	sh := c.shard(k)
	sh.mu.RLock()
	e := sh.m[k]
	sh.mu.RUnlock()
	if e == nil {
		return nil, time.Time{}
	}
	now := c.now()
	if !now.Before(e.expires) {
		sh.mu.Lock()
		if sh.m[k] == e {
			delete(sh.m, k)
		}
		sh.mu.Unlock()
		return nil, time.Time{}
	}
	e.lastUsed.Store(now.UnixNano())
	age := uint32(now.Sub(e.stored) / time.Second)

	resp := new(mdns.Msg)
	resp.MsgHdr = e.msg.MsgHdr
	resp.Id = req.Id
	resp.RecursionDesired = req.RecursionDesired
	resp.CheckingDisabled = req.CheckingDisabled
	resp.Question = req.Question
	resp.Answer = aged(e.msg.Answer, age)
	resp.Ns = aged(e.msg.Ns, age)
	resp.Extra = aged(e.msg.Extra, age)
	changes := e.stored.Add(time.Duration(age+1) * time.Second)
	if e.expires.Before(changes) {
		changes = e.expires
	}
	return resp, changes
}

// aged copies rrs with their TTLs decreased by age seconds.
func aged(rrs []mdns.RR, age uint32) []mdns.RR {
	if len(rrs) == 0 {
		return nil
	}
	out := make([]mdns.RR, len(rrs))
	for i, rr := range rrs {
		cp := mdns.Copy(rr)
		h := cp.Header()
		if h.Ttl > age {
			h.Ttl -= age
		} else {
			h.Ttl = 0
		}
		out[i] = cp
	}
	return out
}

// Set stores resp as the answer to req if it is cacheable: NOERROR with answers
// (TTL: the smallest TTL of its records), NXDOMAIN or NODATA with an SOA in the
// authority section (TTL: the SOA's, at most its minimum field, RFC 2308) and SERVFAIL
// (ServfailTTL). Every TTL is capped by MaxTTL. Truncated answers are never stored.
func (c *Cache) Set(req, resp *mdns.Msg) {
	k, ok := keyOf(req)
	if !ok || resp == nil || resp.Truncated || len(resp.Question) != 1 {
		return
	}
	ttl, ok := c.ttlOf(resp)
	if !ok || ttl <= 0 {
		return
	}
	secs := uint32(ttl / time.Second)
	m := new(mdns.Msg)
	m.MsgHdr = resp.MsgHdr
	m.Question = resp.Question
	m.Answer = capped(resp.Answer, secs)
	m.Ns = capped(resp.Ns, secs)
	m.Extra = capped(resp.Extra, secs)

	now := c.now()
	e := &cacheEntry{msg: m, stored: now, expires: now.Add(ttl)}
	e.lastUsed.Store(now.UnixNano())

	sh := c.shard(k)
	sh.mu.Lock()
	if _, exists := sh.m[k]; !exists && len(sh.m) >= c.perShard {
		sh.evict(now)
	}
	sh.m[k] = e
	sh.mu.Unlock()
}

// evict removes one entry: the first expired one of two picked at random (map order is
// random), else the less recently used of the two. The shard's lock is held.
func (sh *cacheShard) evict(now time.Time) {
	var victim cacheKey
	var victimUsed int64
	n := 0
	for k, e := range sh.m {
		if !now.Before(e.expires) {
			victim = k
			break
		}
		used := e.lastUsed.Load()
		if n == 0 || used < victimUsed {
			victim, victimUsed = k, used
		}
		n++
		if n == 2 {
			break
		}
	}
	delete(sh.m, victim)
}

// capped copies rrs without OPT, with TTLs at most secs.
func capped(rrs []mdns.RR, secs uint32) []mdns.RR {
	var out []mdns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype == mdns.TypeOPT {
			continue
		}
		cp := mdns.Copy(rr)
		if cp.Header().Ttl > secs {
			cp.Header().Ttl = secs
		}
		out = append(out, cp)
	}
	return out
}

// ttlOf returns how long resp may be cached, and false if it may not be.
func (c *Cache) ttlOf(resp *mdns.Msg) (time.Duration, bool) {
	switch resp.Rcode {
	case mdns.RcodeServerFailure:
		if c.servfailTTL < 0 {
			return 0, false
		}
		return c.servfailTTL, true
	case mdns.RcodeNameError:
		return c.negativeTTL(resp)
	case mdns.RcodeSuccess:
		if len(resp.Answer) == 0 {
			return c.negativeTTL(resp)
		}
	default:
		return 0, false
	}
	minTTL := ^uint32(0)
	for _, sec := range [][]mdns.RR{resp.Answer, resp.Ns, resp.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Rrtype != mdns.TypeOPT && h.Ttl < minTTL {
				minTTL = h.Ttl
			}
		}
	}
	return c.cap(minTTL), true
}

// negativeTTL is RFC 2308's: the SOA record's TTL, at most its minimum field. Without
// an SOA the answer is not cached.
func (c *Cache) negativeTTL(resp *mdns.Msg) (time.Duration, bool) {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*mdns.SOA); ok {
			return c.cap(min(soa.Hdr.Ttl, soa.Minttl)), true
		}
	}
	return 0, false
}

func (c *Cache) cap(secs uint32) time.Duration {
	return min(time.Duration(secs)*time.Second, c.maxTTL)
}

// Len returns the number of entries, expired ones not yet evicted included.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}
