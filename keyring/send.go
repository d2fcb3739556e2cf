package keyring

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/crypto/ratchet"
	"github.com/parleychat/parley/crypto/seal"
	"github.com/parleychat/parley/crypto/senderkey"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// When a sender key is replaced, beyond a change of the members or of
// their packages: after EpochAge or EpochMessages messages, whichever
// comes first. A member whose keys leaked reads the room again only
// until the next epoch (post-compromise healing), and a chain key stolen
// from a device opens no message of an earlier epoch.
const (
	EpochAge      = 24 * time.Hour
	EpochMessages = 1000
)

// recipient is one member a sender key was sealed to, by package.
type recipient struct {
	key identity.PublicKey
	pkg [32]byte
}

// sending is our sender key in one room.
type sending struct {
	epoch   protocol.Epoch
	chain   ratchet.Sender
	created int64 // Unix s
	sent    uint32
	to      []recipient // by key
}

func (s *sending) marshal() ([]byte, error) {
	ch, err := s.chain.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := append(s.epoch[:len(s.epoch):len(s.epoch)], ch...)
	b = binary.BigEndian.AppendUint64(b, uint64(s.created))
	b = binary.BigEndian.AppendUint32(b, s.sent)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.to)))
	for _, r := range s.to {
		b = append(append(b, r.key.Bytes()...), r.pkg[:]...)
	}
	return b, nil
}

const chainSize = 32 + 4

func parseSending(b []byte) (*sending, error) {
	s := new(sending)
	const fixed = protocol.EpochSize + chainSize + 8 + 4 + 2
	if len(b) < fixed {
		return nil, fmt.Errorf("keyring: sender key state of %d bytes", len(b))
	}
	copy(s.epoch[:], b)
	if err := s.chain.UnmarshalBinary(b[protocol.EpochSize : protocol.EpochSize+chainSize]); err != nil {
		return nil, fmt.Errorf("keyring: sender key state: %w", err)
	}
	rest := b[protocol.EpochSize+chainSize:]
	s.created = int64(binary.BigEndian.Uint64(rest))
	s.sent = binary.BigEndian.Uint32(rest[8:])
	n := int(binary.BigEndian.Uint16(rest[12:]))
	rest = rest[14:]
	if len(rest) != n*64 {
		return nil, fmt.Errorf("keyring: sender key state: %d bytes of recipients, want %d", len(rest), n*64)
	}
	for i := range n {
		k, err := identity.PublicKeyFromBytes(rest[i*64 : i*64+32])
		if err != nil {
			return nil, fmt.Errorf("keyring: sender key state: %w", err)
		}
		r := recipient{key: k}
		copy(r.pkg[:], rest[i*64+32:])
		s.to = append(s.to, r)
	}
	return s, nil
}

// loadSending returns our sender key in room, nil if we have none.
func (r *Ring) loadSending(ctx context.Context, room string) (*sending, error) {
	raw, ok, err := r.st.SendingKey(ctx, room)
	if err != nil || !ok {
		return nil, err
	}
	return parseSending(raw)
}

func (r *Ring) saveSending(ctx context.Context, room string, s *sending) error {
	b, err := s.marshal()
	if err != nil {
		return err
	}
	return r.st.SetSendingKey(ctx, room, b)
}

// Epoch is a new sender key, prepared: its Keys go out first, then
// Commit makes it the one messages are sealed with.
type Epoch struct {
	Keys []protocol.Keys
	room string
	s    *sending
	r    *Ring
}

// Commit makes the epoch our sender key in its room. Call it once its
// Keys are signed and kept for delivery: from then on, messages are
// sealed with it.
func (e *Epoch) Commit(ctx context.Context) error { return e.r.saveSending(ctx, e.room, e.s) }

// Prepare returns a new sender key for room if ours must be replaced,
// nil if it holds: members are the room's current members (with us),
// head the member-list head the keys are sent under. A member whose
// package is not known gets no copy; the next message after it is known
// starts a new epoch that includes them.
func (r *Ring) Prepare(ctx context.Context, room string, head protocol.ID, members []identity.PublicKey) (*Epoch, error) {
	to, pkgs, err := r.recipients(ctx, members)
	if err != nil {
		return nil, err
	}
	cur, err := r.loadSending(ctx, room)
	if err != nil {
		return nil, err
	}
	if cur != nil && slices.Equal(cur.to, to) && cur.sent < EpochMessages &&
		fresh(r.now(), cur.created, EpochAge) {
		return nil, nil
	}
	s := &sending{created: r.now().Unix(), to: to}
	if _, err := rand.Read(s.epoch[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(s.chain.Chain[:]); err != nil {
		return nil, err
	}
	keys, err := r.sealTo(room, s, pkgs, head)
	if err != nil {
		return nil, err
	}
	return &Epoch{Keys: keys, room: room, s: s, r: r}, nil
}

// recipients returns the members a sender key reaches (those whose
// package is known and valid, and us), by key, with their packages.
func (r *Ring) recipients(ctx context.Context, members []identity.PublicKey) ([]recipient, []*keypackage.Package, error) {
	self := r.key.Public()
	var (
		to   []recipient
		pkgs []*keypackage.Package
	)
	sorted := slices.Clone(members)
	slices.SortFunc(sorted, func(a, b identity.PublicKey) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	for _, m := range slices.Compact(sorted) {
		var (
			p   *keypackage.Package
			ok  bool
			err error
		)
		if m == self {
			p, _, err = r.Current(ctx)
			ok = err == nil
		} else {
			p, ok, err = r.PackageOf(ctx, m)
		}
		if err != nil {
			return nil, nil, err
		}
		if ok {
			to = append(to, recipient{key: m, pkg: p.ID()})
			pkgs = append(pkgs, p)
		}
	}
	return to, pkgs, nil
}

// sealTo seals s's chain key to each package, in envelopes of at most
// protocol.MaxRecipients copies.
func (r *Ring) sealTo(room string, s *sending, pkgs []*keypackage.Package, head protocol.ID) ([]protocol.Keys, error) {
	var out []protocol.Keys
	for i, p := range pkgs {
		if i%protocol.MaxRecipients == 0 {
			// Each envelope covers the keys from its first recipient's
			// (the first from zero) to the next envelope's first.
			k := protocol.Keys{Head: head, Epoch: s.epoch}
			if i > 0 {
				k.From = p.Identity.Array()
				out[len(out)-1].To = k.From
			}
			out = append(out, k)
		}
		info := senderkey.Info{Room: room, Sender: r.key.Public(), Recipient: p.Identity, Epoch: s.epoch, Package: s.to[i].pkg}
		sealed, err := senderkey.Seal(p, info, s.chain.Chain)
		if err != nil {
			return nil, fmt.Errorf("keyring: seal the sender key to %s: %w", p.Identity.ShortFingerprint(), err)
		}
		k := &out[len(out)-1]
		k.Sealed = append(k.Sealed, protocol.SealedKey{Recipient: p.Identity, Package: s.to[i].pkg, Key: sealed})
	}
	return out, nil
}

// Seal seals text t into e, whose header is set (the signer calls it
// just before signing): with the next message key of our sender key in
// e's room, which is kept advanced before it is used, so that no key
// ever seals two messages. head is the member-list head the message
// names.
func (r *Ring) Seal(ctx context.Context, e *protocol.Envelope, head protocol.ID, t *protocol.Text) error {
	plain, err := t.MarshalBinary()
	if err != nil {
		return err
	}
	r.mu.Lock() // one message key at a time
	defer r.mu.Unlock()
	s, err := r.loadSending(ctx, e.Room)
	if err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("keyring: no sender key in %s", e.Room)
	}
	idx, mk, err := s.chain.Key()
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	defer clear(mk[:])
	s.sent++
	if err := r.saveSending(ctx, e.Room, s); err != nil {
		return err
	}
	e.Kind = protocol.KindSealed
	p := protocol.Sealed{Head: head, Epoch: s.epoch, Index: idx, Box: make([]byte, seal.Bucket(4+len(plain))+seal.Overhead)}
	box, err := seal.Seal(mk, protocol.SealedAAD(e, &p), plain)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	p.Box = box
	e.Payload, err = p.MarshalBinary()
	return err
}
