//! The English rules: each looks at the token it is given (and those after
//! it) and says what to speak for them, or nothing.
//!
//! The rules are tried in a fixed order, the most specific first: a URL
//! before anything with dots, a date before a number, money before a range,
//! a phone number before a range, a number with its unit before a bare
//! number.

use super::number::{
    cardinal, decimal, digits, integer, ordinal, ordinal_words, plural_words, roman, year,
};
use super::Token;

/// A rewrite of tokens `start..end_token`: `words` stand for the piece's
/// bytes from the first token's core to `end_byte` (the last token's core
/// end, or past the abbreviation dot it took).
#[derive(Debug)]
pub struct Found {
    pub words: String,
    /// The rewrite covers the first token's opening punctuation too: "(555)".
    pub from_pre: bool,
    pub end_token: usize,
    pub end_byte: usize,
}

/// Read by the phonemizer as the two letters ("A M" would start with the
/// article "a").
const AM: &str = "AM";
const PM: &str = "PM";

struct Ctx<'a> {
    text: &'a str,
    tokens: &'a [Token],
}

impl<'a> Ctx<'a> {
    fn core(&self, i: usize) -> Option<&'a str> {
        self.tokens
            .get(i)
            .filter(|t| !t.verbatim)
            .map(|t| &self.text[t.core.clone()])
    }

    fn post(&self, i: usize) -> &'a str {
        self.tokens
            .get(i)
            .map_or("", |t| &self.text[t.post.clone()])
    }

    fn pre(&self, i: usize) -> &'a str {
        self.tokens.get(i).map_or("", |t| &self.text[t.pre.clone()])
    }

    fn end(&self, i: usize) -> usize {
        self.tokens[i].core.end
    }

    /// Where an abbreviation at token `i` ends: past its dot, unless the dot
    /// also ends the piece (then it stays, for the sentence's intonation).
    fn dot_end(&self, i: usize) -> usize {
        let end = self.end(i);
        if self.post(i).starts_with('.') && i + 1 < self.tokens.len() {
            end + 1
        } else {
            end
        }
    }

    fn found(&self, words: String, last: usize) -> Option<Found> {
        Some(Found {
            words,
            from_pre: false,
            end_token: last + 1,
            end_byte: self.end(last),
        })
    }
}

/// What to say for the token at `i` and maybe some after it, if a rule has a
/// reading for it.
pub fn rewrite(text: &str, tokens: &[Token], i: usize) -> Option<Found> {
    let ctx = Ctx { text, tokens };
    let core = ctx.core(i).filter(|c| !c.is_empty())?;
    // Most words are plain lowercase words no rule reads otherwise (an
    // abbreviation of them has its dot after it).
    let plain = core.bytes().all(|b| b.is_ascii_lowercase()) && !ctx.post(i).starts_with('.');
    if plain && !matches!(core, "vs" | "mph" | "kph") {
        return None;
    }
    url_or_email(&ctx, i, core)
        .or_else(|| date(&ctx, i, core))
        .or_else(|| time(&ctx, i, core))
        .or_else(|| money(&ctx, i, core))
        .or_else(|| phone(&ctx, i, core))
        .or_else(|| decade(&ctx, i, core))
        .or_else(|| quantity(&ctx, i, core))
        .or_else(|| fraction(&ctx, i, core))
        .or_else(|| ordinal_number(&ctx, i, core))
        .or_else(|| plain_number(&ctx, i, core))
        .or_else(|| abbreviation(&ctx, i, core))
        .or_else(|| roman_numeral(&ctx, i, core))
        .or_else(|| symbols(&ctx, i, core))
}

// ---------------------------------------------------------------- numbers

/// A number as written: sign, integer digits (grouping commas removed),
/// decimals.
#[derive(Debug, Clone, PartialEq)]
struct Num<'a> {
    negative: bool,
    int: String,
    frac: Option<&'a str>,
    /// Written with thousands separators.
    grouped: bool,
}

impl Num<'_> {
    fn words(&self) -> String {
        let words = decimal(&self.int, self.frac);
        if self.negative {
            format!("minus {words}")
        } else {
            words
        }
    }

    fn is_one(&self) -> bool {
        !self.negative && self.int == "1" && self.frac.is_none()
    }

    /// Written as a plain 4-digit number that could be a year.
    fn year(&self) -> Option<u64> {
        let plain = !self.negative && !self.grouped && self.frac.is_none() && self.int.len() == 4;
        let n: u64 = self.int.parse().ok()?;
        (plain && (1100..=2099).contains(&n)).then_some(n)
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A whole number: `-1,234.5`, `42`, `.5`, `−3` (a minus sign).
fn parse_num(s: &str) -> Option<Num<'_>> {
    let (negative, body) = match s.strip_prefix('-').or_else(|| s.strip_prefix('−')) {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac) = match body.split_once('.') {
        Some((int, frac)) if is_digits(frac) => (int, Some(frac)),
        Some(_) => return None,
        None => (body, None),
    };
    if int_part.is_empty() {
        return frac.map(|_| Num {
            negative,
            int: String::new(),
            frac,
            grouped: false,
        });
    }
    let grouped = int_part.contains(',');
    if grouped {
        let mut groups = int_part.split(',');
        let first = groups.next()?;
        if !(1..=3).contains(&first.len()) || !is_digits(first) {
            return None;
        }
        if !groups.all(|g| g.len() == 3 && is_digits(g)) {
            return None;
        }
    } else if !is_digits(int_part) {
        return None;
    }
    Some(Num {
        negative,
        int: int_part.replace(',', ""),
        frac,
        grouped,
    })
}

/// A number or a range of two ("10-20", "5–10"): its words, and whether it
/// is exactly one (for a singular unit).
fn value_words(s: &str) -> Option<(String, bool)> {
    if let Some(num) = parse_num(s) {
        return Some((num.words(), num.is_one()));
    }
    let (a, b) = split_range(s)?;
    let (a, b) = (parse_num(a)?, parse_num(b)?);
    Some((format!("{} to {}", a.words(), b.words()), false))
}

/// "a-b" or "a–b" with something on both sides.
fn split_range(s: &str) -> Option<(&str, &str)> {
    let at = s
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '-' || c == '–' || c == '—')?
        .0;
    let dash = s[at..].chars().next()?.len_utf8();
    let (a, b) = (&s[..at], &s[at + dash..]);
    (!a.is_empty() && !b.is_empty()).then_some((a, b))
}

// ---------------------------------------------------------------- URLs

const TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "io", "dev", "ai", "app", "co", "uk", "us", "ca", "de",
    "fr", "info", "biz", "me", "tv", "eu", "ly", "xyz", "au", "nz", "in", "jp",
];

fn is_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && TLDS.contains(&labels[labels.len() - 1].to_ascii_lowercase().as_str())
}

fn url_or_email(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    if !core.contains(['.', '@', ':']) {
        return None;
    }
    let lower = core.to_ascii_lowercase();
    let body = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let schemed = body.is_some();
    let body_len = body.map_or(core.len(), str::len);
    let body = &core[core.len() - body_len..];
    let host = body.split(['/', '?', '#']).next().unwrap_or("");
    let is_url = schemed || lower.starts_with("www.") || is_domain(host);
    let is_email = match body.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && local
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
                && is_domain(domain)
        }
        None => false,
    };
    if !(is_url || is_email) {
        return None;
    }
    let mut words: Vec<String> = Vec::new();
    let mut run = String::new();
    let flush = |run: &mut String, words: &mut Vec<String>| {
        if !run.is_empty() {
            if run.eq_ignore_ascii_case("www") {
                words.push("w w w".into());
            } else {
                words.push(std::mem::take(run));
            }
            run.clear();
        }
    };
    let body = body.trim_end_matches('/');
    for c in body.chars() {
        if c.is_alphanumeric() {
            run.push(c);
            continue;
        }
        flush(&mut run, &mut words);
        let name = match c {
            '.' => "dot",
            '/' => "slash",
            '@' => "at",
            '-' => "dash",
            '_' => "underscore",
            ':' => "colon",
            '?' => "question mark",
            '=' => "equals",
            '&' => "and",
            '#' => "hash",
            '~' => "tilde",
            '+' => "plus",
            '%' => "percent",
            _ => continue,
        };
        words.push(name.into());
    }
    flush(&mut run, &mut words);
    ctx.found(words.join(" "), i)
}

// ---------------------------------------------------------------- dates

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A month's full name from its name or abbreviation ("Jan", "Sept"),
/// capitalized as names are.
pub(crate) fn month(word: &str) -> Option<&'static str> {
    if !word.starts_with(|c: char| c.is_ascii_uppercase()) || word.len() < 3 {
        return None;
    }
    let lower = word.to_ascii_lowercase();
    if lower == "sept" {
        return Some("September");
    }
    MONTHS.iter().copied().find(|m| {
        let full = m.to_ascii_lowercase();
        full == lower || lower.len() == 3 && full.starts_with(&lower)
    })
}

pub(crate) fn month_number(n: u64) -> Option<&'static str> {
    (1..=12).contains(&n).then(|| MONTHS[n as usize - 1])
}

/// A day of the month: "5", "05", "5th", "21st".
fn day(word: &str) -> Option<u64> {
    let digits_end = word
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(word.len());
    let (num, suffix) = word.split_at(digits_end);
    if !(1..=2).contains(&num.len()) || !["", "st", "nd", "rd", "th"].contains(&suffix) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    (1..=31).contains(&n).then_some(n)
}

/// A 4-digit year from 1000 to 2999.
fn year4(word: &str) -> Option<u64> {
    let n: u64 = word.parse().ok()?;
    (word.len() == 4 && is_digits(word) && (1000..=2999).contains(&n)).then_some(n)
}

fn date(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    // January 5, 2025 · Jan. 5 · January 2025
    if let Some(name) = month(core) {
        let abbreviated = name.len() != core.len();
        let post = ctx.post(i);
        if post.is_empty() || abbreviated && post == "." {
            let next = ctx.core(i + 1);
            if let Some(d) = next.and_then(day) {
                let mut words = format!("{name} {}", ordinal(d));
                let mut last = i + 1;
                let sep = ctx.post(i + 1);
                if sep.is_empty() || sep == "," {
                    if let Some(y) = ctx.core(i + 2).and_then(year4) {
                        words = format!("{words}{sep} {}", year(y));
                        last = i + 2;
                    }
                }
                return ctx.found(words, last);
            }
            if let Some(y) = next.and_then(year4) {
                return ctx.found(format!("{name} {}", year(y)), i + 1);
            }
        }
        return None;
    }
    // 5 January 2025 · 5th of January
    if let Some(d) = day(core) {
        if ctx.post(i).is_empty() {
            let at = if ctx.core(i + 1) == Some("of") && ctx.post(i + 1).is_empty() {
                i + 2
            } else {
                i + 1
            };
            if let Some(name) = ctx.core(at).and_then(month) {
                let after_the = i
                    .checked_sub(1)
                    .and_then(|p| ctx.core(p))
                    .is_some_and(|p| p.eq_ignore_ascii_case("the"));
                let the = if after_the { "" } else { "the " };
                let mut words = format!("{the}{} of {name}", ordinal(d));
                let mut last = at;
                let sep = ctx.post(at);
                if sep.is_empty() || sep == "," {
                    if let Some(y) = ctx.core(at + 1).and_then(year4) {
                        words = format!("{words}{sep} {}", year(y));
                        last = at + 1;
                    }
                }
                return ctx.found(words, last);
            }
        }
        return None;
    }
    // 2025-03-04
    let parts: Vec<&str> = core.split('-').collect();
    if parts.len() == 3 && parts[0].len() == 4 && parts[1].len() == 2 && parts[2].len() == 2 {
        let y = year4(parts[0])?;
        let m = month_number(parts[1].parse().ok()?)?;
        let d = day(parts[2])?;
        return ctx.found(format!("{m} {}, {}", ordinal(d), year(y)), i);
    }
    // 3/4/2025 (US order) · 3/4/25
    let parts: Vec<&str> = core.split('/').collect();
    if parts.len() == 3 && parts.iter().all(|p| is_digits(p)) && parts[0].len() <= 2 {
        let m = month_number(parts[0].parse().ok()?)?;
        let d = day(parts[1])?;
        let y = match parts[2].len() {
            4 => year(parts[2].parse().ok()?),
            2 => {
                let n: u64 = parts[2].parse().ok()?;
                if n < 10 {
                    format!("oh {}", cardinal(n))
                } else {
                    cardinal(n)
                }
            }
            _ => return None,
        };
        return ctx.found(format!("{m} {}, {y}", ordinal(d)), i);
    }
    None
}

// ---------------------------------------------------------------- times

/// "am", "PM", "a.m", "p.m" (the core of "p.m."): AM or PM.
fn meridiem(word: &str) -> Option<&'static str> {
    match word.to_ascii_lowercase().as_str() {
        "am" | "a.m" => Some(AM),
        "pm" | "p.m" => Some(PM),
        _ => None,
    }
}

/// A clock time "H:MM" and the meridiem attached to it ("2:30pm").
fn clock(core: &str) -> Option<(u64, u64, Option<&'static str>)> {
    let digits_end = core
        .find(|c: char| !c.is_ascii_digit() && c != ':')
        .unwrap_or(core.len());
    let (time, suffix) = core.split_at(digits_end);
    let attached = if suffix.is_empty() {
        None
    } else {
        Some(meridiem(suffix)?)
    };
    let (h, m) = match time.split_once(':') {
        Some((h, m)) => (h, Some(m)),
        None => (time, None),
    };
    if !(1..=2).contains(&h.len()) || !is_digits(h) {
        return None;
    }
    let hour: u64 = h.parse().ok()?;
    let minute = match m {
        Some(m) if m.len() == 2 && is_digits(m) => m.parse().ok()?,
        Some(_) => return None,
        None => 0,
    };
    (hour <= 23 && minute <= 59).then_some((hour, minute, attached))
}

fn time(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    let (hour, minute, attached) = clock(core)?;
    let colon = core.contains(':');
    let (meridiem, last, end) = match attached {
        Some(m) => (Some(m), i, ctx.end(i)),
        None => match ctx.core(i + 1).and_then(meridiem) {
            Some(m) if ctx.post(i).is_empty() => (Some(m), i + 1, ctx.dot_end(i + 1)),
            _ => (None, i, ctx.end(i)),
        },
    };
    if !colon && meridiem.is_none() {
        return None;
    }
    if meridiem.is_some() && !(1..=12).contains(&hour) {
        return None;
    }
    let mut words = cardinal(hour);
    match (minute, meridiem) {
        (0, Some(_)) => {}
        (0, None) if (1..=12).contains(&hour) => words.push_str(" o'clock"),
        (0, None) => words.push_str(" hundred"),
        (1..=9, _) => words = format!("{words} oh {}", cardinal(minute)),
        _ => words = format!("{words} {}", cardinal(minute)),
    }
    if let Some(m) = meridiem {
        words = format!("{words} {m}");
    }
    Some(Found {
        words,
        from_pre: false,
        end_token: last + 1,
        end_byte: end,
    })
}

// ---------------------------------------------------------------- money

struct Currency {
    one: &'static str,
    many: &'static str,
    cent: Option<(&'static str, &'static str)>,
}

fn currency(symbol: char) -> Option<Currency> {
    Some(match symbol {
        '$' => Currency {
            one: "dollar",
            many: "dollars",
            cent: Some(("cent", "cents")),
        },
        '€' => Currency {
            one: "euro",
            many: "euros",
            cent: Some(("cent", "cents")),
        },
        '£' => Currency {
            one: "pound",
            many: "pounds",
            cent: Some(("penny", "pence")),
        },
        '¥' => Currency {
            one: "yen",
            many: "yen",
            cent: None,
        },
        _ => return None,
    })
}

fn magnitude(word: &str) -> Option<&'static str> {
    Some(match word {
        "k" | "K" | "thousand" => "thousand",
        "m" | "M" | "mn" | "million" => "million",
        "b" | "B" | "bn" | "billion" => "billion",
        "t" | "T" | "tn" | "trillion" => "trillion",
        _ => return None,
    })
}

fn money(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    let (negative, body) = match core.strip_prefix('-').or_else(|| core.strip_prefix('−')) {
        Some(rest) => (true, rest),
        None => (false, core),
    };
    let first = body.chars().next()?;
    let lastc = body.chars().next_back()?;
    let (cur, amount) = if let Some(cur) = currency(first) {
        (cur, &body[first.len_utf8()..])
    } else if let Some(cur) = currency(lastc).filter(|_| lastc != '$') {
        (cur, &body[..body.len() - lastc.len_utf8()])
    } else {
        return None;
    };
    let minus = if negative { "minus " } else { "" };
    // A range: $10-20, $10-$20.
    if let Some((a, b)) = split_range(amount) {
        let b = b.strip_prefix(first).unwrap_or(b);
        let (a, b) = (parse_num(a)?, parse_num(b)?);
        let words = format!("{minus}{} to {} {}", a.words(), b.words(), cur.many);
        return ctx.found(words, i);
    }
    // An attached magnitude: $5M, $2.5bn, $10k.
    let num_end = amount
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(amount.len());
    let (num_text, suffix) = amount.split_at(num_end);
    let num = parse_num(num_text)?;
    let mag = if suffix.is_empty() {
        None
    } else {
        Some(magnitude(suffix)?)
    };
    let (mag, last) = match mag {
        Some(m) => (Some(m), i),
        None => match ctx.core(i + 1).and_then(magnitude) {
            Some(m)
                if ctx.post(i).is_empty() && m.len() > 1 && ctx.core(i + 1).unwrap().len() > 2 =>
            {
                (Some(m), i + 1)
            }
            _ => (None, i),
        },
    };
    let words = if let Some(mag) = mag {
        format!("{minus}{} {mag} {}", num.words(), cur.many)
    } else {
        let whole: u64 = if num.int.is_empty() {
            0
        } else {
            num.int.parse().ok()?
        };
        let unit = if whole == 1 { cur.one } else { cur.many };
        match (num.frac, cur.cent) {
            (Some(f), Some((one, many))) if f.len() == 2 => {
                let cents: u64 = f.parse().ok()?;
                let cent_words = format!(
                    "{} {}",
                    cardinal(cents),
                    if cents == 1 { one } else { many }
                );
                match (whole, cents) {
                    (0, 0) => format!("zero {}", cur.many),
                    (0, _) => cent_words,
                    (_, 0) => format!("{} {unit}", cardinal(whole)),
                    _ => format!("{} {unit} and {cent_words}", cardinal(whole)),
                }
            }
            (Some(_), _) => format!("{} {}", num.words(), cur.many),
            (None, _) => format!("{} {unit}", integer(&num.int)),
        }
    };
    let words = if mag.is_none() && negative {
        format!("minus {words}")
    } else {
        words
    };
    ctx.found(words, last)
}

// ---------------------------------------------------------------- phones

fn phone(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    let read = |groups: &[&str]| -> String {
        groups
            .iter()
            .map(|g| digits(g))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // (555) 123-4567: the brackets are the token's own punctuation.
    if ctx.pre(i).ends_with('(') && ctx.post(i) == ")" && core.len() == 3 && is_digits(core) {
        let next = ctx.core(i + 1)?;
        let groups: Vec<&str> = next.split('-').collect();
        if groups.len() == 2
            && groups[0].len() == 3
            && groups[1].len() == 4
            && groups.iter().all(|g| is_digits(g))
        {
            let mut all = vec![core];
            all.extend(groups);
            let mut found = ctx.found(read(&all), i + 1)?;
            found.from_pre = true;
            return Some(found);
        }
        return None;
    }
    let (plus, body) = match core.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, core),
    };
    let sep = if body.contains('-') { '-' } else { '.' };
    let groups: Vec<&str> = body.split(sep).collect();
    if groups.len() < 2 || !groups.iter().all(|g| is_digits(g)) {
        return None;
    }
    let sizes: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let local = matches!(sizes.as_slice(), [3, 3, 4] | [1, 3, 3, 4]) || sizes == [3, 4];
    let international = plus && sizes.iter().all(|&n| (1..=4).contains(&n));
    if !(local || international) {
        return None;
    }
    if sizes == [3, 4] && !plus {
        // 100-1000 is a range, when said as one.
        let before = i
            .checked_sub(1)
            .and_then(|p| ctx.core(p))
            .map(str::to_ascii_lowercase);
        if matches!(before.as_deref(), Some("from" | "between" | "pages" | "of"))
            || ctx.core(i + 1).and_then(unit).is_some()
        {
            return None;
        }
    }
    let mut words = read(&groups);
    if plus {
        words = format!("plus {words}");
    }
    ctx.found(words, i)
}

// ---------------------------------------------------------------- units

/// A unit's singular and plural, by its symbol (case matters: "m" is a
/// meter, "M" is not a unit).
fn unit(symbol: &str) -> Option<(&'static str, &'static str)> {
    Some(match symbol {
        "km" => ("kilometer", "kilometers"),
        "m" => ("meter", "meters"),
        "cm" => ("centimeter", "centimeters"),
        "mm" => ("millimeter", "millimeters"),
        "mi" => ("mile", "miles"),
        "ft" => ("foot", "feet"),
        "yd" => ("yard", "yards"),
        "kg" => ("kilogram", "kilograms"),
        "g" => ("gram", "grams"),
        "mg" => ("milligram", "milligrams"),
        "lb" | "lbs" => ("pound", "pounds"),
        "oz" => ("ounce", "ounces"),
        "l" | "L" => ("liter", "liters"),
        "ml" | "mL" => ("milliliter", "milliliters"),
        "km/h" | "kph" | "kmh" => ("kilometer per hour", "kilometers per hour"),
        "mph" => ("mile per hour", "miles per hour"),
        "m/s" => ("meter per second", "meters per second"),
        "°F" | "℉" => ("degree Fahrenheit", "degrees Fahrenheit"),
        "°C" | "℃" => ("degree Celsius", "degrees Celsius"),
        "°" => ("degree", "degrees"),
        "KB" | "kB" => ("kilobyte", "kilobytes"),
        "MB" => ("megabyte", "megabytes"),
        "GB" => ("gigabyte", "gigabytes"),
        "TB" => ("terabyte", "terabytes"),
        "Mbps" => ("megabit per second", "megabits per second"),
        "Gbps" => ("gigabit per second", "gigabits per second"),
        "Hz" => ("hertz", "hertz"),
        "kHz" => ("kilohertz", "kilohertz"),
        "MHz" => ("megahertz", "megahertz"),
        "GHz" => ("gigahertz", "gigahertz"),
        "W" => ("watt", "watts"),
        "kW" => ("kilowatt", "kilowatts"),
        "kWh" => ("kilowatt hour", "kilowatt hours"),
        "V" => ("volt", "volts"),
        "mAh" => ("milliamp hour", "milliamp hours"),
        "ms" => ("millisecond", "milliseconds"),
        "s" | "sec" | "secs" => ("second", "seconds"),
        "min" | "mins" => ("minute", "minutes"),
        "h" | "hr" | "hrs" => ("hour", "hours"),
        _ => return None,
    })
}

fn quantity(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    // 50% · -3.5% · 5-10%
    if let Some(value) = core.strip_suffix('%') {
        let (words, _) = value_words(value)?;
        return ctx.found(format!("{words} percent"), i);
    }
    // 5km · 72°F · 2.5GHz · -5°C · 10-20kg
    let starts_number = core
        .trim_start_matches(['-', '−'])
        .starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if !starts_number {
        return None;
    }
    let split = core
        .char_indices()
        .skip(1)
        .find(|&(_, c)| !(c.is_ascii_digit() || matches!(c, '.' | ',' | '-' | '–')))
        .map(|(at, _)| at);
    if let Some(at) = split {
        let (value, symbol) = core.split_at(at);
        let (one, many) = unit(symbol)?;
        let (words, single) = value_words(value)?;
        return ctx.found(format!("{words} {}", if single { one } else { many }), i);
    }
    // 5 km · 60 km/h · 100 °F
    let (words, single) = value_words(core)?;
    if !ctx.post(i).is_empty() {
        return None;
    }
    // "55 in. wide": inches only with the dot, "in" alone is the word.
    if ctx.core(i + 1) == Some("in") && ctx.post(i + 1).starts_with('.') {
        let unit = if single { "inch" } else { "inches" };
        return Some(Found {
            words: format!("{words} {unit}"),
            from_pre: false,
            end_token: i + 2,
            end_byte: ctx.dot_end(i + 1),
        });
    }
    let (one, many) = unit(ctx.core(i + 1)?)?;
    ctx.found(
        format!("{words} {}", if single { one } else { many }),
        i + 1,
    )
}

// ---------------------------------------------------------------- fractions

fn fraction_of(numerator: u64, denominator: u64, mixed: bool) -> Option<String> {
    if numerator == 0 || numerator >= denominator {
        return None;
    }
    if !(denominator <= 10 || [12, 16, 32, 64, 100].contains(&denominator)) {
        return None;
    }
    let (one, many) = match denominator {
        2 => ("half".to_string(), "halves".to_string()),
        4 => ("quarter".to_string(), "quarters".to_string()),
        d => {
            let name = ordinal(d);
            (name.clone(), format!("{name}s"))
        }
    };
    Some(match numerator {
        1 if mixed => format!("a {one}"),
        1 => format!("one {one}"),
        n => format!("{} {many}", cardinal(n)),
    })
}

fn vulgar(c: char) -> Option<(u64, u64)> {
    Some(match c {
        '½' => (1, 2),
        '⅓' => (1, 3),
        '⅔' => (2, 3),
        '¼' => (1, 4),
        '¾' => (3, 4),
        '⅛' => (1, 8),
        _ => return None,
    })
}

fn parse_fraction(core: &str) -> Option<(u64, u64)> {
    let mut chars = core.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return vulgar(c);
    }
    let (a, b) = core.split_once('/')?;
    if !is_digits(a) || !is_digits(b) || a.len() > 3 || b.len() > 3 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn fraction(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    // 1 1/2 · 2½
    if is_digits(core) && ctx.post(i).is_empty() {
        if let Some((a, b)) = ctx.core(i + 1).and_then(parse_fraction) {
            let part = fraction_of(a, b, true)?;
            return ctx.found(format!("{} and {part}", integer(core)), i + 1);
        }
    }
    let last = core.chars().next_back()?;
    if let Some((a, b)) = vulgar(last) {
        let whole = &core[..core.len() - last.len_utf8()];
        if is_digits(whole) {
            let part = fraction_of(a, b, true)?;
            return ctx.found(format!("{} and {part}", integer(whole)), i);
        }
    }
    let (a, b) = parse_fraction(core)?;
    // "a 1/4 teaspoon" is a quarter teaspoon.
    let after_a = i
        .checked_sub(1)
        .and_then(|p| ctx.core(p))
        .is_some_and(|p| p.eq_ignore_ascii_case("a"));
    let words = fraction_of(a, b, after_a)?;
    let words = match words.strip_prefix("a ") {
        Some(part) if after_a => part.to_string(),
        _ => words,
    };
    ctx.found(words, i)
}

// ---------------------------------------------------------------- ordinals, decades, numbers

fn ordinal_number(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    let digits_end = core.find(|c: char| !c.is_ascii_digit())?;
    let (num, suffix) = core.split_at(digits_end);
    if num.is_empty()
        || num.len() > 9
        || !["st", "nd", "rd", "th"].contains(&suffix.to_ascii_lowercase().as_str())
    {
        return None;
    }
    ctx.found(ordinal(num.parse().ok()?), i)
}

fn decade(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    let body = core
        .strip_suffix("'s")
        .or_else(|| core.strip_suffix("’s"))
        .or_else(|| core.strip_suffix('s'))?;
    let (short, num) = match body.strip_prefix(['\'', '’']) {
        Some(rest) => (true, rest),
        None => (body.len() == 2, body),
    };
    if !is_digits(num) || !num.ends_with('0') {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    // "the 60s" is a decade, "in 60s" is a time: without an apostrophe, two
    // digits are a decade only after words that name one.
    let named = body.len() != num.len()
        || i.checked_sub(1).and_then(|p| ctx.core(p)).is_some_and(|p| {
            ["the", "early", "late", "mid", "mid-"].contains(&p.to_ascii_lowercase().as_str())
        });
    let words = match num.len() {
        2 if short && n >= 10 && named => plural_words(&cardinal(n)),
        4 if !short => plural_words(&year(n)),
        _ => return None,
    };
    ctx.found(words, i)
}

fn plain_number(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    if let Some(num) = parse_num(core) {
        // 1000–1099 are years only where a year is expected.
        let early_year = num.year().is_none()
            && !num.negative
            && !num.grouped
            && num.frac.is_none()
            && num.int.len() == 4
            && num.int.starts_with("10")
            && i.checked_sub(1).and_then(|p| ctx.core(p)).is_some_and(|p| {
                ["in", "since", "by", "until", "year", "around", "circa"]
                    .contains(&p.to_ascii_lowercase().as_str())
            });
        if early_year {
            return ctx.found(year(num.int.parse().ok()?), i);
        }
        let words = match num.year() {
            Some(y) => year(y),
            None => num.words(),
        };
        return ctx.found(words, i);
    }
    // A range: 10-20, 1990–1995, 3.5-4
    let (a, b) = split_range(core)?;
    let (a, b) = (parse_num(a)?, parse_num(b)?);
    if b.negative {
        return None;
    }
    let read = |n: &Num| n.year().map_or_else(|| n.words(), year);
    ctx.found(format!("{} to {}", read(&a), read(&b)), i)
}

// ---------------------------------------------------------------- abbreviations

fn capitalized(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(char::is_uppercase)
        && chars.all(|c| c.is_lowercase() || c == '\'' || c == '’')
}

fn starts_upper(word: &str) -> bool {
    word.starts_with(char::is_uppercase)
}

fn abbreviation(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    let dot = ctx.post(i).starts_with('.');
    let next = ctx.core(i + 1).filter(|_| !dot || ctx.post(i).len() == 1);
    let prev = i.checked_sub(1).and_then(|p| ctx.core(p));
    let next_is_name = next.is_some_and(starts_upper);
    let next_is_number = next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()));
    let say = |words: &str, dotted: bool| -> Option<Found> {
        Some(Found {
            words: words.to_string(),
            from_pre: false,
            end_token: i + 1,
            end_byte: if dotted { ctx.dot_end(i) } else { ctx.end(i) },
        })
    };
    // Units written alone: "the speed in km/h".
    if let "km/h" | "mph" | "m/s" | "°F" | "°C" | "kph" = core {
        return say(unit(core)?.1, false);
    }
    match (core, dot) {
        ("e.g" | "E.g", true) => say("for example", true),
        ("i.e" | "I.e", true) => say("that is", true),
        ("etc", true) => say("et cetera", true),
        ("vs" | "Vs", _) | ("v", true) => say("versus", dot),
        ("approx", true) => say("approximately", true),
        ("Mr", _) => say("Mister", dot),
        ("Mrs", _) => say("Missus", dot),
        ("Ms", _) => say("Miz", dot),
        ("Prof", true) => say("Professor", true),
        ("Jr", true) => say("Junior", true),
        ("Sr", true) => say("Senior", true),
        ("Mt", true) => say("Mount", true),
        ("Ave", true) => say("Avenue", true),
        ("Blvd", true) => say("Boulevard", true),
        ("Rd", true) => say("Road", true),
        ("Capt", true) => say("Captain", true),
        ("Lt", true) => say("Lieutenant", true),
        ("Sgt", true) => say("Sergeant", true),
        ("Gov", true) => say("Governor", true),
        ("Sen", true) => say("Senator", true),
        ("Dept" | "dept", true) => say("Department", true),
        ("Fig" | "fig", true) if next_is_number => say("Figure", true),
        ("No" | "no", true) if next_is_number => say("number", true),
        ("Dr", _) => {
            // Dr. Smith is a doctor; Elm Dr. is a drive.
            if next_is_name || prev.is_none() {
                say("Doctor", dot)
            } else {
                say("Drive", dot)
            }
        }
        ("St", _) => {
            // St. Louis is a saint; Main St. (or 5th St.) a street.
            let after_name = prev.is_some_and(|p| {
                (capitalized(p) || p.starts_with(|c: char| c.is_ascii_digit()))
                    && ctx.post(i - 1).is_empty()
            });
            if next_is_name && !after_name || prev.is_none() {
                say("Saint", dot)
            } else {
                say("Street", dot)
            }
        }
        _ => {
            // A month's abbreviation alone: "in Jan."
            let name = month(core).filter(|name| name.len() != core.len() && dot)?;
            say(name, true)
        }
    }
}

// ---------------------------------------------------------------- roman numerals

/// Words after which a roman numeral is a number: World War II, Part IV.
const NUMBERED: &[&str] = &[
    "War", "Part", "Chapter", "Volume", "Vol", "Act", "Scene", "Phase", "Level", "Book", "Type",
    "Class", "Stage", "Grade", "Article", "Title", "Round", "Season", "Episode", "Bowl", "Apollo",
    "Rocky", "Star", "Wars",
];

fn roman_numeral(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    let n = roman(core)?;
    let prev = i.checked_sub(1).and_then(|p| ctx.core(p))?;
    if !ctx.post(i - 1).is_empty() {
        return None;
    }
    if NUMBERED.contains(&prev) {
        return ctx.found(cardinal(n), i);
    }
    // Henry VIII, Louis XIV, Elizabeth II: only numerals of I, V and X, and
    // not the pronoun "I" nor Malcolm X.
    let regnal = core.chars().all(|c| matches!(c, 'I' | 'V' | 'X')) && !matches!(core, "I" | "X");
    if regnal && capitalized(prev) && prev.chars().count() >= 2 {
        return ctx.found(format!("the {}", ordinal_words(&cardinal(n))), i);
    }
    None
}

// ---------------------------------------------------------------- symbols

fn symbols(ctx: &Ctx, i: usize, core: &str) -> Option<Found> {
    let alone = match core {
        "&" => Some("and"),
        "+" => Some("plus"),
        "=" => Some("equals"),
        "@" => Some("at"),
        "#" => Some("number"),
        "%" => Some("percent"),
        "<" => Some("less than"),
        ">" => Some("greater than"),
        "~" => Some("about"),
        "°" => Some("degrees"),
        "×" => Some("times"),
        _ => None,
    };
    if let Some(words) = alone {
        return ctx.found(words.into(), i);
    }
    // #1 · #rust
    if let Some(rest) = core.strip_prefix('#') {
        if is_digits(rest) {
            return ctx.found(format!("number {}", integer(rest)), i);
        }
        if rest.chars().all(|c| c.is_alphanumeric() || c == '_') && !rest.is_empty() {
            return ctx.found(format!("hashtag {rest}"), i);
        }
        return None;
    }
    // C++ · R&D · AT&T
    if let Some(stem) = core.strip_suffix("++") {
        if !stem.is_empty() && stem.chars().all(char::is_alphanumeric) {
            return ctx.found(format!("{stem} plus plus"), i);
        }
    }
    if core.contains('&')
        && core
            .split('&')
            .all(|p| !p.is_empty() && p.chars().all(char::is_alphabetic))
    {
        return ctx.found(core.split('&').collect::<Vec<_>>().join(" and "), i);
    }
    // Letters and digits together: MP3, COVID-19, 5-year-old, 24/7, B2B.
    let has_digit = core.chars().any(|c| c.is_ascii_digit());
    let has_letter = core.chars().any(char::is_alphabetic);
    let allowed = core
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '/'));
    if !has_digit || !allowed || core.starts_with(['-', '/']) {
        return None;
    }
    if !has_letter && !core.contains('/') {
        return None;
    }
    let mut words: Vec<String> = Vec::new();
    let mut run = String::new();
    let mut run_digits = false;
    let flush = |run: &mut String, digits: bool, words: &mut Vec<String>| {
        if !run.is_empty() {
            words.push(if digits { integer(run) } else { run.clone() });
            run.clear();
        }
    };
    for c in core.chars() {
        if c == '-' || c == '/' {
            flush(&mut run, run_digits, &mut words);
            continue;
        }
        let d = c.is_ascii_digit();
        if d != run_digits {
            flush(&mut run, run_digits, &mut words);
        }
        run_digits = d;
        run.push(c);
    }
    flush(&mut run, run_digits, &mut words);
    ctx.found(words.join(" "), i)
}
