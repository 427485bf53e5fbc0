//! The model writes Markdown; WhatsApp has its own markup (`*bold*`, `_italic_`, `~strike~`,
//! `` `code` ``, ```` ```block``` ````, `- ` and `1. ` lists, `> ` quotes). Replies longer than
//! one WhatsApp message are split at paragraph, then sentence, then word boundaries.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// Converts the model's Markdown to WhatsApp formatting.
pub fn markdown_to_whatsapp(md: &str) -> String {
    let mut out = Writer::default();
    let opts = Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES;
    for event in Parser::new_ext(md, opts) {
        out.event(event);
    }
    out.finish()
}

#[derive(Default)]
struct Writer {
    out: String,
    /// One entry per open list: the next number for ordered lists.
    lists: Vec<Option<u64>>,
    quote_depth: usize,
    /// Link destinations waiting for their text to end.
    links: Vec<(String, usize)>,
    in_code_block: bool,
    /// A quote just opened: its first block starts right after the `> ` prefix.
    quote_fresh: bool,
    table_cell: usize,
}

impl Writer {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => {
                if self.in_code_block {
                    self.out.push_str(&t);
                } else {
                    self.text(&t);
                }
            }
            Event::Code(t) => {
                self.out.push('`');
                self.out.push_str(&t);
                self.out.push('`');
            }
            Event::Html(t) | Event::InlineHtml(t) => self.text(&t),
            // A single line break stays one: `!help`, alerts and the model's own lines would
            // otherwise run into one line.
            Event::SoftBreak => self.newline(),
            Event::HardBreak => self.newline(),
            Event::Rule => {
                self.block_gap();
                self.out.push_str("———");
            }
            Event::TaskListMarker(done) => self.out.push_str(if done { "☑ " } else { "☐ " }),
            Event::FootnoteReference(t) => {
                self.out.push('[');
                self.out.push_str(&t);
                self.out.push(']');
            }
            Event::InlineMath(t) | Event::DisplayMath(t) => self.out.push_str(&t),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph if self.lists.is_empty() || !self.out.ends_with(' ') => {
                self.block_gap();
            }
            Tag::Heading { .. } => {
                self.block_gap();
                self.out.push('*');
            }
            Tag::BlockQuote(_) => {
                self.block_gap();
                self.quote_depth += 1;
                self.quote_fresh = true;
            }
            Tag::CodeBlock(_) => {
                self.block_gap();
                self.out.push_str("```\n");
                self.in_code_block = true;
            }
            Tag::List(start) => {
                if self.lists.is_empty() {
                    self.block_gap();
                }
                self.lists.push(start);
            }
            Tag::Item => {
                if !self.out.is_empty() && !self.out.ends_with('\n') {
                    self.out.push('\n');
                }
                let depth = self.lists.len().saturating_sub(1);
                self.out.push_str(&"  ".repeat(depth));
                match self.lists.last_mut() {
                    Some(Some(n)) => {
                        self.out.push_str(&format!("{n}. "));
                        *n += 1;
                    }
                    _ => self.out.push_str("- "),
                }
            }
            Tag::Emphasis => self.out.push('_'),
            Tag::Strong => self.out.push('*'),
            Tag::Strikethrough => self.out.push('~'),
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                self.links.push((dest_url.to_string(), self.out.len()));
            }
            Tag::Table(_) => self.block_gap(),
            Tag::TableHead | Tag::TableRow => {
                if !self.out.is_empty() && !self.out.ends_with('\n') {
                    self.out.push('\n');
                }
                self.table_cell = 0;
            }
            Tag::TableCell => {
                if self.table_cell > 0 {
                    self.out.push_str(" | ");
                }
                self.table_cell += 1;
            }
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(_) => self.out.push('*'),
            TagEnd::BlockQuote(_) => self.quote_depth = self.quote_depth.saturating_sub(1),
            TagEnd::CodeBlock => {
                if !self.out.ends_with('\n') {
                    self.out.push('\n');
                }
                self.out.push_str("```");
                self.in_code_block = false;
            }
            TagEnd::List(_) => {
                self.lists.pop();
            }
            TagEnd::Emphasis => self.out.push('_'),
            TagEnd::Strong => self.out.push('*'),
            TagEnd::Strikethrough => self.out.push('~'),
            TagEnd::Link | TagEnd::Image => {
                if let Some((url, at)) = self.links.pop() {
                    let label = self.out[at..].trim().to_owned();
                    if label.is_empty() {
                        self.out.push_str(&url);
                    } else if label != url && !url.is_empty() {
                        self.out.push_str(&format!(" ({url})"));
                    }
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, t: &str) {
        let mut first = true;
        for line in t.split('\n') {
            if !first {
                self.newline();
            }
            first = false;
            self.out.push_str(line);
        }
    }

    fn newline(&mut self) {
        self.out.push('\n');
        self.quote_prefix();
    }

    fn quote_prefix(&mut self) {
        for _ in 0..self.quote_depth {
            self.out.push_str("> ");
        }
    }

    /// Separates blocks by one blank line (none at the start, none inside lists).
    fn block_gap(&mut self) {
        if self.quote_fresh {
            self.quote_fresh = false;
            self.quote_prefix();
            return;
        }
        if self.out.is_empty() {
            self.quote_prefix_if_needed();
            return;
        }
        if !self.lists.is_empty() {
            if !self.out.ends_with('\n') && !self.out.ends_with(' ') {
                self.out.push('\n');
            }
            return;
        }
        while self.out.ends_with(' ') {
            self.out.pop();
        }
        if !self.out.ends_with("\n\n") {
            if self.out.ends_with('\n') {
                self.out.push('\n');
            } else {
                self.out.push_str("\n\n");
            }
        }
        self.quote_prefix_if_needed();
    }

    fn quote_prefix_if_needed(&mut self) {
        if self.quote_depth > 0 && (self.out.is_empty() || self.out.ends_with('\n')) {
            self.quote_prefix();
        }
    }

    fn finish(self) -> String {
        self.out.trim().to_owned()
    }
}

/// Splits `text` into parts of at most `max` characters: at paragraph boundaries, then
/// sentence boundaries, then spaces; a single run without spaces is cut where it must be.
pub fn split_message(text: &str, max: usize) -> Vec<String> {
    assert!(max > 0, "max must be positive");
    let text = text.trim();
    if text.chars().count() <= max {
        return vec![text.to_owned()];
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    for piece in pieces(text, max) {
        let joined = current.chars().count() + piece.chars().count();
        if !current.is_empty() && joined > max {
            parts.push(current.trim_end().to_owned());
            current.clear();
        }
        if current.is_empty() {
            current.push_str(piece.trim_start());
        } else {
            current.push_str(&piece);
        }
    }
    if !current.trim().is_empty() {
        parts.push(current.trim_end().to_owned());
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// Cuts `text` into pieces of at most `max` characters, each keeping its leading separator so
/// that joining adjacent pieces restores the text. Paragraphs first, then sentences, then words.
fn pieces(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for para in split_keeping(text, "\n\n") {
        if para.chars().count() <= max {
            out.push(para);
            continue;
        }
        for sentence in sentences(&para) {
            if sentence.chars().count() <= max {
                out.push(sentence);
                continue;
            }
            for word in split_keeping(&sentence, " ") {
                if word.chars().count() <= max {
                    out.push(word);
                } else {
                    let chars: Vec<char> = word.chars().collect();
                    out.extend(chars.chunks(max).map(|c| c.iter().collect::<String>()));
                }
            }
        }
    }
    out
}

/// Splits before each occurrence of `sep` (the separator starts the next piece).
fn split_keeping(text: &str, sep: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut search = 0;
    while let Some(i) = text[search..].find(sep) {
        let at = search + i;
        if at > start {
            out.push(text[start..at].to_owned());
            start = at;
        }
        search = at + sep.len();
    }
    out.push(text[start..].to_owned());
    out
}

/// Splits after sentence ends (`.`, `!`, `?`, `…` followed by whitespace) and line breaks.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        let ends = matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？') || c == '\n';
        if ends && chars.peek().is_some_and(|n| n.is_whitespace()) {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markup() {
        assert_eq!(
            markdown_to_whatsapp("**Open** today, *not* ~~Sunday~~, call `555-0100`."),
            "*Open* today, _not_ ~Sunday~, call `555-0100`."
        );
        assert_eq!(
            markdown_to_whatsapp("__bold__ and _it_ and ***both***"),
            "*bold* and _it_ and _*both*_"
        );
    }

    #[test]
    fn headings_lists_quotes_links_code() {
        let md = "# Hours\n\nWe are open:\n\n- Mon–Fri 9–18\n- Sat 10–14\n\n1. Order\n2. Pay\n\n> Note: closed on holidays\n\nSee [our site](https://shop.example) or https://x.example.\n\n```\nline 1\nline 2\n```";
        let wa = markdown_to_whatsapp(md);
        assert_eq!(
            wa,
            "*Hours*\n\nWe are open:\n\n- Mon–Fri 9–18\n- Sat 10–14\n\n1. Order\n2. Pay\n\n> Note: closed on holidays\n\nSee our site (https://shop.example) or https://x.example.\n\n```\nline 1\nline 2\n```"
        );
    }

    #[test]
    fn nested_lists_and_loose_items() {
        let md = "- a\n  - b\n- c\n\n3. x\n\n4. y\n";
        assert_eq!(markdown_to_whatsapp(md), "- a\n  - b\n- c\n\n3. x\n4. y");
    }

    #[test]
    fn plain_text_is_unchanged_line_breaks_included() {
        let t = "Hello! How can I help you today?\nWe ship worldwide.";
        assert_eq!(markdown_to_whatsapp(t), t);
        assert_eq!(markdown_to_whatsapp("Hi there"), "Hi there");
        // What `!help`, `!handoffs` and the admins' alerts look like: one item a line.
        let help = "Commands:\n!help — this list\n!stats — today's figures\n!handoffs — who waits";
        assert_eq!(markdown_to_whatsapp(help), help);
        assert_eq!(
            markdown_to_whatsapp("> first line\nsecond line"),
            "> first line\n> second line"
        );
    }

    #[test]
    fn short_message_is_one_part() {
        assert_eq!(split_message("hello", 4096), vec!["hello"]);
    }

    #[test]
    fn splits_at_paragraphs_first() {
        let p1 = "a".repeat(3000);
        let p2 = "b".repeat(3000);
        let text = format!("{p1}\n\n{p2}");
        assert_eq!(split_message(&text, 4096), vec![p1, p2]);
    }

    #[test]
    fn splits_long_paragraph_at_sentences() {
        let sentence = format!("{}.", "word ".repeat(99).trim_end()); // 495 chars + '.'
        let para = std::iter::repeat_n(sentence.as_str(), 20)
            .collect::<Vec<_>>()
            .join(" ");
        let parts = split_message(&para, 4096);
        assert!(parts.len() >= 3, "{} parts", parts.len());
        for p in &parts {
            assert!(p.chars().count() <= 4096);
            assert!(
                p.ends_with('.'),
                "part does not end at a sentence: …{}",
                &p[p.len() - 10..]
            );
        }
        assert_eq!(parts.join(" "), para);
    }

    #[test]
    fn splits_words_and_unbroken_runs() {
        let text = "x".repeat(10_000);
        let parts = split_message(&text, 4096);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            [4096, 4096, 1808]
        );
        let words = "héllo ".repeat(2000);
        let parts = split_message(&words, 4096);
        assert!(
            parts
                .iter()
                .all(|p| p.chars().count() <= 4096 && p.ends_with('o'))
        );
        assert_eq!(parts.join(" "), words.trim());
    }
}
