//! Procedural macros of the `projections` crate. Use them through `projections`, which
//! re-exports them and everything their expansion names.

mod errors;
mod event;
mod projection;
mod text;
mod upcast;

use proc_macro::TokenStream;

/// Declares a projection: the `#[handles(E)]` methods of the impl block become its dispatch
/// table. See the `projections` crate documentation.
#[proc_macro_attribute]
pub fn projection(args: TokenStream, item: TokenStream) -> TokenStream {
    projection::expand(args.into(), item.into()).into()
}

/// Marks a method of a `#[projection]` impl block as the handler of one event type.
///
/// On its own (outside a `#[projection]` impl block) it is a compile error: `#[projection]`
/// reads and removes these attributes before this macro could run.
#[proc_macro_attribute]
pub fn handles(_args: TokenStream, item: TokenStream) -> TokenStream {
    stray("handles", item)
}

/// Marks the method of a `#[projection]` impl block that clears the read model for a rebuild.
///
/// On its own (outside a `#[projection]` impl block) it is a compile error, like `#[handles]`.
#[proc_macro_attribute]
pub fn reset(_args: TokenStream, item: TokenStream) -> TokenStream {
    stray("reset", item)
}

/// The error for a helper attribute used outside a `#[projection]` impl block, followed by the
/// item unchanged.
fn stray(attribute: &str, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    // The call site is the whole `#[handles(..)]` attribute. Resolved at a token the user
    // wrote, the error is shown there without a note about the macro it comes from.
    let mut span = proc_macro2::Span::call_site();
    if let Some(token) = item.clone().into_iter().next() {
        span = span.resolved_at(token.span());
    }
    let error = syn::Error::new(
        span,
        format!(
            "`#[{attribute}]` only works on a method inside an impl block marked `#[projection]`\n\
             help: add `#[projection]` to the impl block that holds this method"
        ),
    );
    let mut out = error.to_compile_error();
    out.extend(item);
    out.into()
}

/// Declares an event: implements `projections::Event` and registers the type so stored
/// events decode to it by wire name.
///
/// `#[event(name = "order.created", aggregate = "Order", version = 1)]`, every argument
/// optional: the name defaults to the type name, the aggregate to `""`, the version to 1. The
/// aggregate type is a stream category: an ASCII letter followed by ASCII letters, digits or
/// `_`, at most 63 characters.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    event::expand(input.into()).into()
}

/// Registers a function as the step of an event type's stored payload from version `from` to
/// `from + 1`: `#[upcast(OrderPlaced, from = 1)]`. See `projections::upcast`.
#[proc_macro_attribute]
pub fn upcast(args: TokenStream, item: TokenStream) -> TokenStream {
    upcast::expand(args.into(), item.into()).into()
}
