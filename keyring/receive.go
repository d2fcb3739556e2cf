package keyring

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/parleychat/parley/crypto/ratchet"
	"github.com/parleychat/parley/crypto/seal"
	"github.com/parleychat/parley/crypto/senderkey"
	"github.com/parleychat/parley/identity"
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

// Opener takes the arrivals of one store batch: it keeps the receiving
// chains it uses in memory and writes each back once, at Flush, in the
// batch. A batch that fails is taken again whole with a new Opener.
type Opener struct {
	r      *Ring
	b      *store.Batch
	chains map[chainID]*chain
}

type chainID struct {
	room   string
	sender [32]byte
	epoch  protocol.Epoch
}

// chain is a receiving chain as the batch has it: a Receiver, or the
// note of one that will never be; nil entries were looked up and are
// not there.
type chain struct {
	recv  *ratchet.Receiver
	note  byte
	dirty bool
}

// Opener returns an Opener for batch b.
func (r *Ring) Opener(b *store.Batch) *Opener {
	return &Opener{r: r, b: b, chains: make(map[chainID]*chain)}
}

// Flush writes the chains the batch changed.
func (o *Opener) Flush(ctx context.Context) error {
	for id, ch := range o.chains {
		if ch == nil || !ch.dirty {
			continue
		}
		raw := []byte{ch.note}
		if ch.recv != nil {
			var err error
			if raw, err = ch.recv.MarshalBinary(); err != nil {
				return err
			}
		}
		sender, _ := identity.PublicKeyFromBytes(id.sender[:])
		if err := o.b.SetChain(ctx, id.room, sender, id.epoch, raw, o.r.now().Unix()); err != nil {
			return err
		}
		ch.dirty = false
	}
	return nil
}

// Receive handles an arrived envelope of the kinds of end-to-end
// encryption: it keeps an announced key package, takes a sender key
// sealed to us (and opens the messages that waited for it), and opens a
// sealed message, or keeps it waiting for its key. It returns the
// sealed messages whose state it changed. It does not judge whether the
// sender may send in the room: the member list did that.
func (o *Opener) Receive(ctx context.Context, env *protocol.Envelope, id protocol.ID, raw []byte) ([]store.Sealed, error) {
	switch env.Kind {
	case protocol.KindKeyPackage:
		a, err := protocol.ParseAnnounce(env.Payload)
		if err != nil || a.Package.Identity != env.Sender {
			return nil, nil // the mesh and the relay refuse it; nothing to keep
		}
		_, err = o.r.Learn(ctx, o.b, a.Package)
		return nil, err
	case protocol.KindKeys:
		return o.receiveKeys(ctx, env)
	case protocol.KindSealed:
		m, err := o.receiveSealed(ctx, env, id, raw, false)
		if err != nil || m == nil {
			return nil, err
		}
		return []store.Sealed{*m}, nil
	}
	return nil, nil
}

// receiveKeys takes the copy of a sender key sealed to us.
func (o *Opener) receiveKeys(ctx context.Context, env *protocol.Envelope) ([]store.Sealed, error) {
	r := o.r
	self := r.key.Public()
	k, err := protocol.ParseKeys(env.Payload)
	if err != nil || env.Sender == self {
		return nil, nil
	}
	if ch, err := o.chain(ctx, env, k.Epoch); err != nil || ch != nil {
		return nil, err
	}
	sk, ok, none := k.For(self)
	switch {
	case none:
		return o.never(ctx, env, k.Epoch, noteNotSealedToUs)
	case !ok:
		// A large room's key comes in several envelopes: ours may be in
		// another. What waits for it stays waiting.
		return nil, nil
	}
	priv, ok := r.private(sk.Package)
	if !ok {
		return o.never(ctx, env, k.Epoch, notePackageGone)
	}
	info := senderkey.Info{Room: env.Room, Sender: env.Sender, Recipient: self, Epoch: k.Epoch, Package: sk.Package}
	ck, err := senderkey.Open(priv, info, sk.Key)
	if err != nil {
		return o.never(ctx, env, k.Epoch, noteDoesNotOpen)
	}
	o.chains[idOf(env, k.Epoch)] = &chain{recv: ratchet.NewReceiver(ck), dirty: true}
	clear(ck[:])
	return o.openWaiting(ctx, env, k.Epoch)
}

// never notes that sender key epoch of env's sender will never open
// here (a one-byte chain state: note), and marks what waits for it, and
// what comes later, as never to open.
func (o *Opener) never(ctx context.Context, env *protocol.Envelope, epoch protocol.Epoch, note byte) ([]store.Sealed, error) {
	b := o.b
	o.chains[idOf(env, epoch)] = &chain{note: note, dirty: true}
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
func (o *Opener) openWaiting(ctx context.Context, env *protocol.Envelope, epoch protocol.Epoch) ([]store.Sealed, error) {
	waiting, err := o.b.WaitingFor(ctx, env.Room, env.Sender, epoch)
	if err != nil {
		return nil, err
	}
	var out []store.Sealed
	for _, w := range waiting {
		we, err := protocol.Parse(w.Raw)
		if err != nil {
			// Kept by an earlier version, or damaged: it cannot open,
			// and must not stop what comes behind it.
			w.Status, w.Body = store.SealedNever, whyDoesNotOpen
			if err := o.b.SetSealed(ctx, w); err != nil {
				return nil, err
			}
			out = append(out, w)
			continue
		}
		m, err := o.receiveSealed(ctx, we, w.ID, w.Raw, true)
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
func (o *Opener) receiveSealed(ctx context.Context, env *protocol.Envelope, id protocol.ID, raw []byte, waited bool) (*store.Sealed, error) {
	r, b := o.r, o.b
	p, err := protocol.ParseSealed(env.Payload)
	if err != nil {
		return nil, nil
	}
	// Raw goes back with what is returned (the store keeps it only while
	// the message waits): the caller may not have the envelope stored yet.
	m := store.Sealed{ID: id, Room: env.Room, Sender: env.Sender, Epoch: p.Epoch, Raw: raw}
	if env.Sender == r.key.Public() {
		// What we sent here was kept opened as it was signed.
		if done, err := o.handled(ctx, id); done || err != nil {
			return nil, err
		}
		m.Status, m.Body = store.SealedNever, whyOwnElsewhere
		return &m, b.SetSealed(ctx, m)
	}
	ch, err := o.chain(ctx, env, p.Epoch)
	switch {
	case err != nil:
		return nil, err
	case ch == nil:
		m.Status = store.SealedWaiting
		return &m, b.SetSealed(ctx, m)
	case ch.recv == nil:
		m.Status, m.Body = store.SealedNever, whyOf[ch.note]
		return &m, b.SetSealed(ctx, m)
	}
	t, why, err := r.open(ch.recv, env, &p)
	switch {
	case err != nil:
		return nil, err
	case why == whyKeyGone:
		// Most likely opened before, and here again (shown again after
		// a restart): its key is gone because it was used for it.
		if done, err := o.handled(ctx, id); done || err != nil {
			return nil, err
		}
		m.Status, m.Body = store.SealedNever, why
	case why != "":
		m.Status, m.Body = store.SealedNever, why
	default:
		ch.dirty = true
		m.Status, m.Nick, m.Body = store.SealedOpened, t.Nick, t.Body
		return &m, b.PutOpened(ctx, id, t.Nick, t.Body, waited)
	}
	return &m, b.SetSealed(ctx, m)
}

// handled reports whether sealed message id was opened, or marked as
// never to open, before. It is asked only where the fast path cannot
// tell: looking every arrival up cost a sixth of a sealed catch-up.
func (o *Opener) handled(ctx context.Context, id protocol.ID) (bool, error) {
	known, ok, err := o.b.Sealed(ctx, id)
	return ok && known.Status != store.SealedWaiting, err
}

// open takes the message key of p from recv and opens p with it. It
// returns the text, or why it never opens. A message that does not open
// uses up no key: recv is as it was.
func (r *Ring) open(recv *ratchet.Receiver, env *protocol.Envelope, p *protocol.Sealed) (protocol.Text, string, error) {
	before := ratchet.Receiver{Chain: recv.Chain, Next: recv.Next, Skipped: maps.Clone(recv.Skipped)}
	t, why, err := r.openWith(recv, env, p)
	if why != "" || err != nil {
		*recv = before
	}
	return t, why, err
}

func (r *Ring) openWith(recv *ratchet.Receiver, env *protocol.Envelope, p *protocol.Sealed) (protocol.Text, string, error) {
	mk, err := recv.Key(p.Index)
	switch {
	case errors.Is(err, ratchet.ErrGone):
		return protocol.Text{}, whyKeyGone, nil
	case err != nil:
		// Too far ahead, or past the last index (ErrExhausted): a sender's
		// bad message is never an error of ours, which would stop the
		// batch and everything behind it.
		return protocol.Text{}, whyTooFar, nil
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

func idOf(env *protocol.Envelope, epoch protocol.Epoch) chainID {
	return chainID{room: env.Room, sender: env.Sender.Array(), epoch: epoch}
}

// chain returns the receiving chain of env's sender's epoch: from the
// batch's memory, else from the store; nil if there is none.
func (o *Opener) chain(ctx context.Context, env *protocol.Envelope, epoch protocol.Epoch) (*chain, error) {
	id := idOf(env, epoch)
	if ch, ok := o.chains[id]; ok {
		return ch, nil
	}
	raw, ok, err := o.b.Chain(ctx, env.Room, env.Sender, epoch)
	if err != nil {
		return nil, err
	}
	var ch *chain
	switch {
	case !ok:
	case len(raw) == 1:
		ch = &chain{note: raw[0]} // it will never be
	default:
		recv := new(ratchet.Receiver)
		if err := recv.UnmarshalBinary(raw); err != nil {
			return nil, fmt.Errorf("keyring: kept chain of %s: %w", env.Sender.ShortFingerprint(), err)
		}
		ch = &chain{recv: recv}
	}
	o.chains[id] = ch
	return ch, nil
}
