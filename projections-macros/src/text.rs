//! Rust tokens as a user writes them, for error messages: `&mut Envelope<OrderCreated>`, not
//! `& mut Envelope < OrderCreated >` (how `TokenStream` prints them) nor `&mutEnvelope<..>`.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::ToTokens;

/// `tokens` spaced the way rustfmt spaces types and patterns.
pub fn tokens_text(tokens: &impl ToTokens) -> String {
    let mut out = String::new();
    write_stream(tokens.to_token_stream(), &mut Last::Tight, &mut out);
    out
}

/// What the last written token was, to decide the space before the next one.
#[derive(Clone, Copy, PartialEq)]
enum Last {
    /// Nothing yet, an opening delimiter, or a punctuation that binds to what follows
    /// (`&`, `<`, `::`, `'`, `*`).
    Tight,
    /// An identifier, literal, lifetime, closed group or closing `>`: a word follows after a
    /// space.
    Word,
    /// A separator or operator that takes a space after it (`,`, `;`, `+`, `=`, `->`, `:`).
    Spaced,
}

fn write_stream(stream: TokenStream, last: &mut Last, out: &mut String) {
    let mut tokens = stream.into_iter().peekable();
    while let Some(token) = tokens.next() {
        match token {
            TokenTree::Ident(ident) => write_word(&ident.to_string(), last, out),
            TokenTree::Literal(literal) => write_word(&literal.to_string(), last, out),
            // An invisible group (a `macro_rules!` fragment such as `$ty`) reads as its tokens.
            TokenTree::Group(group) if group.delimiter() == Delimiter::None => {
                write_stream(group.stream(), last, out);
            }
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    _ => ("{ ", " }"),
                };
                // `dyn Fn(u32)`, `Vec<(u8, u8)>`: no space before a group, except after an
                // operator that takes one (`-> (A, B)`) or before a slice after a word
                // (`&mut [u8]`: types never index).
                if group.delimiter() == Delimiter::Bracket && *last == Last::Word {
                    out.push(' ');
                }
                out.push_str(open);
                write_stream(group.stream(), &mut Last::Tight, out);
                out.push_str(close);
                *last = Last::Word;
            }
            TokenTree::Punct(punct) => {
                // `::`, `->` and `=>` are two tokens each; other punctuation reads alone.
                let mut op = String::from(punct.as_char());
                if punct.spacing() == Spacing::Joint
                    && let Some(TokenTree::Punct(next)) = tokens.peek()
                    && matches!(
                        (punct.as_char(), next.as_char()),
                        (':', ':') | ('-' | '=', '>')
                    )
                {
                    op.push(next.as_char());
                    tokens.next();
                }
                *last = write_op(&op, *last, out);
            }
        }
    }
}

fn write_word(word: &str, last: &mut Last, out: &mut String) {
    if *last == Last::Word {
        out.push(' ');
    }
    out.push_str(word);
    *last = Last::Word;
}

fn write_op(op: &str, last: Last, out: &mut String) -> Last {
    match op {
        "," | ";" | ":" => {
            out.push_str(op);
            out.push(' ');
            Last::Spaced
        }
        "+" | "=" | "->" | "=>" => {
            if last != Last::Spaced && !out.is_empty() {
                out.push(' ');
            }
            out.push_str(op);
            out.push(' ');
            Last::Spaced
        }
        // `&`, `<`, `::`, `'`, `*`: bound to their neighbours. A closing `>` ends a word
        // (`for<'a> fn(&'a str)`).
        _ => {
            out.push_str(op);
            if op.ends_with('>') {
                Last::Word
            } else {
                Last::Tight
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tokens_text;
    use quote::quote;

    #[test]
    fn types_read_as_written() {
        let cases = [
            (
                quote!(&mut Envelope<OrderCreated>),
                "&mut Envelope<OrderCreated>",
            ),
            (quote!(&'a mut PgConnection), "&'a mut PgConnection"),
            (quote!(&'static str), "&'static str"),
            (
                quote!(projections::Envelope<events::A>),
                "projections::Envelope<events::A>",
            ),
            (
                quote!(Result<(), Box<dyn Error + Send>>),
                "Result<(), Box<dyn Error + Send>>",
            ),
            (quote!(Vec<Vec<u8>>), "Vec<Vec<u8>>"),
            (quote!([u8; 4]), "[u8; 4]"),
            (quote!(fn(u32) -> bool), "fn(u32) -> bool"),
            (
                quote!(impl Iterator<Item = u32>),
                "impl Iterator<Item = u32>",
            ),
            (quote!(<T as Trait>::Assoc), "<T as Trait>::Assoc"),
            (quote!(*const u8), "*const u8"),
            (quote!(_extra: Option<u32>), "_extra: Option<u32>"),
            (quote!(mut conn), "mut conn"),
            (quote!((&A, &B)), "(&A, &B)"),
            (quote!(&mut [Envelope<A>]), "&mut [Envelope<A>]"),
            (quote!(&[u8]), "&[u8]"),
            (quote!(for<'a> fn(&'a str)), "for<'a> fn(&'a str)"),
            (
                quote!(Box<dyn Fn(&u8) -> Option<u8> + 'static>),
                "Box<dyn Fn(&u8) -> Option<u8> + 'static>",
            ),
        ];
        for (tokens, expected) in cases {
            assert_eq!(tokens_text(&tokens), expected);
        }
    }
}
