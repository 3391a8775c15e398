//! `#[projection]`: parse the attribute and the impl block into a model, validate it, expand it.
//!
//! On any error the user's item is still emitted (helper attributes removed) beside the errors,
//! with a placeholder trait impl, so the rest of the crate keeps compiling and only our messages
//! show.

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
    let Some(mut block) = parse::impl_block(item.clone(), &mut errors) else {
        let mut out = item;
        out.extend(errors.into_compile_errors());
        return out;
    };
    let marked = parse::take_marked_methods(&mut block, &mut errors);
    let model = validate::model(args, marked, &block, &mut errors);

    let mut out = block.to_token_stream();
    match model {
        Some(model) if errors.is_empty() => out.extend(expand::trait_impl(&model, &block)),
        model => {
            if let Some(model) = model.filter(|_| block.trait_.is_none()) {
                out.extend(expand::placeholder_impl(&model, &block));
            }
            out.extend(errors.into_compile_errors());
        }
    }
    out
}
