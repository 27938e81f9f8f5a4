//! SSML: the subset piperd reads, turned into engine pieces.
//!
//! A document is parsed by `roxmltree` (a well-formed XML tree in which
//! every node knows its bytes; errors come with a line and a column), then
//! walked into *blocks*: runs of text spoken at one rate, cut wherever the
//! markup asks for a cut (`p`, `s`, `break`, a `prosody rate`). Each block's
//! text is the document's text content, with `say-as`, `sub` and `phoneme`
//! already replaced by what they say, and a [`SpanMap`] back to the
//! document's bytes. Every block then goes through the same sentence
//! splitting and normalization as plain text ([`pieces_with`]), and the
//! pieces' maps are taken through the block's map ([`SpanMap::through`]),
//! so word timings name the words of the document as written.
//!
//! What a piece asks beyond its words travels as its [`Pace`]: its rate,
//! and a break before or after it. The speech core turns a rate into the
//! engine's `length_scale` for that piece and a break into silence it makes
//! itself (see `speech::session`).
//!
//! | element | reading |
//! | --- | --- |
//! | `speak` | the root (required) |
//! | `p`, `s` | a sentence or paragraph of its own |
//! | `break` | silence: `time` (`ms` or `s`, at most 10 s) or `strength` (table in [`strength_ms`]); none given is `medium` |
//! | `say-as` | `characters`/`spell-out`, `cardinal`/`number`, `ordinal`, `digits`, `date` (`format`), `time`, `telephone` |
//! | `sub alias` | the alias is said for the content |
//! | `phoneme alphabet="ipa" ph` | the IPA is spoken as `[[ ph ]]` phoneme input |
//! | `prosody rate` | `x-slow` … `x-fast`, `N%`, `+N%`/`-N%`, or a multiplier |
//! | anything else | ignored, its text kept (`desc` and comments are silent) |

use std::ops::Range;

use roxmltree::{Document, Node, ParsingOptions};

use super::normalize::{number, rules, spoken_line, Rules};
use super::spans::SpanMap;
use super::stream::{pieces_with, Piece, PieceLimits};

/// Longest single break.
pub const MAX_BREAK_MS: u32 = 10_000;
/// Slowest and fastest rate, in percent of the voice's own.
pub const RATE_RANGE: (u32, u32) = (10, 1000);

/// A document piperd cannot read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SSML at line {line}, column {column}: {message}")]
pub struct SsmlError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// How a piece is spoken beyond its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pace {
    /// Speaking rate in percent of the request's (`None`: 100%).
    pub rate: Option<u32>,
    /// A break before the piece (only ever on a text's first piece):
    /// the piece's own leading silence is replaced by this many ms.
    pub before_ms: Option<u32>,
    /// A break after the piece: its trailing silence (and the next piece's
    /// leading silence) is replaced by this many ms.
    pub after_ms: Option<u32>,
}

/// Whether a text is SSML by its look: it starts with `<speak` (after
/// whitespace, a byte-order mark or an XML declaration).
pub fn looks_like_ssml(text: &str) -> bool {
    let mut rest = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if rest.starts_with("<?xml") {
        match rest.find("?>") {
            Some(end) => rest = rest[end + 2..].trim_start(),
            None => return false,
        }
    }
    rest.strip_prefix("<speak")
        .is_some_and(|after| after.starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/'))
}

/// The engine pieces of an SSML document, each with its [`Pace`]; spans
/// and maps are bytes of `doc`.
pub fn pieces(
    doc: &str,
    limits: PieceLimits,
    rules: Rules,
) -> Result<Vec<(Piece, Pace)>, SsmlError> {
    let parsed = parse(doc)?;
    let mut out: Vec<(Piece, Pace)> = Vec::new();
    // A break before a block that says nothing moves on to the next.
    let mut pending: Option<u32> = None;
    for block in parsed.blocks {
        if let Some(ms) = block.before_ms {
            pending = Some(pending.unwrap_or(0).saturating_add(ms));
        }
        for piece in pieces_with(&block.text, limits, rules) {
            let Some(span) = block.map.original(piece.span.clone()) else {
                continue;
            };
            let map = piece.map.through(&block.map);
            let mut pace = Pace {
                rate: (block.rate != 100).then_some(block.rate),
                ..Pace::default()
            };
            if let Some(ms) = pending.take() {
                match out.last_mut() {
                    // Between two pieces the break belongs to the first, so
                    // that it is made as soon as that piece ends.
                    Some((_, before)) => {
                        before.after_ms = Some(before.after_ms.unwrap_or(0).saturating_add(ms));
                        pace.before_ms = Some(0);
                    }
                    None => pace.before_ms = Some(ms),
                }
            }
            out.push((
                Piece {
                    line: piece.line,
                    span,
                    map,
                },
                pace,
            ));
        }
    }
    if let (Some(ms), Some((_, last))) = (parsed.trailing_ms, out.last_mut()) {
        last.after_ms = Some(last.after_ms.unwrap_or(0).saturating_add(ms));
    }
    Ok(out)
}

/// A run of text spoken at one rate.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    text: String,
    /// From `text` to the document.
    map: SpanMap,
    /// Percent of the request's rate.
    rate: u32,
    /// A break before it.
    before_ms: Option<u32>,
}

#[derive(Debug, Default)]
struct Parsed {
    blocks: Vec<Block>,
    trailing_ms: Option<u32>,
}

fn parse(doc: &str) -> Result<Parsed, SsmlError> {
    let options = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    let tree = Document::parse_with_options(doc, options).map_err(|err| {
        let pos = err.pos();
        SsmlError {
            line: pos.row,
            column: pos.col,
            message: err.to_string(),
        }
    })?;
    let root = tree.root_element();
    if root.tag_name().name() != "speak" {
        return Err(error_at(
            &tree,
            root,
            format!(
                "the root element is <{}>, not <speak>",
                root.tag_name().name()
            ),
        ));
    }
    let mut walk = Walk {
        doc,
        tree: &tree,
        parsed: Parsed::default(),
        text: String::new(),
        map: SpanMap::default(),
        rate: 100,
        started: false,
        before: None,
        pending: None,
        said: false,
    };
    walk.node(root)?;
    walk.cut();
    walk.parsed.trailing_ms = walk.pending;
    Ok(walk.parsed)
}

fn error_at(tree: &Document, node: Node, message: String) -> SsmlError {
    let pos = tree.text_pos_at(node.range().start);
    SsmlError {
        line: pos.row,
        column: pos.col,
        message,
    }
}

struct Walk<'a, 'input> {
    doc: &'input str,
    tree: &'a Document<'input>,
    parsed: Parsed,
    /// The current block's text and map.
    text: String,
    map: SpanMap,
    rate: u32,
    /// The current block has words.
    started: bool,
    /// The current block's break before it.
    before: Option<u32>,
    /// Breaks since the last words.
    pending: Option<u32>,
    /// The block's text ends with a replacement (`say-as`, `sub`, `phoneme`).
    said: bool,
}

impl<'input> Walk<'_, 'input> {
    fn node(&mut self, node: Node<'_, 'input>) -> Result<(), SsmlError> {
        if node.is_text() {
            self.text_node(node);
            return Ok(());
        }
        if !node.is_element() {
            return Ok(());
        }
        match node.tag_name().name() {
            "p" | "s" | "paragraph" | "sentence" => {
                self.cut();
                self.children(node)?;
                self.cut();
            }
            "break" => {
                let ms = self.break_ms(node)?;
                if ms > 0 {
                    self.cut();
                    self.pending = Some(self.pending.unwrap_or(0).saturating_add(ms));
                }
            }
            "prosody" => match node.attribute("rate") {
                Some(value) => {
                    let factor = parse_rate(value).ok_or_else(|| {
                        self.error(node, format!("prosody rate {value:?} is not x-slow, slow, medium, fast, x-fast, default, a percentage or a number"))
                    })?;
                    let rate = (f64::from(self.rate) * factor).round();
                    let (min, max) = RATE_RANGE;
                    if !(f64::from(min)..=f64::from(max)).contains(&rate) {
                        return Err(self.error(
                            node,
                            format!("prosody rate {value:?} makes {rate}% of the voice's rate, outside {min}%..={max}%"),
                        ));
                    }
                    let outer = self.rate;
                    self.cut();
                    self.rate = rate as u32;
                    self.children(node)?;
                    self.cut();
                    self.rate = outer;
                }
                None => self.children(node)?,
            },
            "say-as" => {
                let content = text_of(node);
                let interpret = node
                    .attribute("interpret-as")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                match say_as(&interpret, node.attribute("format"), &content) {
                    Some(words) => self.say(&words, content_range(node), false),
                    None => self.children(node)?,
                }
            }
            "sub" => match node.attribute("alias") {
                Some(alias) => self.say(alias, content_range(node), false),
                None => self.children(node)?,
            },
            "phoneme" => {
                let ipa = node
                    .attribute("alphabet")
                    .is_none_or(|a| a.eq_ignore_ascii_case("ipa"));
                match node.attribute("ph").filter(|_| ipa) {
                    Some(ph) if ph.contains("[[") || ph.contains("]]") => {
                        return Err(self.error(node, "phoneme ph may not hold [[ or ]]".into()))
                    }
                    Some(ph) if !ph.trim().is_empty() => {
                        let ph = ph.split_whitespace().collect::<Vec<_>>().join(" ");
                        self.say(&format!("[[ {ph} ]]"), content_range(node), true)
                    }
                    _ => self.children(node)?,
                }
            }
            // An audio's description is not spoken, nor its source.
            "desc" => {}
            // speak, voice, emphasis, audio, lang, mark and unknown elements:
            // their text is spoken as it is.
            _ => self.children(node)?,
        }
        Ok(())
    }

    fn children(&mut self, node: Node<'_, 'input>) -> Result<(), SsmlError> {
        for child in node.children() {
            self.node(child)?;
        }
        Ok(())
    }

    fn error(&self, node: Node, message: String) -> SsmlError {
        error_at(self.tree, node, message)
    }

    fn break_ms(&self, node: Node) -> Result<u32, SsmlError> {
        if let Some(time) = node.attribute("time") {
            let ms = parse_time(time).ok_or_else(|| {
                self.error(
                    node,
                    format!("break time {time:?} is not a number of ms or s"),
                )
            })?;
            if ms > f64::from(MAX_BREAK_MS) {
                return Err(self.error(
                    node,
                    format!("break time {time:?} is over {} s", MAX_BREAK_MS / 1000),
                ));
            }
            return Ok(ms.round() as u32);
        }
        let strength = node.attribute("strength").unwrap_or("medium");
        strength_ms(strength).ok_or_else(|| {
            self.error(
                node,
                format!(
                    "break strength {strength:?} is not none, x-weak, weak, medium, strong or x-strong"
                ),
            )
        })
    }

    /// Words start here: the block's break before it is set.
    fn start(&mut self) {
        if !self.started {
            self.started = true;
            self.before = self.pending.take();
        }
    }

    /// Ends the current block (if it has words): what follows is spoken
    /// apart from it.
    fn cut(&mut self) {
        if self.started {
            self.parsed.blocks.push(Block {
                text: std::mem::take(&mut self.text),
                map: std::mem::take(&mut self.map),
                rate: self.rate,
                before_ms: self.before.take(),
            });
        }
        self.text.clear();
        self.map = SpanMap::default();
        self.started = false;
        self.said = false;
    }

    fn text_node(&mut self, node: Node<'_, 'input>) {
        let Some(decoded) = node.text() else {
            return;
        };
        if decoded.trim().is_empty() {
            if !decoded.is_empty() && self.started {
                self.text.push(' ');
            }
            return;
        }
        self.start();
        if self.said && decoded.starts_with(char::is_alphanumeric) {
            self.text.push(' ');
        }
        self.said = false;
        let raw = node.range();
        let at = self.text.len();
        self.text.push_str(decoded);
        align(
            &self.doc[raw.clone()],
            raw.start,
            decoded,
            at,
            &mut self.map,
        );
    }

    /// `words` are said for the document's bytes `original`.
    fn say(&mut self, words: &str, original: Range<usize>, spaced: bool) {
        let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
        if words.is_empty() {
            return;
        }
        self.start();
        if !self.text.is_empty() && !self.text.ends_with(char::is_whitespace) {
            self.text.push(' ');
        }
        let at = self.text.len();
        self.text.push_str(&words);
        self.map.rewrite(at..self.text.len(), original);
        if spaced {
            self.text.push(' ');
        }
        self.said = true;
    }
}

/// Maps the decoded text of a text node (at `at` of the block's text) to
/// its raw bytes (at `origin` of the document): characters kept byte for
/// byte, each entity or line end as a whole. Should the two not line up,
/// the node maps as one rewrite.
fn align(raw: &str, origin: usize, decoded: &str, at: usize, map: &mut SpanMap) {
    if raw == decoded {
        map.keep(at..at + decoded.len(), origin);
        return;
    }
    let mut parts = SpanMap::default();
    let (mut r, mut d) = (0, 0);
    let mut in_cdata = false;
    let aligned = loop {
        if r >= raw.len() || d >= decoded.len() {
            break r >= raw.len() && d >= decoded.len();
        }
        let rest = &raw[r..];
        if !in_cdata && rest.starts_with("<![CDATA[") {
            in_cdata = true;
            r += 9;
            continue;
        }
        if in_cdata && rest.starts_with("]]>") {
            in_cdata = false;
            r += 3;
            continue;
        }
        let c = decoded[d..].chars().next().expect("d is inside decoded");
        if !in_cdata && rest.starts_with('&') {
            let Some(end) = rest.find(';') else {
                break false;
            };
            parts.rewrite(
                at + d..at + d + c.len_utf8(),
                origin + r..origin + r + end + 1,
            );
            r += end + 1;
            d += c.len_utf8();
            continue;
        }
        if rest.starts_with("\r\n") && c == '\n' {
            parts.rewrite(at + d..at + d + 1, origin + r..origin + r + 2);
            r += 2;
            d += 1;
            continue;
        }
        if !rest.starts_with(c) {
            break false;
        }
        parts.keep(at + d..at + d + c.len_utf8(), origin + r);
        r += c.len_utf8();
        d += c.len_utf8();
    };
    if aligned {
        for seg in parts.segments() {
            if seg.rewritten {
                map.rewrite(seg.spoken.clone(), seg.original.clone());
            } else {
                map.keep(seg.spoken.clone(), seg.original.start);
            }
        }
    } else {
        map.rewrite(at..at + decoded.len(), origin..origin + raw.len());
    }
}

/// The text content of an element and all below it.
fn text_of(node: Node) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

/// The bytes of an element's content (the element itself when empty).
fn content_range(node: Node) -> Range<usize> {
    match (node.first_child(), node.last_child()) {
        (Some(first), Some(last)) => first.range().start..last.range().end,
        _ => node.range(),
    }
}

/// A break's length by its `strength`, in ms.
///
/// | strength | ms |
/// | --- | --- |
/// | none | 0 (no break) |
/// | x-weak | 100 |
/// | weak | 250 |
/// | medium | 500 |
/// | strong | 750 |
/// | x-strong | 1000 |
pub fn strength_ms(strength: &str) -> Option<u32> {
    Some(match strength.trim().to_ascii_lowercase().as_str() {
        "none" => 0,
        "x-weak" => 100,
        "weak" => 250,
        "medium" => 500,
        "strong" => 750,
        "x-strong" => 1000,
        _ => return None,
    })
}

/// `"500ms"`, `"1.5s"` → milliseconds.
fn parse_time(time: &str) -> Option<f64> {
    let time = time.trim();
    let (value, scale) = if let Some(ms) = time.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = time.strip_suffix('s') {
        (s, 1000.0)
    } else {
        return None;
    };
    let value = value.trim();
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let n: f64 = value.parse().ok()?;
    n.is_finite().then_some(n * scale)
}

/// A `prosody rate` as a multiplier of the rate around it: the labels
/// (x-slow 0.5, slow 0.75, medium and default 1, fast 1.5, x-fast 2), a
/// percentage (`"80%"`: 0.8), a relative change (`"+20%"`: 1.2, `"-20%"`:
/// 0.8), or a plain multiplier (`"1.5"`).
pub fn parse_rate(rate: &str) -> Option<f64> {
    let rate = rate.trim();
    let factor = match rate.to_ascii_lowercase().as_str() {
        "x-slow" => 0.5,
        "slow" => 0.75,
        "medium" | "default" => 1.0,
        "fast" => 1.5,
        "x-fast" => 2.0,
        _ => {
            let number = |s: &str| -> Option<f64> {
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || c == '.') {
                    return None;
                }
                s.parse::<f64>().ok().filter(|n| n.is_finite())
            };
            if let Some(percent) = rate.strip_suffix('%') {
                if let Some(up) = percent.strip_prefix('+') {
                    1.0 + number(up)? / 100.0
                } else if let Some(down) = percent.strip_prefix('-') {
                    1.0 - number(down)? / 100.0
                } else {
                    number(percent)? / 100.0
                }
            } else {
                number(rate)?
            }
        }
    };
    (factor > 0.0).then_some(factor)
}

/// What a `say-as` says for `content`, or `None` to speak the content as
/// it is (an unknown kind, or content that is not of the kind).
fn say_as(interpret: &str, format: Option<&str>, content: &str) -> Option<String> {
    let content = content.trim();
    if content.is_empty() {
        return None;
    }
    match interpret {
        "characters" | "spell-out" | "letters" | "verbatim" => spell(content),
        "cardinal" | "number" => cardinal(content),
        "ordinal" => {
            let digits: String = content
                .trim_end_matches('.')
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .chars()
                .filter(|c| *c != ',')
                .collect();
            let n: u64 = digits.parse().ok()?;
            Some(number::ordinal(n))
        }
        "digits" => content
            .chars()
            .any(|c| c.is_ascii_digit())
            .then(|| number::digits(content)),
        "date" => date(format, content),
        "time" => {
            let (line, _) = spoken_line(content, 0, Rules::English);
            (line != content).then_some(line)
        }
        "telephone" => telephone(content),
        _ => None,
    }
}

/// Letter by letter, digits as words.
fn spell(content: &str) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    for c in content.chars() {
        if c.is_alphabetic() {
            out.push(c.to_uppercase().collect());
        } else if let Some(d) = c.to_digit(10) {
            out.push(number::cardinal(u64::from(d)));
        } else {
            let name = match c {
                '-' => "dash",
                '.' => "dot",
                '@' => "at",
                '_' => "underscore",
                '/' => "slash",
                '&' => "and",
                '+' => "plus",
                '#' => "hash",
                _ => continue,
            };
            out.push(name.into());
        }
    }
    (!out.is_empty()).then(|| out.join(" "))
}

/// A number with separators, a sign or decimals.
fn cardinal(content: &str) -> Option<String> {
    let (minus, body) = match content
        .strip_prefix('-')
        .or_else(|| content.strip_prefix('\u{2212}'))
    {
        Some(rest) => (true, rest),
        None => (false, content),
    };
    let body: String = body.chars().filter(|c| *c != ',' && *c != '_').collect();
    let (int, frac) = match body.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (body.as_str(), None),
    };
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if int.is_empty() && frac.is_none_or(str::is_empty)
        || !all_digits(int)
        || !frac.is_none_or(all_digits)
    {
        return None;
    }
    let words = number::decimal(int, frac);
    Some(if minus {
        format!("minus {words}")
    } else {
        words
    })
}

/// A date in the order `format` names (`mdy`, `dmy`, `ymd`, `md`, `dm`,
/// `ym`, `my`, `d`, `m`, `y`, `yyyymmdd`), read as in the US: "March
/// fourth, twenty twenty five".
fn date(format: Option<&str>, content: &str) -> Option<String> {
    let format = format.map(str::to_ascii_lowercase);
    let iso = content.len() == 10 && content.as_bytes()[4] == b'-';
    let (order, fields): (String, Vec<&str>) = match format.as_deref() {
        Some("yyyymmdd") | None
            if content.len() == 8 && content.chars().all(|c| c.is_ascii_digit()) =>
        {
            (
                "ymd".into(),
                vec![&content[..4], &content[4..6], &content[6..]],
            )
        }
        Some("yyyymmdd") => return None,
        given => {
            let order = match given {
                Some(f) => f.to_string(),
                None if iso => "ymd".into(),
                None => "mdy".into(),
            };
            let fields = content
                .split(|c: char| matches!(c, '-' | '/' | '.' | ',') || c.is_whitespace())
                .filter(|f| !f.is_empty())
                .collect();
            (order, fields)
        }
    };
    if order.len() != fields.len()
        || order.is_empty()
        || !order.chars().all(|c| matches!(c, 'd' | 'm' | 'y'))
    {
        return None;
    }
    let (mut day, mut month, mut year) = (None, None, None);
    for (kind, field) in order.chars().zip(fields) {
        match kind {
            'd' => {
                let n: u64 = field
                    .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                    .parse()
                    .ok()?;
                if !(1..=31).contains(&n) {
                    return None;
                }
                day = Some(number::ordinal(n));
            }
            'm' => {
                let name = match field.parse::<u64>() {
                    Ok(n) => rules::month_number(n)?,
                    Err(_) => {
                        let mut title: String =
                            field.chars().take(1).flat_map(char::to_uppercase).collect();
                        title.push_str(&field.chars().skip(1).collect::<String>().to_lowercase());
                        rules::month(title.trim_end_matches('.'))?
                    }
                };
                month = Some(name.to_string());
            }
            _ => {
                if !field.chars().all(|c| c.is_ascii_digit()) || field.len() > 4 {
                    return None;
                }
                let n: u64 = field.parse().ok()?;
                year = Some(if field.len() == 2 && n < 10 {
                    format!("oh {}", number::cardinal(n))
                } else {
                    number::year(n)
                });
            }
        }
    }
    Some(match (month, day, year) {
        (Some(m), Some(d), Some(y)) => format!("{m} {d}, {y}"),
        (Some(m), Some(d), None) => format!("{m} {d}"),
        (Some(m), None, Some(y)) => format!("{m} {y}"),
        (None, Some(d), None) => format!("the {d}"),
        (m, d, y) => [m, d, y]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// A phone number digit by digit, group by group.
fn telephone(content: &str) -> Option<String> {
    let groups: Vec<String> = content
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .map(number::digits)
        .collect();
    if groups.is_empty() {
        return None;
    }
    let words = groups.join(", ");
    Some(if content.trim_start().starts_with('+') {
        format!("plus {words}")
    } else {
        words
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: PieceLimits = PieceLimits {
        max_chars: 150,
        chunk_chars: 5000,
    };

    fn read(doc: &str) -> Vec<(String, Pace)> {
        pieces(doc, LIMITS, Rules::English)
            .unwrap()
            .into_iter()
            .map(|(p, pace)| (p.line, pace))
            .collect()
    }

    fn lines(doc: &str) -> Vec<String> {
        read(doc).into_iter().map(|(l, _)| l).collect()
    }

    fn said(inner: &str) -> String {
        lines(&format!("<speak>{inner}</speak>")).join(" | ")
    }

    fn err(doc: &str) -> SsmlError {
        pieces(doc, LIMITS, Rules::English).unwrap_err()
    }

    #[test]
    fn ssml_is_known_by_its_start() {
        assert!(looks_like_ssml("<speak>Hi</speak>"));
        assert!(looks_like_ssml("  \n<speak version=\"1.1\">Hi</speak>"));
        assert!(looks_like_ssml(
            "<?xml version=\"1.0\"?>\n<speak>Hi</speak>"
        ));
        assert!(looks_like_ssml("\u{feff}<speak/>"));
        assert!(!looks_like_ssml("<speaker>Hi</speaker>"));
        assert!(!looks_like_ssml("Say <speak>"));
        assert!(!looks_like_ssml("<?xml version=\"1.0\""));
    }

    #[test]
    fn speak_p_and_s_make_sentences() {
        assert_eq!(
            said("Hello there. General Kenobi."),
            "Hello there. | General Kenobi."
        );
        assert_eq!(
            said("<p><s>One</s><s>two</s></p><p>Three</p>"),
            "One | two | Three"
        );
        // The normalizer reads SSML text as it reads plain text.
        assert_eq!(said("<s>I owe $5.</s>"), "I owe five dollars.");
        // Entities are decoded.
        assert_eq!(said("Tom &amp; Jerry"), "Tom and Jerry");
        // Namespaced documents, as most SSML is written.
        assert_eq!(
            lines(
                r#"<speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">Hi.</speak>"#
            ),
            ["Hi."]
        );
    }

    #[test]
    fn breaks_cut_and_carry_their_length() {
        let got = read(r#"<speak>One <break time="300ms"/> two<break time="1.5s"/>three</speak>"#);
        let paces: Vec<_> = got
            .iter()
            .map(|(l, p)| (l.as_str(), p.before_ms, p.after_ms))
            .collect();
        assert_eq!(
            paces,
            [
                ("One", None, Some(300)),
                ("two", Some(0), Some(1500)),
                ("three", Some(0), None)
            ]
        );
        // Strengths, the default, consecutive breaks, a leading and a trailing one.
        let got = read(
            r#"<speak><break strength="weak"/>A<break/><break strength="x-strong"/>B <break strength="none"/>C<break time="2s"/></speak>"#,
        );
        let paces: Vec<_> = got
            .iter()
            .map(|(l, p)| (l.as_str(), p.before_ms, p.after_ms))
            .collect();
        assert_eq!(
            paces,
            [("A", Some(250), Some(1500)), ("B C", Some(0), Some(2000))]
        );
        for (strength, ms) in [("x-weak", 100), ("medium", 500), ("strong", 750)] {
            assert_eq!(strength_ms(strength), Some(ms));
        }
    }

    #[test]
    fn say_as_reads_each_kind() {
        let cases = [
            (r#"<say-as interpret-as="characters">ABC</say-as>"#, "A B C"),
            (
                r#"<say-as interpret-as="spell-out">a1-b</say-as>"#,
                "A one dash B",
            ),
            (
                r#"<say-as interpret-as="cardinal">12,345</say-as>"#,
                "twelve thousand three hundred forty five",
            ),
            (
                r#"<say-as interpret-as="cardinal">-3.5</say-as>"#,
                "minus three point five",
            ),
            (
                r#"<say-as interpret-as="ordinal">21</say-as>"#,
                "twenty first",
            ),
            (r#"<say-as interpret-as="ordinal">3rd</say-as>"#, "third"),
            (
                r#"<say-as interpret-as="digits">2024</say-as>"#,
                "two zero two four",
            ),
            (
                r#"<say-as interpret-as="date" format="mdy">3/4/2025</say-as>"#,
                "March fourth, twenty twenty five",
            ),
            (
                r#"<say-as interpret-as="date" format="dmy">3/4/2025</say-as>"#,
                "April third, twenty twenty five",
            ),
            (
                r#"<say-as interpret-as="date" format="ymd">2025-03-04</say-as>"#,
                "March fourth, twenty twenty five",
            ),
            (
                r#"<say-as interpret-as="date">2025-03-04</say-as>"#,
                "March fourth, twenty twenty five",
            ),
            (
                r#"<say-as interpret-as="date" format="md">12/25</say-as>"#,
                "December twenty fifth",
            ),
            (
                r#"<say-as interpret-as="date" format="dm">25 dec</say-as>"#,
                "December twenty fifth",
            ),
            (
                r#"<say-as interpret-as="date" format="my">7/1999</say-as>"#,
                "July nineteen ninety nine",
            ),
            (
                r#"<say-as interpret-as="date" format="y">1905</say-as>"#,
                "nineteen oh five",
            ),
            (
                r#"<say-as interpret-as="date" format="d">5</say-as>"#,
                "the fifth",
            ),
            (
                r#"<say-as interpret-as="date" format="yyyymmdd">20240229</say-as>"#,
                "February twenty ninth, twenty twenty four",
            ),
            (
                r#"<say-as interpret-as="time">2:30 PM</say-as>"#,
                "two thirty PM",
            ),
            (
                r#"<say-as interpret-as="time">14:05</say-as>"#,
                "fourteen oh five",
            ),
            (
                r#"<say-as interpret-as="telephone">555-1234</say-as>"#,
                "five five five, one two three four",
            ),
            (
                r#"<say-as interpret-as="telephone">+1 (555) 010-9999</say-as>"#,
                "plus one, five five five, zero one zero, nine nine nine nine",
            ),
        ];
        for (inner, want) in cases {
            assert_eq!(said(inner), want, "{inner}");
        }
        // Content not of the kind, and unknown kinds, are read as written.
        assert_eq!(
            said(r#"<say-as interpret-as="cardinal">many</say-as>"#),
            "many"
        );
        assert_eq!(
            said(r#"<say-as interpret-as="date" format="mdy">someday</say-as>"#),
            "someday"
        );
        assert_eq!(
            said(r#"<say-as interpret-as="date" format="mdy">13/45/2025</say-as>"#),
            said("13/45/2025")
        );
        assert_eq!(
            said(r#"<say-as interpret-as="expletive">darn</say-as>"#),
            "darn"
        );
        // Words around it stay apart from it.
        assert_eq!(
            said(r#"Call <say-as interpret-as="digits">42</say-as>now."#),
            "Call four two now."
        );
    }

    #[test]
    fn sub_and_phoneme_replace_their_content() {
        assert_eq!(
            said(r#"<sub alias="World Wide Web Consortium">W3C</sub> rules"#),
            "World Wide Web Consortium rules"
        );
        assert_eq!(
            said(r#"Say <phoneme alphabet="ipa" ph="təˈmeɪtoʊ">tomato</phoneme>."#),
            "Say [[ təˈmeɪtoʊ ]] ."
        );
        // Another alphabet: the content is read.
        assert_eq!(
            said(r#"<phoneme alphabet="x-sampa" ph="t@meItoU">tomato</phoneme>"#),
            "tomato"
        );
        assert_eq!(
            err(r#"<speak><phoneme ph="a ]] b">x</phoneme></speak>"#).line,
            1
        );
    }

    #[test]
    fn prosody_rate_is_a_piece_rate() {
        let got = read(
            r#"<speak>Normal. <prosody rate="x-slow">Slow <prosody rate="150%">less</prosody></prosody> <prosody rate="+20%">up</prosody><prosody pitch="high">same</prosody></speak>"#,
        );
        let rates: Vec<_> = got.iter().map(|(l, p)| (l.as_str(), p.rate)).collect();
        assert_eq!(
            rates,
            [
                ("Normal.", None),
                ("Slow", Some(50)),
                ("less", Some(75)),
                ("up", Some(120)),
                ("same", None)
            ]
        );
        for (value, factor) in [
            ("slow", 0.75),
            ("fast", 1.5),
            ("x-fast", 2.0),
            ("80%", 0.8),
            ("-25%", 0.75),
            ("1.25", 1.25),
        ] {
            assert_eq!(parse_rate(value), Some(factor), "{value}");
        }
        for bad in ["quick", "-150%", "0", "%", "1e5"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }

    #[test]
    fn ignored_elements_keep_their_text() {
        assert_eq!(
            said(
                r#"<emphasis level="strong">Big</emphasis> <audio src="x.wav"><desc>a bell</desc>ding</audio> <voice name="x">hi</voice> <foo>bar</foo><!-- no --><mark name="m"/>."#
            ),
            "Big ding hi bar."
        );
    }

    #[test]
    fn words_map_back_to_the_document() {
        let doc =
            r#"<speak>I owe <say-as interpret-as="cardinal">500</say-as> to Tom &amp; Jo.</speak>"#;
        let got = pieces(doc, LIMITS, Rules::English).unwrap();
        assert_eq!(got.len(), 1);
        let piece = &got[0].0;
        assert_eq!(piece.line, "I owe five hundred to Tom and Jo.");
        let original = |word: &str| {
            let at = piece.line.find(word).unwrap();
            piece.map.original(at..at + word.len()).map(|r| &doc[r])
        };
        assert_eq!(original("owe"), Some("owe"));
        assert_eq!(original("hundred"), Some("500"));
        assert_eq!(original("Tom"), Some("Tom"));
        assert_eq!(original("and"), Some("&amp;"));
        assert_eq!(original("Jo"), Some("Jo"));
        assert_eq!(
            &doc[piece.span.clone()],
            r#"I owe <say-as interpret-as="cardinal">500</say-as> to Tom &amp; Jo."#
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = err("<speak>\n  Hello <break time=\"1s\">\n</speak>");
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        let e = err("<speak>Hi</speak> trailing <x/>");
        assert_eq!(e.line, 1, "{e}");
        let e = err("<speak>\n\n   <break time=\"soon\"/></speak>");
        assert_eq!((e.line, e.column), (3, 4), "{e}");
        assert!(e.message.contains("soon"), "{e}");
        let e = err("<speak><break time=\"11s\"/></speak>");
        assert!(e.message.contains("over 10 s"), "{e}");
        let e = err("<speak>\n<break strength=\"huge\"/></speak>");
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        let e = err("<speak>\n <prosody rate=\"5000%\">x</prosody></speak>");
        assert_eq!((e.line, e.column), (2, 2), "{e}");
        let e = err("<voice>Hi</voice>");
        assert!(e.message.contains("<speak>"), "{e}");
        let e = err("<speak>Fish &chips;</speak>");
        assert_eq!((e.line, e.column), (1, 13), "{e}");
        assert!(err("<!DOCTYPE speak [<!ENTITY a \"b\">]><speak>&a;</speak>").line >= 1);
        assert_eq!(err("").line, 1);
        assert!(err("<speak>Tom & Jerry</speak>")
            .to_string()
            .starts_with("invalid SSML at line 1, column"));
    }

    proptest! {
        #[test]
        fn the_parser_never_panics_on_any_text(text in "\\PC{0,200}") {
            let _ = pieces(&text, LIMITS, Rules::English);
        }

        #[test]
        fn the_parser_never_panics_on_markup_soup(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "<speak>", "</speak>", "<p>", "</p>", "<s>", "</s>", "<break/>",
                    "<break time=\"250ms\"/>", "<break strength=\"strong\"/>",
                    "<say-as interpret-as=\"date\" format=\"dmy\">", "<say-as interpret-as=\"characters\">",
                    "<say-as interpret-as=\"telephone\">", "<say-as interpret-as=\"ordinal\">", "</say-as>",
                    "<sub alias=\"x y\">", "</sub>", "<phoneme ph=\"hə\">", "</phoneme>",
                    "<prosody rate=\"slow\">", "<prosody rate=\"150%\">", "</prosody>", "&amp;", "&#233;",
                    "<![CDATA[a<b]]>", "\r\n", " ", "Hello", "1/2/2025", "$5", "3rd", ".", "?", "[[", "]]",
                    "-", "é", "<!-- c -->", "<", ">", "\"", "&",
                ]),
                0..40,
            )
        ) {
            let doc: String = parts.concat();
            if let Ok(got) = pieces(&doc, LIMITS, Rules::English) {
                for (piece, _) in got {
                    prop_assert!(piece.span.end <= doc.len());
                    for seg in piece.map.segments() {
                        prop_assert!(seg.original.end <= doc.len());
                        prop_assert!(seg.spoken.end <= piece.line.len());
                    }
                }
            }
        }
    }
}
