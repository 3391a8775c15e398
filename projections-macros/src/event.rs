//! `#[derive(Event)]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, LitInt, LitStr};

use crate::errors::Errors;

struct EventArgs {
    name: Option<LitStr>,
    aggregate: Option<LitStr>,
    version: Option<LitInt>,
}

pub fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let mut errors = Errors::default();
    let args = parse_args(&input, &mut errors);
    if !input.generics.params.is_empty() {
        errors.at(
            &input.generics,
            "an event type cannot be generic: its wire name must name exactly one type",
        );
        return errors.into_compile_errors();
    }
    if !errors.is_empty() {
        // Fail soft: the type still implements `Event` (with the arguments that were valid),
        // so its uses elsewhere report nothing more than the errors above.
        let mut out = event_impl(&input.ident, args);
        out.extend(errors.into_compile_errors());
        return out;
    }

    let ident = &input.ident;
    let ident_text = ident.to_string();
    let mut out = event_impl(ident, args);
    out.extend(quote! {
        ::projections::__private::inventory::submit! {
            ::projections::__private::EventRegistration::of::<#ident>(
                ::core::concat!(::core::module_path!(), "::", #ident_text)
            )
        }
    });
    out
}

fn event_impl(ident: &syn::Ident, args: EventArgs) -> TokenStream {
    let ident_text = ident.to_string();
    let name = args
        .name
        .map_or_else(|| quote!(#ident_text), |lit| quote!(#lit));
    let aggregate = args
        .aggregate
        .map_or_else(|| quote!(""), |lit| quote!(#lit));
    let version = args.version.map_or_else(|| quote!(1), |lit| quote!(#lit));

    quote! {
        impl ::projections::Event for #ident {
            const EVENT_TYPE: &'static str = #name;
            const AGGREGATE_TYPE: &'static str = #aggregate;
            const EVENT_VERSION: u32 = #version;
        }
    }
}

fn parse_args(input: &DeriveInput, errors: &mut Errors) -> EventArgs {
    let mut args = EventArgs {
        name: None,
        aggregate: None,
        version: None,
    };
    let mut given: Vec<String> = Vec::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        let result = attr.parse_nested_meta(|meta| {
            if let Some(ident) = meta.path.get_ident() {
                let key = ident.to_string();
                if given.contains(&key) {
                    errors.at(ident, format!("`{key}` is given twice"));
                } else {
                    given.push(key);
                }
            }
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().trim().is_empty() {
                    errors.at(&lit, "the event name cannot be empty");
                }
                args.name = Some(lit);
            } else if meta.path.is_ident("aggregate") {
                let lit: LitStr = meta.value()?.parse()?;
                match check_aggregate_type(&lit.value()) {
                    Ok(()) => args.aggregate = Some(lit),
                    Err(message) => errors.at(&lit, message),
                }
            } else if meta.path.is_ident("version") {
                let lit: LitInt = meta.value()?.parse()?;
                match lit.base10_parse::<u32>() {
                    Ok(0) | Err(_) => errors.at(&lit, "the event version is a whole number from 1"),
                    Ok(_) => args.version = Some(lit),
                }
            } else {
                let name = meta
                    .path
                    .get_ident()
                    .map_or_else(|| "?".to_owned(), ToString::to_string);
                errors.at(
                    &meta.path,
                    format!(
                        "unknown `event` argument `{name}`; expected `name = \"...\"`, `aggregate = \"...\"` or `version = N`"
                    ),
                );
                // Skip the value so the remaining arguments are still read.
                if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse::<syn::Expr>()?;
                }
            }
            Ok(())
        });
        if let Err(error) = result {
            errors.push(error);
        }
    }
    args
}

/// The longest aggregate type: PostgreSQL's limit on a name.
const AGGREGATE_TYPE_MAX: usize = 63;

/// An aggregate type names a stream category: it is stored with every event, filtered on in
/// SQL and may become part of a name, so it is an identifier: an ASCII letter, then ASCII
/// letters, digits or `_`.
fn check_aggregate_type(value: &str) -> Result<(), String> {
    const RULE: &str = "help: an aggregate type names a stream category, which is stored with every event and filtered on in SQL; \
         write it as a letter followed by letters, digits or `_`";
    let Some(first) = value.chars().next() else {
        return Err("the aggregate type cannot be empty\n\
                    help: remove `aggregate = \"\"`: an event without `aggregate` has none"
            .to_owned());
    };
    let bad = if first.is_ascii_alphabetic() {
        value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    } else {
        Some(first)
    };
    if let Some(bad) = bad {
        let what = match bad {
            ' ' => "a space".to_owned(),
            c if c.is_whitespace() => "white space".to_owned(),
            c if c.is_ascii_digit() => format!("`{c}` at the start"),
            c => format!("`{}`", c.escape_debug()),
        };
        let suggestion = suggest_aggregate_type(value);
        let example = match &suggestion {
            Some(s) if s != value => format!(", for example `{s}`"),
            _ => String::new(),
        };
        return Err(format!(
            "invalid aggregate type `{}`: it contains {what}\n{RULE}{example}",
            value.escape_debug()
        ));
    }
    if value.len() > AGGREGATE_TYPE_MAX {
        return Err(format!(
            "the aggregate type `{value}` is {} characters long; it may have at most {AGGREGATE_TYPE_MAX}",
            value.len()
        ));
    }
    Ok(())
}

/// `Order Line` → `OrderLine`, `order line` → `order_line`, `orders/lines` → `orders_lines`:
/// the value with the characters that are not allowed replaced by `_` (white space dropped
/// when the value is in upper camel case), if that is valid.
fn suggest_aggregate_type(value: &str) -> Option<String> {
    let camel = value.starts_with(|c: char| c.is_ascii_uppercase());
    let suggestion: String = value
        .chars()
        .filter(|c| !(camel && c.is_whitespace()))
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let valid = suggestion.starts_with(|c: char| c.is_ascii_alphabetic())
        && suggestion.len() <= AGGREGATE_TYPE_MAX;
    valid.then_some(suggestion)
}
