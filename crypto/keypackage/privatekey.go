package keypackage

import (
	"crypto/hpke"
	"fmt"
)

// PrivateKeyBytes returns the encoding of a private key of the suite, to
// keep in the client's store: 32 secret bytes from which the whole key
// follows. An error wraps ErrMalformed.
func PrivateKeyBytes(k hpke.PrivateKey) ([]byte, error) {
	kem, _, _ := Suite()
	if k == nil || k.KEM().ID() != kem.ID() {
		return nil, fmt.Errorf("%w: not a private key of the suite", ErrMalformed)
	}
	b, err := k.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: private key: %v", ErrMalformed, err)
	}
	return b, nil
}

// ParsePrivateKey parses what PrivateKeyBytes returns. An error wraps
// ErrMalformed.
func ParsePrivateKey(b []byte) (hpke.PrivateKey, error) {
	kem, _, _ := Suite()
	k, err := kem.NewPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: private key: %v", ErrMalformed, err)
	}
	return k, nil
}
