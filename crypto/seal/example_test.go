package seal_test

import (
	"fmt"

	"github.com/parleychat/parley/crypto/ratchet"
	"github.com/parleychat/parley/crypto/seal"
)

// A sender seals each message under the next key of its chain; a receiver
// that holds the same chain key opens them in any order, each once.
func Example() {
	ck := ratchet.ChainKey{7} // in practice: fresh, and sealed to each member (package senderkey)
	sender, receiver := &ratchet.Sender{Chain: ck}, ratchet.NewReceiver(ck)

	var sealed [][]byte
	for _, msg := range []string{"first", "second"} {
		index, mk, _ := sender.Key()
		aad := fmt.Appendf(nil, "room ~r, index %d", index) // binds the context
		ct, _ := seal.Seal(mk, aad, []byte(msg))
		sealed = append(sealed, ct)
	}
	for _, index := range []uint32{1, 0, 1} {
		mk, err := receiver.Key(index)
		if err != nil {
			fmt.Println(index, err)
			continue
		}
		pt, err := seal.Open(mk, fmt.Appendf(nil, "room ~r, index %d", index), sealed[index])
		fmt.Println(index, string(pt), err, len(sealed[index]))
	}
	// Output:
	// 1 second <nil> 80
	// 0 first <nil> 80
	// 1 ratchet: message key gone: index 1, chain at 2
}
