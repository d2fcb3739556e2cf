package audit

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/parleychat/parley/identity"
)

// A checkpoint is the log's size and root hash, signed by the relay. Its
// text is the standard checkpoint body of transparency logs (C2SP
// tlog-checkpoint): the log's origin, the tree size in decimal and the
// root hash in base64, one per line. It is signed in the signed-note
// format under the key name that is the origin. tlog.FormatTree is not
// used: its header names the Go checksum database.

// MaxCheckpoint bounds a signed checkpoint note.
const MaxCheckpoint = 1024

// Origin is the log's name: unique per relay, from its key (the libp2p
// peer ID spelling, which note key names accept: no '+').
func Origin(relay identity.PublicKey) string { return "parley.relay/" + relay.PeerID() }

// Checkpoint is a verified (or to-be-signed) view of the log.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Text is the checkpoint's body, the signed text.
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
}

// ErrCheckpoint: a checkpoint that does not parse, or is not signed by
// the relay's key.
var ErrCheckpoint = errors.New("audit: bad checkpoint")

// signer signs checkpoint notes with the relay's identity key.
type signer struct {
	name string
	hash uint32
	key  identity.PrivateKey
}

func (s signer) Name() string                    { return s.name }
func (s signer) KeyHash() uint32                 { return s.hash }
func (s signer) Sign(msg []byte) ([]byte, error) { return s.key.Sign(msg), nil }

func verifier(relay identity.PublicKey) (note.Verifier, error) {
	vkey, err := note.NewEd25519VerifierKey(Origin(relay), ed25519.PublicKey(relay.Bytes()))
	if err != nil {
		return nil, err
	}
	return note.NewVerifier(vkey)
}

// Sign signs c with the relay's key and returns the note.
func Sign(c Checkpoint, key identity.PrivateKey) ([]byte, error) {
	s, err := newSigner(key)
	if err != nil {
		return nil, err
	}
	return s.sign(c)
}

// newSigner returns the signer of key's checkpoints: its name and key
// hash are worked out once, not at every commit.
func newSigner(key identity.PrivateKey) (signer, error) {
	v, err := verifier(key.Public())
	if err != nil {
		return signer{}, err
	}
	return signer{name: v.Name(), hash: v.KeyHash(), key: key}, nil
}

func (s signer) sign(c Checkpoint) ([]byte, error) {
	return note.Sign(&note.Note{Text: c.Text()}, s)
}

// Open checks a signed checkpoint against the relay's key and parses it.
func Open(signed []byte, relay identity.PublicKey) (Checkpoint, error) {
	o, err := NewOpener(relay)
	if err != nil {
		return Checkpoint{}, err
	}
	return o.Open(signed)
}

// An Opener checks the signed checkpoints of one relay. It keeps the
// relay's key in the precomputed form that makes checking a signature
// about a third faster: a client checks one per commit it hears of.
type Opener struct {
	relay identity.PublicKey
	v     note.Verifier
}

// NewOpener returns an Opener for relay's checkpoints.
func NewOpener(relay identity.PublicKey) (*Opener, error) {
	std, err := verifier(relay)
	if err != nil {
		return nil, err
	}
	ek, err := voi.NewExpandedPublicKey(relay.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%w: relay key: %v", ErrCheckpoint, err)
	}
	return &Opener{relay: relay, v: fastVerifier{std, ek}}, nil
}

// fastVerifier is the signed-note Ed25519 verifier with the key
// precomputed. It accepts exactly what crypto/ed25519 does (the standard
// note verifier): curve25519-voi's crypto/ed25519 rule.
type fastVerifier struct {
	note.Verifier
	key *voi.ExpandedPublicKey
}

var stdlibRule = &voi.Options{Verify: voi.VerifyOptionsStdLib}

func (v fastVerifier) Verify(msg, sig []byte) bool {
	return voi.VerifyExpandedWithOptions(v.key, msg, sig, stdlibRule)
}

// Open checks a signed checkpoint and parses it.
func (o *Opener) Open(signed []byte) (Checkpoint, error) {
	if len(signed) > MaxCheckpoint {
		return Checkpoint{}, fmt.Errorf("%w: %d bytes", ErrCheckpoint, len(signed))
	}
	n, err := note.Open(signed, note.VerifierList(o.v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: not signed by relay %s: %v", ErrCheckpoint, o.relay.Fingerprint(), err)
	}
	// note.Open decodes the signature with lax base64, which ignores
	// the padding bits of its last character: the relay's signature line
	// must be the one encoding of its bytes, so that a stored or kept
	// note cannot be changed and still open.
	for _, sig := range n.Sigs {
		raw, err := base64.StdEncoding.DecodeString(sig.Base64)
		if err != nil || base64.StdEncoding.EncodeToString(raw) != sig.Base64 {
			return Checkpoint{}, fmt.Errorf("%w: the signature of relay %s is not in canonical base64", ErrCheckpoint, o.relay.Fingerprint())
		}
	}
	c, err := parseText(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != Origin(o.relay) {
		return Checkpoint{}, fmt.Errorf("%w: origin %q is not relay %s's", ErrCheckpoint, c.Origin, o.relay.Fingerprint())
	}
	return c, nil
}

func parseText(text string) (Checkpoint, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 || lines[3] != "" {
		return Checkpoint{}, fmt.Errorf("%w: want three lines", ErrCheckpoint)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("%w: size %q", ErrCheckpoint, lines[1])
	}
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("%w: root hash %q", ErrCheckpoint, lines[2])
	}
	return Checkpoint{Origin: lines[0], Size: size, Root: tlog.Hash(root)}, nil
}
