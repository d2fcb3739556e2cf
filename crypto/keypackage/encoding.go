package keypackage

import (
	"bytes"
	"crypto/hpke"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/parleychat/parley/identity"
	"golang.org/x/crypto/cryptobyte"
)

// checkFields checks what Parse checks of the fields other than the
// signature.
func (p *Package) checkFields() error {
	if p.Identity.IsZero() {
		return fmt.Errorf("%w: no identity", ErrMalformed)
	}
	if p.Created < 0 || p.Created > maxTime || p.Expires < 0 || p.Expires > maxTime {
		return fmt.Errorf("%w: time out of range (created %d, expires %d)", ErrMalformed, p.Created, p.Expires)
	}
	if p.Expires <= p.Created {
		return fmt.Errorf("%w: expires %d is not after created %d", ErrMalformed, p.Expires, p.Created)
	}
	// Both times are in [0, maxTime], so life cannot overflow; as a
	// time.Duration it could (2^62 s wraps to 0 ns), hence seconds.
	if life := p.Expires - p.Created; life > int64(MaxLifetime/time.Second) {
		return fmt.Errorf("%w: lifetime of %ds, limit %v", ErrMalformed, life, MaxLifetime)
	}
	if len(p.Public) != PublicKeySize {
		return fmt.Errorf("%w: public key of %d bytes, want %d", ErrMalformed, len(p.Public), PublicKeySize)
	}
	return nil
}

// appendSigned appends the part of the encoding that the signature covers.
func (p *Package) appendSigned(b []byte) ([]byte, error) {
	if err := p.checkFields(); err != nil {
		return b, err
	}
	kem, kdf, aead := Suite()
	bb := cryptobyte.NewBuilder(b)
	bb.AddUint8(Version)
	bb.AddUint16(kem.ID())
	bb.AddUint16(kdf.ID())
	bb.AddUint16(aead.ID())
	bb.AddBytes(p.Identity.Bytes())
	bb.AddBytes(p.Device[:])
	bb.AddUint64(uint64(p.Created))
	bb.AddUint64(uint64(p.Expires))
	bb.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.Public) })
	return bb.BytesOrPanic(), nil
}

// AppendBinary appends the encoding of p to b. It fails, with an error
// wrapping ErrMalformed, on fields that Parse would refuse; it does not
// check the signature.
func (p *Package) AppendBinary(b []byte) ([]byte, error) {
	b, err := p.appendSigned(b)
	if err != nil {
		return b, err
	}
	return append(b, p.Sig[:]...), nil
}

// MarshalBinary returns the encoding of p.
func (p *Package) MarshalBinary() ([]byte, error) {
	return p.AppendBinary(make([]byte, 0, MaxSize))
}

// ID returns the SHA-256 of p's encoding: the name under which the sealed
// keys for p are addressed. The encoding of a package is unique (Parse
// accepts one encoding per package, the signature included), so the ID is
// too. A package that does not encode has the zero ID.
func (p *Package) ID() [32]byte {
	b, err := p.MarshalBinary()
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(b)
}

// Parse parses an encoded package, strictly (exactly MaxSize bytes, every
// field in range, the public key one that the KEM accepts), and verifies
// its signature. It does not check the time: see Valid.
func Parse(b []byte) (*Package, error) {
	s := cryptobyte.String(b)
	var version uint8
	var kemID, kdfID, aeadID uint16
	if !s.ReadUint8(&version) {
		return nil, fmt.Errorf("%w: empty key package", ErrMalformed)
	}
	if version != Version {
		return nil, fmt.Errorf("%w: version %d", ErrUnknownVersion, version)
	}
	if !s.ReadUint16(&kemID) || !s.ReadUint16(&kdfID) || !s.ReadUint16(&aeadID) {
		return nil, fmt.Errorf("%w: truncated key package", ErrMalformed)
	}
	if kem, kdf, aead := Suite(); kemID != kem.ID() || kdfID != kdf.ID() || aeadID != aead.ID() {
		return nil, fmt.Errorf("%w: suite %#04x/%#04x/%#04x", ErrUnknownVersion, kemID, kdfID, aeadID)
	}
	p, err := parseFields(&s)
	if err != nil {
		return nil, err
	}
	if !s.CopyBytes(p.Sig[:]) {
		return nil, fmt.Errorf("%w: truncated key package", ErrMalformed)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: %d trailing bytes after key package", ErrMalformed, len(s))
	}
	msg := append([]byte(signingContext), b[:len(b)-SignatureSize]...)
	if !p.Identity.Verify(msg, p.Sig[:]) {
		return nil, fmt.Errorf("%w: key package of %s", ErrBadSignature, p.Identity)
	}
	return p, nil
}

// parseFields reads the fields from identity to the public key.
func parseFields(s *cryptobyte.String) (*Package, error) {
	var id, pub []byte
	var created, expires uint64
	p := new(Package)
	if !s.ReadBytes(&id, 32) || !s.CopyBytes(p.Device[:]) ||
		!s.ReadUint64(&created) || !s.ReadUint64(&expires) ||
		!s.ReadUint16LengthPrefixed((*cryptobyte.String)(&pub)) {
		return nil, fmt.Errorf("%w: truncated key package", ErrMalformed)
	}
	var err error
	if p.Identity, err = identity.PublicKeyFromBytes(id); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if created > maxTime || expires > maxTime {
		return nil, fmt.Errorf("%w: time out of range (created %d, expires %d)", ErrMalformed, created, expires)
	}
	p.Created, p.Expires = int64(created), int64(expires)
	p.Public = bytes.Clone(pub)
	if err := p.checkFields(); err != nil {
		return nil, err
	}
	if _, err := p.PublicKey(); err != nil {
		return nil, err
	}
	return p, nil
}

// PublicKey returns p's HPKE public key, to seal to. An error wraps
// ErrMalformed.
func (p *Package) PublicKey() (hpke.PublicKey, error) {
	kem, _, _ := Suite()
	pk, err := kem.NewPublicKey(p.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrMalformed, err)
	}
	return pk, nil
}
