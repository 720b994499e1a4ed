package dataset

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// loadCaptionCSV returns the loader for the Flickr30K 1k / MSCOCO 5k test
// CSVs (one row per image; the raw column is a JSON array of captions).
// Every caption of a row whose split is "test" becomes one query, in CSV
// order; the gallery is the test rows' images, sorted by name (the
// reference implementation lists the images folder sorted, which holds
// exactly these files). zipDir is the folder name the published image zip
// extracts to, used when images/ is absent.
func loadCaptionCSV(file, zipDir string) func(context.Context, *loader) error {
	return func(ctx context.Context, l *loader) error {
		csvPath := l.path(file)
		data, err := readFile(csvPath)
		if err != nil {
			return err
		}
		rows, err := readCaptionCSV(ctx, csvPath, data)
		if err != nil {
			return err
		}
		imgDir := l.path("images")
		if l.listImages && !isDir(imgDir) && isDir(l.path(zipDir)) {
			imgDir = l.path(zipDir)
		}
		seen := map[string]int{}
		for _, row := range rows {
			if first, dup := seen[row.filename]; dup {
				return &FormatError{File: csvPath, Line: row.line, Record: fmt.Sprintf("row %d", row.index), Field: "filename",
					Msg: fmt.Sprintf("image %q already listed in row %d", row.filename, first)}
			}
			seen[row.filename] = row.index
			for _, c := range row.captions {
				l.ds.Queries = append(l.ds.Queries, Query{ID: strconv.Itoa(len(l.ds.Queries)), Instruction: c, Targets: []string{row.filename}})
			}
			l.ds.Gallery = append(l.ds.Gallery, Image{Name: row.filename, Path: filepath.Join(imgDir, row.filename)})
		}
		slices.SortFunc(l.ds.Gallery, func(a, b Image) int { return strings.Compare(a.Name, b.Name) })
		return nil
	}
}

type captionRow struct {
	index    int // 0-based data row
	line     int
	filename string
	captions []string
}

// readCaptionCSV parses the caption CSV, selecting columns by header name
// (other columns are ignored) and keeping rows whose split is "test" (all
// rows when there is no split column).
func readCaptionCSV(ctx context.Context, file string, data []byte) ([]captionRow, error) {
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	cr := csv.NewReader(bytes.NewReader(data))
	cr.ReuseRecord = false
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FormatError{File: file, Msg: "empty CSV file (no header row)"}
		}
		return nil, csvError(file, err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(h)] = i
	}
	for _, need := range []string{"filename", "raw"} {
		if _, ok := col[need]; !ok {
			return nil, &FormatError{File: file, Line: 1, Field: need, Msg: "header has no such column (have " + strings.Join(header, ",") + ")"}
		}
	}
	splitCol, hasSplit := col["split"]
	var rows []captionRow
	for i := 0; ; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvError(file, err)
		}
		line, _ := cr.FieldPos(0)
		where := fmt.Sprintf("row %d", i)
		if hasSplit && strings.TrimSpace(rec[splitCol]) != "test" {
			continue
		}
		name := strings.TrimSpace(rec[col["filename"]])
		if name == "" {
			return nil, &FormatError{File: file, Line: line, Record: where, Field: "filename", Msg: "empty"}
		}
		if path.Base(name) != name || name == "." || name == ".." {
			return nil, &FormatError{File: file, Line: line, Record: where, Field: "filename", Msg: fmt.Sprintf("%q is not a plain file name", name)}
		}
		var caps []string
		cell := rec[col["raw"]]
		if err := json.Unmarshal([]byte(cell), &caps); err != nil {
			var items []json.RawMessage
			if json.Unmarshal([]byte(cell), &items) == nil {
				for j, it := range items {
					if Kind(it) != "string" {
						return nil, &FormatError{File: file, Line: line, Record: where, Field: "raw", Msg: fmt.Sprintf("item %d: want a string, got %s", j, Kind(it))}
					}
				}
			}
			return nil, &FormatError{File: file, Line: line, Record: where, Field: "raw", Msg: "want a JSON array of caption strings: " + err.Error()}
		}
		if caps == nil {
			return nil, &FormatError{File: file, Line: line, Record: where, Field: "raw", Msg: "want a JSON array of caption strings, got null"}
		}
		rows = append(rows, captionRow{index: i, line: line, filename: name, captions: caps})
	}
	return rows, nil
}

func csvError(file string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &FormatError{File: file, Line: pe.Line, Msg: fmt.Sprintf("malformed CSV (column %d): %v", pe.Column, pe.Err)}
	}
	return &FormatError{File: file, Msg: "malformed CSV: " + err.Error()}
}
