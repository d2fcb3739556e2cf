package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"math/big"

	"golang.org/x/crypto/ssh"
)

// Fingerprint returns the key's fingerprint exactly as OpenSSH shows it
// (ssh-keygen -l): "SHA256:" and the unpadded base64 of the SHA-256 of the
// key in SSH wire format. People compare it out of band to verify a contact.
func (pk PublicKey) Fingerprint() string {
	return ssh.FingerprintSHA256(pk.sshKey())
}

// ShortFingerprint returns the first characters of the fingerprint's hash,
// for a user interface where the whole fingerprint does not fit. It is a
// label for the eye, not something to decide trust by.
func (pk PublicKey) ShortFingerprint() string {
	sum := sha256.Sum256(pk.sshKey().Marshal())
	return base64.RawStdEncoding.EncodeToString(sum[:])[:shortLen]
}

const shortLen = 8

func (pk PublicKey) sshKey() ssh.PublicKey {
	k, err := ssh.NewPublicKey(ed25519.PublicKey(pk.k[:]))
	if err != nil {
		// NewPublicKey fails only for key types it does not know.
		panic("identity: ssh.NewPublicKey(ed25519): " + err.Error())
	}
	return k
}

// SSHAuthorizedKey returns the key in the form of an authorized_keys line,
// without a trailing newline.
func (pk PublicKey) SSHAuthorizedKey() string {
	b := ssh.MarshalAuthorizedKey(pk.sshKey())
	return string(b[:len(b)-1])
}

// PeerID returns the libp2p peer ID of the same key, in its usual text form
// (base58btc, "12D3KooW..."). A Parley peer's libp2p host key is its identity
// key, so the peer ID names the person.
//
// The ID is the identity multihash (code 0x00) of the key's libp2p protobuf
// encoding (field 1: key type 1 = Ed25519; field 2: the 32 key bytes); libp2p
// inlines keys of at most 42 bytes this way instead of hashing them.
func (pk PublicKey) PeerID() string {
	const (
		protoLen     = 4 + ed25519.PublicKeySize
		identityHash = 0x00
	)
	b := make([]byte, 0, 2+protoLen)
	b = append(b, identityHash, protoLen)
	b = append(b, 0x08, 0x01, 0x12, ed25519.PublicKeySize)
	b = append(b, pk.k[:]...)
	return base58(b)
}

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// base58 encodes b in Bitcoin's base58 alphabet, as multibase base58btc does.
func base58(b []byte) string {
	zeros := 0
	for zeros < len(b) && b[zeros] == 0 {
		zeros++
	}
	n := new(big.Int).SetBytes(b)
	radix := big.NewInt(58)
	mod := new(big.Int)
	var out []byte
	for n.Sign() > 0 {
		n.DivMod(n, radix, mod)
		out = append(out, base58Alphabet[mod.Int64()])
	}
	for range zeros {
		out = append(out, base58Alphabet[0])
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return string(out)
}
