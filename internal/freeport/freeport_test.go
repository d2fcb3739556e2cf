package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestLoopback: the address is on loopback, below the ephemeral range,
// and both a TCP listener and a UDP socket bind it; a number held on
// either is not free.
func TestLoopback(t *testing.T) {
	addr, err := Loopback()
	if err != nil {
		t.Fatal(err)
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	if host != "127.0.0.1" || port < low || port >= ephemeralLow() {
		t.Fatalf("%s: want 127.0.0.1 and a port in [%d, %d)", addr, low, ephemeralLow())
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP on %s: %v", addr, err)
	}
	if free(addr) {
		t.Errorf("%s is held on TCP, and free says it is free", addr)
	}
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP on %s: %v", addr, err)
	}
	l.Close()
	if free(addr) {
		t.Errorf("%s is held on UDP, and free says it is free", addr)
	}
	c.Close()
}

func TestParseLow(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"32768\t60999\n", 32768},
		{"40000 65000", 40000},
		{"", 32768},
		{"many ports", 32768},
		{"1024\t65535\n", 32768}, // too few numbers below it
		{"11000 60999", 32768},
		{"11001 60999", 11001},
	} {
		if got := parseLow(c.in); got != c.want {
			t.Errorf("parseLow(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}
