//! TEMPORARY shim until the splitter lands (not committed).
use std::ops::Range;
#[derive(Debug, Clone, Copy)]
pub struct PieceLimits {
    pub max_chars: usize,
    pub clause_chars: usize,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub line: String,
    pub span: Range<usize>,
}
pub struct SentenceStream {
    limits: PieceLimits,
    buf: String,
    base: usize,
    chars: usize,
}
impl SentenceStream {
    pub fn new(limits: PieceLimits) -> Self {
        SentenceStream {
            limits,
            buf: String::new(),
            base: 0,
            chars: 0,
        }
    }
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.chars += super::char_count(text);
        self.buf.push_str(text);
        Vec::new()
    }
    pub fn flush(&mut self) -> Vec<Piece> {
        let b = std::mem::take(&mut self.buf);
        let out = pieces(&b, self.limits)
            .into_iter()
            .map(|p| Piece {
                line: p.line,
                span: p.span.start + self.base..p.span.end + self.base,
            })
            .collect();
        self.base += b.len();
        out
    }
    pub fn finish(&mut self) -> Vec<Piece> {
        self.flush()
    }
    pub fn chars(&self) -> usize {
        self.chars
    }
}
pub fn pieces(text: &str, limits: PieceLimits) -> Vec<Piece> {
    let mut out = Vec::new();
    for piece in super::split_units_at_clauses(text, limits.max_chars, limits.clause_chars) {
        if super::is_speakable(piece) {
            let start = piece.as_ptr() as usize - text.as_ptr() as usize;
            out.push(Piece {
                line: super::engine_line(piece),
                span: start..start + piece.len(),
            });
        }
    }
    out
}
