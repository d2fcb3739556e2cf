package mesh

import (
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/parleychat/parley/identity"
)

// IdentityOf returns the identity whose key is peer p's: a node's peer ID
// is made from its identity key, so a relay's mesh address names the
// relay.
func IdentityOf(p peer.ID) (identity.PublicKey, error) { return identityOf(p) }
