package audit

import (
	"fmt"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// MemberDetail is the Detail of the publish record of a private room's
// member-list change: what it did, to whom, in ASCII ("member: add
// SHA256:abcd1234..."); empty for any other envelope. The relay writes
// it and a client that checks its receipt rebuilds it, from the envelope
// alone, so both agree byte for byte.
func MemberDetail(env *protocol.Envelope) string {
	if env.Kind != protocol.KindMember {
		return ""
	}
	c, err := protocol.ParseChange(env.Payload)
	if err != nil {
		return ""
	}
	short := func(k identity.PublicKey) string { return "SHA256:" + k.ShortFingerprint() + "..." }
	switch c.Op {
	case protocol.OpCreate, protocol.OpRename:
		return fmt.Sprintf("member: %s %+q", c.Op, c.Name)
	case protocol.OpAdd, protocol.OpRemove, protocol.OpAdmin, protocol.OpUnadmin:
		return fmt.Sprintf("member: %s %s", c.Op, short(c.Target))
	case protocol.OpInvite:
		return fmt.Sprintf("member: invite %s, %d uses, expires %s", short(c.Target), c.Uses,
			time.Unix(int64(c.Expires), 0).UTC().Format(time.RFC3339))
	case protocol.OpRevoke:
		return fmt.Sprintf("member: revoke invite %s", short(c.Target))
	case protocol.OpJoin:
		return fmt.Sprintf("member: join %s, invite %s of %s", short(env.Sender), short(c.Cap.Key), short(c.Cap.Issuer))
	}
	return "member: " + c.Op.String()
}
