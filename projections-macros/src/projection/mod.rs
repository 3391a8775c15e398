//! `#[projection]`: parse the attribute and the impl block into a model, validate it, expand it.
//!
//! On any error the user's impl block is still emitted (helper attributes removed) beside the
//! errors, so the rest of the crate keeps compiling and only our messages show.

mod expand;
mod model;
mod parse;
mod validate;

use proc_macro2::TokenStream;
use quote::ToTokens;

use crate::errors::Errors;

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse::args(args, &mut errors);
    let Some(mut item) = parse::impl_block(item, &mut errors) else {
        return errors.into_compile_errors();
    };
    let methods = parse::take_marked_methods(&mut item, &mut errors);
    let model = validate::model(args, methods, &item, &mut errors);

    let mut out = item.to_token_stream();
    match model {
        Some(model) if errors.is_empty() => out.extend(expand::trait_impl(&model, &item)),
        _ => out.extend(errors.into_compile_errors()),
    }
    out
}
