package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// blockDocs describes each block type of the configuration and the
// attributes of its body, which defaults.hcl shows by example only.
var blockDocs = map[string]struct {
	intro string
	attrs map[string]string
}{
	"backend": {
		intro: "A hypervisor backend: the plugin petrel-plugin-NAME, launched by petreld when enabled. `petrel create --backend NAME` picks one; `default_backend` names the one used otherwise.",
	},
	"network": {
		intro: "A network plugin (petrel-plugin-NAME) that gives VM network devices their taps. VMs get their taps from the first enabled one.",
	},
	"metrics": {
		intro: "A metrics sink (petrel-plugin-NAME). Each enabled sink receives every statistics batch, one per `stats_interval`.",
	},
}

// pluginAttrDocs describes the attributes of every plugin block (backend,
// network, metrics), which share one schema.
var pluginAttrDocs = map[string]string{
	"enabled":  "Whether petreld launches the plugin. Blocks in the configuration file are merged with the defaults by NAME, so `enabled = false` turns a default plugin off.",
	"settings": "Plugin-specific settings, passed to the plugin as strings; merged key by key with the defaults of the same NAME. The comments of each default block list the keys its plugin knows.",
}

// Reference renders the configuration reference in Markdown: every
// attribute and block of Config, by its HCL name and type, with its
// default value and the comment that documents it in the embedded
// defaults. Generating it from the schema and the defaults keeps the
// reference, `petreld --print-defaults` and the code in agreement; a test
// fails when the committed copy is stale or a setting is undocumented.
func Reference() (string, error) { return reference(Defaults) }

// reference renders the reference for the defaults in src.
func reference(src string) (string, error) {
	doc, err := parseDefaultsDoc(src)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("# petreld configuration reference\n\n")
	b.WriteString("<!-- Generated from core/config (the Config schema and defaults.hcl) by `go run ./contrib/gendocs`; do not edit. -->\n\n")
	b.WriteString("petreld reads its embedded defaults (shown by `petreld --print-defaults`), then the HCL file given with `--config FILE`, then the flags `--data-dir`, `--run-dir` and `--plugin-dir`. A file needs only the settings it changes.\n\n")

	attrs, blocks := schema(reflect.TypeOf(Config{}))
	b.WriteString("## Settings\n\n| setting | type | default |\n| --- | --- | --- |\n")
	for _, a := range attrs {
		it, ok := doc.attrs[a.name]
		def := "(none)"
		if ok {
			def = "`" + it.literal + "`"
		}
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s | %s |\n", a.name, a.name, typeName(a.typ, it.literal), def)
	}
	b.WriteString("\n")
	for _, a := range attrs {
		it, ok := doc.attrs[a.name]
		if !ok || strings.TrimSpace(it.comment) == "" {
			return "", fmt.Errorf("config reference: %s has no documented default in defaults.hcl", a.name)
		}
		fmt.Fprintf(&b, "### `%s`\n\n", a.name)
		b.WriteString(renderComment(it.comment))
		fmt.Fprintf(&b, "Type: %s. Default: `%s`.\n\n", typeName(a.typ, it.literal), it.literal)
	}

	b.WriteString("## Plugin blocks\n\n")
	b.WriteString("Each block is labelled with the plugin's NAME, which is also the suffix of its binary (petrel-plugin-NAME, found in `plugin_dir`). A block may appear once per NAME.\n\n")
	inner, _ := schema(reflect.TypeOf(PluginBlock{}))
	for _, bl := range blocks {
		d, ok := blockDocs[bl.name]
		if !ok {
			return "", fmt.Errorf("config reference: block %s has no description", bl.name)
		}
		fmt.Fprintf(&b, "### `%s \"NAME\" { … }`\n\n%s\n\n", bl.name, d.intro)
		b.WriteString("| attribute | type | meaning |\n| --- | --- | --- |\n")
		for _, a := range inner {
			text, ok := pluginAttrDocs[a.name]
			if !ok {
				return "", fmt.Errorf("config reference: block attribute %s has no description", a.name)
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", a.name, typeName(a.typ, ""), text)
		}
		b.WriteString("\n")
		examples := doc.blocks[bl.name]
		if len(examples) == 0 && len(doc.floating[bl.name]) == 0 {
			return "", fmt.Errorf("config reference: block %s has neither a default nor an example in defaults.hcl", bl.name)
		}
		if len(examples) > 0 {
			b.WriteString("Defaults:\n\n")
		}
		for _, ex := range examples {
			b.WriteString(renderComment(ex.comment))
			fmt.Fprintf(&b, "```hcl\n%s\n```\n\n", ex.literal)
		}
		for _, c := range doc.floating[bl.name] {
			b.WriteString(renderComment(c))
		}
	}
	return strings.TrimRight(b.String(), "\n") + "\n", nil
}

// field is one attribute or block of a schema struct.
type field struct {
	name string
	typ  reflect.Type
}

// schema lists a struct's HCL attributes and blocks in declaration order.
func schema(t reflect.Type) (attrs, blocks []field) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("hcl")
		if tag == "" {
			continue
		}
		name, kind, _ := strings.Cut(tag, ",")
		switch kind {
		case "block":
			blocks = append(blocks, field{name, f.Type})
		case "label", "remain":
		default:
			attrs = append(attrs, field{name, f.Type})
		}
	}
	return attrs, blocks
}

// typeName names a Go field type in HCL's terms; strings holding
// durations are shown as such.
func typeName(t reflect.Type, literal string) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		if s := strings.Trim(literal, `"`); s != "" {
			if _, err := time.ParseDuration(s); err == nil {
				return "duration (string such as \"5s\")"
			}
		}
		return "string"
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Uint64:
		return "number"
	case reflect.Bool:
		return "bool"
	case reflect.Map:
		return "map of " + typeName(t.Elem(), "") + "s"
	}
	return t.String()
}

// docItem is an attribute or block of defaults.hcl with its source text
// and the comment above it.
type docItem struct {
	literal string
	comment string
}

// defaultsDoc is what defaults.hcl documents.
type defaultsDoc struct {
	// header is the file's opening comment, which speaks of the file
	// itself rather than of a setting.
	header string
	attrs  map[string]docItem
	blocks map[string][]docItem
	// floating are comments attached to no item, by the block type whose
	// example they show ("" when they show none).
	floating map[string][]string
}

// parseDefaultsDoc reads defaults.hcl's items and their comments: the run
// of comment lines above an item, or above the single-line attributes
// directly preceding it, which share one comment.
func parseDefaultsDoc(src string) (*defaultsDoc, error) {
	f, diags := hclsyntax.ParseConfig([]byte(src), "defaults.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fmt.Errorf("config reference: %s", diags.Error())
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return nil, fmt.Errorf("config reference: unexpected body type %T", f.Body)
	}
	lines := strings.Split(src, "\n")
	used := map[int]bool{}
	// commentAbove returns the comment for the item starting at line
	// (1-based), marking its lines used.
	commentAbove := func(line int) string {
		i := line - 2
		for i >= 0 && isAttrLine(lines[i]) {
			i--
		}
		end := i
		for i >= 0 && isComment(lines[i]) {
			i--
		}
		var out []string
		for j := i + 1; j <= end; j++ {
			used[j] = true
			out = append(out, lines[j])
		}
		return strings.Join(out, "\n")
	}
	rng := func(r hcl.Range) string { return src[r.Start.Byte:r.End.Byte] }

	doc := &defaultsDoc{attrs: map[string]docItem{}, blocks: map[string][]docItem{}, floating: map[string][]string{}}
	for name, a := range body.Attributes {
		doc.attrs[name] = docItem{literal: rng(a.Expr.Range()), comment: commentAbove(a.SrcRange.Start.Line)}
	}
	for _, bl := range body.Blocks {
		doc.blocks[bl.Type] = append(doc.blocks[bl.Type], docItem{literal: rng(bl.Range()), comment: commentAbove(bl.TypeRange.Start.Line)})
	}
	for t := range doc.blocks {
		sort.SliceStable(doc.blocks[t], func(i, j int) bool { return doc.blocks[t][i].literal < doc.blocks[t][j].literal })
	}
	// Comment groups left over: the header first, then examples of block
	// types that have no default.
	for i := 0; i < len(lines); {
		if !isComment(lines[i]) || used[i] {
			i++
			continue
		}
		start := i
		for i < len(lines) && isComment(lines[i]) {
			i++
		}
		group := strings.Join(lines[start:i], "\n")
		if doc.header == "" && start == 0 {
			doc.header = group
			continue
		}
		doc.floating[exampleType(group)] = append(doc.floating[exampleType(group)], group)
	}
	return doc, nil
}

func isComment(line string) bool { return strings.HasPrefix(strings.TrimSpace(line), "#") }

// isAttrLine reports a complete one-line attribute such as `a = 1`.
func isAttrLine(line string) bool {
	t := strings.TrimSpace(line)
	return t != "" && !isComment(t) && strings.Contains(t, "=") && !strings.HasSuffix(t, "{") && !strings.HasPrefix(t, "}")
}

// exampleType returns the block type a comment shows an example of, such
// as "metrics" for a comment with `metrics "influx" {` in its code.
func exampleType(comment string) string {
	for _, l := range strings.Split(comment, "\n") {
		code := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))
		if word, rest, ok := strings.Cut(code, " "); ok && strings.HasPrefix(rest, `"`) && strings.HasSuffix(rest, "{") {
			return word
		}
	}
	return ""
}

// renderComment turns an HCL comment into Markdown: text lines become
// paragraphs, lines indented by two or more spaces after the "#" become
// HCL code blocks, and a bare "#" separates paragraphs.
func renderComment(comment string) string {
	if strings.TrimSpace(comment) == "" {
		return ""
	}
	var b strings.Builder
	var para []string
	inCode := false
	// Blank lines within code are kept, but not at its end.
	blanks := 0
	flush := func() {
		if len(para) > 0 {
			b.WriteString(strings.Join(para, " ") + "\n\n")
			para = nil
		}
	}
	for _, l := range strings.Split(comment, "\n") {
		text := strings.TrimPrefix(strings.TrimSpace(l), "#")
		code := strings.HasPrefix(text, "   ")
		if text != "" && !code {
			text = strings.TrimPrefix(text, " ")
		}
		switch {
		case code:
			if !inCode {
				flush()
				b.WriteString("```hcl\n")
				inCode = true
			}
			b.WriteString(strings.Repeat("\n", blanks) + strings.TrimPrefix(text, "   ") + "\n")
			blanks = 0
		case inCode && text == "":
			blanks++
		default:
			if inCode {
				b.WriteString("```\n\n")
				inCode, blanks = false, 0
			}
			if text == "" {
				flush()
			} else {
				para = append(para, text)
			}
		}
	}
	if inCode {
		s := strings.TrimRight(b.String(), "\n")
		b.Reset()
		b.WriteString(s + "\n```\n\n")
	}
	flush()
	return b.String()
}
