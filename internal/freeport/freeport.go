// Package freeport finds a loopback port number for a server to be
// started on later, by another process or after a restart: the relay
// listens on one number over both UDP (QUIC) and TCP, and a test that
// kills and restarts it needs the number to stay free in between.
package freeport

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// tries bounds how many numbers Loopback tries.
const tries = 200

// Loopback returns 127.0.0.1:PORT, where PORT was free on both UDP and
// TCP when asked. It is below the kernel's range of ports for outgoing
// sockets: every QUIC client and every TCP connection of a busy machine
// takes numbers from that range, and one of them could hold the port by
// the time the server binds it. Other processes that choose a number
// the same way may still pick it; the range is wide enough that this is
// rare, not impossible.
func Loopback() (string, error) {
	lo := ephemeralLow()
	for range tries {
		port := low + rand.IntN(lo-low)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if free(addr) {
			return addr, nil
		}
	}
	return "", errors.New("freeport: no port free on both UDP and TCP below the ephemeral range")
}

// low is the lowest number Loopback picks: below it are the ports that
// well-known services listen on.
const low = 10000

// ephemeralLow is the lowest port the kernel gives outgoing sockets.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return parseLow("")
	}
	return parseLow(string(b))
}

// parseLow reads the low end of ip_local_port_range ("32768\t60999\n"),
// or the kernel's default where that leaves too few numbers below it.
func parseLow(s string) int {
	const fallback = 32768
	f := strings.Fields(s)
	if len(f) == 0 {
		return fallback
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= low+1000 {
		return fallback
	}
	return n
}

// free reports whether addr can be bound over TCP and UDP now.
func free(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
