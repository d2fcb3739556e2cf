package mesh

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

func dumpMetrics(n *Node) string {
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.metrics.validated, n.metrics.stored, n.metrics.drops, n.metrics.syncs, n.metrics.dups)
	mfs, _ := reg.Gather()
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			fmt.Fprintf(&b, "%s{%s} %v\n", mf.GetName(), strings.Join(labels, ","), m.GetCounter().GetValue())
		}
	}
	return b.String()
}
