//! `#[upcast(Event, from = N)]`: registers a function as the step of an event type's payload
//! from version `N` to `N + 1`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitInt, ReturnType, Token, Type};

use crate::errors::Errors;

struct Args {
    event: syn::Path,
    from: LitInt,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(input.error(
                "name the event and the version this upcaster reads: \
                 `#[upcast(OrderPlaced, from = 1)]`",
            ));
        }
        let event: syn::Path = input.parse()?;
        if input.is_empty() {
            return Err(syn::Error::new_spanned(
                &event,
                "say which stored version this upcaster reads: `#[upcast(OrderPlaced, from = 1)]`",
            ));
        }
        input.parse::<Token![,]>()?;
        let key: syn::Ident = input.parse()?;
        if key != "from" {
            return Err(syn::Error::new_spanned(
                key,
                "expected `from = N`: the stored version this upcaster reads",
            ));
        }
        input.parse::<Token![=]>()?;
        let from: LitInt = input.parse()?;
        if !matches!(from.base10_parse::<u32>(), Ok(n) if n >= 1) {
            return Err(syn::Error::new_spanned(
                &from,
                "versions are whole numbers from 1",
            ));
        }
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
            if !input.is_empty() {
                return Err(
                    input.error("unexpected argument: `#[upcast]` takes the event and `from = N`")
                );
            }
        }
        Ok(Self { event, from })
    }
}

/// The last segment of a type's path, if it is a path.
fn last_segment(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let mut out = syn::Error::new(
                Span::call_site(),
                "`#[upcast]` goes on a function: `fn v1(old: serde_json::Value) -> serde_json::Value`",
            )
            .to_compile_error();
            out.extend(item);
            return out;
        }
    };
    let args = match syn::parse2::<Args>(args) {
        Ok(args) => args,
        Err(error) => {
            let mut out = error.to_compile_error();
            out.extend(quote!(#function));
            return out;
        }
    };

    let mut errors = Errors::default();
    let signature = &function.sig;
    if let Some(asyncness) = &signature.asyncness {
        errors.at(
            asyncness,
            "an upcaster is a plain `fn`: it runs while a stored event is decoded",
        );
    }
    if !signature.generics.params.is_empty() {
        errors.at(
            &signature.generics,
            "an upcaster cannot be generic: it reads one version of one event type",
        );
    }
    let input = match signature.inputs.iter().collect::<Vec<_>>().as_slice() {
        [FnArg::Typed(input)] => Some(input),
        [FnArg::Receiver(receiver)] => {
            errors.at(
                receiver,
                "an upcaster is a free function: it takes the old payload, not `self`",
            );
            None
        }
        _ => {
            errors.at(
                &signature.inputs,
                "an upcaster takes one argument, the payload of the version it reads: \
                 `serde_json::Value`, or the struct that version was",
            );
            None
        }
    };
    let output = match &signature.output {
        ReturnType::Type(_, ty) => Some(ty),
        ReturnType::Default => {
            errors.at(
                &signature.ident,
                "an upcaster returns the payload of the next version: `serde_json::Value`, \
                 the struct of that version, or a `Result` of either",
            );
            None
        }
    };
    let (Some(input), Some(output)) = (input, output) else {
        let mut out = errors.into_compile_errors();
        out.extend(quote!(#function));
        return out;
    };
    if !errors.is_empty() {
        let mut out = errors.into_compile_errors();
        out.extend(quote!(#function));
        return out;
    }

    let name = &signature.ident;
    let name_text = name.to_string();
    let event = &args.event;
    let from = &args.from;
    let json = last_segment(&input.ty).as_deref() == Some("Value");
    let fallible = last_segment(output).as_deref() == Some("Result");
    let private = quote!(::projections::__private);
    let convert = if fallible {
        quote!(#name)
    } else {
        quote!(|payload| ::core::result::Result::<_, ::core::convert::Infallible>::Ok(#name(payload)))
    };
    let step = if json {
        quote!(#private::json_step(payload, #convert))
    } else {
        quote!(#private::typed_step(payload, #convert))
    };
    // The event's wire name and current version, named once: a type that is not an event is
    // reported once, where the user wrote it.
    let event_meta = quote_spanned! {event.span()=>
        const EVENT: (&str, u32) = (
            <#event as ::projections::Event>::EVENT_TYPE,
            <#event as ::projections::Event>::EVENT_VERSION,
        );
    };
    // Checked where the user wrote the version: an upcaster reads an older version.
    let older = quote_spanned! {from.span()=>
        const _: () = ::core::assert!(
            #from < EVENT.1,
            "an upcaster reads a version older than the event's current `#[event(version = N)]`"
        );
    };

    quote! {
        #function

        const _: () = {
            #event_meta
            #older

            fn step(
                payload: #private::serde_json::Value,
            ) -> ::core::result::Result<#private::serde_json::Value, ::projections::projection::BoxError> {
                #step
            }

            #private::inventory::submit! {
                #private::Upcaster::from_parts(
                    EVENT.0,
                    EVENT.1,
                    #from,
                    ::core::concat!(::core::module_path!(), "::", #name_text),
                    step,
                )
            }
        };
    }
}
