//! Shape checks: receiver, arity, asyncness, which parameter is which, duplicates. Meaning
//! (is `E` an event, is the event parameter `&Envelope<E>`, can `C` be injected) is left to
//! traits, checked where the expansion names the user's types, so aliases and renamed imports
//! work.

use std::collections::HashMap;

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::{FnArg, ItemImpl, Pat, PatType, Signature, Type};

use super::model::{Args, Handler, Model, Reset, Role};
use super::parse::Marked;
use crate::errors::Errors;
use crate::text::tokens_text;

const SYNC_NO_CONNECTION: &str =
    "a synchronous projection cannot take a connection; remove `sync` to make the projection async";

pub fn model(args: Args, marked: Marked, item: &ItemImpl, errors: &mut Errors) -> Option<Model> {
    let name = match &args.name {
        Some(lit) => lit.value(),
        None => {
            let Some(name) = type_name(&item.self_ty) else {
                errors.at(
                    &item.self_ty,
                    "cannot name this projection after its type; name it with `#[projection(name = \"...\")]`",
                );
                return None;
            };
            name
        }
    };
    if !marked.any_handles {
        check_has_handler(item, args.sync, errors);
    }
    let mut handlers: Vec<Handler> = Vec::new();
    let mut reset: Option<Reset> = None;
    let mut seen: HashMap<String, String> = HashMap::new();

    for method in marked.methods {
        let sig = &method.sig;
        check_asyncness(sig, args.sync, errors);
        if !sig.generics.params.is_empty() {
            errors.at(
                &sig.generics,
                "a handler cannot be generic: it handles one concrete event type",
            );
        }
        let params = Params::of(sig, errors);
        match method.role {
            Role::Handles { event, live_only } => {
                let event = *event;
                let Some((connection, event_param)) = params.handler(sig, &event, errors) else {
                    continue;
                };
                let set_based = spelled_slice(&event_param.ty);
                if set_based {
                    check_events_param_shape(event_param, &event, errors);
                } else {
                    check_event_param_shape(event_param, &event, errors);
                }
                if args.sync
                    && let Some(conn) = &connection
                {
                    errors.at(conn, SYNC_NO_CONNECTION);
                }
                let key = tokens_text(&event);
                if let Some(first) = seen.get(&key) {
                    errors.at(
                        &event,
                        format!(
                            "`{key}` already has a handler in this projection: `{first}`; an event type has one handler"
                        ),
                    );
                } else {
                    seen.insert(key, sig.ident.to_string());
                }
                handlers.push(Handler {
                    method: sig.ident.clone(),
                    event,
                    event_param: (*event_param.ty).clone(),
                    connection: connection.cloned(),
                    output: sig.output.clone(),
                    set_based,
                    live_only: live_only.is_some(),
                });
            }
            Role::Reset => {
                let connection = params.reset(errors);
                if reset.is_some() {
                    errors.at(&sig.ident, "only one method may be marked `#[reset]`");
                }
                if args.sync
                    && let Some(conn) = connection
                {
                    errors.at(conn, SYNC_NO_CONNECTION);
                }
                reset = Some(Reset {
                    method: sig.ident.clone(),
                    connection: connection.cloned(),
                    output: sig.output.clone(),
                });
            }
        }
    }

    check_one_connection_type(&handlers, reset.as_ref(), errors);

    Some(Model {
        name,
        policy: args.policy,
        sync: args.sync,
        version: args.version,
        handlers,
        reset,
    })
}

/// A projection with no handler would subscribe to nothing and never change: most likely the
/// attribute is on the wrong impl block, or the `#[handles]` are missing.
fn check_has_handler(item: &ItemImpl, sync: bool, errors: &mut Errors) {
    let asyncness = if sync { "" } else { "async " };
    errors.at(
        &item.self_ty,
        format!(
            "`{}` handles no event: a projection has at least one method marked `#[handles(EventType)]`\n\
             help: mark each handler with the event type it handles, for example\n\
             \x20     #[handles(OrderPlaced)]\n\
             \x20     {asyncness}fn placed(&mut self, event: &Envelope<OrderPlaced>) {{ ... }}\n\
             help: if the handlers are in another impl block, put `#[projection]` on that one",
            tokens_text(&item.self_ty)
        ),
    );
}

/// The runner holds one connection per batch, so every method that takes one takes the same
/// type. Compared by final name: `PgConnection` and `sqlx::PgConnection` are one type, and an
/// alias under another name is left to the compiler.
fn check_one_connection_type(handlers: &[Handler], reset: Option<&Reset>, errors: &mut Errors) {
    let methods = handlers
        .iter()
        .map(|h| (&h.method, h.connection.as_ref()))
        .chain(reset.map(|r| (&r.method, r.connection.as_ref())));
    let mut first: Option<(&syn::Ident, &Type)> = None;
    for (method, connection) in methods {
        let Some(connection) = connection else {
            continue;
        };
        match first {
            None => first = Some((method, connection)),
            Some((first_method, first_connection)) => {
                let key = |ty: &Type| last_ident(ty).unwrap_or_else(|| tokens_text(ty));
                if key(connection) != key(first_connection) {
                    errors.at(
                        connection,
                        format!(
                            "`{method}` takes `&mut {}` but `{first_method}` takes `&mut {}`: the handlers of a projection share one connection type",
                            tokens_text(connection),
                            tokens_text(first_connection)
                        ),
                    );
                }
            }
        }
    }
}

fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

fn check_asyncness(sig: &Signature, sync: bool, errors: &mut Errors) {
    match (&sig.asyncness, sync) {
        (None, false) => errors.at(
            sig.fn_token,
            format!(
                "`{}` must be an `async fn`: the handlers of an async projection are async\n\
                 help: write `async fn {}`, or make the whole projection synchronous with `#[projection(sync)]`",
                sig.ident, sig.ident
            ),
        ),
        (Some(asyncness), true) => errors.at(
            asyncness,
            "the handlers of a `#[projection(sync)]` projection are plain `fn`s; remove `async`, or remove `sync`",
        ),
        _ => {}
    }
}

/// A method's parameters besides the receiver.
struct Params<'a> {
    typed: Vec<&'a PatType>,
}

impl<'a> Params<'a> {
    fn of(sig: &'a Signature, errors: &mut Errors) -> Self {
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(receiver)) => {
                if receiver.reference.is_none()
                    || receiver.mutability.is_none()
                    || receiver.colon_token.is_some()
                {
                    errors.at(receiver, "a handler takes its projection as `&mut self`");
                }
            }
            _ => errors.at(
                &sig.ident,
                format!(
                    "`{}` has no `self` parameter; a handler is a method taking `&mut self` first",
                    sig.ident
                ),
            ),
        }
        let typed = sig
            .inputs
            .iter()
            .filter_map(|arg| match arg {
                FnArg::Typed(typed) => Some(typed),
                FnArg::Receiver(_) => None,
            })
            .collect();
        Self { typed }
    }

    /// `(connection, event parameter)` of a handler: `(&mut self, event)` or
    /// `(&mut self, conn, event)`. Each other parameter is reported by what it looks like.
    fn handler(
        &self,
        sig: &Signature,
        event: &Type,
        errors: &mut Errors,
    ) -> Option<(Option<&'a Type>, &'a PatType)> {
        if self.typed.is_empty() {
            errors.at(
                &sig.ident,
                format!(
                    "`{}` takes no event parameter; add `event: &Envelope<{}>` after `&mut self`",
                    sig.ident,
                    tokens_text(event)
                ),
            );
            return None;
        }
        let (before, rest) = self.typed.split_at(event_position(&self.typed, event));
        let (&event_param, after) = rest.split_first()?;

        for &param in after {
            if mutable_referent(&param.ty).is_some() {
                errors.at(
                    param,
                    format!(
                        "the connection comes before the event\n\
                         help: write `(&mut self, {}, {})`",
                        param_text(param),
                        param_text(event_param)
                    ),
                );
            } else {
                errors.at(
                    param,
                    format!(
                        "`{}` comes after the event, which is a handler's last parameter\n\
                         help: remove `{}`; a handler takes `(&mut self, event: &Envelope<{event}>)`, \
                         or `(&mut self, conn: &mut PgConnection, event: &Envelope<{event}>)` to write through the batch's connection",
                        param_name(param),
                        param_text(param),
                        event = tokens_text(event),
                    ),
                );
            }
        }

        let connection = match before {
            [] => None,
            [conn, extra @ ..] => {
                for &param in extra {
                    errors.at(
                        param,
                        format!(
                            "too many parameters: a handler takes one connection, before the event\n\
                             help: remove `{}`",
                            param_text(param)
                        ),
                    );
                }
                connection_type(conn, errors)
            }
        };
        Some((connection, event_param))
    }

    /// The connection of a `#[reset]` method: `(&mut self)` or `(&mut self, conn)`.
    fn reset(&self, errors: &mut Errors) -> Option<&'a Type> {
        let mut connection = None;
        for (index, &param) in self.typed.iter().enumerate() {
            match mutable_referent(&param.ty) {
                Some(conn) if index == 0 => connection = Some(conn),
                Some(_) => errors.at(
                    param,
                    format!(
                        "too many parameters: a `#[reset]` method takes one connection at most\n\
                         help: remove `{}`",
                        param_text(param)
                    ),
                ),
                None if spelled_envelope(&param.ty) => errors.at(
                    param,
                    format!(
                        "a `#[reset]` method takes no event: it clears the whole read model\n\
                         help: remove `{}`",
                        param_text(param)
                    ),
                ),
                None => errors.at(
                    param,
                    format!(
                        "a `#[reset]` method cannot take `{name}`: it takes `&mut self` and, when the handlers take one, \
                         the connection (`conn: &mut PgConnection`)\n\
                         help: remove `{}`",
                        param_text(param),
                        name = param_name(param),
                    ),
                ),
            }
        }
        connection
    }
}

/// Which parameter is the event, so the others are reported by what they are: the first one
/// spelled `&..Envelope<..>`, else the first that names the handled type, else the last one.
/// Only error messages depend on this guess; whether the event parameter has the right type
/// is decided by the compiler.
fn event_position(params: &[&PatType], event: &Type) -> usize {
    let event_name = last_ident(event);
    params
        .iter()
        .position(|p| spelled_envelope(&p.ty) || spelled_slice(&p.ty))
        .or_else(|| {
            let name = event_name?;
            params
                .iter()
                .position(|p| mentions_ident(p.ty.to_token_stream(), &name))
        })
        .unwrap_or(params.len() - 1)
}

/// `C` of `conn: &mut C`.
fn connection_type<'t>(param: &'t PatType, errors: &mut Errors) -> Option<&'t Type> {
    if let Some(conn) = mutable_referent(&param.ty) {
        return Some(conn);
    }
    match &*param.ty {
        Type::Reference(shared) => errors.at(
            &param.ty,
            format!(
                "the connection is taken by mutable reference: `&mut {}`",
                tokens_text(&shared.elem)
            ),
        ),
        _ => errors.at(
            param,
            format!(
                "the parameter before the event is the connection, taken by mutable reference \
                 (for example `conn: &mut PgConnection`), not `{}`",
                param_text(param)
            ),
        ),
    }
    None
}

/// The event parameter is taken by shared reference; which type it refers to is checked by the
/// compiler (`__private::EventParam`), so any spelling of `Envelope<E>` is accepted.
fn check_event_param_shape(param: &PatType, event: &Type, errors: &mut Errors) {
    let expected = tokens_text(event);
    let ty = &*param.ty;
    match ty {
        Type::Reference(reference) if reference.mutability.is_some() => errors.at(
            ty,
            format!(
                "the event parameter is a shared reference, `&Envelope<{expected}>`, not `{}`: a handler reads the event, it cannot change it",
                tokens_text(ty)
            ),
        ),
        Type::Reference(_) if !mentions_ident(ty.to_token_stream(), "impl") => {}
        _ if is_sequence(ty) => errors.at(
            ty,
            format!(
                "a set-based handler takes its events by shared slice, `&[Envelope<{expected}>]`, not `{}`\n\
                 help: write `events: &[Envelope<{expected}>]`; the runner lends the events, it does not give them away",
                tokens_text(ty)
            ),
        ),
        _ => errors.at(
            ty,
            format!(
                "the event parameter of a handler is `&Envelope<{expected}>` (the event with its metadata, by reference), not `{}`",
                tokens_text(ty)
            ),
        ),
    }
}

/// The events parameter of a set-based handler is a shared slice of envelopes; which type it
/// holds is checked by the compiler (`__private::EventsParam`).
fn check_events_param_shape(param: &PatType, event: &Type, errors: &mut Errors) {
    let ty = &*param.ty;
    if mutable_referent(ty).is_some() {
        errors.at(
            ty,
            format!(
                "the events parameter is a shared slice, `&[Envelope<{}>]`, not `{}`: a handler reads the events, it cannot change them",
                tokens_text(event),
                tokens_text(ty)
            ),
        );
    }
}

/// Whether `ty` is a slice, an array or a `Vec`, taken by value: an attempt at the events
/// parameter of a set-based handler.
fn is_sequence(ty: &Type) -> bool {
    match strip(ty) {
        Type::Slice(_) | Type::Array(_) => true,
        other => matches!(last_ident(other), Some(name) if name == "Vec"),
    }
}

/// Whether `ty` reads `&[..]` or `&mut [..]`: the events parameter of a set-based handler.
fn spelled_slice(ty: &Type) -> bool {
    match ty {
        Type::Reference(reference) => matches!(strip(&reference.elem), Type::Slice(_)),
        Type::Group(group) => spelled_slice(&group.elem),
        Type::Paren(paren) => spelled_slice(&paren.elem),
        _ => false,
    }
}

/// `ty` without invisible groups and parentheses.
fn strip(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => strip(&group.elem),
        Type::Paren(paren) => strip(&paren.elem),
        ty => ty,
    }
}

/// `T` of `&mut T`.
fn mutable_referent(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Reference(reference) if reference.mutability.is_some() => Some(&reference.elem),
        Type::Group(group) => mutable_referent(&group.elem),
        Type::Paren(paren) => mutable_referent(&paren.elem),
        _ => None,
    }
}

/// Whether `ty` reads `&..Envelope<..>` or `&mut ..Envelope<..>`: a guess at what a parameter is
/// for, used to word an error, never to accept or reject a type.
fn spelled_envelope(ty: &Type) -> bool {
    match ty {
        Type::Reference(reference) => {
            matches!(last_ident(&reference.elem), Some(name) if name == "Envelope")
        }
        Type::Group(group) => spelled_envelope(&group.elem),
        Type::Paren(paren) => spelled_envelope(&paren.elem),
        _ => false,
    }
}

fn mentions_ident(tokens: TokenStream, name: &str) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == name,
        TokenTree::Group(group) => mentions_ident(group.stream(), name),
        _ => false,
    })
}

fn last_ident(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
        Type::Group(group) => last_ident(&group.elem),
        Type::Paren(paren) => last_ident(&paren.elem),
        _ => None,
    }
}

/// `extra` of `extra: Option<u32>`.
fn param_name(param: &PatType) -> String {
    match &*param.pat {
        Pat::Ident(ident) => ident.ident.to_string(),
        pat => tokens_text(pat),
    }
}

/// `extra: Option<u32>`.
fn param_text(param: &PatType) -> String {
    format!("{}: {}", tokens_text(&param.pat), tokens_text(&param.ty))
}
