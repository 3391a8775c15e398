//! Syntax: the attribute's arguments, the impl block and its marked methods.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{ParseStream, Parser};
use syn::{Attribute, Ident, ImplItem, Item, ItemImpl, LitStr, Meta, Token, Type};

use super::model::{Args, MarkedMethod, Policy, Role};
use crate::errors::Errors;

const ARGS_HELP: &str =
    "expected `name = \"...\"`, `version = N`, `unregistered = ignore | warn | error` or `sync`";

pub fn args(tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args::default();
    let mut given: Vec<String> = Vec::new();
    let parser = syn::meta::parser(|meta| {
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
                errors.at(&lit, "the projection name cannot be empty");
            }
            args.name = Some(lit);
        } else if meta.path.is_ident("version") {
            args.version = version(&meta, errors)?;
        } else if meta.path.is_ident("unregistered") {
            let value = meta.value()?;
            let (text, span) = if value.peek(LitStr) {
                let lit: LitStr = value.parse()?;
                (lit.value(), lit.span())
            } else {
                let ident: syn::Ident = value.parse()?;
                (ident.to_string(), ident.span())
            };
            args.policy = match text.as_str() {
                "ignore" => Policy::Ignore,
                "warn" => Policy::Warn,
                "error" => Policy::Error,
                other => {
                    errors.push(syn::Error::new(
                        span,
                        format!(
                            "unknown unregistered-event policy `{other}`; expected `ignore`, `warn` or `error`"
                        ),
                    ));
                    Policy::default()
                }
            };
        } else if meta.path.is_ident("sync") {
            if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
                errors.at(&meta.path, "`sync` takes no value: `#[projection(sync)]`");
                skip_value(&meta)?;
            }
            args.sync = true;
        } else {
            let name = meta
                .path
                .get_ident()
                .map_or_else(|| "?".to_owned(), ToString::to_string);
            errors.at(
                &meta.path,
                format!("unknown `projection` argument `{name}`; {ARGS_HELP}"),
            );
            skip_value(&meta)?;
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(tokens) {
        errors.push(error);
    }
    args
}

/// The value of `version = N`: a whole number from 1 to 2^32 - 1. A version changes only when
/// the read model does, and names the tables it is built in (see `projections::bluegreen`).
fn version(meta: &syn::meta::ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<Option<u32>> {
    const HELP: &str = "the projection version is a whole number from 1: `version = 2`";
    let value = meta.value()?;
    if !value.peek(syn::LitInt) {
        let expr: syn::Expr = value.parse()?;
        errors.at(&expr, HELP);
        return Ok(None);
    }
    let lit: syn::LitInt = value.parse()?;
    match lit.base10_parse::<u32>() {
        Ok(0) | Err(_) => {
            errors.at(&lit, HELP);
            Ok(None)
        }
        Ok(version) => Ok(Some(version)),
    }
}

/// Skips the value of an argument already reported, `= expr` or `(...)`, so the remaining
/// arguments are still read.
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}

pub fn impl_block(tokens: TokenStream, errors: &mut Errors) -> Option<ItemImpl> {
    const HELP: &str =
        "`#[projection]` goes on an inherent impl block: `#[projection] impl MyProjection { ... }`";
    let item: Item = match syn::parse2(tokens.clone()) {
        Ok(item) => item,
        Err(error) => {
            errors.push(error);
            return None;
        }
    };
    match item {
        Item::Impl(block) => {
            if let Some((_, path, _)) = &block.trait_ {
                errors.at(path, format!("{HELP}, not on a trait impl"));
            }
            Some(block)
        }
        Item::Struct(s) => {
            let (keyword, ident) = (s.struct_token, &s.ident);
            errors.at(quote!(#keyword #ident), HELP);
            None
        }
        Item::Enum(e) => {
            let (keyword, ident) = (e.enum_token, &e.ident);
            errors.at(quote!(#keyword #ident), HELP);
            None
        }
        Item::Fn(f) => {
            errors.at(&f.sig, HELP);
            None
        }
        Item::Trait(t) => {
            let (keyword, ident) = (t.trait_token, &t.ident);
            errors.at(quote!(#keyword #ident), HELP);
            None
        }
        other => {
            errors.at(other, HELP);
            None
        }
    }
}

/// The methods marked `#[handles]` or `#[reset]`, their helpers removed from the block.
pub struct Marked {
    pub methods: Vec<MarkedMethod>,
    /// Whether the block has a `#[handles]` attribute at all, valid or not.
    pub any_handles: bool,
}

/// Removes `#[handles]` and `#[reset]` from the block's methods and returns those methods.
pub fn take_marked_methods(block: &mut ItemImpl, errors: &mut Errors) -> Marked {
    let mut marked = Vec::new();
    let mut any_handles = false;
    for item in &mut block.items {
        let ImplItem::Fn(method) = item else {
            // A stray helper on another item kind would otherwise reach the standalone
            // `#[handles]` macro; report it here instead.
            any_handles |= strip_from_other(item, errors);
            continue;
        };
        let (helpers, kept): (Vec<Attribute>, Vec<Attribute>) = method
            .attrs
            .drain(..)
            .partition(|a| a.path().is_ident("handles") || a.path().is_ident("reset"));
        method.attrs = kept;
        any_handles |= helpers.iter().any(|a| a.path().is_ident("handles"));

        let mut role = None;
        let mut conflicting = false;
        for attr in helpers {
            let this = if attr.path().is_ident("reset") {
                if !matches!(attr.meta, Meta::Path(_)) {
                    errors.at(&attr, "`#[reset]` takes no arguments");
                }
                Some(Role::Reset)
            } else {
                handles_event(&attr, errors).map(|(event, live_only)| Role::Handles {
                    event: Box::new(event),
                    live_only,
                })
            };
            match (&role, this) {
                (_, None) => {}
                (None, Some(this)) => role = Some(this),
                (Some(_), Some(_)) => {
                    errors.at(
                        &attr,
                        "a method has one role: it handles one event type, or resets the read model",
                    );
                    conflicting = true;
                }
            }
        }
        // A method with conflicting roles is reported once, above, and not checked further.
        if let Some(role) = role.filter(|_| !conflicting) {
            marked.push(MarkedMethod {
                sig: method.sig.clone(),
                role,
            });
        }
    }
    Marked {
        methods: marked,
        any_handles,
    }
}

/// Removes and reports helpers on an item that is not a method; whether one was `#[handles]`.
fn strip_from_other(item: &mut ImplItem, errors: &mut Errors) -> bool {
    let attrs = match item {
        ImplItem::Const(c) => &mut c.attrs,
        ImplItem::Type(t) => &mut t.attrs,
        ImplItem::Macro(m) => &mut m.attrs,
        _ => return false,
    };
    let mut any_handles = false;
    attrs.retain(|a| {
        let helper = a.path().is_ident("handles") || a.path().is_ident("reset");
        if helper {
            any_handles |= a.path().is_ident("handles");
            errors.at(a, "`#[handles]` and `#[reset]` go on methods");
        }
        !helper
    });
    any_handles
}

/// The single type of `#[handles(Type)]`, and its `live_only` argument if given.
fn handles_event(attr: &Attribute, errors: &mut Errors) -> Option<(Type, Option<Ident>)> {
    const NEEDS_TYPE: &str = "`#[handles]` needs the event type this method handles, for example `#[handles(OrderCreated)]`";
    let list = match &attr.meta {
        Meta::List(list) => list,
        _ => {
            errors.at(attr, NEEDS_TYPE);
            return None;
        }
    };
    let mut args = HandlesArgs::default();
    let parser = |input: ParseStream<'_>| args.parse(input);
    if let Err(error) = parser.parse2(list.tokens.clone()) {
        errors.push(error);
        return None;
    }
    let HandlesArgs {
        event,
        live_only,
        problems,
    } = args;
    let failed = !problems.is_empty();
    for problem in problems {
        errors.push(problem);
    }
    match event {
        None if !failed => {
            errors.at(attr, NEEDS_TYPE);
            None
        }
        Some(event) if !failed => Some((event, live_only)),
        _ => None,
    }
}

/// The arguments of `#[handles(..)]`: the event type first, then `live_only`.
#[derive(Default)]
struct HandlesArgs {
    event: Option<Type>,
    live_only: Option<Ident>,
    problems: Vec<syn::Error>,
}

impl HandlesArgs {
    const ARGUMENT_HELP: &str = "the arguments of `#[handles]` are the event type, then optionally `live_only`: `#[handles(OrderPlaced, live_only)]`";

    fn parse(&mut self, input: ParseStream<'_>) -> syn::Result<()> {
        while !input.is_empty() {
            // A lower-case word is an argument; event types are types (`OrderPlaced`,
            // `events::OrderPlaced`).
            let argument = input.fork().parse::<Ident>().ok().filter(|ident| {
                ident
                    .to_string()
                    .starts_with(|c: char| c.is_ascii_lowercase())
                    && !input.peek2(Token![::])
                    && !input.peek2(Token![<])
            });
            if let Some(ident) = argument {
                input.parse::<Ident>()?;
                self.argument(ident, input)?;
            } else {
                let ty: Type = input.parse()?;
                match (&self.event, &self.live_only) {
                    (None, None) => self.event = Some(ty),
                    (None, Some(_)) => self.problems.push(syn::Error::new_spanned(
                        ty,
                        "the event type comes first: `#[handles(OrderPlaced, live_only)]`",
                    )),
                    (Some(_), _) => self.problems.push(syn::Error::new_spanned(
                        ty,
                        "a handler handles exactly one event type; write one method per event type",
                    )),
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(())
    }

    fn argument(&mut self, ident: Ident, input: ParseStream<'_>) -> syn::Result<()> {
        let has_value = input.peek(Token![=]) || input.peek(syn::token::Paren);
        if has_value {
            // Read past the value so that what follows is still checked.
            if input.peek(Token![=]) {
                input.parse::<Token![=]>()?;
                input.parse::<syn::Expr>()?;
            } else {
                let content;
                syn::parenthesized!(content in input);
                content.parse::<TokenStream>()?;
            }
        }
        if ident != "live_only" {
            let message = format!(
                "unknown `handles` argument `{ident}`; {}",
                Self::ARGUMENT_HELP
            );
            self.problems.push(syn::Error::new_spanned(ident, message));
        } else if has_value {
            self.problems.push(syn::Error::new_spanned(
                ident,
                "`live_only` takes no value: `#[handles(OrderPlaced, live_only)]`",
            ));
        } else if self.live_only.is_some() {
            self.problems
                .push(syn::Error::new_spanned(ident, "`live_only` is given twice"));
        } else if self.event.is_none() {
            self.problems.push(syn::Error::new_spanned(
                ident,
                "the event type comes first: `#[handles(OrderPlaced, live_only)]`",
            ));
        } else {
            self.live_only = Some(ident);
        }
        Ok(())
    }
}
