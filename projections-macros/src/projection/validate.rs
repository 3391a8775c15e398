//! Shape checks: receiver, arity, asyncness, the event parameter against `#[handles(E)]`,
//! duplicates. Meaning (is `E` an event, can `C` be injected) is left to traits, checked where
//! the expansion names the user's types.

use std::collections::HashMap;

use quote::ToTokens;
use syn::{FnArg, GenericArgument, ItemImpl, PathArguments, Signature, Type};

use super::model::{Args, Handler, MarkedMethod, Model, Reset, Role};
use crate::errors::Errors;

const SYNC_NO_CONNECTION: &str =
    "a synchronous projection cannot take a connection; remove `sync` to make the projection async";

pub fn model(
    args: Args,
    methods: Vec<MarkedMethod>,
    item: &ItemImpl,
    errors: &mut Errors,
) -> Option<Model> {
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
    let mut handlers: Vec<Handler> = Vec::new();
    let mut reset: Option<Reset> = None;
    let mut seen: HashMap<String, String> = HashMap::new();

    for method in methods {
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
            Role::Handles { event } => {
                let event = *event;
                let Some((connection, event_param)) = params.handler(sig, &event, errors) else {
                    continue;
                };
                check_event_param(event_param, &event, errors);
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
                    connection: connection.cloned(),
                    output: sig.output.clone(),
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
        handlers,
        reset,
    })
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
    typed: Vec<&'a syn::PatType>,
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

    /// `(connection, event parameter type)` of a handler.
    fn handler(
        &self,
        sig: &'a Signature,
        event: &Type,
        errors: &mut Errors,
    ) -> Option<(Option<&'a Type>, &'a Type)> {
        match self.typed.as_slice() {
            [] => {
                errors.at(
                    &sig.ident,
                    format!(
                        "`{}` takes no event parameter; add `event: &Envelope<{}>` after `&mut self`",
                        sig.ident,
                        tokens_text(event)
                    ),
                );
                None
            }
            [event] => Some((None, &event.ty)),
            [conn, event] => connection_type(&conn.ty, errors).map(|c| (Some(c), &*event.ty)),
            [_, _, extra, ..] => {
                errors.at(
                    extra,
                    "too many parameters; a handler takes the event, or a connection and then the event",
                );
                None
            }
        }
    }

    /// The connection of a `#[reset]` method.
    fn reset(&self, errors: &mut Errors) -> Option<&'a Type> {
        match self.typed.as_slice() {
            [] => None,
            [conn] => connection_type(&conn.ty, errors),
            [_, extra, ..] => {
                errors.at(
                    extra,
                    "too many parameters; a `#[reset]` method takes nothing, or a connection",
                );
                None
            }
        }
    }
}

/// `C` of `&mut C`.
fn connection_type<'t>(ty: &'t Type, errors: &mut Errors) -> Option<&'t Type> {
    match ty {
        Type::Reference(reference) if reference.mutability.is_some() => Some(&reference.elem),
        _ => {
            errors.at(
                ty,
                "a connection parameter is a mutable reference, for example `conn: &mut PgConnection`",
            );
            None
        }
    }
}

/// The event parameter must be `&Envelope<E>` for the `E` of `#[handles(E)]`.
fn check_event_param(param: &Type, event: &Type, errors: &mut Errors) {
    let expected = tokens_text(event);
    let Some(inner) = envelope_argument(param) else {
        errors.at(
            param,
            format!(
                "the event parameter of a handler is `&Envelope<{expected}>` (the event with its metadata), not `{}`",
                tokens_text(param)
            ),
        );
        return;
    };
    // Paths that differ only in qualification (`OrderCreated`, `events::OrderCreated`) may be
    // one type; the compiler checks those. Different final names are reported here.
    if last_ident(inner) != last_ident(event) {
        errors.at(
            inner,
            format!(
                "this handler is declared with `#[handles({expected})]`, so its event parameter is `&Envelope<{expected}>`, not `&Envelope<{}>`",
                tokens_text(inner)
            ),
        );
    }
}

fn envelope_argument(ty: &Type) -> Option<&Type> {
    let Type::Reference(reference) = ty else {
        return None;
    };
    if reference.mutability.is_some() {
        return None;
    }
    let Type::Path(path) = &*reference.elem else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Envelope" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    let first = types.next()?;
    types.next().is_none().then_some(first)
}

fn last_ident(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
        Type::Group(group) => last_ident(&group.elem),
        Type::Paren(paren) => last_ident(&paren.elem),
        _ => None,
    }
}

pub fn tokens_text(tokens: &impl ToTokens) -> String {
    tokens.to_token_stream().to_string().replace(' ', "")
}
