package sim

import (
	"cmp"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
)

// PlotChurn writes an SVG of delivery (left panel) and p99 latency (right
// panel) against churn, one line per run label without its churn (size
// and relays).
func PlotChurn(w io.Writer, rs []Result) error {
	series := map[string][]Result{}
	var names []string
	for _, r := range rs {
		name := fmt.Sprintf("%d peers, %d relays", r.Config.Peers, r.Config.Relays)
		if r.Config.KillRelayAt > 0 {
			name += " (1 killed)"
		}
		if _, ok := series[name]; !ok {
			names = append(names, name)
		}
		series[name] = append(series[name], r)
	}
	for _, n := range names {
		slices.SortFunc(series[n], func(a, b Result) int { return cmp.Compare(a.Config.ChurnPerMin, b.Config.ChurnPerMin) })
	}
	maxChurn, minDeliv, maxP99 := 0.0, 100.0, 0.0
	for _, r := range rs {
		maxChurn = math.Max(maxChurn, r.Config.ChurnPerMin*100)
		minDeliv = math.Min(minDeliv, r.DeliveryPct)
		maxP99 = math.Max(maxP99, r.P99ms)
	}
	xTop := niceCeil(math.Max(maxChurn, 1))
	dLow := math.Min(99, math.Floor(minDeliv))
	pTop := niceCeil(math.Max(maxP99, 1000))
	var b strings.Builder
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" width="900" height="380" font-family="sans-serif" font-size="12">` + "\n")
	b.WriteString(`<rect width="900" height="380" fill="white"/>` + "\n")
	left := panel{x: 70, y: 40, w: 330, h: 250, xTop: xTop, yLow: dLow, yTop: 100, title: "delivery (%) against churn (%/min)", goal: 99.9}
	right := panel{x: 520, y: 40, w: 330, h: 250, xTop: xTop, yLow: 0, yTop: pTop, title: "p99 latency (ms) against churn (%/min)", goal: 1000}
	left.axes(&b)
	right.axes(&b)
	colours := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}
	for k, n := range names {
		c := colours[k%len(colours)]
		left.line(&b, series[n], c, func(r Result) float64 { return r.DeliveryPct })
		right.line(&b, series[n], c, func(r Result) float64 { return r.P99ms })
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			70+k*200, 340, c, 88+k*200, 351, html.EscapeString(n))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// panel is one chart: its place, its axes' ranges and a dashed goal line.
type panel struct {
	x, y, w, h       float64
	xTop, yLow, yTop float64
	title            string
	goal             float64
}

func (p panel) px(x float64) float64 { return p.x + p.w*x/p.xTop }
func (p panel) py(y float64) float64 {
	y = math.Max(p.yLow, math.Min(p.yTop, y))
	return p.y + p.h - p.h*(y-p.yLow)/(p.yTop-p.yLow)
}

func (p panel) axes(b *strings.Builder) {
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="14">%s</text>`+"\n", p.x, p.y-15, html.EscapeString(p.title))
	fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="black"/>`+"\n", p.x, p.y, p.w, p.h)
	for i := 0; i <= 4; i++ {
		xv := p.xTop * float64(i) / 4
		yv := p.yLow + (p.yTop-p.yLow)*float64(i)/4
		fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="middle">%g</text>`+"\n", p.px(xv), p.y+p.h+16, round2(xv))
		fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="end">%g</text>`+"\n", p.x-6, p.py(yv)+4, round2(yv))
		fmt.Fprintf(b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", p.x, p.x+p.w, p.py(yv), p.py(yv))
	}
	if p.goal >= p.yLow && p.goal <= p.yTop {
		fmt.Fprintf(b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#888" stroke-dasharray="6,4"/><text x="%.0f" y="%.1f" fill="#888">goal %g</text>`+"\n",
			p.x, p.x+p.w, p.py(p.goal), p.py(p.goal), p.x+4, p.py(p.goal)-4, p.goal)
	}
}

func (p panel) line(b *strings.Builder, rs []Result, colour string, y func(Result) float64) {
	var pts []string
	for _, r := range rs {
		x, v := p.px(r.Config.ChurnPerMin*100), p.py(y(r))
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, v))
		fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", x, v, colour)
	}
	fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), colour)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }
