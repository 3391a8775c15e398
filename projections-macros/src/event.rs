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
    }
    if !errors.is_empty() {
        return errors.into_compile_errors();
    }

    let ident = &input.ident;
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

        ::projections::__private::inventory::submit! {
            ::projections::__private::EventRegistration::of::<#ident>(
                ::core::concat!(::core::module_path!(), "::", #ident_text)
            )
        }
    }
}

fn parse_args(input: &DeriveInput, errors: &mut Errors) -> EventArgs {
    let mut args = EventArgs {
        name: None,
        aggregate: None,
        version: None,
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().trim().is_empty() {
                    return Err(syn::Error::new_spanned(&lit, "the event name cannot be empty"));
                }
                args.name = Some(lit);
            } else if meta.path.is_ident("aggregate") {
                args.aggregate = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("version") {
                let lit: LitInt = meta.value()?.parse()?;
                match lit.base10_parse::<u32>() {
                    Ok(0) | Err(_) => {
                        return Err(syn::Error::new_spanned(
                            &lit,
                            "the event version is a whole number from 1",
                        ));
                    }
                    Ok(_) => {}
                }
                args.version = Some(lit);
            } else {
                return Err(meta.error(
                    "unknown `event` argument; expected `name = \"...\"`, `aggregate = \"...\"` or `version = N`",
                ));
            }
            Ok(())
        });
        if let Err(error) = result {
            errors.push(error);
        }
    }
    args
}
