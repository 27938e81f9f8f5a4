//! English number words: cardinals, ordinals, years, digits, decimals.
//!
//! Written here rather than taken from a crate: the ones on crates.io either
//! hyphenate ("twenty-four"), which the engine's phonemizer reads the same but
//! word timestamps would count as one word, or say "and" after hundreds
//! (British), while American voices are the bundled ones.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

const SCALES: [(u64, &str); 6] = [
    (1_000_000_000_000_000_000, "quintillion"),
    (1_000_000_000_000_000, "quadrillion"),
    (1_000_000_000_000, "trillion"),
    (1_000_000_000, "billion"),
    (1_000_000, "million"),
    (1_000, "thousand"),
];

/// Longest integer read as a number; longer ones are read digit by digit.
pub const MAX_CARDINAL_DIGITS: usize = 18;

fn below_hundred(n: u64, out: &mut Vec<&'static str>) {
    if n < 20 {
        out.push(ONES[n as usize]);
    } else {
        out.push(TENS[(n / 10) as usize]);
        if n % 10 != 0 {
            out.push(ONES[(n % 10) as usize]);
        }
    }
}

fn below_thousand(n: u64, out: &mut Vec<&'static str>) {
    if n >= 100 {
        out.push(ONES[(n / 100) as usize]);
        out.push("hundred");
        if n % 100 != 0 {
            below_hundred(n % 100, out);
        }
    } else {
        below_hundred(n, out);
    }
}

/// "1234" → "one thousand two hundred thirty four".
pub fn cardinal(n: u64) -> String {
    if n == 0 {
        return "zero".into();
    }
    let mut out = Vec::new();
    let mut rest = n;
    for (scale, name) in SCALES {
        if rest >= scale {
            below_thousand(rest / scale, &mut out);
            out.push(name);
            rest %= scale;
        }
    }
    if rest > 0 {
        below_thousand(rest, &mut out);
    }
    out.join(" ")
}

/// The ordinal of a cardinal's words: its last word turned ordinal.
pub fn ordinal_words(cardinal: &str) -> String {
    let (head, last) = match cardinal.rsplit_once(' ') {
        Some((head, last)) => (Some(head), last),
        None => (None, cardinal),
    };
    let last = match last {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    match head {
        Some(head) => format!("{head} {last}"),
        None => last,
    }
}

/// "21" → "twenty first".
pub fn ordinal(n: u64) -> String {
    ordinal_words(&cardinal(n))
}

/// A year as people say it: 1905 "nineteen oh five", 2000 "two thousand",
/// 2007 "two thousand seven", 2024 "twenty twenty four", 1900 "nineteen hundred".
pub fn year(n: u64) -> String {
    if !(1000..10_000).contains(&n) {
        return cardinal(n);
    }
    let (high, low) = (n / 100, n % 100);
    if (2000..2010).contains(&n) || high % 10 == 0 && low == 0 {
        // 2000–2009, and whole thousands (1000, 3000).
        return cardinal(n);
    }
    let mut out = Vec::new();
    below_hundred(high, &mut out);
    match low {
        0 => out.push("hundred"),
        1..=9 => {
            out.push("oh");
            out.push(ONES[low as usize]);
        }
        _ => below_hundred(low, &mut out),
    }
    out.join(" ")
}

/// The plural of a number's words, for decades: "nineteen ninety" →
/// "nineteen nineties", "eighteen hundred" → "eighteen hundreds".
pub fn plural_words(words: &str) -> String {
    if let Some(stem) = words.strip_suffix('y') {
        format!("{stem}ies")
    } else if words.ends_with('x') {
        format!("{words}es")
    } else {
        format!("{words}s")
    }
}

/// Every digit as a word: "0451" → "zero four five one".
pub fn digits(text: &str) -> String {
    let words: Vec<&str> = text
        .chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| ONES[d as usize])
        .collect();
    words.join(" ")
}

/// An integer written in digits (no separators) as words: digit by digit when
/// it has a leading zero or is too long to be read as a number.
pub fn integer(text: &str) -> String {
    let leading_zero = text.len() > 1 && text.starts_with('0');
    match text.parse::<u64>() {
        Ok(n) if !leading_zero && text.len() <= MAX_CARDINAL_DIGITS => cardinal(n),
        _ => digits(text),
    }
}

/// A decimal number: "3.14" → "three point one four".
pub fn decimal(int: &str, frac: Option<&str>) -> String {
    let int = if int.is_empty() { "0" } else { int };
    let mut out = integer(int);
    if let Some(frac) = frac.filter(|f| !f.is_empty()) {
        out.push_str(" point ");
        out.push_str(&digits(frac));
    }
    out
}

/// An integer up to 3999 from a roman numeral in its canonical form
/// ("VIII", "XIV"), or `None` ("IIII", "IC", "MIX" are not canonical).
pub fn roman(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 15 {
        return None;
    }
    let value = |c| match c {
        'I' => Some(1),
        'V' => Some(5),
        'X' => Some(10),
        'L' => Some(50),
        'C' => Some(100),
        'D' => Some(500),
        'M' => Some(1000),
        _ => None,
    };
    let values: Option<Vec<u64>> = text.chars().map(value).collect();
    let values = values?;
    let mut total = 0i64;
    for (i, &v) in values.iter().enumerate() {
        match values.get(i + 1) {
            Some(&next) if next > v => total -= v as i64,
            _ => total += v as i64,
        }
    }
    // Only the canonical spelling of the value counts.
    let total = u64::try_from(total).ok()?;
    (total > 0 && total < 4000 && to_roman(total) == text).then_some(total)
}

fn to_roman(mut n: u64) -> String {
    const TABLE: [(u64, &str); 13] = [
        (1000, "M"),
        (900, "CM"),
        (500, "D"),
        (400, "CD"),
        (100, "C"),
        (90, "XC"),
        (50, "L"),
        (40, "XL"),
        (10, "X"),
        (9, "IX"),
        (5, "V"),
        (4, "IV"),
        (1, "I"),
    ];
    let mut out = String::new();
    for (value, letters) in TABLE {
        while n >= value {
            out.push_str(letters);
            n -= value;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(7), "seven");
        assert_eq!(cardinal(40), "forty");
        assert_eq!(cardinal(99), "ninety nine");
        assert_eq!(cardinal(100), "one hundred");
        assert_eq!(cardinal(101), "one hundred one");
        assert_eq!(cardinal(1_000), "one thousand");
        assert_eq!(cardinal(1_234), "one thousand two hundred thirty four");
        assert_eq!(cardinal(1_000_001), "one million one");
        assert_eq!(cardinal(2_500_000_000), "two billion five hundred million");
        assert_eq!(
            cardinal(u64::MAX).split(' ').next(),
            Some("eighteen"),
            "18 quintillion reads without panicking"
        );
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "first");
        assert_eq!(ordinal(2), "second");
        assert_eq!(ordinal(3), "third");
        assert_eq!(ordinal(5), "fifth");
        assert_eq!(ordinal(8), "eighth");
        assert_eq!(ordinal(9), "ninth");
        assert_eq!(ordinal(12), "twelfth");
        assert_eq!(ordinal(20), "twentieth");
        assert_eq!(ordinal(21), "twenty first");
        assert_eq!(ordinal(100), "one hundredth");
        assert_eq!(ordinal(1_000_000), "one millionth");
    }

    #[test]
    fn years() {
        assert_eq!(year(1066), "ten sixty six");
        assert_eq!(year(1900), "nineteen hundred");
        assert_eq!(year(1905), "nineteen oh five");
        assert_eq!(year(1999), "nineteen ninety nine");
        assert_eq!(year(2000), "two thousand");
        assert_eq!(year(2007), "two thousand seven");
        assert_eq!(year(2010), "twenty ten");
        assert_eq!(year(2024), "twenty twenty four");
        assert_eq!(year(3000), "three thousand");
    }

    #[test]
    fn romans_only_in_canonical_form() {
        assert_eq!(roman("VIII"), Some(8));
        assert_eq!(roman("XIV"), Some(14));
        assert_eq!(roman("II"), Some(2));
        assert_eq!(roman("MCMXC"), Some(1990));
        assert_eq!(roman("IIII"), None);
        assert_eq!(roman("IC"), None);
        assert_eq!(roman("ABC"), None);
        assert_eq!(roman(""), None);
    }

    #[test]
    fn digits_and_integers() {
        assert_eq!(digits("0451"), "zero four five one");
        assert_eq!(integer("007"), "zero zero seven");
        assert_eq!(integer("0"), "zero");
        assert_eq!(integer("1234567890123456789012").split(' ').count(), 22);
        assert_eq!(decimal("3", Some("14")), "three point one four");
        assert_eq!(decimal("", Some("5")), "zero point five");
    }
}
