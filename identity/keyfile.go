package identity

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/parleychat/parley/internal/atomicfile"
	"golang.org/x/crypto/ssh"
)

// Errors that Load returns, for callers to branch on with errors.Is.
var (
	// ErrKeyPermissions: the key file can be read or written by other users.
	ErrKeyPermissions = errors.New("identity: key file is accessible by other users")
	// ErrPassphraseRequired: the key file is encrypted and no passphrase was given.
	ErrPassphraseRequired = errors.New("identity: key file is protected by a passphrase")
	// ErrWrongPassphrase: the passphrase does not decrypt the key file.
	ErrWrongPassphrase = errors.New("identity: wrong passphrase")
	// ErrNotEd25519: the key file holds a key of another type.
	ErrNotEd25519 = errors.New("identity: not an Ed25519 key")
)

// KeyFileMode is the mode of key files that Save writes and Load accepts.
const KeyFileMode fs.FileMode = 0o600

// Save writes k to path as an OpenSSH private key file, the format of
// ssh-keygen, encrypted with passphrase unless it is empty. The file gets
// mode 0600 and is written atomically: a crash leaves the old file or the
// new one, never a partial key.
func Save(path string, k PrivateKey, passphrase []byte, comment string) error {
	if k.IsZero() {
		return fmt.Errorf("identity: save %s: no key", path)
	}
	var (
		block *pem.Block
		err   error
	)
	if len(passphrase) == 0 {
		block, err = ssh.MarshalPrivateKey(k.Ed25519(), comment)
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(k.Ed25519(), comment, passphrase)
	}
	if err != nil {
		return fmt.Errorf("identity: save %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, pem.EncodeToMemory(block), KeyFileMode); err != nil {
		return fmt.Errorf("identity: save key: %w", err)
	}
	return nil
}

// Load reads an OpenSSH Ed25519 private key file, such as one Save wrote or
// one made by "ssh-keygen -t ed25519". A file that other users can access is
// refused with ErrKeyPermissions. If the file is encrypted, passphrase is
// called for the passphrase; a nil passphrase makes Load fail with
// ErrPassphraseRequired instead.
func Load(path string, passphrase func() ([]byte, error)) (PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("identity: load key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return PrivateKey{}, fmt.Errorf("identity: load key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return PrivateKey{}, fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrKeyPermissions, path, perm, path)
	}
	const maxKeyFile = 64 << 10 // an Ed25519 key file is well under 1 KiB
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("identity: load key %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return PrivateKey{}, fmt.Errorf("%w: %s is larger than %d bytes", ErrMalformedKey, path, maxKeyFile)
	}
	k, err := ParsePrivateKey(data, passphrase)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ParsePrivateKey parses the content of an OpenSSH Ed25519 private key file.
// See Load for how passphrase is used.
func ParsePrivateKey(data []byte, passphrase func() ([]byte, error)) (PrivateKey, error) {
	raw, err := ssh.ParseRawPrivateKey(data)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		if passphrase == nil {
			return PrivateKey{}, ErrPassphraseRequired
		}
		pass, perr := passphrase()
		if perr != nil {
			return PrivateKey{}, fmt.Errorf("identity: read passphrase: %w", perr)
		}
		raw, err = ssh.ParseRawPrivateKeyWithPassphrase(data, pass)
		if errors.Is(err, x509.IncorrectPasswordError) {
			return PrivateKey{}, ErrWrongPassphrase
		}
	}
	if err != nil {
		return PrivateKey{}, fmt.Errorf("%w: %v", ErrMalformedKey, err)
	}
	var k ed25519.PrivateKey
	switch v := raw.(type) {
	case *ed25519.PrivateKey:
		k = *v
	case ed25519.PrivateKey:
		k = v
	default:
		return PrivateKey{}, fmt.Errorf("%w: the file holds a %T", ErrNotEd25519, raw)
	}
	if len(k) != ed25519.PrivateKeySize {
		return PrivateKey{}, fmt.Errorf("%w: private key is %d bytes", ErrMalformedKey, len(k))
	}
	// Rebuild from the seed so that a file whose public half does not match
	// its seed cannot give us a key that signs for someone else.
	return PrivateKeyFromSeed(k.Seed())
}
