package wire

import (
	"bytes"
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/parleychat/parley/identity"
)

// The frames of key packages: a person puts their newest one on the
// relay, and anyone asks for those of the people they want to encrypt
// to. The frame layer checks only a package's size; the relay parses and
// verifies what it is given (crypto/keypackage), and a client what it
// is sent.

// PutKeys gives the relay the connection's identity's newest key package,
// encoded, in place of the one it has. The relay answers KeysStored or an
// Error.
type PutKeys struct {
	Package []byte
}

func (m *PutKeys) MarshalBinary() ([]byte, error) {
	if err := checkPackageSize(len(m.Package)); err != nil {
		return nil, err
	}
	return bytes.Clone(m.Package), nil
}

func checkPackageSize(n int) error {
	if n == 0 || n > MaxKeyPackage {
		return fmt.Errorf("wire: key package of %d bytes, want 1 to %d", n, MaxKeyPackage)
	}
	return nil
}

// ParsePutKeys parses a PutKeys body. A body over MaxKeyPackage is an
// error wrapping ErrFrameTooLarge (and ErrBadFrame).
func ParsePutKeys(body []byte) (*PutKeys, error) {
	p, err := parsePackage(FramePutKeys, body)
	if err != nil {
		return nil, err
	}
	return &PutKeys{Package: p}, nil
}

func parsePackage(t FrameType, body []byte) ([]byte, error) {
	switch {
	case len(body) == 0:
		return nil, badFrame(t, "no key package")
	case len(body) > MaxKeyPackage:
		return nil, fmt.Errorf("%w: %s: key package of %d bytes, limit %d", ErrFrameTooLarge, t, len(body), MaxKeyPackage)
	}
	return bytes.Clone(body), nil
}

// GetKeys asks for the newest key packages of identities, 1 to MaxGetKeys
// of them, each named once. The relay answers with a KeyPackage frame for
// each that has one that has not expired, in the order asked, and an End.
type GetKeys struct {
	Keys []identity.PublicKey
}

func (m *GetKeys) MarshalBinary() ([]byte, error) {
	if len(m.Keys) == 0 || len(m.Keys) > MaxGetKeys {
		return nil, fmt.Errorf("wire: %d keys in a get-keys, want 1 to %d", len(m.Keys), MaxGetKeys)
	}
	seen := make(map[[32]byte]bool, len(m.Keys))
	for _, k := range m.Keys {
		if k.IsZero() || seen[k.Array()] {
			return nil, fmt.Errorf("wire: get-keys: key %s is zero or named twice", k)
		}
		seen[k.Array()] = true
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint16(uint16(len(m.Keys)))
		for _, k := range m.Keys {
			b.AddBytes(k.Bytes())
		}
	}), nil
}

// ParseGetKeys parses a GetKeys body: a key that is not a valid identity
// key (identity.PublicKeyFromBytes), or one named twice, is an error.
func ParseGetKeys(body []byte) (*GetKeys, error) {
	s := cryptobyte.String(body)
	var n uint16
	if !s.ReadUint16(&n) || n == 0 || n > MaxGetKeys || len(s) != int(n)*32 {
		return nil, badFrame(FrameGetKeys, "bad layout")
	}
	m := &GetKeys{Keys: make([]identity.PublicKey, n)}
	seen := make(map[string]bool, n)
	for i := range m.Keys {
		var b []byte
		s.ReadBytes(&b, 32)
		k, err := identity.PublicKeyFromBytes(b)
		if err != nil {
			return nil, badFrame(FrameGetKeys, fmt.Sprintf("key %d: %v", i, err))
		}
		if seen[string(b)] {
			return nil, badFrame(FrameGetKeys, fmt.Sprintf("key %d named twice", i))
		}
		seen[string(b)] = true
		m.Keys[i] = k
	}
	return m, nil
}

// KeyPackage is one key package the relay stores, as its identity signed
// it. A client parses and verifies it (keypackage.Parse).
type KeyPackage struct {
	Package []byte
}

func (m *KeyPackage) MarshalBinary() ([]byte, error) {
	if err := checkPackageSize(len(m.Package)); err != nil {
		return nil, err
	}
	return bytes.Clone(m.Package), nil
}

// ParseKeyPackage parses a KeyPackage body.
func ParseKeyPackage(body []byte) (*KeyPackage, error) {
	p, err := parsePackage(FrameKeyPackage, body)
	if err != nil {
		return nil, err
	}
	return &KeyPackage{Package: p}, nil
}
