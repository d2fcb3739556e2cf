package wire

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/parleychat/parley/protocol"
)

// The frames that describe the relay, redeem invites, mark commits and
// prove the audit log.

// PolicyMode is how a relay decides who may connect.
type PolicyMode uint8

const (
	PolicyOpen      PolicyMode = 1 // anyone not banned
	PolicyAllowList PolicyMode = 2 // only identities on the allow list
	PolicyInvite    PolicyMode = 3 // the allow list, which invite tokens join
)

func (m PolicyMode) String() string {
	switch m {
	case PolicyOpen:
		return "open"
	case PolicyAllowList:
		return "allowlist"
	case PolicyInvite:
		return "invite"
	}
	return fmt.Sprintf("policy(%d)", uint8(m))
}

// ParsePolicyMode parses "open", "allowlist" or "invite".
func ParsePolicyMode(s string) (PolicyMode, error) {
	for _, m := range []PolicyMode{PolicyOpen, PolicyAllowList, PolicyInvite} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("wire: unknown policy %q (want open, allowlist or invite)", s)
}

// Info describes a relay: what it speaks, its limits, its policy.
type Info struct {
	Versions      []uint8 // envelope versions it accepts
	MaxEnvelope   uint32  // bytes
	PublishRate   uint32  // envelopes per second per identity
	PublishBurst  uint32
	RetentionDays uint32 // how long history is kept; 0: no age limit
	Policy        PolicyMode
	PolicyVersion uint64
}

func (m *Info) MarshalBinary() ([]byte, error) {
	if len(m.Versions) == 0 || len(m.Versions) > MaxRelayVersions {
		return nil, fmt.Errorf("wire: %d versions in info, want 1 to %d", len(m.Versions), MaxRelayVersions)
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Versions) })
		b.AddUint32(m.MaxEnvelope)
		b.AddUint32(m.PublishRate)
		b.AddUint32(m.PublishBurst)
		b.AddUint32(m.RetentionDays)
		b.AddUint8(uint8(m.Policy))
		b.AddUint64(m.PolicyVersion)
	}), nil
}

// ParseInfo parses an Info body.
func ParseInfo(body []byte) (*Info, error) {
	s := cryptobyte.String(body)
	var m Info
	var versions cryptobyte.String
	var mode uint8
	if !s.ReadUint8LengthPrefixed(&versions) || !s.ReadUint32(&m.MaxEnvelope) || !s.ReadUint32(&m.PublishRate) ||
		!s.ReadUint32(&m.PublishBurst) || !s.ReadUint32(&m.RetentionDays) || !s.ReadUint8(&mode) ||
		!s.ReadUint64(&m.PolicyVersion) || !s.Empty() {
		return nil, badFrame(FrameInfo, "bad layout")
	}
	if len(versions) == 0 || len(versions) > MaxRelayVersions {
		return nil, badFrame(FrameInfo, "bad version list")
	}
	m.Versions = append([]uint8(nil), versions...)
	m.Policy = PolicyMode(mode)
	if m.Policy < PolicyOpen || m.Policy > PolicyInvite {
		return nil, badFrame(FrameInfo, "unknown policy")
	}
	return &m, nil
}

// Redeem presents an invite token: printable ASCII, at most
// MaxInviteToken bytes. The relay answers Redeemed or an Error.
type Redeem struct {
	Token string
}

func (m *Redeem) MarshalBinary() ([]byte, error) {
	if !validToken(m.Token) {
		return nil, errors.New("wire: invite token is not 1 to 64 printable ASCII bytes")
	}
	return []byte(m.Token), nil
}

func validToken(t string) bool {
	if len(t) == 0 || len(t) > MaxInviteToken {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= 0x20 || t[i] >= 0x7f {
			return false
		}
	}
	return true
}

// ParseRedeem parses a Redeem body.
func ParseRedeem(body []byte) (*Redeem, error) {
	if !validToken(string(body)) {
		return nil, badFrame(FrameRedeem, "bad token")
	}
	return &Redeem{Token: string(body)}, nil
}

// Committed tells a subscriber that every envelope the subscription has
// sent, up to and including the one with ID, is committed on the relay's
// disk. Live envelopes go out before their commit, so that delivery does
// not wait for the disk; a subscriber resumes from the last committed
// one, and skips what it had already been given.
type Committed struct {
	ID protocol.ID
}

func (m *Committed) MarshalBinary() ([]byte, error) { return append([]byte(nil), m.ID[:]...), nil }

// ParseCommitted parses a Committed body.
func ParseCommitted(body []byte) (*Committed, error) {
	if len(body) != len(protocol.ID{}) {
		return nil, badFrame(FrameCommitted, "bad layout")
	}
	return &Committed{ID: protocol.ID(body)}, nil
}

// ProveTree asks for the proofs that the relay's audit log of size New
// contains its logs of each size in Old: the client checks every
// checkpoint it sees against the newest one this way, many at a time.
type ProveTree struct {
	New uint64
	Old []uint64 // 1 to MaxProofs sizes, each from 1 to New
}

// MaxProofs is the most proofs one ProveTree asks for.
const MaxProofs = 64

func (m *ProveTree) MarshalBinary() ([]byte, error) {
	if len(m.Old) == 0 || len(m.Old) > MaxProofs || m.New > 1<<63-1 {
		return nil, fmt.Errorf("wire: prove tree: %d sizes in %d", len(m.Old), m.New)
	}
	for _, o := range m.Old {
		if o == 0 || o > m.New {
			return nil, fmt.Errorf("wire: prove tree %d in %d", o, m.New)
		}
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint64(m.New)
		b.AddUint8(uint8(len(m.Old)))
		for _, o := range m.Old {
			b.AddUint64(o)
		}
	}), nil
}

// ParseProveTree parses a ProveTree body.
func ParseProveTree(body []byte) (*ProveTree, error) {
	s := cryptobyte.String(body)
	var m ProveTree
	var n uint8
	if !s.ReadUint64(&m.New) || m.New > 1<<63-1 || !s.ReadUint8(&n) || n == 0 || n > MaxProofs {
		return nil, badFrame(FrameProveTree, "bad layout")
	}
	m.Old = make([]uint64, n)
	for i := range m.Old {
		if !s.ReadUint64(&m.Old[i]) || m.Old[i] == 0 || m.Old[i] > m.New {
			return nil, badFrame(FrameProveTree, "bad size")
		}
	}
	if !s.Empty() {
		return nil, badFrame(FrameProveTree, "trailing bytes")
	}
	return &m, nil
}

// TreeProof answers ProveTree: one proof per size asked, in order.
type TreeProof struct {
	Proofs [][][32]byte
}

func (m *TreeProof) MarshalBinary() ([]byte, error) {
	if len(m.Proofs) == 0 || len(m.Proofs) > MaxProofs {
		return nil, fmt.Errorf("wire: %d tree proofs", len(m.Proofs))
	}
	for _, p := range m.Proofs {
		if len(p) > MaxProofHashes {
			return nil, fmt.Errorf("wire: proof of %d hashes", len(p))
		}
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint8(uint8(len(m.Proofs)))
		for _, p := range m.Proofs {
			addHashes(b, p)
		}
	}), nil
}

// ParseTreeProof parses a TreeProof body.
func ParseTreeProof(body []byte) (*TreeProof, error) {
	s := cryptobyte.String(body)
	var n uint8
	if !s.ReadUint8(&n) || n == 0 || n > MaxProofs {
		return nil, badFrame(FrameTreeProof, "bad layout")
	}
	m := &TreeProof{Proofs: make([][][32]byte, n)}
	for i := range m.Proofs {
		if !readHashes(&s, &m.Proofs[i]) {
			return nil, badFrame(FrameTreeProof, "bad proof")
		}
	}
	if !s.Empty() {
		return nil, badFrame(FrameTreeProof, "trailing bytes")
	}
	return m, nil
}
