package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/parleychat/parley/internal/freeport"
)

type natsProc struct {
	proc
	url  string
	opts []nats.Option // how clients connect: with TLS, the server's root
	name string        // in the tables
}

func (n *natsProc) connect() (*nats.Conn, error) { return nats.Connect(n.url, n.opts...) }

// startNATS starts a nats-server, with TLS 1.3 on its client port if
// secure: clients then encrypt and authenticate the server, as the relay's
// do over QUIC.
func startNATS(work, bin string, secure bool) (*natsProc, error) {
	addr, err := freeport.Loopback()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-a", host, "-p", port}
	n := &natsProc{url: "nats://" + addr, name: "nats-server"}
	if secure {
		certFile, keyFile, pool, err := selfSigned(work, host)
		if err != nil {
			return nil, err
		}
		args = append(args, "--tls", "--tlscert", certFile, "--tlskey", keyFile)
		n.opts = []nats.Option{nats.Secure(&tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS13})}
		n.url, n.name = "tls://"+addr, "nats-server, TLS"
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (Debian package nats-server): %w", bin, err)
	}
	n.proc = proc{cmd}
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return n, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.stop()
	return nil, fmt.Errorf("nats-server not listening on %s", addr)
}

// payload is 256 bytes: the message number and the send time first.
func payload(i int, at time.Time) []byte {
	p := make([]byte, 256)
	binary.BigEndian.PutUint64(p, uint64(i))
	binary.BigEndian.PutUint64(p[8:], uint64(at.UnixNano()))
	return p
}

func natsPublish(n *natsProc, clients, each int) (result, error) {
	conns := make([]*nats.Conn, clients)
	for i := range conns {
		c, err := n.connect()
		if err != nil {
			return result{}, err
		}
		defer c.Close()
		conns[i] = c
	}
	p := payload(0, time.Now())
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for i, c := range conns {
		wg.Go(func() {
			subj := fmt.Sprintf("publish.%d", i)
			for range each {
				if err := c.Publish(subj, p); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
			if err := c.Flush(); err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		return result{}, *e
	}
	return result{n: clients * each, rate: float64(clients*each) / time.Since(start).Seconds()}, nil
}

func natsFanoutRun(n *natsProc, subs, msgs int, interval time.Duration) (result, error) {
	subj := fmt.Sprintf("fanout.%d.%d", subs, time.Now().UnixNano())
	var got, last atomic.Int64
	lat := make([][]time.Duration, subs)
	var mu sync.Mutex
	done := make(chan struct{}, subs)
	for s := range subs {
		c, err := n.connect()
		if err != nil {
			return result{}, err
		}
		defer c.Close()
		count := 0
		_, err = c.Subscribe(subj, func(m *nats.Msg) {
			now := time.Now()
			at := time.Unix(0, int64(binary.BigEndian.Uint64(m.Data[8:])))
			mu.Lock()
			lat[s] = append(lat[s], now.Sub(at))
			mu.Unlock()
			got.Add(1)
			last.Store(now.UnixNano())
			count++
			if count == msgs {
				done <- struct{}{}
			}
		})
		if err != nil {
			return result{}, err
		}
		if err := c.Flush(); err != nil {
			return result{}, err
		}
	}
	pub, err := n.connect()
	if err != nil {
		return result{}, err
	}
	defer pub.Close()
	start := time.Now()
	var tick *time.Ticker
	if interval > 0 {
		tick = time.NewTicker(interval)
		defer tick.Stop()
	}
	for i := range msgs {
		if tick != nil {
			<-tick.C
		}
		if err := pub.Publish(subj, payload(i, time.Now())); err != nil {
			return result{}, err
		}
	}
	if err := pub.Flush(); err != nil {
		return result{}, err
	}
	timeout := time.After(30 * time.Second)
	for range subs {
		select {
		case <-done:
		case <-timeout:
		}
	}
	mu.Lock()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	mu.Unlock()
	p50, p99 := percentiles(all)
	k := got.Load()
	elapsed := time.Unix(0, last.Load()).Sub(start)
	return result{n: int(k), rate: float64(k) / elapsed.Seconds(), p50: p50, p99: p99, lost: subs*msgs - int(k)}, nil
}

func natsFanout(n *natsProc, subs, msgs int) (result, error) { return natsFanoutRun(n, subs, msgs, 0) }

func natsLatency(n *natsProc, rate, msgs int) (result, error) {
	return natsFanoutRun(n, 1, msgs, time.Second/time.Duration(rate))
}

func natsIdle(n *natsProc, count int) (int64, int64, error) {
	time.Sleep(2 * time.Second)
	before, err := rss(n.cmd.Process.Pid)
	if err != nil {
		return 0, 0, err
	}
	for i := range count {
		c, err := n.connect()
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		if _, err := c.SubscribeSync(fmt.Sprintf("idle.%d", i%100)); err != nil {
			return 0, 0, err
		}
		if err := c.Flush(); err != nil {
			return 0, 0, err
		}
	}
	time.Sleep(2 * time.Second)
	after, err := rss(n.cmd.Process.Pid)
	return before, after, err
}

func natsConnect(n *natsProc, conc int, d time.Duration) (int, float64, error) {
	var count atomic.Int64
	var failed atomic.Pointer[error]
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				c, err := n.connect() // CONNECT, then PING/PONG
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				c.Close()
				count.Add(1)
			}
		})
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		return 0, 0, *e
	}
	k := int(count.Load())
	return k, float64(k) / time.Since(start).Seconds(), nil
}

// selfSigned writes an ECDSA P-256 certificate for host and its key into
// dir and returns their files and a pool that trusts the certificate.
func selfSigned(dir, host string) (string, string, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(host)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile := filepath.Join(dir, "nats-cert.pem"), filepath.Join(dir, "nats-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", "", nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool, nil
}
