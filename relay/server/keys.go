package server

import (
	"context"
	"errors"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// Key packages: each identity's newest end-to-end encryption key
// package, which the relay keeps and serves to anyone admitted, so that
// someone can encrypt to a person before they share a room. Nothing of a
// package is secret (a public key, signed by its identity), and a relay
// cannot forge one: it is the identity's signature that a client checks.
// Neither request is recorded in the audit log.

// putKeys stores the connection's identity's key package. The checks, in
// order: the package parses and its signature verifies (Error 16 for an
// unknown version, 19 otherwise); it is the connection's identity's
// (4); the policy lets the identity use the relay (13, 14), as for a
// publish, though a package belongs to no room; the identity's rate, the
// publish rate, admins exempt (6); it has not expired and is not made
// too far in the future (20); it is newer than the one stored (8,
// stale).
func (s *Server) putKeys(ctx context.Context, c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParsePutKeys(body)
	if err != nil {
		return err
	}
	p, err := keypackage.Parse(m.Package)
	switch {
	case errors.Is(err, keypackage.ErrUnknownVersion):
		return &wire.RelayError{Code: wire.CodeUnsupported, Message: err.Error()}
	case err != nil:
		return &wire.RelayError{Code: wire.CodeBadKeyPackage, Message: err.Error()}
	}
	if !p.Identity.Equal(c.id) {
		return &wire.RelayError{Code: wire.CodeNotSender,
			Message: "the key package is of " + p.Identity.Fingerprint() + ", the connection is " + c.fp}
	}
	if d := s.policy.connect(c.fp); !d.Allow {
		return d.Err()
	}
	now := s.now()
	if !s.policy.admin(c.fp) && !s.idRates.allow(c.fp, now) {
		return &wire.RelayError{Code: wire.CodeRateLimited, Message: "over the publish rate, which key packages share"}
	}
	if err := p.Valid(now); err != nil {
		return &wire.RelayError{Code: wire.CodeExpired, Message: err.Error()}
	}
	// One package per identity for now: a package of another device
	// replaces the stored one like any newer package. Several devices
	// will need one per (identity, device).
	err = s.st.PutKeyPackage(ctx, p.Identity, p.Created, p.Expires, m.Package)
	if errors.Is(err, store.ErrStaleKeyPackage) {
		return &wire.RelayError{Code: wire.CodeStale, Message: "the relay has a newer key package of " + c.fp}
	}
	if err != nil {
		c.log.Error("key package not stored", "err", err)
		return err
	}
	c.log.Debug("key package stored", "created", p.Created, "expires", p.Expires)
	return fw.Raw(wire.FrameKeysStored, nil)
}

// getKeys answers the stored key packages of the keys asked that have
// one not expired, in the order asked, then End. Any admitted identity
// may ask; a key with no package is left out.
func (s *Server) getKeys(ctx context.Context, c *client, fw *wire.Writer, body []byte) error {
	m, err := wire.ParseGetKeys(body)
	if err != nil {
		return err
	}
	if d := s.policy.connect(c.fp); !d.Allow {
		return d.Err()
	}
	raws, err := s.st.KeyPackages(ctx, m.Keys, s.now())
	if err != nil {
		return err
	}
	for _, raw := range raws {
		if err := fw.Raw(wire.FrameKeyPackage, raw); err != nil {
			return err
		}
	}
	return fw.Msg(wire.FrameEnd, &wire.End{})
}
