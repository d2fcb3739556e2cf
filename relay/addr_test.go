package relay

import (
	"strings"
	"testing"
)

func TestParseAddr(t *testing.T) {
	good := "SHA256:5jV9gJBjzXqNYZCm7iKTZC6XL5PqDH1RCOJS3SBkjtc@relay.example.org:4433"
	a, err := ParseAddr(good)
	if err != nil || a.HostPort != "relay.example.org:4433" || a.String() != good {
		t.Fatalf("%q: %+v, %v", good, a, err)
	}
	for _, bad := range []struct{ in, want string }{
		{"relay.example.org:4433", "want FINGERPRINT@HOST:PORT"},
		{"SHA256:short@relay.example.org:4433", "not a SHA256 key fingerprint"},
		{"MD5:5jV9gJBjzXqNYZCm7iKTZC6XL5PqDH1RCOJS3SBkjtc@h:1", "not a SHA256 key fingerprint"},
		{"SHA256:5jV9gJBjzXqNYZCm7iKTZC6XL5PqDH1RCOJS3SBkjtc@relay.example.org", "not HOST:PORT"},
		{"SHA256:5jV9gJBjzXqNYZCm7iKTZC6XL5PqDH1RCOJS3SBkjtc@:4433", "not HOST:PORT"},
	} {
		if _, err := ParseAddr(bad.in); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want an error saying %q", bad.in, err, bad.want)
		}
	}
}
