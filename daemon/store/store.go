// Package store persists the daemon's address allocations and cooldowns in a
// bbolt file so that they survive crashes and restarts. Every mutation is one
// bbolt transaction, fsynced before the call returns; the store itself refuses
// to give one IP to two keys, so the "never one IP to two live pods" invariant
// holds even if a caller misbehaves.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the on-disk layout this code writes and understands.
const SchemaVersion = 1

// DefaultLockTimeout is how long Open waits for another process's lock.
const DefaultLockTimeout = 2 * time.Second

var (
	// ErrIPInUse: the address is assigned to a different key.
	ErrIPInUse = errors.New("address already assigned to another container")
	// ErrKeyInUse: the key already holds a different address.
	ErrKeyInUse = errors.New("container already holds another address")
	// ErrLocked: another process (a second daemon) has the file open.
	ErrLocked = errors.New("store file is locked by another process")
	// ErrNewerSchema: the file was written by a newer daemon.
	ErrNewerSchema = errors.New("store has a newer schema version")
	// ErrInvalid: malformed key or allocation.
	ErrInvalid = errors.New("invalid store argument")
	// ErrNotFound: the key holds no allocation.
	ErrNotFound = errors.New("no allocation for the key")
)

var (
	bucketMeta    = []byte("meta")
	bucketAllocs  = []byte("allocations") // key bytes -> record JSON
	bucketIPs     = []byte("ips")         // IP text -> key bytes (uniqueness index)
	bucketCooling = []byte("cooling")     // IP text -> released time (RFC 3339)
	// What EC2 accepted to take back (address, prefix or ENI ID text) ->
	// when: a describe that still shows it lags and must not bring it back.
	// Made by the first RecordReleased (the layout an older daemon wrote is
	// unchanged until then).
	bucketReleased = []byte("released")
	metaSchema     = []byte("schema")
)

// Key identifies an allocation: the CNI spec's (network name, container ID,
// interface name) triple.
type Key struct {
	Network     string
	ContainerID string
	IfName      string
}

func (k Key) String() string { return k.Network + "/" + k.ContainerID + "/" + k.IfName }

func (k Key) validate() error {
	for _, f := range []struct{ name, v string }{{"network", k.Network}, {"container ID", k.ContainerID}, {"ifname", k.IfName}} {
		if f.v == "" || strings.ContainsRune(f.v, 0) {
			return fmt.Errorf("%w: key %q: %s must be non-empty and contain no NUL", ErrInvalid, k.String(), f.name)
		}
	}
	return nil
}

// bytes: NUL cannot appear in any part, so the encoding is unambiguous.
func (k Key) bytes() []byte { return []byte(k.Network + "\x00" + k.ContainerID + "\x00" + k.IfName) }

func keyFromBytes(b []byte) Key {
	p := strings.SplitN(string(b), "\x00", 3)
	for len(p) < 3 {
		p = append(p, "")
	}
	return Key{Network: p[0], ContainerID: p[1], IfName: p[2]}
}

// Allocation is what a key holds.
type Allocation struct {
	IP           netip.Addr `json:"ip"`
	ENIID        string     `json:"eniID"`
	PodNamespace string     `json:"podNamespace,omitempty"`
	PodName      string     `json:"podName,omitempty"`
	// Netns is the sandbox's network namespace path at ADD: once it is gone
	// the pod is gone, whatever DEL did.
	Netns      string    `json:"netns,omitempty"`
	AssignedAt time.Time `json:"assignedAt"`
}

// Record is one stored allocation with its key.
type Record struct {
	Key
	Allocation
}

type record struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	Allocation
}

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for another process's file lock;
	// 0 means DefaultLockTimeout.
	LockTimeout time.Duration
}

// Store is an open allocation store. Its methods are safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens or creates the store at path with default options.
func Open(path string) (*Store, error) { return OpenWithOptions(path, Options{}) }

// OpenWithOptions opens or creates the store at path: parent directory 0700,
// file 0600, exclusive lock (a second daemon gets ErrLocked). The parent is
// the daemon's state directory, its own (it also holds the root-only
// socket by default), so an existing one is tightened to 0700 too: a
// DaemonSet's hostPath volume creates it 0755.
func OpenWithOptions(path string, o Options) (*Store, error) {
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store %s: create directory: %w", path, err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	} else if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store %s: chmod 0700 %s: %w", path, dir, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %s; is another daemon running?)", ErrLocked, path, o.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: open: %w", path, err)
	}
	// bbolt applies the mode only on create; tighten a pre-existing file.
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			db.Close()
			return nil, fmt.Errorf("store %s: chmod 0600: %w", path, err)
		}
	}
	s := &Store{db: db, path: path}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// init checks the schema before writing anything, then creates the buckets.
func (s *Store) init() error {
	var version int
	err := s.db.View(func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			if v := m.Get(metaSchema); v != nil {
				n, err := strconv.Atoi(string(v))
				if err != nil {
					return fmt.Errorf("store %s: unreadable schema version %q", s.path, v)
				}
				version = n
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if version > SchemaVersion {
		return fmt.Errorf("%w: %s has schema version %d, this daemon understands up to %d; refusing to open it (was the daemon downgraded?)",
			ErrNewerSchema, s.path, version, SchemaVersion)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketAllocs, bucketIPs, bucketCooling} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("store %s: create bucket %s: %w", s.path, b, err)
			}
		}
		if version == 0 {
			return tx.Bucket(bucketMeta).Put(metaSchema, []byte(strconv.Itoa(SchemaVersion)))
		}
		return nil
	})
}

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close releases the file and its lock.
func (s *Store) Close() error { return s.db.Close() }

func ipKey(ip netip.Addr) []byte { return []byte(ip.Unmap().String()) }

func decode(v []byte) (Record, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return Record{}, fmt.Errorf("store: corrupt allocation record: %w", err)
	}
	return Record{Key: Key{Network: r.Network, ContainerID: r.ContainerID, IfName: r.IfName}, Allocation: r.Allocation}, nil
}

// Assign records that key holds a.IP. It is durable when it returns. It fails
// with ErrIPInUse if the address belongs to another key and with ErrKeyInUse
// if the key holds another address; the same key and IP again is a no-op
// (idempotent ADD). Any cooldown record of the address is cleared.
func (s *Store) Assign(k Key, a Allocation) error {
	if err := k.validate(); err != nil {
		return err
	}
	if !a.IP.IsValid() {
		return fmt.Errorf("%w: allocation for %s has no IP", ErrInvalid, k)
	}
	a.IP = a.IP.Unmap()
	kb, ib := k.bytes(), ipKey(a.IP)
	return s.db.Update(func(tx *bolt.Tx) error {
		allocs, ips := tx.Bucket(bucketAllocs), tx.Bucket(bucketIPs)
		if owner := ips.Get(ib); owner != nil {
			if bytes.Equal(owner, kb) {
				return nil
			}
			return fmt.Errorf("%w: %s is held by %s, refused for %s", ErrIPInUse, a.IP, keyFromBytes(owner), k)
		}
		if cur := allocs.Get(kb); cur != nil {
			r, err := decode(cur)
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: %s already holds %s, refused %s", ErrKeyInUse, k, r.IP, a.IP)
		}
		v, err := json.Marshal(record{Network: k.Network, ContainerID: k.ContainerID, IfName: k.IfName, Allocation: a})
		if err != nil {
			return err
		}
		if err := allocs.Put(kb, v); err != nil {
			return err
		}
		if err := ips.Put(ib, kb); err != nil {
			return err
		}
		return tx.Bucket(bucketCooling).Delete(ib)
	})
}

// remove deletes k's allocation, putting its IP in cooldown when at is set.
func (s *Store) remove(k Key, at *time.Time) (Allocation, bool, error) {
	if err := k.validate(); err != nil {
		return Allocation{}, false, err
	}
	var out Allocation
	var found bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		allocs := tx.Bucket(bucketAllocs)
		v := allocs.Get(k.bytes())
		if v == nil {
			return nil
		}
		r, err := decode(v)
		if err != nil {
			return err
		}
		out, found = r.Allocation, true
		ib := ipKey(r.IP)
		if err := allocs.Delete(k.bytes()); err != nil {
			return err
		}
		if err := tx.Bucket(bucketIPs).Delete(ib); err != nil {
			return err
		}
		if at == nil {
			return nil
		}
		t, err := at.UTC().MarshalText()
		if err != nil {
			return err
		}
		return tx.Bucket(bucketCooling).Put(ib, t)
	})
	if err != nil {
		return Allocation{}, false, err
	}
	return out, found, nil
}

// Release removes k's allocation and records its IP as cooling since at.
// found is false (and nothing changes) when k holds nothing, so DEL is
// idempotent.
func (s *Store) Release(k Key, at time.Time) (a Allocation, found bool, err error) {
	return s.remove(k, &at)
}

// Drop removes k's allocation without a cooldown, e.g. when EC2 took the
// address away and it can never be reused from this node.
func (s *Store) Drop(k Key) (a Allocation, found bool, err error) {
	return s.remove(k, nil)
}

// Get returns k's allocation.
func (s *Store) Get(k Key) (a Allocation, found bool, err error) {
	if err := k.validate(); err != nil {
		return Allocation{}, false, err
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAllocs).Get(k.bytes())
		if v == nil {
			return nil
		}
		r, err := decode(v)
		a, found = r.Allocation, err == nil
		return err
	})
	return a, found, err
}

// Owner returns the key that holds ip.
func (s *Store) Owner(ip netip.Addr) (k Key, found bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketIPs).Get(ipKey(ip)); v != nil {
			k, found = keyFromBytes(v), true
		}
		return nil
	})
	return k, found, err
}

// List returns every allocation, ordered by key.
func (s *Store) List() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAllocs).ForEach(func(_, v []byte) error {
			r, err := decode(v)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// Cooling returns every address in cooldown with the time it was released.
// The store keeps records until ForgetCooling; the caller decides when the
// cooldown period has passed.
func (s *Store) Cooling() (map[netip.Addr]time.Time, error) {
	out := map[netip.Addr]time.Time{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCooling).ForEach(func(k, v []byte) error {
			ip, err := netip.ParseAddr(string(k))
			if err != nil {
				return fmt.Errorf("store: corrupt cooling key %q: %w", k, err)
			}
			var t time.Time
			if err := t.UnmarshalText(v); err != nil {
				return fmt.Errorf("store: corrupt cooling time for %s: %w", ip, err)
			}
			out[ip] = t
			return nil
		})
	})
	return out, err
}

// ForgetCooling drops the addresses' cooldown records (cooldown over, or
// the addresses were given back to EC2) in one transaction. Forgetting an
// unknown address is not an error.
func (s *Store) ForgetCooling(ips ...netip.Addr) error {
	if len(ips) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCooling)
		for _, ip := range ips {
			if err := b.Delete(ipKey(ip)); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetENI corrects the ENI recorded for k's address (the address is on
// another ENI than recorded, as EC2 says). A missing key is ErrNotFound.
func (s *Store) SetENI(k Key, eniID string) error {
	if err := k.validate(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		allocs := tx.Bucket(bucketAllocs)
		v := allocs.Get(k.bytes())
		if v == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, k)
		}
		r, err := decode(v)
		if err != nil {
			return err
		}
		r.ENIID = eniID
		nv, err := json.Marshal(record{Network: k.Network, ContainerID: k.ContainerID, IfName: k.IfName, Allocation: r.Allocation})
		if err != nil {
			return err
		}
		return allocs.Put(k.bytes(), nv)
	})
}

// RecordReleased records, in one transaction, that EC2 took back items
// (addresses, prefixes or ENI IDs, as text) at at, and drops the cooldown
// records of the addresses in cooling (they left the node).
func (s *Store) RecordReleased(at time.Time, items []string, cooling []netip.Addr) error {
	t, err := at.UTC().MarshalText()
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketReleased)
		if err != nil {
			return err
		}
		for _, x := range items {
			if x == "" {
				return fmt.Errorf("%w: empty released item", ErrInvalid)
			}
			if err := b.Put([]byte(x), t); err != nil {
				return err
			}
		}
		c := tx.Bucket(bucketCooling)
		for _, ip := range cooling {
			if err := c.Delete(ipKey(ip)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Released returns what RecordReleased recorded and ForgetReleased has not
// dropped, with when.
func (s *Store) Released() (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReleased)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var t time.Time
			if err := t.UnmarshalText(v); err != nil {
				return fmt.Errorf("store: corrupt release time for %s: %w", k, err)
			}
			out[string(k)] = t
			return nil
		})
	})
	return out, err
}

// ForgetReleased drops release records; an unknown item is not an error.
func (s *Store) ForgetReleased(items ...string) error {
	if len(items) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReleased)
		if b == nil {
			return nil
		}
		for _, x := range items {
			if err := b.Delete([]byte(x)); err != nil {
				return err
			}
		}
		return nil
	})
}
