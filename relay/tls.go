package relay

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/relay/wire"
)

// Both ends of a relay connection prove their identity the way libp2p's TLS
// handshake does: each presents a self-signed certificate, and TLS 1.3's
// CertificateVerify proves it holds the key. Here the certificate's key is
// the Ed25519 identity key itself, so the key a peer proved is the
// identity, with no extension to check and no handshake crypto of ours.
// The signatures do not collide with envelope signatures: TLS signs its
// own context string, a certificate signs DER, an envelope signs text that
// starts with "parley envelope signature".

// certificate makes a self-signed certificate for key. Its validity is
// wide: what it binds is the key, which the handshake proves, not a name
// or a time.
func certificate(key identity.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("relay: certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: key.Public().Fingerprint()},
		NotBefore:    time.Now().Add(-24 * time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	priv := key.Ed25519()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("relay: certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// ErrBadCertificate: the other end's certificate is not one self-signed
// Ed25519 certificate.
var ErrBadCertificate = errors.New("relay: bad peer certificate")

// peerIdentity checks the certificate chain the other end presented and
// returns the identity it names. The certificate's own signature is not
// checked: it proves nothing that TLS 1.3's CertificateVerify, which the
// handshake checks against the same key, does not prove already.
func peerIdentity(rawCerts [][]byte) (identity.PublicKey, error) {
	if len(rawCerts) != 1 {
		return identity.PublicKey{}, fmt.Errorf("%w: %d certificates, want 1", ErrBadCertificate, len(rawCerts))
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return identity.PublicKey{}, fmt.Errorf("%w: %v", ErrBadCertificate, err)
	}
	return CertIdentity(cert)
}

// CertIdentity returns the identity whose key a certificate holds.
func CertIdentity(cert *x509.Certificate) (identity.PublicKey, error) {
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return identity.PublicKey{}, fmt.Errorf("%w: key is not Ed25519", ErrBadCertificate)
	}
	pk, err := identity.PublicKeyFromBytes(pub)
	if err != nil {
		return identity.PublicKey{}, fmt.Errorf("%w: %v", ErrBadCertificate, err)
	}
	return pk, nil
}

// ErrWrongRelay: the relay proved a key other than the one its address
// names.
var ErrWrongRelay = errors.New("relay: the relay's key is not the one in its address")

// ServerTLS is the relay's TLS configuration: its identity's certificate,
// TLS 1.3, the relay protocol's ALPNs, and a client certificate required
// (any self-signed Ed25519 one: it names the client's identity).
func ServerTLS(key identity.PrivateKey) (*tls.Config, error) {
	return ServerTLSVersions(key, wire.Current)
}

// ServerTLSVersions is ServerTLS for a relay that speaks the relay
// protocol versions vs. The ALPN chosen is vs.Choose of the client's:
// a client that offers relay versions but none of vs completes the
// handshake, for the relay to refuse it saying both versions
// (wire.Versions.Refusal); one that offers no relay version fails it.
func ServerTLSVersions(key identity.PrivateKey, vs wire.Versions) (*tls.Config, error) {
	cert, err := certificate(key)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   vs.ALPNs(),
		// The chain is checked by peerIdentity, not against CAs: any
		// self-signed Ed25519 certificate proves an identity, and the
		// policy decides what that identity may do.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := peerIdentity(raw)
			return err
		},
		SessionTicketsDisabled: true, // no resumption: every connection proves its key
	}
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := conf.Clone()
		c.GetConfigForClient = nil
		if p := vs.Choose(hello.SupportedProtos); p != "" {
			c.NextProtos = []string{p}
		}
		return c, nil
	}
	return conf, nil
}

// clientTLS is a client's TLS configuration for the relay at relay: its
// identity's certificate, TLS 1.3, every relay protocol version this
// code speaks, highest first, and the relay's key checked.
func clientTLS(key identity.PrivateKey, relay Addr) (*tls.Config, error) {
	return clientTLSVersions(key, relay, wire.Current)
}

func clientTLSVersions(key identity.PrivateKey, relay Addr, vs wire.Versions) (*tls.Config, error) {
	cert, err := certificate(key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		NextProtos:         vs.ALPNs(),
		ServerName:         "parley-relay",
		InsecureSkipVerify: true, // no CA check: the pinned key is checked below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			got, err := peerIdentity(raw)
			if err != nil {
				return err
			}
			if got.Fingerprint() != relay.Fingerprint {
				return fmt.Errorf("%w: the address names %s, the relay at %s proved %s", ErrWrongRelay, relay.Fingerprint, relay.HostPort, got.Fingerprint())
			}
			return nil
		},
		SessionTicketsDisabled: true,
	}, nil
}
