//! Reading a data file into a [`Table`]: named columns and records of typed cells, whatever the
//! format. No column is interpreted here; [`super::read`] picks the text and label columns.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use super::error::{DataError, Loc};
use crate::glue::error::shorten;
use crate::options::Named;

/// The file formats read: by extension, or named with `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Tab-separated, first line the header. Quoting is off (as GLUE's files need: a `"` is text).
    Tsv,
    /// Comma-separated, first line the header, RFC 4180 quoting.
    Csv,
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    Jsonl,
    /// Apache Parquet (Hugging Face datasets' files), one column per field.
    Parquet,
}

impl Format {
    /// Every format's name, joined by `sep`.
    pub fn names(sep: &str) -> String {
        Format::ALL.iter().map(|(_, n, _)| *n).collect::<Vec<_>>().join(sep)
    }

    /// The format of `path` by its extension (case-insensitive).
    pub fn of_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "tsv" | "tab" => Some(Format::Tsv),
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }
}

impl Named for Format {
    const ALL: &'static [(Format, &'static str, &'static str)] = &[
        (
            Format::Tsv,
            "tsv",
            "tab-separated, header line, no quoting (GLUE's files)",
        ),
        (Format::Csv, "csv", "comma-separated, header line, RFC 4180 quoting"),
        (Format::Jsonl, "jsonl", "one JSON object per line"),
        (
            Format::Parquet,
            "parquet",
            "Apache Parquet (Hugging Face datasets' files)",
        ),
    ];
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One value. Text formats give only [`Cell::Str`]; JSONL and Parquet keep their types.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A value that is not text, a number or a boolean (a list, an object, a date...): its type.
    Other(&'static str),
}

impl Cell {
    /// The kind of value, for messages and the mixed-type check.
    pub fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "null",
            Cell::Bool(_) => "boolean",
            Cell::Int(_) | Cell::Float(_) => "number",
            Cell::Str(_) => "string",
            Cell::Other(t) => t,
        }
    }

    /// The value as the user wrote it, for messages.
    pub fn show(&self) -> String {
        match self {
            Cell::Null => "null".into(),
            Cell::Bool(b) => b.to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(x) => x.to_string(),
            Cell::Str(s) => shorten(s),
            Cell::Other(t) => format!("({t})"),
        }
    }
}

/// One record and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub at: Loc,
    pub cells: Vec<Cell>,
}

/// A file's columns and records, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The file, for messages.
    pub file: String,
    pub columns: Vec<String>,
    pub records: Vec<Record>,
}

impl Table {
    /// The column named `name` (headers are read trimmed, and so is `name`); else the one column
    /// named so in another case (`Text`, `LABEL`).
    pub fn column(&self, name: &str) -> Option<usize> {
        let name = name.trim();
        self.columns.iter().position(|c| c == name).or_else(|| {
            let folded: Vec<usize> = (0..self.columns.len())
                .filter(|&i| self.columns[i].eq_ignore_ascii_case(name))
                .collect();
            match folded[..] {
                [i] => Some(i),
                _ => None,
            }
        })
    }
}

/// Reads `path` in `format`.
pub fn read_table(path: &Path, format: Format) -> Result<Table, DataError> {
    read_table_rows(path, format, usize::MAX)
}

/// Reads the first `rows` records of `path` in `format` (`--limit`): the records after them are
/// neither parsed nor checked.
pub fn read_table_rows(path: &Path, format: Format, rows: usize) -> Result<Table, DataError> {
    let file = path.display().to_string();
    let table = match format {
        Format::Parquet => read_parquet(path, &file, rows)?,
        _ => {
            let bytes = std::fs::read(path).map_err(|cause| DataError::Io {
                path: path.to_path_buf(),
                cause,
            })?;
            // A Parquet file read as text (a --format or data.format that does not fit it).
            if bytes.starts_with(b"PAR1") {
                return Err(DataError::Format {
                    file,
                    message: format!(
                        "a Parquet file (it starts with PAR1), read as {}: read it as parquet (--format parquet, or no --format with a .parquet name)",
                        format.name()
                    ),
                });
            }
            let text = String::from_utf8(bytes).map_err(|err| {
                let bytes = err.as_bytes();
                let valid = &bytes[..err.utf8_error().valid_up_to()];
                DataError::Record {
                    file: file.clone(),
                    at: Loc::Line(1 + valid.iter().filter(|&&b| b == b'\n').count()),
                    message: not_utf8(bytes),
                }
            })?;
            // UTF-16 without its byte-order mark is valid UTF-8 with a NUL in every other byte.
            if let Some(at) = text.find('\0') {
                return Err(DataError::Record {
                    file: file.clone(),
                    at: Loc::Line(1 + text[..at].matches('\n').count()),
                    message: "a NUL byte: the file is not text, or UTF-16 without a byte-order mark; save it as UTF-8 (`iconv -f UTF-16LE -t UTF-8 IN > OUT`)".into(),
                });
            }
            // (The csv crate reads a bare CR as a line end itself; JSON takes it as space.)
            if format == Format::Tsv && cr_line_ends(&text) {
                return Err(DataError::Format {
                    file,
                    message: CR_LINE_ENDS.into(),
                });
            }
            read_text_rows(&text, format, &file, rows)?
        }
    };
    if table.records.is_empty() {
        return Err(DataError::Empty { file });
    }
    Ok(table)
}

/// Whether `text`'s lines end in a carriage return alone (classic Mac OS; Excel for Mac's
/// "Tab delimited text" until 2016): more bare CRs than line feeds, so a TSV reads as one line
/// (a header without records, or with a garbled one).
pub(crate) fn cr_line_ends(text: &str) -> bool {
    // (A CR ending the file is no line end between lines.)
    let b = text.trim_end_matches('\r').as_bytes();
    let bare = (0..b.len())
        .filter(|&i| b[i] == b'\r' && b.get(i + 1) != Some(&b'\n'))
        .count();
    bare > b.iter().filter(|&&c| c == b'\n').count()
}

/// What to do about [`cr_line_ends`].
pub(crate) const CR_LINE_ENDS: &str = "its lines end in a carriage return alone (classic Mac OS line ends), so it reads as one line; save it with LF line ends (`tr '\\r' '\\n' < IN > OUT`)";

/// Why a text file is not UTF-8, and how to make it so.
pub(crate) fn not_utf8(bytes: &[u8]) -> String {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return "not valid UTF-8: the file is UTF-16 (Excel's \"Unicode Text\" saves so); save it as UTF-8 (`iconv -f UTF-16 -t UTF-8 IN > OUT`)".into();
    }
    "not valid UTF-8; save the file as UTF-8 (from Windows-1252, as older Excel saves: `iconv -f CP1252 -t UTF-8 IN > OUT`)".into()
}

/// Reads text in a text format (TSV, CSV, JSONL); `file` names it in messages.
pub fn read_text(text: &str, format: Format, file: &str) -> Result<Table, DataError> {
    read_text_rows(text, format, file, usize::MAX)
}

/// The first `rows` records of text in a text format.
fn read_text_rows(text: &str, format: Format, file: &str, rows: usize) -> Result<Table, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // JSON Lines read as a table (a --format or data.format that does not fit it): each line
    // would be one text, braces and keys included.
    if matches!(format, Format::Tsv | Format::Csv) {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(first).is_ok() {
            return Err(DataError::Format {
                file: file.into(),
                message: format!(
                    "JSON Lines (its first line is a JSON object), read as {}: read it as jsonl (--format jsonl, or no --format with a .jsonl name)",
                    format.name()
                ),
            });
        }
    }
    match format {
        Format::Tsv => read_tsv(text, file, rows),
        Format::Csv => read_csv(text, file, rows),
        Format::Jsonl => read_jsonl(text, file, rows),
        Format::Parquet => Err(DataError::Format {
            file: file.into(),
            message: "Parquet is a binary format, not text".into(),
        }),
    }
}

fn record_error(file: &str, at: Loc, message: String) -> DataError {
    DataError::Record {
        file: file.into(),
        at,
        message,
    }
}

/// A TSV field as written: quoting is off, as GLUE's, except for a field that a quoting writer
/// (pandas' `to_csv(sep="\t")`, Python's csv) wrapped: in quotes, with every quote inside
/// doubled and at least one there. Its text is the unquoted one (the quotes were kept).
pub(crate) fn unquote(field: &str) -> String {
    let inner = field
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .filter(|i| i.contains("\"\"") && !i.replace("\"\"", "").contains('"'));
    match inner {
        Some(i) => i.replace("\"\"", "\""),
        None => field.to_string(),
    }
}

/// TSV as GLUE writes it (the same line rules as [`crate::glue::read_tsv`]): split on TAB only,
/// `\n` or `\r\n`, empty lines skipped; every record has as many fields as the header. A field
/// quoted as pandas quotes one is unquoted ([`unquote`]).
fn read_tsv(text: &str, file: &str, rows: usize) -> Result<Table, DataError> {
    let mut lines = crate::glue::tsv_lines(text);
    let Some((_, header)) = lines.next() else {
        return Err(DataError::Empty { file: file.into() });
    };
    let columns: Vec<String> = header.split('\t').map(|c| c.trim().to_string()).collect();
    let mut records = Vec::new();
    for (line, row) in lines.take(rows) {
        let cells: Vec<Cell> = row.split('\t').map(|f| Cell::Str(unquote(f))).collect();
        if cells.len() != columns.len() {
            return Err(record_error(
                file,
                Loc::Line(line),
                format!(
                    "{} tab-separated field(s), the header has {} (TSV is read without quoting: a field cannot hold a tab)",
                    cells.len(),
                    columns.len()
                ),
            ));
        }
        records.push(Record {
            at: Loc::Line(line),
            cells,
        });
    }
    Ok(Table {
        file: file.into(),
        columns,
        records,
    })
}

/// Where a record the csv crate places at byte `at` of `text` starts: past the line ends there
/// (after `\r\n` it places the record at the `\n`, and its line numbers fall one short per
/// `\r\n` before the record, so lines are counted here from the bytes).
fn record_start(text: &str, at: u64) -> usize {
    let b = text.as_bytes();
    let mut at = (at as usize).min(b.len());
    while at < b.len() && (b[at] == b'\n' || b[at] == b'\r') {
        at += 1;
    }
    at
}

/// The line (from 1) of a record the csv crate places at byte `at` of `text`.
fn line_of(text: &str, at: u64) -> usize {
    text.as_bytes()[..record_start(text, at)]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line (from 1) of a quote that opens a field and is never closed, if `text` has one. The
/// csv crate reads such a field to the end of the file without a word, so a stray quote turned
/// the rest of the file into one cell, reported as a wrong field count or a strange label. The
/// rules are the crate's defaults (RFC 4180): a quote opens a field only at its start, `""`
/// inside a quoted field is a quote, and any other quote there closes it.
fn unclosed_quote(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let (mut line, mut opened) = (1usize, None);
    let (mut at_start, mut i) = (true, 0usize);
    while i < b.len() {
        match (opened, b[i]) {
            (Some(_), b'"') if b.get(i + 1) == Some(&b'"') => i += 1,
            (Some(_), b'"') => {
                opened = None;
                at_start = false;
            }
            (None, b'"') if at_start => opened = Some(line),
            (None, b',') => at_start = true,
            (None, b'\n') => at_start = true,
            (None, b'\r') => {}
            (None, _) => at_start = false,
            (Some(_), _) => {}
        }
        if b[i] == b'\n' {
            line += 1;
        }
        i += 1;
    }
    opened
}

/// A quote opened on `line` and never closed.
fn unclosed_error(file: &str, line: usize) -> DataError {
    record_error(
        file,
        Loc::Line(line),
        "a field opens with a quote that is never closed, so the rest of the file would read as one field; close it, or write a quote inside a quoted field as \"\"".into(),
    )
}

fn read_csv(text: &str, file: &str, rows: usize) -> Result<Table, DataError> {
    // Looked for in the text read: all of it, or (below) up to the last of the first `rows`.
    if let Some(line) = (rows == usize::MAX).then(|| unclosed_quote(text)).flatten() {
        return Err(unclosed_error(file, line));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(1, |p| line_of(text, p.byte()));
        let message = match e.kind() {
            csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                format!("{len} comma-separated field(s), the header has {expected_len}")
            }
            _ => e.to_string(),
        };
        record_error(file, Loc::Line(line), message)
    };
    let columns: Vec<String> = reader
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(|c| c.trim().to_string())
        .collect();
    if columns.iter().all(String::is_empty) {
        return Err(DataError::Empty { file: file.into() });
    }
    let mut records = Vec::new();
    // Lines counted as the records go (each from the last one's start), not from the start each time.
    let (mut from, mut line) = (0usize, 1usize);
    let mut read = csv::StringRecord::new();
    while records.len() < rows {
        match reader.read_record(&mut read) {
            Ok(true) => {}
            Ok(false) => break,
            // A quote never closed before the failing record makes the error: name it rather
            // than what it caused (one after it, past a --limit, is not read).
            Err(e) => {
                let at = e.position().map_or(1, |p| line_of(text, p.byte()));
                return Err(match unclosed_quote(text) {
                    Some(line) if line <= at => unclosed_error(file, line),
                    _ => csv_error(e),
                });
            }
        }
        let row = &read;
        let line = match row.position() {
            Some(p) => {
                let to = record_start(text, p.byte()).max(from);
                line += text.as_bytes()[from..to].iter().filter(|&&b| b == b'\n').count();
                from = to;
                line
            }
            None => 0,
        };
        records.push(Record {
            at: Loc::Line(line),
            cells: row.iter().map(|f| Cell::Str(f.to_string())).collect(),
        });
    }
    if rows != usize::MAX {
        let end = usize::try_from(reader.position().byte())
            .unwrap_or(text.len())
            .min(text.len());
        if let Some(line) = unclosed_quote(text.get(..end).unwrap_or(text)) {
            return Err(unclosed_error(file, line));
        }
    }
    Ok(Table {
        file: file.into(),
        columns,
        records,
    })
}

fn json_cell(v: &serde_json::Value) -> Cell {
    match v {
        serde_json::Value::Null => Cell::Null,
        serde_json::Value::Bool(b) => Cell::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => Cell::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Cell::Str(s.clone()),
        serde_json::Value::Array(_) => Cell::Other("list"),
        serde_json::Value::Object(_) => Cell::Other("object"),
    }
}

/// JSON Lines: one object per non-empty line. The columns are every object's keys; a key
/// missing from an object is null there.
fn read_jsonl(text: &str, file: &str, rows: usize) -> Result<Table, DataError> {
    // The columns are every key of any record, in the order first seen (a record without one
    // holds null there): the first record alone may lack a key the others have.
    let mut columns: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if objects.len() == rows {
            break;
        }
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        // A file that is one JSON array (as `json.dump` of a list writes it) is not JSON Lines
        // (said before a whole array on one line is parsed: a large file took GBs).
        let listed = objects.is_empty() && line.starts_with("[{");
        let parsed = if listed {
            Ok(serde_json::Value::Null)
        } else {
            serde_json::from_str::<serde_json::Value>(line)
        };
        let array_start = || listed || (line.starts_with('[') && parsed.is_err());
        if objects.is_empty() && array_start() {
            return Err(record_error(
                file,
                Loc::Line(line_no),
                "the file is a JSON array, not JSON Lines (one object per line): write one object per line (`jq -c '.[]' FILE > FILE.jsonl`, or pandas' `to_json(..., orient=\"records\", lines=True)`)".into(),
            ));
        }
        let value: serde_json::Value = parsed.map_err(|e| {
            // serde's position is within this line: its line number is always 1.
            let message = e.to_string().replace(" at line 1 column ", " at column ");
            record_error(file, Loc::Line(line_no), format!("not valid JSON: {message}"))
        })?;
        let serde_json::Value::Object(object) = value else {
            return Err(record_error(
                file,
                Loc::Line(line_no),
                "a JSON Lines record must be an object ({\"text\": ..., \"label\": ...})".into(),
            ));
        };
        for k in object.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        objects.push((line_no, object));
    }
    let records = objects
        .into_iter()
        .map(|(line_no, object)| Record {
            at: Loc::Line(line_no),
            cells: columns
                .iter()
                .map(|c| object.get(c).map(json_cell).unwrap_or(Cell::Null))
                .collect(),
        })
        .collect();
    Ok(Table {
        file: file.into(),
        columns,
        records,
    })
}

fn parquet_cell(field: &Field) -> Cell {
    match field {
        Field::Null => Cell::Null,
        Field::Bool(b) => Cell::Bool(*b),
        Field::Byte(v) => Cell::Int((*v).into()),
        Field::Short(v) => Cell::Int((*v).into()),
        Field::Int(v) => Cell::Int((*v).into()),
        Field::Long(v) => Cell::Int(*v),
        Field::UByte(v) => Cell::Int((*v).into()),
        Field::UShort(v) => Cell::Int((*v).into()),
        Field::UInt(v) => Cell::Int((*v).into()),
        Field::ULong(v) => i64::try_from(*v).map(Cell::Int).unwrap_or(Cell::Float(*v as f64)),
        Field::Float16(v) => Cell::Float(f64::from(f32::from(*v))),
        Field::Float(v) => Cell::Float((*v).into()),
        Field::Double(v) => Cell::Float(*v),
        Field::Str(s) => Cell::Str(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Cell::Str(s.to_string()),
            Err(_) => Cell::Other("binary"),
        },
        Field::Decimal(_) => Cell::Other("decimal"),
        Field::Group(_) => Cell::Other("struct"),
        Field::ListInternal(_) => Cell::Other("list"),
        Field::MapInternal(_) => Cell::Other("map"),
        _ => Cell::Other("date or time"),
    }
}

fn read_parquet(path: &Path, file: &str, rows: usize) -> Result<Table, DataError> {
    let handle = std::fs::File::open(path).map_err(|cause| DataError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let not_a_table = |e: parquet::errors::ParquetError| DataError::Format {
        file: file.into(),
        message: format!("not a readable Parquet table: {e}"),
    };
    let reader = SerializedFileReader::new(handle).map_err(not_a_table)?;
    let schema = reader.metadata().file_metadata().schema();
    let columns: Vec<String> = schema.get_fields().iter().map(|f| f.name().to_string()).collect();
    if columns.is_empty() {
        return Err(DataError::Format {
            file: file.into(),
            message: "a Parquet file without columns is not a table".into(),
        });
    }
    let mut records = Vec::new();
    for (i, row) in reader.get_row_iter(None).map_err(not_a_table)?.take(rows).enumerate() {
        let row = row.map_err(not_a_table)?;
        let mut cells = vec![Cell::Null; columns.len()];
        for (name, field) in row.get_column_iter() {
            if let Some(c) = columns.iter().position(|c| c == name) {
                cells[c] = parquet_cell(field);
            }
        }
        records.push(Record {
            at: Loc::Row(i + 1),
            cells,
        });
    }
    Ok(Table {
        file: file.into(),
        columns,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Cell {
        Cell::Str(v.into())
    }

    #[test]
    fn formats_by_extension_and_name() {
        assert_eq!(Format::of_path(Path::new("a/train.TSV")), Some(Format::Tsv));
        assert_eq!(Format::of_path(Path::new("x.ndjson")), Some(Format::Jsonl));
        assert_eq!(Format::of_path(Path::new("x.parquet")), Some(Format::Parquet));
        assert_eq!(Format::of_path(Path::new("x.txt")), None);
        assert_eq!(Format::from_name("CSV"), Some(Format::Csv));
        assert_eq!(Format::Jsonl.to_string(), "jsonl");
        assert_eq!(Format::names(" or "), "tsv or csv or jsonl or parquet");
    }

    #[test]
    fn lines_ended_by_a_carriage_return_alone_are_named() {
        let dir = tempfile::tempdir().unwrap();
        // A TSV, also with one line feed at its end.
        for (name, text) in [
            ("d.tsv", "sentence\tlabel\rgood\t1\rbad\t0\r"),
            ("e.tsv", "sentence\tlabel\rgood\t1\rbad\t0\n"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = read_table(&p, Format::Tsv).unwrap_err().to_string();
            assert!(e.contains("carriage return alone") && e.contains(name), "{e}");
        }
        // The csv crate reads bare CRs as line ends: such a CSV reads as it did.
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "sentence,label\rgood,1\rbad,0\r").unwrap();
        assert_eq!(read_table(&p, Format::Csv).unwrap().records.len(), 2);
        // One line with a CR at its end, CRLF files and a stray CR in a field are not that.
        assert!(!cr_line_ends("sentence\tlabel\r"));
        assert!(!cr_line_ends("a\tb\r\nc\td\r\n"));
        assert!(!cr_line_ends("a\tb\nc\rx\td\ne\tf\n"));
        assert!(cr_line_ends("a\tb\rc\td"));
    }

    #[test]
    fn tsv_keeps_quotes_and_counts_fields() {
        let t = read_text(
            "\u{feff}text\tlabel\r\n\"odd \t1\r\n\r\nfine\t0\n",
            Format::Tsv,
            "d.tsv",
        )
        .unwrap();
        assert_eq!(t.columns, ["text", "label"]);
        assert_eq!(t.records[0].cells, [s("\"odd "), s("1")]);
        assert_eq!(t.records[1].at, Loc::Line(4));
        let e = read_text("text\tlabel\na\t1\nb\t0\tx\n", Format::Tsv, "d.tsv").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3 of d.tsv: 3 tab-separated field(s), the header has 2 (TSV is read without quoting: a field cannot hold a tab)"
        );
    }

    #[test]
    fn csv_quotes_bom_and_wrong_field_count() {
        let t = read_text(
            "\u{feff}text,label\n\"a, quoted \"\"x\"\"\",pos\nplain,neg\n",
            Format::Csv,
            "d.csv",
        )
        .unwrap();
        assert_eq!(t.columns, ["text", "label"]);
        assert_eq!(t.records[0].cells, [s("a, quoted \"x\""), s("pos")]);
        assert_eq!(t.records[1].at, Loc::Line(3));
        let e = read_text("text,label\na,1\nb,0,extra\n", Format::Csv, "d.csv").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3 of d.csv: 3 comma-separated field(s), the header has 2"
        );
        // Windows line ends, and a quoted field over two lines: the records' own lines.
        let t = read_text(
            "\u{feff}text,label\r\na,1\r\n\"two\r\nlines\",0\r\nc,1\r\n",
            Format::Csv,
            "d.csv",
        )
        .unwrap();
        let at: Vec<&Loc> = t.records.iter().map(|r| &r.at).collect();
        assert_eq!(at, [&Loc::Line(2), &Loc::Line(3), &Loc::Line(5)]);
        let e = read_text("text,label\r\na,1\r\nb,0,extra\r\n", Format::Csv, "d.csv").unwrap_err();
        assert!(e.to_string().starts_with("line 3 of d.csv"), "{e}");
        // A quote never closed is named where it opens, not read to the end of the file as one
        // field (which read as "1 comma-separated field(s)" or as a label "0\nb,1\n").
        for text in ["text,label\na,1\n\"b,0\nc,1\n", "text,label\r\na,1\r\nb,\"0\r\nc,1\r\n"] {
            let e = read_text(text, Format::Csv, "d.csv").unwrap_err().to_string();
            assert!(
                e.starts_with("line 3 of d.csv: a field opens with a quote that is never closed"),
                "{e}"
            );
        }
        // Quotes that are closed, doubled or inside a field are not that.
        for text in [
            "\u{feff}\"text\",label\n\"a \"\"b\"\"\",1\n",
            "text,label\nsaid \"hi,1\n\"two\nlines\",0\n",
            "text,label\n\"x\"y,1\n",
        ] {
            assert!(read_text(text, Format::Csv, "d.csv").is_ok(), "{text:?}");
        }
    }

    #[test]
    fn jsonl_types_missing_keys_and_errors() {
        let t = read_text(
            "{\"text\": \"a\", \"label\": 1}\n\n{\"text\": \"b\"}\n{\"text\": [1], \"label\": 2.5}\n",
            Format::Jsonl,
            "d.jsonl",
        )
        .unwrap();
        assert_eq!(t.columns, ["label", "text"]);
        assert_eq!(t.records[0].cells, [Cell::Int(1), s("a")]);
        assert_eq!(t.records[1].cells, [Cell::Null, s("b")]);
        assert_eq!(t.records[1].at, Loc::Line(3));
        assert_eq!(t.records[2].cells, [Cell::Float(2.5), Cell::Other("list")]);
        // A key the first record lacks is a column all the same (null where missing).
        let t = read_text(
            "{}\n{\"text\": \"b\", \"label\": 0}\n{\"text\": \"c\", \"label\": 1, \"id\": 7}\n",
            Format::Jsonl,
            "d.jsonl",
        )
        .unwrap();
        assert_eq!(t.columns, ["label", "text", "id"]);
        assert_eq!(t.records[0].cells, [Cell::Null, Cell::Null, Cell::Null]);
        assert_eq!(t.records[2].cells, [Cell::Int(1), s("c"), Cell::Int(7)]);
        let e = read_text("{\"text\": \"a\"}\n{\"text\": \n", Format::Jsonl, "d.jsonl").unwrap_err();
        assert!(e.to_string().starts_with("line 2 of d.jsonl: not valid JSON"), "{e}");
        assert!(!e.to_string().contains("at line 1 column"), "{e}");
        // A line that is an array (JSON Lines of arrays) is not an object; a file that is one
        // JSON array is named as such.
        for rows in ["[\"a\", 1]\n", "{\"text\": \"a\"}\n[\"a\", 1]\n"] {
            let e = read_text(rows, Format::Jsonl, "d.jsonl").unwrap_err();
            assert!(e.to_string().contains("must be an object"), "{e}");
        }
        for array in ["[{\"text\": \"a\", \"label\": 1}]\n", "[\n  {\"text\": \"a\"}\n]\n"] {
            let e = read_text(array, Format::Jsonl, "d.jsonl").unwrap_err().to_string();
            assert!(
                e.contains("line 1 of d.jsonl: the file is a JSON array, not JSON Lines"),
                "{e}"
            );
        }
    }

    #[test]
    fn empty_files_and_bad_bytes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("e.csv", &b""[..]),
            ("h.csv", b"text,label\n"),
            ("e.tsv", b"\n\n"),
            ("e.jsonl", b"\n"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            let e = read_table(&p, Format::of_path(&p).unwrap()).unwrap_err();
            assert!(matches!(e, DataError::Empty { .. }), "{name}: {e}");
        }
        let p = dir.path().join("b.csv");
        std::fs::write(&p, b"text,label\nok,1\nbad \xff,0\n").unwrap();
        let e = read_table(&p, Format::Csv).unwrap_err();
        assert!(
            e.to_string().contains("line 3 of") && e.to_string().contains("iconv -f CP1252"),
            "{e}"
        );
        // A field quoted by pandas (a quote inside, doubled) is unquoted; other quotes stay.
        for (field, text) in [
            (r#""He said ""hi"" twice""#, r#"He said "hi" twice"#),
            (r#""a quotation""#, r#""a quotation""#),
            (r#""stray "" and " lone""#, r#""stray "" and " lone""#),
            (r#"he said ""hi"""#, r#"he said ""hi"""#),
            (r#""""#, r#""""#),
        ] {
            assert_eq!(unquote(field), text, "{field}");
        }
        // UTF-16 without it: NUL bytes.
        let p = dir.path().join("u16le.csv");
        let bytes: Vec<u8> = "text,label\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        std::fs::write(&p, bytes).unwrap();
        let e = read_table(&p, Format::Csv).unwrap_err().to_string();
        assert!(e.contains("a NUL byte") && e.contains("UTF-16"), "{e}");
        // UTF-16 with its byte-order mark, as Excel's "Unicode Text" writes it.
        let p = dir.path().join("u16.tsv");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("text\tlabel\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        std::fs::write(&p, utf16).unwrap();
        let e = read_table(&p, Format::Tsv).unwrap_err().to_string();
        assert!(e.contains("the file is UTF-16") && e.contains("iconv -f UTF-16"), "{e}");
        let p = dir.path().join("fake.parquet");
        std::fs::write(&p, b"text,label\nok,1\n").unwrap();
        let e = read_table(&p, Format::Parquet).unwrap_err();
        assert!(e.to_string().contains("not a readable Parquet table"), "{e}");
    }

    /// A Parquet file read as text (a --format that does not fit) is named as Parquet, not as a
    /// text that is not UTF-8.
    #[test]
    fn parquet_read_as_text_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data.csv");
        std::fs::write(&p, b"PAR1\x15\x00\x15\xff\xfe").unwrap();
        let e = read_table(&p, Format::Csv).unwrap_err().to_string();
        assert!(
            e.contains("a Parquet file (it starts with PAR1), read as csv: read it as parquet"),
            "{e}"
        );
    }

    /// JSON Lines read as CSV or TSV is named as JSON Lines, not read one raw line per text; a
    /// table whose first cell begins with a brace is still a table.
    #[test]
    fn json_lines_read_as_a_table_is_named() {
        let lines = "{\"text\": \"good film\", \"label\": 1}\n{\"text\": \"bad\", \"label\": 0}\n";
        for format in [Format::Csv, Format::Tsv] {
            let e = read_text(lines, format, "x.jsonl").unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "x.jsonl: JSON Lines (its first line is a JSON object), read as {}: read it as jsonl",
                    format.name()
                )),
                "{e}"
            );
        }
        let t = read_text("text\n{not json}\n", Format::Csv, "t.csv").unwrap();
        assert_eq!(t.records.len(), 1);
        assert_eq!(read_text(lines, Format::Jsonl, "x.jsonl").unwrap().records.len(), 2);
    }
}
