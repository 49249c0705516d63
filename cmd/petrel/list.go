package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// listing is how a list command (info, plugins, block, bridges, policy)
// shows its items: with --json, a JSON array of one value per item, and
// otherwise a table of one row per item under a header of column names,
// aligned by a tabwriter. Every list goes through it so that all of them
// align and encode alike, and a new one only says what its columns and
// values are.
type listing[T any] struct {
	// columns are the table's header, one name per column.
	columns []string
	// row gives an item's cells, one per column; they must hold no tab
	// or newline.
	row func(T) []string
	// json gives an item's value in the JSON array, or why it has none.
	json func(T) (any, error)
}

// print writes items to w as JSON when jsonOut is set, else as a table.
// An empty list is "[]" in JSON and the header alone as a table.
func (l listing[T]) print(w io.Writer, jsonOut bool, items []T) error {
	if jsonOut {
		list := make([]any, 0, len(items))
		for _, it := range items {
			v, err := l.json(it)
			if err != nil {
				return err
			}
			list = append(list, v)
		}
		return writeJSON(w, list)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(l.columns, "\t"))
	for _, it := range items {
		fmt.Fprintln(tw, strings.Join(l.row(it), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print the list: %w", err)
	}
	return nil
}
