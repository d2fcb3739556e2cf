package keyring

import (
	"context"
	"errors"
	"fmt"

	"github.com/parleychat/parley/crypto/ratchet"
	"github.com/parleychat/parley/crypto/seal"
	"github.com/parleychat/parley/crypto/senderkey"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// Why a sealed message never opens, as the person is told.
const (
	whyNotSealedToUs = "its sender key was not sealed to you (sent before you joined, or before your key package reached the sender)"
	whyPackageGone   = "its sender key was sealed to a key package of yours that is gone"
	whyKeyGone       = "its message key was used already, or dropped"
	whyTooFar        = "it is too far ahead of its sender's chain"
	whyDoesNotOpen   = "it does not open: changed on the way, or not sealed for this place"
	whyOwnElsewhere  = "it was sent with your key from another device"
)

// Notes kept in place of a receiving chain that will never be.
const (
	noteNotSealedToUs byte = 1 + iota
	notePackageGone
	noteDoesNotOpen
)

var whyOf = map[byte]string{noteNotSealedToUs: whyNotSealedToUs, notePackageGone: whyPackageGone, noteDoesNotOpen: whyDoesNotOpen}

// Receive handles, in batch b, an arrived envelope of the kinds of
// end-to-end encryption: it keeps an announced key package, takes a
// sender key sealed to us (and opens the messages that waited for it),
// and opens a sealed message, or keeps it waiting for its key. It
// returns the sealed messages whose state it changed. It does not judge
// whether the sender may send in the room: the member list did that.
func (r *Ring) Receive(ctx context.Context, b *store.Batch, env *protocol.Envelope, id protocol.ID, raw []byte) ([]store.Sealed, error) {
	switch env.Kind {
	case protocol.KindKeyPackage:
		a, err := protocol.ParseAnnounce(env.Payload)
		if err != nil {
			return nil, nil // the mesh and the relay refuse it; nothing to keep
		}
		_, err = r.Learn(ctx, b, a.Package)
		return nil, err
	case protocol.KindKeys:
		return r.receiveKeys(ctx, b, env)
	case protocol.KindSealed:
		m, err := r.receiveSealed(ctx, b, env, id, raw)
		if err != nil || m == nil {
			return nil, err
		}
		return []store.Sealed{*m}, nil
	}
	return nil, nil
}

// receiveKeys takes the copy of a sender key sealed to us.
func (r *Ring) receiveKeys(ctx context.Context, b *store.Batch, env *protocol.Envelope) ([]store.Sealed, error) {
	self := r.key.Public()
	k, err := protocol.ParseKeys(env.Payload)
	if err != nil || env.Sender == self {
		return nil, nil
	}
	if _, ok, err := b.Chain(ctx, env.Room, env.Sender, k.Epoch); err != nil || ok {
		return nil, err
	}
	sk, ok, none := k.For(self)
	switch {
	case none:
		return r.never(ctx, b, env, k.Epoch, noteNotSealedToUs)
	case !ok:
		// A large room's key comes in several envelopes: ours may be in
		// another. What waits for it stays waiting.
		return nil, nil
	}
	priv, ok := r.private(sk.Package)
	if !ok {
		return r.never(ctx, b, env, k.Epoch, notePackageGone)
	}
	info := senderkey.Info{Room: env.Room, Sender: env.Sender, Recipient: self, Epoch: k.Epoch, Package: sk.Package}
	ck, err := senderkey.Open(priv, info, sk.Key)
	if err != nil {
		return r.never(ctx, b, env, k.Epoch, noteDoesNotOpen)
	}
	recv := ratchet.NewReceiver(ck)
	clear(ck[:])
	if err := r.saveChain(ctx, b, env, k.Epoch, recv); err != nil {
		return nil, err
	}
	return r.openWaiting(ctx, b, env, k.Epoch)
}

// never notes that sender key epoch of env's sender will never open
// here (a one-byte chain state: note), and marks what waits for it, and
// what comes later, as never to open.
func (r *Ring) never(ctx context.Context, b *store.Batch, env *protocol.Envelope, epoch protocol.Epoch, note byte) ([]store.Sealed, error) {
	if err := b.SetChain(ctx, env.Room, env.Sender, epoch, []byte{note}); err != nil {
		return nil, err
	}
	why := whyOf[note]
	waiting, err := b.WaitingFor(ctx, env.Room, env.Sender, epoch)
	if err != nil {
		return nil, err
	}
	for i := range waiting {
		w := &waiting[i]
		w.Status, w.Body, w.Raw = store.SealedNever, why, nil
		if err := b.SetSealed(ctx, *w); err != nil {
			return nil, err
		}
	}
	return waiting, nil
}

// openWaiting opens what waited for a sender key that just came.
func (r *Ring) openWaiting(ctx context.Context, b *store.Batch, env *protocol.Envelope, epoch protocol.Epoch) ([]store.Sealed, error) {
	waiting, err := b.WaitingFor(ctx, env.Room, env.Sender, epoch)
	if err != nil {
		return nil, err
	}
	var out []store.Sealed
	for _, w := range waiting {
		we, err := protocol.Parse(w.Raw)
		if err != nil {
			return nil, fmt.Errorf("keyring: a kept sealed message: %w", err)
		}
		m, err := r.receiveSealed(ctx, b, we, w.ID, nil)
		if err != nil {
			return nil, err
		}
		if m != nil {
			out = append(out, *m)
		}
	}
	return out, nil
}

// receiveSealed opens a sealed message, or keeps it waiting for its key
// (raw is the envelope, kept while it waits), or marks it as never to
// open. It returns what it recorded, nil if the message was handled
// before.
func (r *Ring) receiveSealed(ctx context.Context, b *store.Batch, env *protocol.Envelope, id protocol.ID, raw []byte) (*store.Sealed, error) {
	p, err := protocol.ParseSealed(env.Payload)
	if err != nil {
		return nil, nil
	}
	m := store.Sealed{ID: id, Room: env.Room, Sender: env.Sender, Epoch: p.Epoch}
	if known, ok, err := b.Sealed(ctx, id); err != nil || (ok && known.Status != store.SealedWaiting) {
		return nil, err
	} else if ok && raw == nil {
		raw = known.Raw
	}
	if env.Sender == r.key.Public() {
		// What we sent here was kept opened as it was signed.
		m.Status, m.Body = store.SealedNever, whyOwnElsewhere
		return &m, b.SetSealed(ctx, m)
	}
	recv, ok, err := r.loadChain(ctx, b, env, p.Epoch)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		m.Status, m.Raw = store.SealedWaiting, raw
		return &m, b.SetSealed(ctx, m)
	case recv == nil:
		m.Status, m.Body = store.SealedNever, whyOf[r.noteOf(ctx, b, env, p.Epoch)]
		return &m, b.SetSealed(ctx, m)
	}
	t, why, err := r.open(recv, env, &p)
	switch {
	case err != nil:
		return nil, err
	case why != "":
		m.Status, m.Body = store.SealedNever, why
	default:
		if err := r.saveChain(ctx, b, env, p.Epoch, recv); err != nil {
			return nil, err
		}
		m.Status, m.Nick, m.Body = store.SealedOpened, t.Nick, t.Body
	}
	return &m, b.SetSealed(ctx, m)
}

// open takes the message key of p from recv and opens p with it. It
// returns the text, or why it never opens. recv is saved only if it
// opened: a message that does not open uses up no key.
func (r *Ring) open(recv *ratchet.Receiver, env *protocol.Envelope, p *protocol.Sealed) (protocol.Text, string, error) {
	mk, err := recv.Key(p.Index)
	switch {
	case errors.Is(err, ratchet.ErrGone):
		return protocol.Text{}, whyKeyGone, nil
	case errors.Is(err, ratchet.ErrTooFar):
		return protocol.Text{}, whyTooFar, nil
	case err != nil:
		return protocol.Text{}, "", err
	}
	defer clear(mk[:])
	plain, err := seal.Open(mk, protocol.SealedAAD(env, p), p.Box)
	if err != nil {
		return protocol.Text{}, whyDoesNotOpen, nil
	}
	t, err := protocol.ParseText(plain)
	if err != nil {
		return protocol.Text{}, whyDoesNotOpen, nil
	}
	return t, "", nil
}

func (r *Ring) loadChain(ctx context.Context, b *store.Batch, env *protocol.Envelope, epoch protocol.Epoch) (*ratchet.Receiver, bool, error) {
	raw, ok, err := b.Chain(ctx, env.Room, env.Sender, epoch)
	if err != nil || !ok {
		return nil, false, err
	}
	if len(raw) == 1 {
		return nil, true, nil // a note: it will never be
	}
	recv := new(ratchet.Receiver)
	if err := recv.UnmarshalBinary(raw); err != nil {
		return nil, false, fmt.Errorf("keyring: kept chain of %s: %w", env.Sender.ShortFingerprint(), err)
	}
	return recv, true, nil
}

// noteOf returns the note kept in place of a chain that will never be.
func (r *Ring) noteOf(ctx context.Context, b *store.Batch, env *protocol.Envelope, epoch protocol.Epoch) byte {
	raw, _, _ := b.Chain(ctx, env.Room, env.Sender, epoch)
	if len(raw) == 1 {
		return raw[0]
	}
	return noteDoesNotOpen
}

func (r *Ring) saveChain(ctx context.Context, b *store.Batch, env *protocol.Envelope, epoch protocol.Epoch, recv *ratchet.Receiver) error {
	raw, err := recv.MarshalBinary()
	if err != nil {
		return err
	}
	return b.SetChain(ctx, env.Room, env.Sender, epoch, raw)
}
