package protocol

import "errors"

// Errors that callers branch on with errors.Is. An error from this package
// wraps exactly one of them and adds the detail.
var (
	// ErrMalformed: the input is not a valid encoding (truncated, padded,
	// over-long or out-of-range fields, trailing bytes). The peer that sent
	// it is at fault.
	ErrMalformed = errors.New("protocol: malformed")
	// ErrTooLarge: the input is larger than the limit; it was not parsed.
	ErrTooLarge = errors.New("protocol: too large")
	// ErrUnknownVersion: the input is of a protocol version this code does
	// not know, most likely from a newer peer. Ignore it; do not punish.
	ErrUnknownVersion = errors.New("protocol: unknown version")
	// ErrBadSignature: the signature does not verify under the sender key.
	ErrBadSignature = errors.New("protocol: bad signature")
	// ErrReplay: the sequence number was seen before or is older than the
	// replay window.
	ErrReplay = errors.New("protocol: replay")
	// ErrExpired: the timestamp is outside the skew accepted for live
	// delivery.
	ErrExpired = errors.New("protocol: timestamp outside accepted skew")
	// ErrEquivocation: the sender signed two different envelopes with the
	// same room and sequence number. *EquivocationError has both IDs.
	ErrEquivocation = errors.New("protocol: equivocation")
)

// Finer cases of ErrReplay: errors.Is(err, ErrReplay) holds for both.
var (
	// ErrDuplicate: this very envelope (same ID) was accepted before. A
	// message that arrives on two paths gives this; it is harmless.
	ErrDuplicate = &subError{"protocol: replay: duplicate message", ErrReplay}
	// ErrBelowWindow: the sequence number is older than the replay window,
	// so the guard cannot tell a replay from a late message. History sync
	// decides such envelopes by their ID in the store instead.
	ErrBelowWindow = &subError{"protocol: replay: sequence number below the replay window", ErrReplay}
)

type subError struct {
	msg    string
	parent error
}

func (e *subError) Error() string { return e.msg }
func (e *subError) Unwrap() error { return e.parent }
