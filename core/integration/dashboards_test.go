//go:build linux

package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/contrib/testservers"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestGrafanaDashboards runs every query of the dashboards in
// contrib/grafana, as Grafana would send it, against Debian's Prometheus
// and InfluxDB fed by petreld's two metrics plugins. petreld runs three
// VMs in a network namespace: one with a tap on a bridge (interface
// panels), one that keeps failing and being restarted (restart panels),
// and a plain one. Every query is run twice, once with every variable on
// "All" and once with a concrete selection (one host, two of the three
// VMs); each must run without error and return at least one series with a
// value, series carrying a vm label must belong to the selection, the
// restart panels must see the restarts, and the "VMs by state" stat must
// add up to the VMs petreld has. Queries listed in dashboardValidityOnly are only required
// to run without error.
func TestGrafanaDashboards(t *testing.T) {
	dashboards := []*dashboard{
		loadDashboard(t, "petrel-prometheus.json", "prometheus"),
		loadDashboard(t, "petrel-influxdb.json", "influxdb"),
	}
	needPlugins(t, "influx", "prometheus")

	influx := testservers.StartInfluxd(t, "petrel_udp")
	influx.CreateDB("petrel")
	// petreld runs in a network namespace (it needs a bridge of its own),
	// the servers and this test in the host's: forwarders carry
	// Prometheus's scrapes into the namespace and the Influx plugin's
	// writes out of it.
	e := newEnv(t)
	e.inNetns()
	const exporterAddr = "127.0.0.1:9464"
	promBase := testservers.StartPrometheus(t, forward(t, "", "127.0.0.1:0", e.netns, exporterAddr))
	influxAddr := forward(t, e.netns, "127.0.0.1:0", "", influx.HTTPAddr)

	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, fmt.Sprintf(`stats_interval = "500ms"
metrics "influx" {
  settings = { protocol = "http", url = "http://%s", db = "petrel", timeout = "1s" }
}
metrics "prometheus" {
  settings = { address = %q }
}
`, influxAddr, exporterAddr)...)
	if err := os.WriteFile(e.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	netImg := e.image("net.hvt", solo5.TargetHVT, netImage...)
	img := e.image("m.hvt", solo5.TargetHVT)
	e.mustPetrel("create", "team:web.1", netImg, "--net", "service0:br0", "--arg", "run=forever", "--mem", "16")
	e.mustPetrel("create", "team:flaky", img, "--arg", "exit=3", "--arg", "run=300ms", "--restart-on-fail", "--mem", "16")
	e.mustPetrel("create", "db", img, "--arg", "run=forever", "--mem", "32")
	allVMs := []string{"db", "team:flaky", "team:web.1"}
	chosenVMs := []string{"team:flaky", "team:web.1"}

	backends := map[string]queryBackend{
		"prometheus": &promBackend{base: promBase, scrape: time.Second},
		"influxdb":   &influxBackend{addr: influx.HTTPAddr, db: "petrel"},
	}
	// Poll until every check passes: the rate and derivative panels need a
	// few samples, the restart panels a restart after the first sample.
	start := time.Now()
	var problems []string
	var runs []queryRun
	for {
		problems, runs = nil, nil
		for _, d := range dashboards {
			p, r := checkDashboard(d, backends[d.kind], allVMs, chosenVMs)
			problems, runs = append(problems, p...), append(runs, r...)
		}
		if len(problems) == 0 || time.Since(start) > 25*time.Second {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	data, validity := 0, 0
	for _, r := range runs {
		if r.validityOnly != "" {
			validity++
			t.Logf("validity only: %s %s (%s), %d series: %s", r.dashboard, r.what, r.selection, r.series, r.validityOnly)
		} else {
			data++
		}
	}
	t.Logf("after %v: %d query runs checked for data, %d for validity only", time.Since(start).Round(100*time.Millisecond), data, validity)
	for _, p := range problems {
		t.Error(p)
	}
	if data == 0 {
		t.Error("no query was checked for data")
	}
}

// dashboardValidityOnly lists the dashboard queries, by file and panel
// title, whose data cannot exist in TestGrafanaDashboards, with the
// reason; they are only required to run without error.
var dashboardValidityOnly = map[string]string{}

// dashboardNeedsPositive lists panels that must show a value above zero
// somewhere in TestGrafanaDashboards, where a VM keeps being restarted.
var dashboardNeedsPositive = map[string]bool{
	"Restarts in range": true,
	"Restarts":          true,
}

// dashboard is one Grafana dashboard file for one data source type.
type dashboard struct {
	file string
	// kind is the data source type its queries are for.
	kind      string
	variables []dashVariable
	queries   []dashQuery
}

// dashVariable is a templating variable: a data source picker (ignored,
// queries never mention it) or a query variable filled from the data.
type dashVariable struct {
	name, typ, query  string
	multi, includeAll bool
	// allValue replaces "All" when set; otherwise "All" means every
	// option.
	allValue string
}

// dashQuery is one query of a panel (or annotation).
type dashQuery struct {
	what  string // panel title (with its row) and refId
	title string
	text  string
	// instant marks a Prometheus query evaluated only at the end of the
	// range.
	instant bool
}

// loadDashboard reads contrib/grafana/file and collects its variables and
// the queries of every panel, including panels inside rows (both the
// current nested "panels" and the old "rows" layout) and annotations.
func loadDashboard(t *testing.T, file, kind string) *dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../contrib/grafana", file))
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Query      json.RawMessage `json:"query"`
		RawQuery   bool            `json:"rawQuery"`
		RawSQL     string          `json:"rawSql"`
		Instant    bool            `json:"instant"`
		Range      *bool           `json:"range"`
		Datasource struct{ Type string }
	}
	type panel struct {
		Title      string
		Type       string
		Targets    []target
		Panels     []json.RawMessage
		Datasource json.RawMessage
	}
	var raw struct {
		Title  string
		Panels []json.RawMessage
		Rows   []struct {
			Title  string
			Panels []json.RawMessage
		}
		Templating struct {
			List []struct {
				Name       string
				Type       string
				Query      json.RawMessage
				Multi      bool
				IncludeAll bool
				AllValue   string
			}
		}
		Annotations struct {
			List []struct {
				Name       string
				Expr       string
				Query      string
				Datasource struct{ Type string }
			}
		}
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	d := &dashboard{file: file, kind: kind}
	for _, v := range raw.Templating.List {
		dv := dashVariable{name: v.Name, typ: v.Type, multi: v.Multi, includeAll: v.IncludeAll, allValue: v.AllValue}
		if v.Type == "query" {
			dv.query = queryText(v.Query)
			if dv.query == "" {
				t.Fatalf("%s: variable %s has no query", file, v.Name)
			}
		}
		d.variables = append(d.variables, dv)
	}
	var walk func(prefix string, panels []json.RawMessage)
	walk = func(prefix string, panels []json.RawMessage) {
		for _, rp := range panels {
			var p panel
			if err := json.Unmarshal(rp, &p); err != nil {
				t.Fatalf("%s: panel: %v", file, err)
			}
			title := prefix + p.Title
			for _, tg := range p.Targets {
				if tg.Datasource.Type != "" && tg.Datasource.Type != kind {
					t.Fatalf("%s: panel %q target %s uses a %s data source, not %s", file, title, tg.RefID, tg.Datasource.Type, kind)
				}
				q := dashQuery{what: fmt.Sprintf("panel %q query %s", title, tg.RefID), title: p.Title,
					instant: kind == "prometheus" && tg.Instant && (tg.Range == nil || !*tg.Range)}
				switch {
				case tg.RawSQL != "":
					t.Fatalf("%s: %s is SQL, which this test cannot run", file, q.what)
				case kind == "prometheus":
					q.text = tg.Expr
				case kind == "influxdb" && !tg.RawQuery:
					t.Fatalf("%s: %s uses the query builder; only raw InfluxQL can be checked", file, q.what)
				default:
					q.text = queryText(tg.Query)
				}
				if q.text == "" {
					t.Fatalf("%s: %s is empty", file, q.what)
				}
				d.queries = append(d.queries, q)
			}
			if p.Type == "row" || len(p.Panels) > 0 {
				walk(title+" / ", p.Panels)
			}
		}
	}
	walk("", raw.Panels)
	for _, r := range raw.Rows {
		walk(r.Title+" / ", r.Panels)
	}
	for _, a := range raw.Annotations.List {
		text := a.Expr
		if text == "" {
			text = a.Query
		}
		if text != "" && a.Datasource.Type == kind {
			d.queries = append(d.queries, dashQuery{what: fmt.Sprintf("annotation %q", a.Name), title: a.Name, text: text})
		}
	}
	if len(d.queries) == 0 {
		t.Fatalf("%s: no queries found", file)
	}
	return d
}

// queryText reads a query that is either a JSON string or an object with
// a "query" member (Grafana stores variable queries both ways).
func queryText(m json.RawMessage) string {
	var s string
	if json.Unmarshal(m, &s) == nil {
		return s
	}
	var o struct{ Query string }
	json.Unmarshal(m, &o)
	return o.Query
}

// grafanaContext is what Grafana substitutes into a query: the values of
// the dashboard's variables and the built-in time variables.
type grafanaContext struct {
	from, to time.Time
	// interval is $__interval: the time range divided by the panel's data
	// points, but not below the data source's minimum interval.
	interval time.Duration
	// scrape is the Prometheus data source's scrape interval, from which
	// $__rate_interval derives.
	scrape time.Duration
	// values are the selected values of each variable, with all the
	// options when "All" is selected.
	values map[string][]string
	// allValue holds the custom value of variables with "All" selected
	// and an allValue set.
	allValue map[string]string
	// regex tells whether a variable is multi-value or has "All", the
	// variables Grafana regex-escapes.
	regex map[string]bool
}

var grafanaVarRE = regexp.MustCompile(`\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]`)

// substitute expands query for data source kind the way Grafana does for
// the context's selection, and reports the variables it does not know.
//
//   - $__range, $__range_s, $__range_ms: the time range, as "300s", "300"
//     and "300000".
//   - $__interval, $interval, $__interval_ms: the interval, as "1s" (Grafana
//     writes whole seconds as "Ns" and shorter ones in ms) and in ms.
//   - $__rate_interval: max($__interval + scrape interval, 4 × scrape
//     interval).
//   - $timeFilter, $__timeFilter (InfluxQL): "time >= FROMms and time <=
//     TOms".
//   - a query variable: its value; for a multi-value or "All" variable
//     each value is regex-escaped (for PromQL also with backslashes
//     doubled, as it sits in a double-quoted string; for InfluxQL with
//     "/" escaped, as it sits in /.../) and several are joined as
//     (a|b|c). "All" without a custom all value means every option.
//   - $datasource only appears in data source references, never in query
//     text, so it is not expanded; any other variable is reported.
func (c *grafanaContext) substitute(kind, query string) (string, []string) {
	var unknown []string
	rng := c.to.Sub(c.from)
	out := grafanaVarRE.ReplaceAllStringFunc(query, func(m string) string {
		sub := grafanaVarRE.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		switch name {
		case "__range":
			return strconv.Itoa(int(rng.Seconds())) + "s"
		case "__range_s":
			return strconv.Itoa(int(rng.Seconds()))
		case "__range_ms":
			return strconv.FormatInt(rng.Milliseconds(), 10)
		case "__interval", "interval":
			return grafanaDuration(c.interval)
		case "__interval_ms":
			return strconv.FormatInt(c.interval.Milliseconds(), 10)
		case "__rate_interval":
			return grafanaDuration(max(c.interval+c.scrape, 4*c.scrape))
		case "timeFilter", "__timeFilter":
			return fmt.Sprintf("time >= %dms and time <= %dms", c.from.UnixMilli(), c.to.UnixMilli())
		}
		if v, ok := c.allValue[name]; ok {
			return v
		}
		vals, ok := c.values[name]
		if !ok {
			unknown = append(unknown, m)
			return m
		}
		if !c.regex[name] {
			return strings.Join(vals, ",")
		}
		esc := make([]string, len(vals))
		for i, v := range vals {
			esc[i] = regexp.QuoteMeta(v)
			if kind == "prometheus" {
				esc[i] = strings.ReplaceAll(esc[i], `\`, `\\`)
			} else {
				esc[i] = strings.ReplaceAll(esc[i], "/", `\/`)
			}
		}
		if len(esc) == 1 {
			return esc[0]
		}
		return "(" + strings.Join(esc, "|") + ")"
	})
	return out, unknown
}

// grafanaDuration formats d as Grafana's interval variables do.
func grafanaDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.Itoa(int(d.Seconds())) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// queryBackend runs substituted dashboard queries against a real server.
type queryBackend interface {
	// variableValues runs a variable's query and returns its options.
	variableValues(c *grafanaContext, query string) ([]string, error)
	// query runs a panel query over the context's range (only at its end
	// when instant).
	query(c *grafanaContext, query string, instant bool) (queryResult, error)
}

// queryResult summarises what a panel would draw.
type queryResult struct {
	series int
	// values counts the non-null finite values over all series.
	values int
	max    float64
	// lastSum adds up the last value of each series: what a stat panel
	// reducing by "last non-null" shows, summed over its series.
	lastSum float64
	// vms are the vm labels (or tags) of the series that have one.
	vms []string
}

func (r *queryResult) add(v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	if r.values == 0 || v > r.max {
		r.max = v
	}
	r.values++
}

// queryRun records one query as run for the summary.
type queryRun struct {
	dashboard, what, selection string
	series                     int
	validityOnly               string
}

// checkDashboard fills the variables and runs every query of d for the
// "All" selection and for a concrete one (the first host or instance,
// the chosen VMs), returning what is wrong and what was run.
func checkDashboard(d *dashboard, b queryBackend, allVMs, chosenVMs []string) (problems []string, runs []queryRun) {
	now := time.Now().Truncate(time.Second)
	for _, sel := range []string{"All", "chosen"} {
		c := &grafanaContext{
			from: now.Add(-5 * time.Minute), to: now,
			// 5 minutes over 300 data points, at least the 1 s the test
			// servers' data sources would be configured with.
			interval: time.Second,
			scrape:   time.Second,
			values:   map[string][]string{}, allValue: map[string]string{}, regex: map[string]bool{},
		}
		failed := false
		for _, v := range d.variables {
			if v.typ != "query" {
				continue
			}
			q, unknown := c.substitute(d.kind, v.query)
			if len(unknown) > 0 {
				problems = append(problems, fmt.Sprintf("%s: variable %s (%s): unknown variables %v in %s", d.file, v.name, sel, unknown, v.query))
				failed = true
				break
			}
			opts, err := b.variableValues(c, q)
			if err != nil || len(opts) == 0 {
				problems = append(problems, fmt.Sprintf("%s: variable %s (%s): query %s: options %v, error %v", d.file, v.name, sel, q, opts, err))
				failed = true
				break
			}
			c.regex[v.name] = v.multi || v.includeAll
			switch {
			case v.name == "vm":
				if !slices.Equal(opts, allVMs) {
					problems = append(problems, fmt.Sprintf("%s: variable vm (%s): query %s offers %v, want %v", d.file, sel, q, opts, allVMs))
				}
				if sel == "All" {
					c.values[v.name] = opts
				} else {
					c.values[v.name] = chosenVMs
				}
			case sel == "All" && v.includeAll && v.allValue != "":
				c.allValue[v.name] = v.allValue
			case sel == "All":
				c.values[v.name] = opts
			default:
				c.values[v.name] = opts[:1]
			}
		}
		if failed {
			continue
		}
		for _, q := range d.queries {
			text, unknown := c.substitute(d.kind, q.text)
			if len(unknown) > 0 {
				problems = append(problems, fmt.Sprintf("%s: %s: unknown variables %v in %s", d.file, q.what, unknown, q.text))
				continue
			}
			res, err := b.query(c, text, q.instant)
			validity := dashboardValidityOnly[d.file+"/"+q.title]
			runs = append(runs, queryRun{dashboard: d.file, what: q.what, selection: sel, series: res.series, validityOnly: validity})
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("%s: %s (%s): %v", d.file, q.what, sel, err))
			case validity != "":
			case res.series == 0 || res.values == 0:
				problems = append(problems, fmt.Sprintf("%s: %s (%s) returned no data (%d series): %s", d.file, q.what, sel, res.series, text))
			case dashboardNeedsPositive[q.title] && res.max <= 0:
				problems = append(problems, fmt.Sprintf("%s: %s (%s) shows no restart (max %v): %s", d.file, q.what, sel, res.max, text))
			case q.title == "VMs by state" && res.lastSum != float64(len(allVMs)):
				problems = append(problems, fmt.Sprintf("%s: %s (%s) shows %v VMs in all states together, petreld has %d: %s", d.file, q.what, sel, res.lastSum, len(allVMs), text))
			}
			if sel == "chosen" {
				for _, vm := range res.vms {
					if !slices.Contains(chosenVMs, vm) {
						problems = append(problems, fmt.Sprintf("%s: %s: VM %s shown although only %v are selected: %s", d.file, q.what, vm, chosenVMs, text))
						break
					}
				}
			}
		}
	}
	return problems, runs
}

// promBackend queries Prometheus's HTTP API the way Grafana's Prometheus
// data source does: range queries for panels, the label values API for
// label_values() variables.
type promBackend struct {
	base   string
	scrape time.Duration
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(?:(.*\S)\s*,\s*)?(\w+)\s*\)\s*$`)

func (p *promBackend) variableValues(c *grafanaContext, query string) ([]string, error) {
	m := labelValuesRE.FindStringSubmatch(query)
	if m == nil {
		return nil, fmt.Errorf("variable query %q: only label_values() is supported here", query)
	}
	v := url.Values{"start": {unixSeconds(c.from)}, "end": {unixSeconds(c.to)}}
	if m[1] != "" {
		v.Set("match[]", m[1])
	}
	var vals []string
	if err := promGet(p.base+"/api/v1/label/"+m[2]+"/values?"+v.Encode(), &vals); err != nil {
		return nil, err
	}
	sort.Strings(vals)
	return vals, nil
}

func (p *promBackend) query(c *grafanaContext, query string, instant bool) (queryResult, error) {
	u := p.base + "/api/v1/query_range?" + url.Values{"query": {query}, "start": {unixSeconds(c.from)}, "end": {unixSeconds(c.to)}, "step": {strconv.Itoa(int(c.interval.Seconds()))}}.Encode()
	if instant {
		u = p.base + "/api/v1/query?" + url.Values{"query": {query}, "time": {unixSeconds(c.to)}}.Encode()
	}
	var data struct {
		ResultType string
		Result     []struct {
			Metric map[string]string
			Value  []any
			Values [][]any
		}
	}
	var r queryResult
	if err := promGet(u, &data); err != nil {
		return r, err
	}
	for _, s := range data.Result {
		r.series++
		if vm, ok := s.Metric["vm"]; ok {
			r.vms = append(r.vms, vm)
		}
		if s.Value != nil {
			s.Values = append(s.Values, s.Value)
		}
		last := math.NaN()
		for _, pt := range s.Values {
			if len(pt) != 2 {
				return r, fmt.Errorf("sample %v is not [time, value]", pt)
			}
			str, _ := pt[1].(string)
			f, err := strconv.ParseFloat(str, 64)
			if err != nil {
				return r, fmt.Errorf("value %v: %w", pt[1], err)
			}
			r.add(f)
			if !math.IsNaN(f) {
				last = f
			}
		}
		if !math.IsNaN(last) {
			r.lastSum += last
		}
	}
	return r, nil
}

// promGet fetches a Prometheus API URL and decodes its data member.
func promGet(u string, data any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read %s: %w", u, err)
	}
	var r struct {
		Status string
		Error  string
		Data   json.RawMessage
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	if r.Status != "success" {
		return fmt.Errorf("prometheus: %s", r.Error)
	}
	return json.Unmarshal(r.Data, data)
}

func unixSeconds(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

// influxBackend queries InfluxDB 1.x's /query endpoint as Grafana's
// InfluxDB data source does in InfluxQL mode.
type influxBackend struct {
	addr, db string
}

type influxSeries struct {
	Tags    map[string]string
	Columns []string
	Values  [][]any
}

func (ib *influxBackend) run(query string) ([]influxSeries, error) {
	v := url.Values{"db": {ib.db}, "q": {query}, "epoch": {"ms"}}
	resp, err := http.Get("http://" + ib.addr + "/query?" + v.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Error   string
		Results []struct {
			Error  string
			Series []influxSeries
		}
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if r.Error != "" {
		return nil, fmt.Errorf("influxdb: %s", r.Error)
	}
	if len(r.Results) != 1 {
		return nil, fmt.Errorf("influxdb: %d results for one statement", len(r.Results))
	}
	if r.Results[0].Error != "" {
		return nil, fmt.Errorf("influxdb: %s", r.Results[0].Error)
	}
	return r.Results[0].Series, nil
}

func (ib *influxBackend) variableValues(_ *grafanaContext, query string) ([]string, error) {
	series, err := ib.run(query)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var vals []string
	for _, s := range series {
		col := slices.Index(s.Columns, "value")
		if col < 0 {
			col = 0
		}
		for _, row := range s.Values {
			if v := fmt.Sprint(row[col]); !seen[v] {
				seen[v] = true
				vals = append(vals, v)
			}
		}
	}
	sort.Strings(vals)
	return vals, nil
}

func (ib *influxBackend) query(_ *grafanaContext, query string, _ bool) (queryResult, error) {
	var r queryResult
	series, err := ib.run(query)
	if err != nil {
		return r, err
	}
	for _, s := range series {
		r.series++
		if vm, ok := s.Tags["vm"]; ok {
			r.vms = append(r.vms, vm)
		}
		if len(s.Columns) < 2 {
			return r, fmt.Errorf("series with columns %v has no value column", s.Columns)
		}
		// Each value column is a series of its own to Grafana.
		last := make([]*float64, len(s.Columns))
		for _, row := range s.Values {
			for i, cell := range row {
				if i >= len(s.Columns) || s.Columns[i] == "time" || cell == nil {
					continue
				}
				n, ok := cell.(json.Number)
				if !ok {
					return r, fmt.Errorf("column %s: %v is not a number", s.Columns[i], cell)
				}
				f, err := n.Float64()
				if err != nil {
					return r, fmt.Errorf("column %s: %w", s.Columns[i], err)
				}
				r.add(f)
				last[i] = &f
			}
		}
		for _, l := range last {
			if l != nil {
				r.lastSum += *l
			}
		}
	}
	return r, nil
}
