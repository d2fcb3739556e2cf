package transport

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/libp2p/go-yamux/v5"
	"github.com/parleychat/parley/relay/wire"
)

// TestYamuxCodes: the relay's codes survive a GoAway or a stream reset,
// and yamux's own codes never read as one of the relay's.
func TestYamuxCodes(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want wire.ErrorCode
	}{
		{0, wire.CodeOK},
		{1, wire.CodeInternal}, // yamux: protocol error
		{2, wire.CodeInternal}, // yamux: internal error
		{goAwayBase + uint32(wire.CodeBanned), wire.CodeBanned},
		{goAwayBase + uint32(wire.CodeShuttingDown), wire.CodeShuttingDown},
		{goAwayBase, wire.CodeOK},
		{goAwayBase + 0x10000, wire.CodeInternal},
	} {
		if got := codeOf(c.in); got != c.want {
			t.Errorf("codeOf(%#x) = %s, want %s", c.in, got, c.want)
		}
	}
	remote := fmt.Errorf("read: %w", &yamux.GoAwayError{Remote: true, ErrorCode: goAwayBase + uint32(wire.CodeBanned)})
	if err := RemoteError(remote); !errors.Is(err, &wire.RelayError{Code: wire.CodeBanned}) {
		t.Errorf("RemoteError(%v) = %v, want banned", remote, err)
	}
	reset := &yamux.StreamError{Remote: true, ErrorCode: goAwayBase + uint32(wire.CodeSlowConsumer)}
	if err := RemoteError(reset); !errors.Is(err, &wire.RelayError{Code: wire.CodeSlowConsumer}) {
		t.Errorf("RemoteError(%v) = %v, want slow consumer", reset, err)
	}
	local := &yamux.GoAwayError{Remote: false, ErrorCode: goAwayBase + uint32(wire.CodeBanned)}
	if err := RemoteError(local); err != local {
		t.Errorf("a local GoAway became %v", err)
	}
	for _, err := range []error{io.EOF, yamux.ErrStreamReset, yamux.ErrSessionShutdown, remote, reset} {
		if !IsStreamEnd(err) {
			t.Errorf("IsStreamEnd(%v) = false", err)
		}
	}
	if IsStreamEnd(errors.New("disk full")) {
		t.Error("IsStreamEnd of another error")
	}
}
