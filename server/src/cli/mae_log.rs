//! The official MAE `log.txt` (facebookresearch/mae `main_pretrain.py` and
//! `main_finetune.py`: rank 0 appends `json.dumps(log_stats) + "\n"` once per
//! epoch), read leniently for `maelab import` and written the way Python
//! writes it for the `log.txt` export. Pure: no I/O.
//!
//! Reading ([`parse`]) takes what people make of such logs when they paste
//! them into reports and back: objects pretty-printed over several lines,
//! Python dicts (single quotes, `True`/`None`, parentheses instead of braces),
//! trailing commas, blank lines, CRLF. Anything that cannot be an epoch record
//! is a [`BadLine`] naming its 1-based line numbers and the reason: not JSON,
//! an object never closed, `NaN`/`Infinity`, a number past f64, no integer
//! `epoch` >= 0, a key or value the ingest API refuses. The caller decides
//! whether bad lines refuse the file.
//!
//! Writing ([`python_json`], [`python_float`]) reproduces `json.dumps` byte
//! for byte: floats as Python's `repr` (shortest round-trip digits, exponent
//! form below 1e-4 and from 1e16 on, `1e-05`, `2.5e+16`, `75.0`), integers
//! without `.0`, `", "` and `": "` separators, non-ASCII escaped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use maelab_core::db::ingest::{EPOCH_KEYS, MAX_KEY_CHARS};

/// Largest epoch: the epoch rows' column is a 32-bit integer.
pub const MAX_EPOCH: u32 = i32::MAX as u32;

/// One epoch's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The 1-based line it starts on.
    pub line: usize,
    pub epoch: u32,
    /// The numeric keys other than `epoch`, in the record's order.
    pub values: Vec<(String, f64)>,
}

/// Lines that are no record, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based; `first == last` for one line.
    pub first: usize,
    pub last: usize,
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "line {}: {}", self.first, self.reason)
        } else {
            write!(f, "lines {}-{}: {}", self.first, self.last, self.reason)
        }
    }
}

/// A key whose values are not numbers (left out of the import).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub key: String,
    /// What its first such value was: `a string`, `null`, ...
    pub what: &'static str,
    /// On how many records.
    pub count: usize,
    pub first_line: usize,
}

/// A parsed `log.txt`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log {
    /// In file order.
    pub records: Vec<Record>,
    /// In file order.
    pub bad: Vec<BadLine>,
    pub ignored: Vec<Ignored>,
    /// Epochs on more than one record, with their lines (the later values win).
    pub repeated_epochs: Vec<(u32, Vec<usize>)>,
}

impl Log {
    /// Finetuning (or linear probing) logs evaluate: any `test_loss` or
    /// `test_acc1`. Pretraining logs have only `train_*`.
    pub fn is_finetune(&self) -> bool {
        self.records.iter().any(|r| {
            r.values
                .iter()
                .any(|(k, _)| k == "test_acc1" || k == "test_loss")
        })
    }

    /// Distinct epochs.
    pub fn epochs(&self) -> usize {
        let mut e: Vec<u32> = self.records.iter().map(|r| r.epoch).collect();
        e.sort_unstable();
        e.dedup();
        e.len()
    }

    /// The largest epoch, if any record.
    pub fn last_epoch(&self) -> Option<u32> {
        self.records.iter().map(|r| r.epoch).max()
    }

    /// Points (key, epoch, value) in file order.
    pub fn points(&self) -> impl Iterator<Item = (&str, u32, f64)> {
        self.records
            .iter()
            .flat_map(|r| r.values.iter().map(|(k, v)| (k.as_str(), r.epoch, *v)))
    }

    /// What was left out or merged, one sentence each (not errors).
    pub fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self
            .ignored
            .iter()
            .map(|i| {
                format!(
                    "`{}` is not a number ({} on line {}{}); ignored",
                    i.key,
                    i.what,
                    i.first_line,
                    if i.count > 1 {
                        format!(" and {} more", i.count - 1)
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        notes.extend(self.repeated_epochs.iter().map(|(e, lines)| {
            let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
            format!(
                "epoch {e} is on lines {}; the later line's values win",
                lines.join(", ")
            )
        }));
        notes
    }
}

/// Parse a `log.txt` leniently; never fails, the bad lines are in
/// [`Log::bad`].
pub fn parse(bytes: &[u8]) -> Log {
    let mut scan = Scan::default();
    let mut raw: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if raw.last().is_some_and(|l| l.is_empty()) {
        raw.pop();
    }
    for (i, line) in raw.into_iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = if i == 0 {
            line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line)
        } else {
            line
        };
        match std::str::from_utf8(line) {
            Ok(text) => scan.line(i + 1, text, true),
            Err(_) => scan.line(i + 1, &String::from_utf8_lossy(line), false),
        }
    }
    scan.end()
}

/// An object spanning lines, not closed yet.
#[derive(Debug)]
struct Open {
    first: usize,
    last: usize,
    text: String,
    /// Unclosed brackets.
    stack: Vec<char>,
    non_utf8: Option<usize>,
}

#[derive(Debug, Default)]
struct Scan {
    open: Option<Open>,
    log: Log,
    ignored: HashMap<String, usize>,
    epochs: BTreeMap<u32, Vec<usize>>,
}

fn closer(open: char) -> char {
    match open {
        '{' => '}',
        '(' => ')',
        _ => ']',
    }
}

impl Scan {
    fn bad(&mut self, first: usize, last: usize, reason: impl Into<String>) {
        self.log.bad.push(BadLine {
            first,
            last,
            reason: reason.into(),
        });
    }

    fn line(&mut self, no: usize, text: &str, utf8: bool) {
        let trimmed = text.trim_start();
        let starts_object = trimmed.starts_with(['{', '(']);
        let mut open = match self.open.take() {
            None if trimmed.trim_end().is_empty() => return,
            None if !starts_object => {
                self.bad(no, no, not_an_object(trimmed));
                return;
            }
            // An object still open at its outer level (or any unindented
            // object) when a new one starts: the old one was cut off, as
            // when a killed job's log is appended to by its resumed run.
            Some(o) if starts_object && (o.stack.len() == 1 || trimmed.len() == text.len()) => {
                self.bad(
                    o.first,
                    o.last,
                    format!(
                        "an object that is never closed (no `{}` before line {no})",
                        o.stack.first().map_or('}', |c| closer(*c))
                    ),
                );
                Open {
                    first: no,
                    last: no,
                    text: String::new(),
                    stack: Vec::new(),
                    non_utf8: None,
                }
            }
            Some(mut o) => {
                o.text.push('\n');
                o.last = no;
                o
            }
            None => Open {
                first: no,
                last: no,
                text: String::new(),
                stack: Vec::new(),
                non_utf8: None,
            },
        };
        if !utf8 {
            open.non_utf8.get_or_insert(no);
        }
        let base = open.text.len();
        open.text.push_str(text);
        let mut quote: Option<char> = None;
        let mut escaped = false;
        for (pos, c) in text.char_indices() {
            if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                '"' | '\'' => quote = Some(c),
                '{' | '(' | '[' => open.stack.push(c),
                '}' | ')' | ']' => {
                    match open.stack.pop() {
                        Some(o) if closer(o) == c => {}
                        Some(o) => {
                            self.bad(
                                open.first,
                                no,
                                format!("`{c}` where `{}` was expected", closer(o)),
                            );
                            return;
                        }
                        None => {
                            self.bad(open.first, no, format!("`{c}` closes nothing"));
                            return;
                        }
                    }
                    if open.stack.is_empty() {
                        let rest = text[pos + c.len_utf8()..].trim();
                        // A trailing comma after the object (a pasted list).
                        let rest = rest.strip_prefix(',').unwrap_or(rest).trim();
                        if !rest.is_empty() {
                            self.bad(
                                open.first,
                                no,
                                format!("text after the object: `{}`", clip(rest, 40)),
                            );
                            return;
                        }
                        open.text.truncate(base + pos + c.len_utf8());
                        self.record(open);
                        return;
                    }
                }
                _ => {}
            }
        }
        if quote.is_some() {
            self.bad(open.first, no, "a string that is never closed");
            return;
        }
        self.open = Some(open);
    }

    fn end(mut self) -> Log {
        if let Some(o) = self.open.take() {
            self.bad(
                o.first,
                o.last,
                format!(
                    "an object that is never closed (the file ends before its `{}`)",
                    o.stack.first().map_or('}', |c| closer(*c))
                ),
            );
        }
        self.log.repeated_epochs = self
            .epochs
            .into_iter()
            .filter(|(_, lines)| lines.len() > 1)
            .collect();
        self.log
    }

    fn record(&mut self, open: Open) {
        if let Some(no) = open.non_utf8 {
            self.bad(open.first, open.last, format!("line {no} is not UTF-8"));
            return;
        }
        let parsed = Parser::new(&open.text, open.first)
            .record()
            .and_then(|pairs| check_record(open.first, pairs));
        match parsed {
            Ok((record, ignored)) => {
                for (key, what) in ignored {
                    match self.ignored.get(&key) {
                        Some(i) => self.log.ignored[*i].count += 1,
                        None => {
                            self.ignored.insert(key.clone(), self.log.ignored.len());
                            self.log.ignored.push(Ignored {
                                key,
                                what,
                                count: 1,
                                first_line: open.first,
                            });
                        }
                    }
                }
                self.epochs
                    .entry(record.epoch)
                    .or_default()
                    .push(record.line);
                self.log.records.push(record);
            }
            Err(reason) => self.bad(open.first, open.last, reason),
        }
    }
}

/// Why a line that does not start an object is bad.
fn not_an_object(line: &str) -> String {
    let line = line.trim_end();
    if line.starts_with('[') {
        "a list, not an object (`{...}` with an `epoch`)".into()
    } else {
        format!("not a JSON object: `{}`", clip(line, 60))
    }
}

/// At most `n` characters of `s`, with `…` when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

/// A value as the lenient parser reads it.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Num(f64),
    /// `NaN`, `Infinity`, `-Infinity` (and Python's `nan`, `inf`), as written.
    NonFinite(String),
    Str(String),
    Bool,
    Null,
    List,
    Obj(Vec<(String, Val)>),
}

impl Val {
    fn what(&self) -> &'static str {
        match self {
            Self::Num(_) => "a number",
            Self::NonFinite(_) => "not finite",
            Self::Str(_) => "a string",
            Self::Bool => "true/false",
            Self::Null => "null",
            Self::List => "a list",
            Self::Obj(_) => "an object",
        }
    }
}

/// A recursive-descent parser for JSON and Python literals.
struct Parser<'a> {
    s: &'a str,
    pos: usize,
    first_line: usize,
}

type Parsed<T> = Result<T, String>;

impl<'a> Parser<'a> {
    fn new(s: &'a str, first_line: usize) -> Self {
        Self {
            s,
            pos: 0,
            first_line,
        }
    }

    /// Where `pos` is, for a message: `column C`, or `line L column C` for an
    /// object over several lines.
    fn at(&self, pos: usize) -> String {
        let before = &self.s[..pos];
        let line = before.matches('\n').count();
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        if self.s.contains('\n') {
            format!("line {} column {column}", self.first_line + line)
        } else {
            format!("column {column}")
        }
    }

    fn fail<T>(&self, pos: usize, msg: impl fmt::Display) -> Parsed<T> {
        Err(format!("{msg} at {}", self.at(pos)))
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn record(mut self) -> Parsed<Vec<(String, Val)>> {
        self.ws();
        let start = self.pos;
        let v = self.value()?;
        self.ws();
        if self.pos < self.s.len() {
            return self.fail(self.pos, "text after the object");
        }
        match v {
            Val::Obj(pairs) => Ok(pairs),
            other => self.fail(start, format!("{}, not an object", other.what())),
        }
    }

    fn value(&mut self) -> Parsed<Val> {
        self.ws();
        match self.peek() {
            None => self.fail(self.pos, "a value is missing"),
            Some('{' | '(' | '[') => self.container(),
            Some('"' | '\'') => Ok(Val::Str(self.string()?)),
            Some(c) if c == '-' || c == '+' || c == '.' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_alphabetic() || c == '_' => self.word(),
            Some(c) => self.fail(self.pos, format!("unexpected `{c}`")),
        }
    }

    fn word(&mut self) -> Parsed<Val> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.bump();
        }
        let w = &self.s[start..self.pos];
        match w {
            "true" | "True" | "false" | "False" => Ok(Val::Bool),
            "null" | "None" => Ok(Val::Null),
            "NaN" | "nan" | "Infinity" | "inf" => Ok(Val::NonFinite(w.to_string())),
            _ => self.fail(
                start,
                format!("`{}` is not a value (strings need quotes)", clip(w, 40)),
            ),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        self.pos - start
    }

    fn number(&mut self) -> Parsed<Val> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.bump();
        }
        if self.peek().is_some_and(char::is_alphabetic) {
            let sign = &self.s[start..self.pos];
            return match self.word()? {
                Val::NonFinite(w) if w != "NaN" && w != "nan" => {
                    Ok(Val::NonFinite(format!("{sign}{w}")))
                }
                _ => self.fail(start, "a sign before something that is not a number"),
            };
        }
        let mut n = self.digits();
        if self.peek() == Some('.') {
            self.bump();
            n += self.digits();
        }
        if n == 0 {
            return self.fail(start, "a number without digits");
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('-' | '+')) {
                self.bump();
            }
            if self.digits() == 0 {
                return self.fail(start, "an exponent without digits");
            }
        }
        let token = &self.s[start..self.pos];
        if self
            .peek()
            .is_some_and(|c| !c.is_whitespace() && !",:}])".contains(c))
        {
            let end = self.s[self.pos..]
                .find(|c: char| c.is_whitespace() || ",:}])".contains(c))
                .map_or(self.s.len(), |e| self.pos + e);
            return self.fail(
                start,
                format!("`{}` is not a number", clip(&self.s[start..end], 40)),
            );
        }
        match token.strip_prefix('+').unwrap_or(token).parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Val::Num(v)),
            Ok(_) => self.fail(
                start,
                format!("{} is too large for a 64-bit float", clip(token, 40)),
            ),
            Err(_) => self.fail(start, format!("`{}` is not a number", clip(token, 40))),
        }
    }

    fn hex(&mut self, n: usize) -> Parsed<u32> {
        let start = self.pos;
        let mut v = 0u32;
        for _ in 0..n {
            match self.bump().and_then(|c| c.to_digit(16)) {
                Some(d) => v = v * 16 + d,
                None => return self.fail(start, format!("an escape needs {n} hex digits")),
            }
        }
        Ok(v)
    }

    /// A JSON or Python string in double or single quotes.
    fn string(&mut self) -> Parsed<String> {
        let start = self.pos;
        let quote = self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return self.fail(start, "a string that is never closed"),
                Some(c) if Some(c) == quote => return Ok(out),
                Some('\\') => match self.bump() {
                    None => return self.fail(start, "a string that is never closed"),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('0') => out.push('\0'),
                    Some('x') => {
                        let v = self.hex(2)?;
                        out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                    }
                    Some('U') => {
                        let v = self.hex(8)?;
                        out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                    }
                    Some('u') => {
                        let hi = self.hex(4)?;
                        let c = if (0xd800..0xdc00).contains(&hi)
                            && self.s[self.pos..].starts_with("\\u")
                        {
                            let save = self.pos;
                            self.pos += 2;
                            let lo = self.hex(4)?;
                            if (0xdc00..0xe000).contains(&lo) {
                                char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                            } else {
                                self.pos = save;
                                None
                            }
                        } else {
                            char::from_u32(hi)
                        };
                        out.push(c.unwrap_or('\u{fffd}'));
                    }
                    // `\"`, `\'`, `\\`, `\/`; anything else stays as written
                    // (Python keeps unknown escapes).
                    Some(c @ ('"' | '\'' | '\\' | '/')) => out.push(c),
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// `{...}` and `(...)`: an object when it holds `key: value` pairs (or
    /// nothing), else a list (a Python tuple or set); `[...]`: a list.
    /// Trailing commas are fine.
    fn container(&mut self) -> Parsed<Val> {
        let open = self.bump().unwrap_or('{');
        let close = closer(open);
        let mut pairs = Vec::new();
        let mut items = 0usize;
        loop {
            self.ws();
            if self.peek() == Some(close) {
                self.bump();
                break;
            }
            let at = self.pos;
            let v = self.value()?;
            self.ws();
            if open != '[' && self.peek() == Some(':') {
                let Val::Str(key) = v else {
                    return self.fail(at, "a key must be a quoted string");
                };
                if items > 0 {
                    return self.fail(at, "`key: value` after plain values");
                }
                self.bump();
                pairs.push((key, self.value()?));
            } else {
                if !pairs.is_empty() {
                    return self.fail(at, "a value without a key");
                }
                items += 1;
            }
            self.ws();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(c) if c == close => {
                    self.bump();
                    break;
                }
                Some(c) => {
                    return self.fail(self.pos, format!("expected `,` or `{close}`, found `{c}`"));
                }
                None => return self.fail(self.pos, format!("expected `{close}`")),
            }
        }
        Ok(if open == '[' || items > 0 {
            Val::List
        } else {
            Val::Obj(pairs)
        })
    }
}

/// Keys left out of a record, with what their values were.
type IgnoredKeys = Vec<(String, &'static str)>;

/// A record's keys checked as the ingest API would check its points, plus
/// the integer `epoch`: the record and its non-numeric keys, or every
/// problem in one sentence.
fn check_record(line: usize, pairs: Vec<(String, Val)>) -> Result<(Record, IgnoredKeys), String> {
    // A key given twice: the later value, in the first place (Python's dict).
    let mut merged: Vec<(String, Val)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match merged.iter_mut().find(|(m, _)| *m == k) {
            Some(slot) => slot.1 = v,
            None => merged.push((k, v)),
        }
    }
    let mut problems = Vec::new();
    let mut epoch = None;
    let mut epoch_seen = false;
    let mut values = Vec::new();
    let mut ignored = Vec::new();
    for (key, v) in merged {
        let chars = key.chars().count();
        if chars == 0 {
            problems.push("an empty key".to_string());
            continue;
        }
        if chars > MAX_KEY_CHARS {
            problems.push(format!(
                "key `{}` is {chars} characters; at most {MAX_KEY_CHARS}",
                clip(&key, 20)
            ));
            continue;
        }
        if key.chars().any(char::is_control) {
            problems.push(format!("key {key:?} contains control characters"));
            continue;
        }
        if key == "epoch" {
            epoch_seen = true;
            match v {
                Val::Num(x) if x < 0.0 => problems.push(format!("epoch {x} is negative")),
                Val::Num(x) if x.fract() != 0.0 => {
                    problems.push(format!("epoch {x} is not an integer"));
                }
                Val::Num(x) if x > f64::from(MAX_EPOCH) => {
                    problems.push(format!("epoch {x} is too large (at most {MAX_EPOCH})"));
                }
                // Whole and in 0..=i32::MAX: exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Val::Num(x) => epoch = Some(x as u32),
                Val::NonFinite(w) => problems.push(format!("epoch is {w}")),
                other => problems.push(format!("epoch must be an integer, not {}", other.what())),
            }
            continue;
        }
        match v {
            Val::Num(x) => {
                if let Some((_, lo, hi)) = EPOCH_KEYS.iter().find(|(k, _, _)| *k == key) {
                    if x < *lo || x > *hi {
                        problems.push(format!("{key} {x} is out of range ({lo} to {hi})"));
                        continue;
                    }
                    if key == "n_parameters" && x.fract() != 0.0 {
                        problems.push(format!("n_parameters {x} is not a whole number"));
                        continue;
                    }
                }
                values.push((key, x));
            }
            Val::NonFinite(w) => {
                problems.push(format!("{key} is {w}; only finite numbers can be stored"));
            }
            other => ignored.push((key, other.what())),
        }
    }
    if !epoch_seen {
        problems.push("no `epoch` key".into());
    }
    match epoch {
        Some(epoch) if problems.is_empty() => Ok((
            Record {
                line,
                epoch,
                values,
            },
            ignored,
        )),
        _ => Err(problems.join("; ")),
    }
}

/// A float as Python's `repr` (and so `json.dumps`) writes it: the shortest
/// digits that read back as the same double, in exponent form (`1e-05`,
/// `2.5e+16`) when the exponent is below -4 or at least 16, else positional
/// with at least one decimal (`75.0`). Non-finite values as `json.dumps`
/// writes them (`NaN`, `Infinity`, `-Infinity`).
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sign = if v.is_sign_negative() { "-" } else { "" };
    if v == 0.0 {
        return format!("{sign}0.0");
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, as Python's
    // repr does; when two such strings are equally close (1954820367932127.25
    // as ...127.2 or ...127.3), Python takes the even last digit, which
    // Rust's exact formatting to as many digits gives (it rounds ties to even).
    let shortest = format!("{:e}", v.abs());
    let n = shortest
        .split_once('e')
        .map_or(1, |(m, _)| m.len() - usize::from(m.contains('.')));
    let exact = format!("{:.*e}", n - 1, v.abs());
    let sci = if exact.parse::<f64>().is_ok_and(|p| p == v.abs()) {
        exact
    } else {
        shortest
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let n = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    // The decimal point sits after `point` digits.
    let point = exp + 1;
    if !(-3..=16).contains(&point) {
        let mantissa = if digits.len() == 1 {
            digits
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        let sign_e = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{sign_e}{:02}", exp.unsigned_abs())
    } else if point <= 0 {
        format!(
            "{sign}0.{}{digits}",
            "0".repeat(point.unsigned_abs() as usize)
        )
    } else if n <= point {
        format!(
            "{sign}{digits}{}.0",
            "0".repeat((point - n).unsigned_abs() as usize)
        )
    } else {
        let (int, frac) = digits.split_at(point.unsigned_abs() as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// A JSON string as `json.dumps` writes it (`ensure_ascii`: everything
/// outside printable ASCII escaped).
fn python_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

fn python_json_into(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&python_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => python_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json_into(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_str(k, out);
                out.push_str(": ");
                python_json_into(item, out);
            }
            out.push('}');
        }
    }
}

/// A JSON value as Python's `json.dumps` writes it with its defaults: floats
/// as [`python_float`], integers as integers, `", "` and `": "`, non-ASCII
/// escaped.
pub fn python_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    python_json_into(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of a bad-line report, as `first-last: reason` prefixes.
    fn bad(log: &Log) -> Vec<(usize, usize)> {
        log.bad.iter().map(|b| (b.first, b.last)).collect()
    }

    fn reason(log: &Log, first: usize) -> &str {
        &log.bad.iter().find(|b| b.first == first).unwrap().reason
    }

    // Lines as facebookresearch/mae writes them (json.dumps of log_stats).
    const PRETRAIN: &str = "{\"train_lr\": 1.4999999999999999e-05, \"train_loss\": 0.9583370792865753, \"epoch\": 0}\n\
{\"train_lr\": 4.5e-05, \"train_loss\": 0.6123, \"epoch\": 1}\n";

    const FINETUNE: &str = "{\"train_lr\": 0.0001, \"train_loss\": 2.1, \"test_loss\": 1.75, \"test_acc1\": 40.5, \"test_acc5\": 88.0, \"epoch\": 0, \"n_parameters\": 85806346}\n";

    #[test]
    fn reads_the_official_lines_in_order() {
        let log = parse(PRETRAIN.as_bytes());
        assert!(log.bad.is_empty(), "{:?}", log.bad);
        assert_eq!(log.records.len(), 2);
        assert_eq!(log.records[0].line, 1);
        assert_eq!(log.records[1].epoch, 1);
        assert_eq!(
            log.records[0].values,
            vec![
                ("train_lr".to_string(), 1.499_999_999_999_999_9e-5),
                ("train_loss".to_string(), 0.958_337_079_286_575_3),
            ]
        );
        assert!(!log.is_finetune());
        assert_eq!(log.epochs(), 2);
        assert_eq!(log.points().count(), 4);

        let ft = parse(FINETUNE.as_bytes());
        assert!(ft.is_finetune());
        let keys: Vec<&str> = ft.records[0]
            .values
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "train_lr",
                "train_loss",
                "test_loss",
                "test_acc1",
                "test_acc5",
                "n_parameters"
            ]
        );
    }

    #[test]
    fn reads_pretty_printed_python_dicts_parentheses_trailing_commas_and_blank_lines() {
        let text = "\u{feff}{\r\n    \"train_lr\": 0.001,\r\n    \"epoch\": 0,\r\n}\r\n\
\n\
   \n\
{'train_lr': 0.002, 'train_loss': 1.5, 'epoch': 1, 'note': None, 'ok': True,}\n\
(\"train_lr\": 0.003, \"epoch\": 2)\n\
{'train_lr': 4e-3,\n 'train_loss': .5,\n 'epoch': 3}\n\
{\"train_lr\": 0.005, \"epoch\": 4},\n\
{\"test_acc1\": +50, \"epoch\": 5, \"tags\": [\"a\", (1, 2)], \"nested\": {\"x\": 1}}\n";
        let log = parse(text.as_bytes());
        assert!(log.bad.is_empty(), "{:?}", log.bad);
        let epochs: Vec<u32> = log.records.iter().map(|r| r.epoch).collect();
        assert_eq!(epochs, [0, 1, 2, 3, 4, 5]);
        let lines: Vec<usize> = log.records.iter().map(|r| r.line).collect();
        assert_eq!(lines, [1, 7, 8, 9, 12, 13]);
        assert_eq!(log.records[3].values[1], ("train_loss".into(), 0.5));
        assert_eq!(log.records[5].values, vec![("test_acc1".into(), 50.0)]);
        assert!(log.is_finetune());
        let ignored: Vec<(&str, &str, usize)> = log
            .ignored
            .iter()
            .map(|i| (i.key.as_str(), i.what, i.first_line))
            .collect();
        assert_eq!(
            ignored,
            [
                ("note", "null", 7),
                ("ok", "true/false", 7),
                ("tags", "a list", 13),
                ("nested", "an object", 13)
            ]
        );
        assert!(log.notes()[0].contains("`note` is not a number (null on line 7); ignored"));
    }

    #[test]
    fn names_every_bad_line_with_its_number_and_reason() {
        let long_key = "k".repeat(251);
        let text = format!(
            "{{\"train_loss\": 1.0, \"epoch\": 0}}\n\
Epoch: [1]  [  0/390]  eta: 0:01:02  lr: 0.000000  loss: 1.0123\n\
{{\"train_loss\": NaN, \"epoch\": 1}}\n\
{{\"train_loss\": Infinity, \"epoch\": 2}}\n\
{{\"train_loss\": -Infinity, \"epoch\": 3}}\n\
{{\"train_loss\": 1e999, \"epoch\": 4}}\n\
{{\"train_loss\": 1.0}}\n\
{{\"train_loss\": 1.0, \"epoch\": -1}}\n\
{{\"train_loss\": 1.0, \"epoch\": 2.5}}\n\
{{\"train_loss\": 1.0, \"epoch\": \"9\"}}\n\
{{\"{long_key}\": 1.0, \"epoch\": 10}}\n\
{{\"a\\u0001b\": 1.0, \"epoch\": 11}}\n\
{{\"test_acc1\": 150.0, \"epoch\": 12}}\n\
{{\"train_loss\": 1.0, \"epoch\": 13]\n\
{{\"train_loss\": 1.0, \"epoch\": 14}} {{\"epoch\": 15}}\n\
{{\"train_loss\": 1.0 \"epoch\": 16}}\n\
{{\"train_loss\": 1.0, \"epo\n\
{{\"train_loss\": 1.0, \"epoch\": 17\n\
{{\"train_loss\": 2.0, \"epoch\": 18}}\n\
[1, 2]\n\
{{\"train_loss\": nan, \"train_lr\": inf, \"epoch\": 19}}\n\
{{\"train_loss\": 1.0,\n  \"epoch\": 20,\n"
        );
        let log = parse(text.as_bytes());
        assert_eq!(
            bad(&log),
            [
                (2, 2),
                (3, 3),
                (4, 4),
                (5, 5),
                (6, 6),
                (7, 7),
                (8, 8),
                (9, 9),
                (10, 10),
                (11, 11),
                (12, 12),
                (13, 13),
                (14, 14),
                (15, 15),
                (16, 16),
                (17, 17),
                (18, 18),
                (20, 20),
                (21, 21),
                (22, 23),
            ],
            "{:#?}",
            log.bad
        );
        assert_eq!(
            log.records.iter().map(|r| r.epoch).collect::<Vec<_>>(),
            [0, 18]
        );
        assert!(reason(&log, 2).starts_with("not a JSON object: `Epoch: [1]"));
        assert_eq!(
            reason(&log, 3),
            "train_loss is NaN; only finite numbers can be stored"
        );
        assert_eq!(
            reason(&log, 4),
            "train_loss is Infinity; only finite numbers can be stored"
        );
        assert_eq!(
            reason(&log, 5),
            "train_loss is -Infinity; only finite numbers can be stored"
        );
        assert_eq!(
            reason(&log, 6),
            "1e999 is too large for a 64-bit float at column 16"
        );
        assert_eq!(reason(&log, 7), "no `epoch` key");
        assert_eq!(reason(&log, 8), "epoch -1 is negative");
        assert_eq!(reason(&log, 9), "epoch 2.5 is not an integer");
        assert_eq!(reason(&log, 10), "epoch must be an integer, not a string");
        assert!(reason(&log, 11).contains("is 251 characters; at most 250"));
        assert!(reason(&log, 12).contains("contains control characters"));
        assert_eq!(reason(&log, 13), "test_acc1 150 is out of range (0 to 100)");
        assert_eq!(reason(&log, 14), "`]` where `}` was expected");
        assert_eq!(reason(&log, 15), "text after the object: `{\"epoch\": 15}`");
        assert_eq!(
            reason(&log, 16),
            "expected `,` or `}`, found `\"` at column 20"
        );
        assert_eq!(reason(&log, 17), "a string that is never closed");
        assert_eq!(
            reason(&log, 18),
            "an object that is never closed (no `}` before line 19)"
        );
        assert!(reason(&log, 20).starts_with("a list, not an object"));
        assert_eq!(
            reason(&log, 21),
            "train_loss is nan; only finite numbers can be stored; \
             train_lr is inf; only finite numbers can be stored"
        );
        assert_eq!(
            reason(&log, 22),
            "an object that is never closed (the file ends before its `}`)"
        );
        assert_eq!(
            log.bad[0].to_string(),
            format!("line 2: {}", log.bad[0].reason)
        );
        assert!(log.bad[19].to_string().starts_with("lines 22-23: "));
    }

    #[test]
    fn positions_in_a_multi_line_object_name_the_line() {
        let log = parse(b"{\n  \"epoch\": 0,\n  \"x\": 1.2.3\n}\n");
        assert_eq!(bad(&log), [(1, 4)]);
        assert_eq!(
            log.bad[0].reason,
            "`1.2.3` is not a number at line 3 column 8"
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_bad() {
        let log = parse(b"{\"epoch\": 0, \"x\": \"\xff\"}\n{\"epoch\": 1, \"x\": 1}\n");
        assert_eq!(bad(&log), [(1, 1)]);
        assert_eq!(log.bad[0].reason, "line 1 is not UTF-8");
        assert_eq!(log.records.len(), 1);
    }

    #[test]
    fn repeated_epochs_and_keys_keep_the_later_value() {
        let log =
            parse(b"{\"a\": 1, \"b\": 2, \"a\": 3, \"epoch\": 0}\n{\"a\": 4, \"epoch\": 0}\n");
        assert!(log.bad.is_empty());
        assert_eq!(
            log.records[0].values,
            vec![("a".into(), 3.0), ("b".into(), 2.0)]
        );
        assert_eq!(log.repeated_epochs, vec![(0, vec![1, 2])]);
        assert!(log.notes()[0].starts_with("epoch 0 is on lines 1, 2"));
        assert_eq!(log.epochs(), 1);
    }

    /// Expected strings printed by python3 (3.12):
    /// `json.dumps(struct.unpack('<d', struct.pack('<Q', bits))[0])`.
    const PYTHON: &[(u64, &str)] = &[
        (0x0000_0000_0000_0000, "0.0"),
        (0x8000_0000_0000_0000, "-0.0"),
        (0x3ff0_0000_0000_0000, "1.0"),
        (0x4052_c000_0000_0000, "75.0"),
        (0x3fe0_0000_0000_0000, "0.5"),
        (0x3fb9_9999_9999_999a, "0.1"),
        (0x3ee4_f8b5_88e3_68f1, "1e-05"),
        (0x3eef_7510_4d55_1d69, "1.5e-05"),
        (0x3f1a_36e2_eb1c_432d, "0.0001"),
        (0x3f20_2e4b_6ce5_dc68, "0.00012345"),
        (0x4341_c379_37e0_8000, "1e+16"),
        (0x4356_3457_85d8_a000, "2.5e+16"),
        (0x430c_6bf5_2634_0000, "1000000000000000.0"),
        (0x42dc_1221_8377_de66, "123456789012345.6"),
        (0x4341_c379_37e0_7fff, "9999999999999998.0"),
        (0x3eef_7510_4d55_1d68, "1.4999999999999999e-05"),
        (0x4054_e6c8_b43b_f727, "83.6060000024414"),
        (0x01a5_6e1f_c2f8_f359, "1e-300"),
        (0x0000_0000_0000_0001, "5e-324"),
        (0x7fef_ffff_ffff_ffff, "1.7976931348623157e+308"),
        (0x4480_f0cf_064d_d592, "1e+22"),
        (0x3fd3_3333_3333_3333, "0.3"),
        (0x3fe5_5555_5555_5555, "0.6666666666666666"),
        (0x4059_0000_0000_0000, "100.0"),
        (0x4167_8c29_dccc_cccd, "12345678.9"),
        (0xbe97_7cf4_4765_195f, "-3.5e-07"),
        (0x3fd3_3333_3333_3334, "0.30000000000000004"),
        (0x54b2_49ad_2594_c37d, "1e+100"),
        (0x405e_c000_0000_0000, "123.0"),
        (0xbee4_f8b5_88e3_68f1, "-1e-05"),
        (0x3f1a_36e2_eb1c_432c, "9.999999999999999e-05"),
    ];

    #[test]
    fn floats_are_written_as_python_json_dumps_writes_them() {
        for (bits, want) in PYTHON {
            let v = f64::from_bits(*bits);
            assert_eq!(python_float(v), *want, "{v:e}");
            assert_eq!(want.parse::<f64>().unwrap().to_bits(), v.to_bits());
        }
        assert_eq!(python_float(f64::NAN), "NaN");
        assert_eq!(python_float(f64::NEG_INFINITY), "-Infinity");
    }

    /// The same against python3 itself on random doubles (all magnitudes,
    /// and the range logs hold), when python3 is on PATH.
    #[test]
    fn floats_match_python3_on_random_doubles() {
        let script = [
            "import json, random, struct",
            "random.seed(12)",
            "for i in range(20000):",
            "    if i % 2:",
            "        v = random.uniform(-3, 3) * 10.0 ** random.randint(-9, 18)",
            "    else:",
            "        v = struct.unpack('<d', struct.pack('<Q', random.getrandbits(64)))[0]",
            "        if v != v or v in (float('inf'), float('-inf')): continue",
            "    print(struct.unpack('<Q', struct.pack('<d', v))[0], json.dumps(v))",
        ]
        .join("\n");
        let Ok(out) = std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
        else {
            eprintln!("python3 not found: only the fixed cases are checked");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut n = 0;
        for line in text.lines() {
            let (bits, want) = line.split_once(' ').unwrap();
            let v = f64::from_bits(bits.parse().unwrap());
            assert_eq!(python_float(v), want, "bits {bits}");
            n += 1;
        }
        assert!(n > 19_000);
    }

    #[test]
    fn json_values_are_written_as_python_writes_them() {
        let v = serde_json::json!({"a": 1, "b": 2.5e-7, "c": [true, null, "é\"\u{1f600}\n"], "d": 75.0});
        assert_eq!(
            python_json(&v),
            r#"{"a": 1, "b": 2.5e-07, "c": [true, null, "\u00e9\"\ud83d\ude00\n"], "d": 75.0}"#
        );
    }
}
