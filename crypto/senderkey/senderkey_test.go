package senderkey_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/crypto/keypackage"
	"github.com/parleychat/parley/crypto/ratchet"
	"github.com/parleychat/parley/crypto/senderkey"
	"github.com/parleychat/parley/identity"
)

var sentinels = []error{senderkey.ErrOpen, senderkey.ErrMalformed}

// isOnly fails t unless err wraps want and no other sentinel.
func isOnly(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Fatalf("error %v wraps %v as well as %v", err, s, want)
		}
	}
}

func key(t testing.TB, n byte) identity.PrivateKey {
	t.Helper()
	k, err := identity.PrivateKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// recipient derives the package and private key of the known-answer test:
// the identity from seed 01..01, device 10..1f, created 2026-01-01, ikm
// 42..42 (the package of keypackage's known-answer test).
func recipient(t testing.TB, ikm byte) (*keypackage.Package, hpke.PrivateKey) {
	t.Helper()
	device := [keypackage.DeviceSize]byte{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f}
	created := time.Unix(1767225600, 0)
	p, priv, err := keypackage.Derive(key(t, 1), device, created, created.Add(keypackage.Lifetime), bytes.Repeat([]byte{ikm}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return p, priv
}

func info(t testing.TB, p *keypackage.Package) senderkey.Info {
	return senderkey.Info{Room: "~secret", Sender: key(t, 2).Public(), Recipient: p.Identity, Epoch: [16]byte{9}, Package: p.ID()}
}

func chain() ratchet.ChainKey {
	var ck ratchet.ChainKey
	for i := range ck {
		ck[i] = byte(i)
	}
	return ck
}

// knownSealed is the chain key 00 01 .. 1f sealed once, by Seal, to the
// package of recipient(t, 0x42) in the Info of info. Sealing is randomized;
// opening is not, so this pins the HPKE suite, the info encoding and the
// layout: a change of any makes every sealed key in the field unreadable.
const knownSealed = "eac41312b9ed82b85d153872b8c480c46a570a4d20ae93387be1a131fc1d0c3a14e5e7cf06729d7d9a0de9b76d9d8968" +
	"412deb7af8a99131ff766702da16c03b317eb95ec65cf401e179346fe38ec9d011887f006b3bed272bdf964adb545739" +
	"0112f1c94d7c392b5513acba5a082b1a957f68929f8b241a718abcfe6567d9b228b64076d0efbab420edfb901a2d7580" +
	"f5625af886d898cd4c05c0eafa37c5d9abc4a4b38da69309e2b67a3ba410d864f22bd6fa696d3867e09ea06256b0f60e" +
	"38d79e1a800f3f30cf03abbd1a51d613890ddec3b36baf671e4fb0fd1dcc6617a7411f4b6a8626700000a52ad5227494" +
	"1d383cab7f085a8d430476f30405e502a2a39e9b5a38f0ff78b623b0fb9468b63d339b56ca11fda1233a805ac860c0b2" +
	"38f2ce20eef5b9aa6587fa0ea8e2562319d1f79562752b7da7330e3b393e36ca6ece4f52499e76d240b50b7de439fd15" +
	"657bb03687c7b274492748b22ad234d75eff756a1b82dda67bbcbfe4bcaabc816adc3a697ad6bed2bb77c1df2fdc9b8f" +
	"143cb1e5fbf0e709dd1d9e77e3fdb0fcee5b3b942c530e69a6c8f21b0e10694306bb6c857efda59812d341df54f3bae7" +
	"e47c42a208217a7b76dd1a2d876e7c1256d3d5bbfb3cfcac1116bd982486d88cd720d7d6eb6b0c01b8af08694e73687a" +
	"70fba6eca86d9659e981b92ec98bf1a9d0349a60185be588e9add629527b55cd6f64ddd922f7e9685eaa9f48b437c3a2" +
	"90507e4b392eefc5d95634f113f639bef329c7dad85280657c1ec2f0dafa5d21f48ad3ac90c508c67337030e06bb757f" +
	"4fb584885ab4860ef86f934285eb3f73f16b28875822cbe745b1e3e76b3c43f3ce6232cb530cd5028d887d5b5821f81b" +
	"1f8665b2ce9af0079ed3628a4d5a3f50a4327830daef0387b7970f23929ebdad3f5b6d43c06990f03d253e2ed4d8d389" +
	"3f1ce964e33846649ef3e7fddeca9c06658a0cc4dcc370a06bfb304d5aa90f21608aa9aec23191e130cfa83ed297a23e" +
	"d073005aa01ad1324e12d16047b2fe9736cfae495a0ffa3b5eeb059dc529bc5472dd7208c126f6839bbed59249417440" +
	"c7d78c4876b67878003abf040fc509b4df2afbb15d7c291e944559bdd2bc404383fce7bc922c711c53b6916db57f7335" +
	"82db474cfa6722633b7a782016099d66725cf0213bbfbae8a91890bb56eb761f7a74b754a73d9f6c867d2e043b037358" +
	"c465ab3d497f1b464e5f64a77c17b0831a88e12b40e209cfc23b6bccc9444981799833e17981591a3b91a77762d30d30" +
	"5956dd49fe47a9d508b286572a61628058c3a5caa02765a3211ef50a0694c618a54873217589377bacf7b256f7795cd4" +
	"a45943db3137d6e0095d030eb6b36c175be8c26d45ef7cca5dfdf22e7f71fe40082ad647774f6ea243edb0f06e151d73" +
	"72187f5c3141926ab2f2ec1c5f8ab9b63889178ebc7f49d8ebdd42b8765ccc35010ee256520eda91bfc220ea140fee5b" +
	"3737f29aa297d74370ecf624ea6a31730a41a7d951b64543aded2fd1b578bdc6d7dd575088dbf7e272215272db9bdd08" +
	"0700ce716dca9b4609aa03b6c9a2354c39e94ea6197ca47067f537c3a258c2ca6f52e3fdf90ab9793a2aab0db2139d9a" +
	"47c9d3d5b5b22190ee3e04c61f094441"

func TestOpenKnownAnswer(t *testing.T) {
	p, priv := recipient(t, 0x42)
	sealed, err := hex.DecodeString(knownSealed)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := senderkey.Open(priv, info(t, p), sealed)
	if err != nil {
		t.Fatal(err)
	}
	if ck != chain() {
		t.Fatalf("chain key %x, want %x", ck, chain())
	}
}

// TestSealedSize checks SealedSize against the suite itself.
func TestSealedSize(t *testing.T) {
	p, _ := recipient(t, 0x42)
	pub, err := p.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	_, kdf, aead := keypackage.Suite()
	enc, s, err := hpke.NewSender(pub, kdf, aead, nil)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := s.Seal(nil, make([]byte, len(ratchet.ChainKey{})))
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) != senderkey.EncSize || len(enc)+len(ct) != senderkey.SealedSize || senderkey.SealedSize != 1120+32+16 {
		t.Fatalf("enc %d + sealed %d bytes; EncSize %d, SealedSize %d", len(enc), len(ct), senderkey.EncSize, senderkey.SealedSize)
	}
}

func seal(t testing.TB, p *keypackage.Package, in senderkey.Info) []byte {
	t.Helper()
	b, err := senderkey.Seal(p, in, chain())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != senderkey.SealedSize {
		t.Fatalf("sealed key of %d bytes, want %d", len(b), senderkey.SealedSize)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	p, priv := recipient(t, 7)
	in := info(t, p)
	a, b := seal(t, p, in), seal(t, p, in)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of one key are equal")
	}
	for _, s := range [][]byte{a, b} {
		if ck, err := senderkey.Open(priv, in, s); err != nil || ck != chain() {
			t.Fatalf("open: %x %v", ck, err)
		}
	}
	in.Room = strings.Repeat("r", senderkey.MaxRoomLen)
	if ck, err := senderkey.Open(priv, in, seal(t, p, in)); err != nil || ck != chain() {
		t.Fatalf("longest room: %v", err)
	}
}

// TestContextBound: a sealed key opens only in the Info it was sealed in.
func TestContextBound(t *testing.T) {
	p, priv := recipient(t, 7)
	in := info(t, p)
	sealed := seal(t, p, in)
	others := map[string]func(*senderkey.Info){
		"room":      func(i *senderkey.Info) { i.Room = "~other" },
		"no room":   func(i *senderkey.Info) { i.Room = "" },
		"sender":    func(i *senderkey.Info) { i.Sender = key(t, 3).Public() },
		"recipient": func(i *senderkey.Info) { i.Recipient = key(t, 3).Public() },
		"epoch":     func(i *senderkey.Info) { i.Epoch[15] ^= 1 },
		"package":   func(i *senderkey.Info) { i.Package[0] ^= 1 },
		"swapped":   func(i *senderkey.Info) { i.Sender, i.Recipient = i.Recipient, i.Sender },
	}
	for name, change := range others {
		other := in
		change(&other)
		_, err := senderkey.Open(priv, other, sealed)
		if err == nil {
			t.Errorf("opens with another %s", name)
			continue
		}
		isOnly(t, err, senderkey.ErrOpen)
	}
	_, otherPriv := recipient(t, 8)
	_, err := senderkey.Open(otherPriv, in, sealed)
	isOnly(t, err, senderkey.ErrOpen)
}

// TestTamper: a sealed key with any byte changed does not open.
func TestTamper(t *testing.T) {
	p, priv := recipient(t, 7)
	in := info(t, p)
	sealed := seal(t, p, in)
	for i := range sealed {
		c := bytes.Clone(sealed)
		c[i] ^= 0x80
		_, err := senderkey.Open(priv, in, c)
		isOnly(t, err, senderkey.ErrOpen)
	}
}

func TestRefuses(t *testing.T) {
	p, priv := recipient(t, 7)
	in := info(t, p)
	for name, change := range map[string]func(*senderkey.Info){
		"another recipient": func(i *senderkey.Info) { i.Recipient = key(t, 3).Public() },
		"another package":   func(i *senderkey.Info) { i.Package[31] ^= 1 },
		"long room":         func(i *senderkey.Info) { i.Room = strings.Repeat("r", senderkey.MaxRoomLen+1) },
		"no sender":         func(i *senderkey.Info) { i.Sender = identity.PublicKey{} },
	} {
		other := in
		change(&other)
		_, err := senderkey.Seal(p, other, chain())
		if err == nil {
			t.Errorf("%s: seals", name)
			continue
		}
		isOnly(t, err, senderkey.ErrMalformed)
	}
	sealed := seal(t, p, in)
	for _, b := range [][]byte{nil, sealed[:len(sealed)-1], append(bytes.Clone(sealed), 0)} {
		_, err := senderkey.Open(priv, in, b)
		isOnly(t, err, senderkey.ErrMalformed)
	}
	x25519, err := hpke.DHKEM(ecdh.X25519()).GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []hpke.PrivateKey{nil, x25519} {
		_, err = senderkey.Open(k, in, sealed)
		isOnly(t, err, senderkey.ErrMalformed)
	}
}
