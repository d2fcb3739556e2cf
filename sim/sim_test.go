package sim

import (
	"bytes"
	"context"
	"encoding/xml"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestChurn runs 20 peers in 2 rooms with 3 leaving and coming back while
// 60 messages go out, and checks that every message reaches every peer of
// its room that was online when it was sent, and every peer that was away
// and came back.
func TestChurn(t *testing.T) {
	cfg := Config{
		Peers: 20, Rooms: 2, Relays: 1,
		LatencyMin: 5 * time.Millisecond, LatencyMax: 20 * time.Millisecond,
		// One leaves every 2 s: 3 leave in the 6 s, each away 1-2 s.
		ChurnPerMin: 1.5, OfflineMin: time.Second, OfflineMax: 2 * time.Second,
		Rate: 10, Duration: 6 * time.Second, Warmup: 2 * time.Second,
		// Generous for a loaded machine under -race; a healthy run ends
		// as soon as everything has arrived.
		Drain: 90 * time.Second, SampleEvery: 2 * time.Second,
		Bootstrap: 4, Seed: 1, Dir: t.TempDir(),
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var tab bytes.Buffer
	WriteTable(&tab, []Result{r})
	t.Logf("\n%s", tab.String())
	if r.Messages < 50 {
		t.Errorf("%d messages published, want about 60", r.Messages)
	}
	if r.Leaves != 3 || r.Returns != 3 {
		t.Errorf("%d left and %d returned, want 3 and 3", r.Leaves, r.Returns)
	}
	if r.Expected == 0 || r.Delivered != r.Expected {
		t.Errorf("delivered %d of %d expected to peers online at publication", r.Delivered, r.Expected)
	}
	if r.CatchUpDelivered != r.CatchUpExpected {
		t.Errorf("caught up %d of %d due to peers away at publication", r.CatchUpDelivered, r.CatchUpExpected)
	}
	if r.AppDups != 0 {
		t.Errorf("%d messages handed to the application twice", r.AppDups)
	}
	if r.BytesPerDelivery <= 0 || r.ViewTruth <= 0 || r.P99ms <= 0 {
		t.Errorf("bytes/delivery %v, view truth %v, p99 %v: want all positive", r.BytesPerDelivery, r.ViewTruth, r.P99ms)
	}
	// Twenty nodes gossiping for 6 s take CPU and leave a live heap (the
	// collector runs at least once as they start: their stores alone are
	// past the first heap goal).
	if p := r.Process; p.Cores <= 0 || p.LiveHeapMB <= 0 || p.GCShare < 0 || p.GCShare > 1 {
		t.Errorf("process %+v: want CPU, a live heap and a collector's share in [0, 1]", p)
	}
}

// TestSummarize computes the figures of a known ledger.
func TestSummarize(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := newLedger(4)
	// Message 0 from peer 0: peers 1, 2 online, 3 away.
	l.publish(publication{room: 0, sender: 0, at: t0, online: []int{1, 2}, offline: []int{3}})
	// Message 1 from peer 1: peers 0, 2, 3 online.
	l.publish(publication{room: 0, sender: 1, at: t0, online: []int{0, 2, 3}})
	l.receive(1, 0, t0.Add(100*time.Millisecond), "mesh")
	l.receive(1, 0, t0.Add(300*time.Millisecond), "mesh") // a second copy
	l.receive(3, 0, t0.Add(5*time.Second), "sync")        // caught up
	l.receive(0, 1, t0.Add(200*time.Millisecond), "mesh")
	l.receive(2, 1, t0.Add(2*time.Second), "sync")
	l.receive(0, 0, t0, "mesh") // its own: not counted
	l.sample(viewSample{known: 4, truth: 4, hit: 3, conns: 5})
	l.sample(viewSample{known: 2, truth: 4, hit: 2, conns: 3})
	r := l.summarize(6, 8000)
	want := Result{
		Messages: 2, Expected: 5, Delivered: 3, ByMesh: 2, BySync: 1, DeliveryPct: 60,
		CatchUpExpected: 1, CatchUpDelivered: 1,
		P50ms: 200, P99ms: 2000, LiveP99ms: 200,
		DupsPerDelivery: 3, AppDups: 1, BytesPerDelivery: 2000,
		ViewKnown: 3, ViewTruth: 4, ViewRecall: 0.625, ViewMinRecall: 0.5, ViewConns: 4,
		P99ByMinute: []float64{2000},
	}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("got  %+v\nwant %+v", r, want)
	}
	if l.missing() != 2 {
		t.Errorf("missing %d, want 2 (message 0 at 2, message 1 at 3)", l.missing())
	}
}

// TestP99ByMinute puts each delivery under the minute its message was
// published in, counted from the first publication.
func TestP99ByMinute(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := newLedger(2)
	for i, at := range []time.Duration{0, 59 * time.Second, 150 * time.Second} {
		l.publish(publication{sender: 0, at: t0.Add(at), online: []int{1}})
		l.receive(1, i, t0.Add(at+time.Duration(i+1)*100*time.Millisecond), "mesh")
	}
	// Minute 0 has 100 and 200 ms, minute 1 nothing, minute 2 300 ms.
	r := l.summarize(0, 0)
	if want := []float64{200, 0, 300}; !reflect.DeepEqual(r.P99ByMinute, want) {
		t.Errorf("p99 by minute %v, want %v", r.P99ByMinute, want)
	}
}

func TestPlotIsSVG(t *testing.T) {
	var rs []Result
	for i, c := range []float64{0, 0.05, 0.1, 0.2} {
		rs = append(rs, Result{Config: Config{Peers: 100, ChurnPerMin: c}, DeliveryPct: 100 - float64(i)/10, P99ms: 300 + 100*float64(i)})
	}
	var b bytes.Buffer
	if err := PlotChurn(&b, rs); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&b)
	lines := 0
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	if lines != 2 {
		t.Errorf("%d polylines, want 2 (delivery and p99 of one series)", lines)
	}
}

// TestTableShowsRepeats: the printed table names the messages handed to
// an application twice, which the JSON always had and the table left out.
func TestTableShowsRepeats(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, []Result{{Label: "1000p 10%/min 0r", AppDups: 7, DupsPerDelivery: 5.1}}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("table of %d lines, want a header and a row:\n%s", len(lines), b.String())
	}
	if !slices.Contains(strings.Fields(lines[0]), "twice") {
		t.Fatalf("no column twice in %q", lines[0])
	}
	// The column follows dups/deliv.
	row := strings.Fields(lines[1])
	i := slices.Index(row, "5.10")
	if i < 0 || i+1 >= len(row) || row[i+1] != "7" {
		t.Errorf("want 7 after dups/deliv's 5.10 in %q", lines[1])
	}
}
