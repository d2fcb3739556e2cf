// Package keyring keeps one person's end-to-end encryption keys on one
// device and decides what to do with them: where a private room's message
// is sealed before it is signed, and opened once it has arrived.
//
// Its parts:
//   - our key packages (package crypto/keypackage): a new one every
//     keypackage.Rotate, each living keypackage.Lifetime; the private key
//     of one expired for a week is erased (a sender key sealed to it after
//     that never opens);
//   - the latest package of each person we share a room with, learned from
//     their announcements in those rooms or from the relay;
//   - our sender key in each private room (an epoch: a fresh chain key,
//     sealed to every member's package, package crypto/senderkey), replaced
//     when the members change, when a member's package changes, after
//     EpochAge, and after EpochMessages messages;
//   - the receiving chain of each sender key sealed to us, erased 30 days
//     after it came, and what became of each sealed message: opened (its
//     text kept for the history and the search index: the keys are
//     erased, the text is not), waiting for its key, or never to open (and
//     why). Erasing is done when a session opens the ring, and at each new
//     package.
//
// Package keyring does no I/O of its own beyond the store: the client
// publishes what it prepares and hands it what arrives.
package keyring

import (
	"context"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/store"
)

// ErrNoKey: nothing of ours can open what was sealed to us.
var ErrNoKey = errors.New("keyring: no key")

// keepExpired is how long the private key of an expired package is kept:
// a sender key sealed to it just before it expired may still be on its
// way. keepChains is how long a receiving chain is kept: an epoch lasts
// at most EpochAge, and its late messages come within days; after that
// the chain is erased, and a message of it that still comes never opens.
const (
	keepExpired = 7 * 24 * time.Hour
	keepChains  = 30 * 24 * time.Hour
)

// Ring is one person's keys on one device. It is safe for concurrent use.
type Ring struct {
	key identity.PrivateKey
	st  *store.Store
	now func() time.Time

	mu     sync.Mutex
	device [keypackage.DeviceSize]byte
	own    []ownPackage // newest first
	// parsed are the packages of others parsed before, by the hash of
	// their encoding: a new epoch in a large room looks up every
	// member's, and checking each signature again cost a third of it.
	parsed map[[32]byte]*keypackage.Package
}

type ownPackage struct {
	pkg  *keypackage.Package
	id   [32]byte
	priv hpke.PrivateKey
}

// Open loads the keys kept in st for key.
func Open(ctx context.Context, st *store.Store, key identity.PrivateKey, now func() time.Time) (*Ring, error) {
	r := &Ring{key: key, st: st, now: now, parsed: make(map[[32]byte]*keypackage.Package)}
	dev, ok, err := st.KeysMeta(ctx, "device")
	if err != nil {
		return nil, err
	}
	if !ok || len(dev) != len(r.device) {
		if _, err := rand.Read(r.device[:]); err != nil {
			return nil, err
		}
		if err := st.SetKeysMeta(ctx, "device", r.device[:]); err != nil {
			return nil, err
		}
	} else {
		copy(r.device[:], dev)
	}
	n := now()
	if err := st.EraseOld(ctx, n.Add(-keepExpired).Unix(), n.Add(-keepChains).Unix()); err != nil {
		return nil, err
	}
	kept, err := st.OwnPackages(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range kept {
		p, err := keypackage.Parse(k.Raw)
		if err != nil {
			return nil, fmt.Errorf("keyring: our key package %x: %w", k.ID[:4], err)
		}
		priv, err := keypackage.ParsePrivateKey(k.Private)
		if err != nil {
			return nil, fmt.Errorf("keyring: our key package %x: %w", k.ID[:4], err)
		}
		r.own = append(r.own, ownPackage{pkg: p, id: k.ID, priv: priv})
	}
	return r, nil
}

// Current returns our current key package: the newest, or a new one if
// the newest is older than keypackage.Rotate (or there is none). The
// second result reports a new one, to announce and hand to the relay.
func (r *Ring) Current(ctx context.Context) (*keypackage.Package, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if len(r.own) > 0 && fresh(now, r.own[0].pkg.Created, keypackage.Rotate) {
		return r.own[0].pkg, false, nil
	}
	p, priv, err := keypackage.New(r.key, r.device, now, now.Add(keypackage.Lifetime))
	if err != nil {
		return nil, false, fmt.Errorf("keyring: new key package: %w", err)
	}
	raw, err := p.MarshalBinary()
	if err != nil {
		return nil, false, err
	}
	privRaw, err := keypackage.PrivateKeyBytes(priv)
	if err != nil {
		return nil, false, err
	}
	op := ownPackage{pkg: p, id: p.ID(), priv: priv}
	drop := now.Add(-keepExpired).Unix()
	if err := r.st.AddOwnPackage(ctx, store.OwnPackage{ID: op.id, Created: p.Created, Expires: p.Expires,
		Raw: raw, Private: privRaw}, drop); err != nil {
		return nil, false, err
	}
	keep := []ownPackage{op}
	for _, o := range r.own {
		if o.pkg.Expires >= drop {
			keep = append(keep, o)
		}
	}
	r.own = keep
	return p, true, nil
}

// fresh reports whether something made at created (Unix s, by our own
// clock) is younger than limit at now. Something dated more than
// keypackage.MaxSkew after now is not: our clock was wrong when it was
// made (others refuse a package made that far ahead, and its age is
// unknown), so it is replaced rather than kept until the clock gets
// there. time.Time.Sub saturates, so no created wraps to young.
func fresh(now time.Time, created int64, limit time.Duration) bool {
	age := now.Sub(time.Unix(created, 0))
	return age >= -keypackage.MaxSkew && age < limit
}

// private returns the private key of our package id.
func (r *Ring) private(id [32]byte) (hpke.PrivateKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.own {
		if o.id == id {
			return o.priv, true
		}
	}
	return nil, false
}

// Learn keeps p as its owner's latest package, in batch b, if it is
// valid now and newer than the one kept. It reports whether it did.
func (r *Ring) Learn(ctx context.Context, b *store.Batch, p *keypackage.Package) (bool, error) {
	if p.Identity == r.key.Public() || p.Valid(r.now()) != nil {
		return false, nil
	}
	raw, ok, err := b.Package(ctx, p.Identity)
	if err != nil {
		return false, err
	}
	if ok {
		if old, err := keypackage.Parse(raw); err == nil && !p.Newer(old) {
			return false, nil
		}
	}
	enc, err := p.MarshalBinary()
	if err != nil {
		return false, err
	}
	return true, b.PutPackage(ctx, p.Identity, p.Created, p.Expires, enc)
}

// LearnRaw is Learn of an encoded package (from the relay), in a
// transaction of its own.
func (r *Ring) LearnRaw(ctx context.Context, raw []byte) (bool, error) {
	p, err := keypackage.Parse(raw)
	if err != nil {
		return false, fmt.Errorf("keyring: %w", err)
	}
	b, err := r.st.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer b.Rollback()
	ok, err := r.Learn(ctx, b, p)
	if err != nil || !ok {
		return false, err
	}
	return true, b.Commit()
}

// maxParsed bounds the packages remembered parsed.
const maxParsed = 4096

// parse parses a kept package, or returns it parsed before.
func (r *Ring) parse(raw []byte) (*keypackage.Package, error) {
	h := sha256.Sum256(raw)
	r.mu.Lock()
	p, ok := r.parsed[h]
	r.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := keypackage.Parse(raw)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if len(r.parsed) >= maxParsed {
		clear(r.parsed)
	}
	r.parsed[h] = p
	r.mu.Unlock()
	return p, nil
}

// PackageOf returns who's latest package, if one is known and valid now.
func (r *Ring) PackageOf(ctx context.Context, who identity.PublicKey) (*keypackage.Package, bool, error) {
	raw, ok, err := r.st.Package(ctx, who)
	if err != nil || !ok {
		return nil, false, err
	}
	p, err := r.parse(raw)
	if err != nil {
		return nil, false, fmt.Errorf("keyring: kept key package of %s: %w", who.ShortFingerprint(), err)
	}
	if p.Valid(r.now()) != nil {
		return nil, false, nil
	}
	return p, true, nil
}
