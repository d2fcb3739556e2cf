package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

type natsProc struct {
	proc
	url string
}

func startNATS(work, bin string) (*natsProc, error) {
	addr, err := freePort("tcp")
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-a", host, "-p", port)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (Debian package nats-server): %w", bin, err)
	}
	n := &natsProc{proc: proc{cmd}, url: "nats://" + addr}
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
		c, err := nats.Connect(n.url)
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
		c, err := nats.Connect(n.url)
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
	pub, err := nats.Connect(n.url)
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
		c, err := nats.Connect(n.url)
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
				c, err := nats.Connect(n.url) // CONNECT, then PING/PONG
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
