//! CSV as RFC 4180 writes it and spreadsheets and HR systems export it: quoted fields with
//! doubled quotes, delimiters and line breaks inside quotes, CRLF or LF line ends, an
//! optional UTF-8 byte-order mark, and a configurable delimiter. Records carry the line
//! they start on so that a validation report can point at them.

use std::io::BufRead;

/// One record and the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub line: u64,
    pub fields: Vec<String>,
}

/// A record that could not be read, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    pub line: u64,
    pub reason: String,
}

pub struct Reader<R> {
    input: R,
    delimiter: char,
    line: u64,
    bytes: u64,
    buf: String,
    eof: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R, delimiter: char) -> Self {
        Reader {
            input,
            delimiter,
            line: 0,
            bytes: 0,
            buf: String::new(),
            eof: false,
        }
    }

    /// Bytes consumed so far (for progress).
    pub fn position(&self) -> u64 {
        self.bytes
    }

    /// Reads one physical line into `buf`; `Ok(false)` at the end of input. A line that is
    /// not UTF-8 is consumed and reported.
    fn read_line(&mut self) -> Result<bool, RecordError> {
        self.buf.clear();
        let mut raw = Vec::new();
        let n = self
            .input
            .read_until(b'\n', &mut raw)
            .map_err(|e| RecordError {
                line: self.line + 1,
                reason: format!("read error: {e}"),
            })?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.bytes += n as u64;
        self.line += 1;
        self.buf = String::from_utf8(raw).map_err(|_| RecordError {
            line: self.line,
            reason: "the line is not valid UTF-8".into(),
        })?;
        if self.line == 1 && self.buf.starts_with('\u{feff}') {
            self.buf.drain(..'\u{feff}'.len_utf8());
        }
        Ok(true)
    }

    /// The next record; blank lines are skipped. `None` at the end of input.
    pub fn next_record(&mut self) -> Option<Result<Record, RecordError>> {
        loop {
            if self.eof {
                return None;
            }
            match self.read_line() {
                Err(e) => return Some(Err(e)),
                Ok(false) => return None,
                Ok(true) => {}
            }
            if self.buf.trim_end_matches(['\r', '\n']).is_empty() {
                continue;
            }
            return Some(self.parse_record());
        }
    }

    fn parse_record(&mut self) -> Result<Record, RecordError> {
        let start = self.line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut text = std::mem::take(&mut self.buf);
        let mut pos = 0;
        let mut quoted = false;
        let mut at_field_start = true;
        let mut after_quote = false;
        loop {
            let rest = &text[pos..];
            let Some(c) = rest.chars().next() else {
                if quoted {
                    // A line break inside quotes: the field continues on the next line.
                    match self.read_line() {
                        Ok(true) => {
                            text = std::mem::take(&mut self.buf);
                            pos = 0;
                            continue;
                        }
                        Ok(false) => {
                            return Err(RecordError {
                                line: start,
                                reason: "a quoted field is not closed before the end of the file"
                                    .into(),
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
                fields.push(std::mem::take(&mut field));
                return Ok(Record {
                    line: start,
                    fields,
                });
            };
            pos += c.len_utf8();
            if quoted {
                if c == '"' {
                    if text[pos..].starts_with('"') {
                        field.push('"');
                        pos += 1;
                    } else {
                        quoted = false;
                        after_quote = true;
                    }
                } else {
                    field.push(c);
                }
                continue;
            }
            if c == self.delimiter {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
                after_quote = false;
                continue;
            }
            if c == '\n' || c == '\r' {
                // The record ends here (whatever follows on this line is a line end).
                fields.push(std::mem::take(&mut field));
                return Ok(Record {
                    line: start,
                    fields,
                });
            }
            if after_quote {
                return Err(RecordError {
                    line: self.line,
                    reason: format!(
                        "text after the closing quote of field {} (a quote inside a quoted field is written \"\")",
                        fields.len() + 1
                    ),
                });
            }
            if c == '"' && at_field_start {
                quoted = true;
                at_field_start = false;
                continue;
            }
            at_field_start = false;
            field.push(c);
        }
    }
}

/// Appends one record (and a line end), quoting where needed.
pub fn write_record<'a>(out: &mut String, fields: impl IntoIterator<Item = &'a str>) {
    write_record_with(out, ',', fields);
}

pub fn write_record_with<'a>(
    out: &mut String,
    delimiter: char,
    fields: impl IntoIterator<Item = &'a str>,
) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(delimiter);
        }
        let needs_quotes = f.contains(delimiter)
            || f.contains(['"', '\n', '\r'])
            || f.starts_with(' ')
            || f.ends_with(' ');
        if needs_quotes {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> Vec<Result<Record, RecordError>> {
        let mut r = Reader::new(text.as_bytes(), ',');
        std::iter::from_fn(|| r.next_record()).collect()
    }

    #[test]
    fn reads_quotes_line_breaks_and_line_numbers() {
        let text = "\u{feff}a,b,c\r\n1,\"x, y\",\"say \"\"hi\"\"\"\r\n\n2,\"multi\nline\",z\n3,,\n";
        let recs: Vec<Record> = read_all(text).into_iter().map(Result::unwrap).collect();
        assert_eq!(recs[0].fields, ["a", "b", "c"]);
        assert_eq!(recs[1].fields, ["1", "x, y", "say \"hi\""]);
        assert_eq!(recs[1].line, 2);
        assert_eq!(recs[2].fields, ["2", "multi\nline", "z"]);
        assert_eq!(recs[2].line, 4);
        assert_eq!(recs[3].fields, ["3", "", ""]);
        assert_eq!(recs[3].line, 6);
    }

    #[test]
    fn reports_bad_quoting_and_continues() {
        let recs = read_all("a,b\n\"x\"y,1\n2,3\n\"open,4\n");
        assert_eq!(recs[1].as_ref().unwrap_err().line, 2);
        assert_eq!(recs[2].as_ref().unwrap().fields, ["2", "3"]);
        let last = recs[3].as_ref().unwrap_err();
        assert_eq!(last.line, 4);
        assert!(last.reason.contains("not closed"));
    }

    #[test]
    fn writes_what_it_reads() {
        let fields = ["plain", "a,b", "q\"uote", "line\nbreak", " pad", ""];
        let mut s = String::new();
        write_record(&mut s, fields);
        assert_eq!(s, "plain,\"a,b\",\"q\"\"uote\",\"line\nbreak\",\" pad\",\n");
        let back = read_all(&s);
        assert_eq!(back[0].as_ref().unwrap().fields, fields);
    }

    #[test]
    fn invalid_utf8_lines_are_reported_alone() {
        let mut bytes = b"a,b\n1,2\n".to_vec();
        bytes.extend_from_slice(b"\xff\xfe,3\n4,5\n");
        let mut r = Reader::new(&bytes[..], ',');
        let recs: Vec<_> = std::iter::from_fn(|| r.next_record()).collect();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[2].as_ref().unwrap_err().line, 3);
        assert_eq!(recs[3].as_ref().unwrap().fields, ["4", "5"]);
    }

    #[test]
    fn semicolons() {
        let mut r = Reader::new("a;b\n\"1;2\";3\n".as_bytes(), ';');
        r.next_record();
        assert_eq!(r.next_record().unwrap().unwrap().fields, ["1;2", "3"]);
    }
}
