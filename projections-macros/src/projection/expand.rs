//! Code generation: the trait impl with the dispatch table.
//!
//! Every use of a user's type is spanned on that type, so a trait error (not an event, not
//! injectable, not a handler result) points where the user wrote it.

use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemImpl, ReturnType};

use super::model::{Handler, Model, Policy};

/// What goes inside the generated trait impl.
struct Bodies {
    name: TokenStream,
    subscribed: TokenStream,
    handler_table: TokenStream,
    /// Local items of `handle`, outside its future.
    handle_items: TokenStream,
    /// Evaluates to `Result<(), HandlerError>`.
    handle: TokenStream,
    /// The local items and the arms of `handle_set`, when a handler is set-based: else the
    /// trait's default (one event at a time) stays.
    handle_set: Option<(TokenStream, TokenStream)>,
    /// Local items of `reset`, outside its future.
    reset_items: TokenStream,
    /// Evaluates to `Result<(), HandlerError>`.
    reset: TokenStream,
}

/// The trait impl of a valid model: the dispatch table.
pub fn trait_impl(model: &Model, item: &ItemImpl) -> TokenStream {
    let name = &model.name;
    let subscribed = subscribed_list(model);
    let policy = match model.policy {
        Policy::Ignore => quote!(Ignore),
        Policy::Warn => quote!(Warn),
        Policy::Error => quote!(Error),
    };
    let arms = model.handlers.iter().map(|h| dispatch_arm(h, model.sync));
    let bodies = Bodies {
        name: quote!(#name),
        handler_table: handler_table(model),
        handle_items: handle_items(model),
        handle: quote! {
            #(#arms)*
            ::projections::projection::UnregisteredEventPolicy::#policy.apply(#name, #subscribed, event)
        },
        handle_set: handle_set_body(model),
        reset_items: reset_items(model),
        reset: reset_call(model),
        subscribed,
    };
    emit(model, item, bodies)
}

/// The trait impl emitted beside our errors: it implements the trait the projection asked for,
/// so code using the projection elsewhere reports nothing more. It never runs: the crate does
/// not compile.
pub fn placeholder_impl(model: &Model, item: &ItemImpl) -> TokenStream {
    let name = &model.name;
    let ok = quote!(::core::result::Result::Ok(()));
    let bodies = Bodies {
        name: quote!(#name),
        subscribed: quote!(&[]),
        handler_table: quote!(&[]),
        handle_items: TokenStream::new(),
        handle: quote!(let _ = event; #ok),
        handle_set: None,
        reset_items: TokenStream::new(),
        reset: ok,
    };
    emit(model, item, bodies)
}

fn emit(model: &Model, item: &ItemImpl, bodies: Bodies) -> TokenStream {
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let aggregates = aggregates_list(model);
    // Only when given: the traits' default is version 1.
    let version = model.version.map(|version| {
        quote! {
            fn version(&self) -> u32 {
                #version
            }
        }
    });
    let Bodies {
        name,
        subscribed,
        handler_table,
        handle_items,
        handle,
        handle_set,
        reset_items,
        reset,
    } = bodies;
    let future = quote! {
        impl ::core::future::Future<
            Output = ::core::result::Result<(), ::projections::HandlerError>,
        > + ::core::marker::Send
    };
    let common = quote! {
        fn name(&self) -> &str {
            #name
        }

        fn subscribed_to(&self) -> &[&'static str] {
            #subscribed
        }

        fn handlers(&self) -> &[::projections::projection::HandlerInfo] {
            #handler_table
        }

        fn aggregates(&self) -> &[&'static str] {
            #aggregates
        }

        #version
    };

    if model.sync {
        let handle_set = handle_set.map(|(items, arms)| {
            quote! {
                fn handle_set(
                    &mut self,
                    events: &[&::projections::AnyEvent],
                ) -> ::core::result::Result<(), ::projections::HandlerError> {
                    #items
                    #arms
                    for event in events {
                        ::projections::SyncProjection::handle(self, event)?;
                    }
                    ::core::result::Result::Ok(())
                }
            }
        });
        return quote! {
            #[automatically_derived]
            impl #impl_generics ::projections::SyncProjection for #self_ty #where_clause {
                #common

                fn handle(
                    &mut self,
                    event: &::projections::AnyEvent,
                ) -> ::core::result::Result<(), ::projections::HandlerError> {
                    #handle_items
                    #handle
                }

                #handle_set

                fn reset(&mut self) -> ::core::result::Result<(), ::projections::HandlerError> {
                    #reset
                }
            }
        };
    }

    match model.connection() {
        None => {
            let handle_set = handle_set.map(|(items, arms)| {
                quote! {
                    fn handle_set(&mut self, events: &[&::projections::AnyEvent]) -> #future {
                        #items
                        async move {
                            #arms
                            for event in events {
                                ::projections::Projection::handle(self, event).await?;
                            }
                            ::core::result::Result::Ok(())
                        }
                    }
                }
            });
            quote! {
            #[automatically_derived]
            impl #impl_generics ::projections::Projection for #self_ty #where_clause {
                #common

                fn handle(&mut self, event: &::projections::AnyEvent) -> #future {
                    #handle_items
                    async move { #handle }
                }

                #handle_set

                fn reset(&mut self) -> #future {
                    #reset_items
                    async move { #reset }
                }
            }
            }
        }
        Some(connection) => {
            let connection_ty = quote_spanned!(at(connection)=> #connection);
            let handle_set = handle_set.map(|(items, arms)| {
                quote! {
                    fn handle_set(
                        &mut self,
                        conn: &mut Self::Connection,
                        events: &[&::projections::AnyEvent],
                    ) -> #future {
                        #items
                        async move {
                            #arms
                            for event in events {
                                ::projections::DatabaseProjection::handle(self, &mut *conn, event)
                                    .await?;
                            }
                            ::core::result::Result::Ok(())
                        }
                    }
                }
            });
            quote! {
                #[automatically_derived]
                impl #impl_generics ::projections::DatabaseProjection for #self_ty #where_clause {
                    type Connection = #connection_ty;

                    #common

                    fn handle(
                        &mut self,
                        conn: &mut Self::Connection,
                        event: &::projections::AnyEvent,
                    ) -> #future {
                        #handle_items
                        async move { #handle }
                    }

                    #handle_set

                    fn reset(&mut self, conn: &mut Self::Connection) -> #future {
                        #reset_items
                        async move { #reset }
                    }
                }
            }
        }
    }
}

/// The location of `tokens` with the hygiene of the macro's call site, so that generated local
/// names (`event`, `conn`) still resolve when the projection itself comes from a
/// `macro_rules!` expansion, while errors point at the user's tokens.
fn at(tokens: &impl Spanned) -> proc_macro2::Span {
    proc_macro2::Span::call_site().located_at(tokens.span())
}

fn subscribed_list(model: &Model) -> TokenStream {
    let names = model.handlers.iter().map(|h| event_type_const(&h.event));
    quote!(const { &[#(#names),*] })
}

/// The aggregate types of the handled events, which the projection then follows, so that an
/// event of those aggregates it has no handler for meets its `unregistered` policy. Under
/// `ignore` it follows none: there is nothing to decide.
fn aggregates_list(model: &Model) -> TokenStream {
    if matches!(model.policy, Policy::Ignore) {
        return quote!(&[]);
    }
    let types = model.handlers.iter().map(|h| {
        let event = &h.event;
        quote_spanned!(at(event)=> <#event as ::projections::Event>::AGGREGATE_TYPE)
    });
    quote!(const { &[#(#types),*] })
}

fn event_type_const(event: &syn::Type) -> TokenStream {
    quote_spanned!(at(event)=> <#event as ::projections::Event>::EVENT_TYPE)
}

fn handler_table(model: &Model) -> TokenStream {
    let rows = model.handlers.iter().map(|h| {
        let method = h.method.to_string();
        let event_type = event_type_const(&h.event);
        let takes_connection = h.connection.is_some();
        let (set_based, live_only) = (h.set_based, h.live_only);
        quote! {
            ::projections::projection::HandlerInfo {
                method: #method,
                event_type: #event_type,
                takes_connection: #takes_connection,
                set_based: #set_based,
                live_only: #live_only,
            }
        }
    });
    quote!(const { &[#(#rows),*] })
}

fn dispatch_arm(handler: &Handler, sync: bool) -> TokenStream {
    let Handler {
        method,
        event,
        event_param,
        connection,
        output,
        set_based,
        ..
    } = handler;
    // `(&&Probe::<E>).downcast(event)` picks the `E: Event` impl when it holds and a no-op
    // otherwise, so a type that is not an event is reported once, by `event_type_const`,
    // instead of a second time here with a note pointing into `AnyEvent::downcast`.
    let downcast = quote_spanned! {at(event)=>
        (&&__ProjectionsProbe::<#event>(::core::marker::PhantomData)).__projections_downcast(event)
    };
    // The event parameter's type as written must be `&Envelope<E>`: the compiler decides, so
    // an alias or a renamed import of either is accepted. Converting to the written type keeps
    // a mismatch to this one error, on that type, rather than a second one at the call.
    // A set-based handler takes a lone event as a run of one, without copying it.
    let typed = if *set_based {
        events_param(event_param, event, &quote!(::core::slice::from_ref(typed)))
    } else {
        quote_spanned! {at(event_param)=>
            <#event_param as ::projections::__private::EventParam<'_, #event>>::from_envelope(typed)
        }
    };
    let args = match connection {
        Some(_) => quote!(&mut *conn, #typed),
        None => typed,
    };
    let call = if sync {
        quote!(self.#method(#args))
    } else {
        awaited(method, &args)
    };
    let result = into_result(call, output);
    quote! {
        if let ::core::option::Option::Some(typed) = #downcast {
            return #result;
        }
    }
}

/// `envelopes` (a `&[Envelope<E>]`) as the events parameter's type as written, checked by the
/// compiler like a single event parameter.
fn events_param(
    event_param: &syn::Type,
    event: &syn::Type,
    envelopes: &TokenStream,
) -> TokenStream {
    quote_spanned! {at(event_param)=>
        <#event_param as ::projections::__private::EventsParam<'_, #event>>::from_envelopes(#envelopes)
    }
}

/// The local items and arms of `handle_set` when some handler is set-based: a run of its type
/// goes to it in one call; after the arms, anything else is handled one event at a time.
fn handle_set_body(model: &Model) -> Option<(TokenStream, TokenStream)> {
    // No set-based handler: the trait's default stays.
    model.set_handlers().next()?;
    let arms = model.set_handlers().map(|h| {
        let Handler {
            method,
            event,
            event_param,
            connection,
            output,
            ..
        } = h;
        let run = quote_spanned! {at(event)=>
            (&&__ProjectionsProbe::<#event>(::core::marker::PhantomData)).__projections_run(events)
        };
        let typed = events_param(event_param, event, &quote!(&run));
        let args = match connection {
            Some(_) => quote!(&mut *conn, #typed),
            None => typed,
        };
        let call = if model.sync {
            quote!(self.#method(#args))
        } else {
            awaited(method, &args)
        };
        let result = into_result(call, output);
        quote! {
            if let ::core::option::Option::Some(run) = #run {
                return #result;
            }
        }
    });
    Some((handle_items(model), quote!(#(#arms)*)))
}

/// Calls an async handler and awaits it. Its future is checked for `Send` on its own, spanned
/// on the method's name, so a handler that holds something like an `Rc` across an `.await` is
/// reported at that handler rather than at the whole generated future.
fn awaited(method: &syn::Ident, args: &TokenStream) -> TokenStream {
    quote_spanned! {at(method)=>
        handler_future_is_send(self.#method(#args)).await
    }
}

/// The function `awaited` calls: it returns a future declared `Send`, so the enclosing
/// generated future is `Send` and only this check reports a handler that is not.
fn send_check() -> TokenStream {
    quote! {
        #[inline(always)]
        fn handler_future_is_send<F: ::core::future::Future + ::core::marker::Send>(
            future: F,
        ) -> impl ::core::future::Future<Output = F::Output> + ::core::marker::Send {
            future
        }
    }
}

/// The local items of `handle`: the downcast probe and, for async handlers, `send_check`.
fn handle_items(model: &Model) -> TokenStream {
    let mut items = downcast_probe(model);
    if !model.sync && !model.handlers.is_empty() {
        items.extend(send_check());
    }
    items
}

/// The local items of `reset`: `send_check` when it awaits a `#[reset]` method.
fn reset_items(model: &Model) -> TokenStream {
    if model.sync || model.reset.is_none() {
        return TokenStream::new();
    }
    send_check()
}

/// The local items behind `dispatch_arm`'s downcast (autoref specialization).
fn downcast_probe(model: &Model) -> TokenStream {
    if model.handlers.is_empty() {
        return TokenStream::new();
    }
    quote! {
        #[allow(dead_code)]
        struct __ProjectionsProbe<E>(::core::marker::PhantomData<E>);

        #[allow(dead_code)]
        trait __ProjectionsIsEvent<E> {
            fn __projections_downcast<'e>(
                self,
                event: &'e ::projections::AnyEvent,
            ) -> ::core::option::Option<&'e ::projections::Envelope<E>>;

            fn __projections_run(
                self,
                events: &[&::projections::AnyEvent],
            ) -> ::core::option::Option<::std::vec::Vec<::projections::Envelope<E>>>;
        }

        impl<E: ::projections::Event> __ProjectionsIsEvent<E> for &&__ProjectionsProbe<E> {
            #[inline]
            fn __projections_downcast<'e>(
                self,
                event: &'e ::projections::AnyEvent,
            ) -> ::core::option::Option<&'e ::projections::Envelope<E>> {
                event.downcast::<E>()
            }

            #[inline]
            fn __projections_run(
                self,
                events: &[&::projections::AnyEvent],
            ) -> ::core::option::Option<::std::vec::Vec<::projections::Envelope<E>>> {
                ::projections::__private::run_of::<E>(events)
            }
        }

        #[allow(dead_code)]
        trait __ProjectionsNotEvent<E> {
            fn __projections_downcast<'e>(
                self,
                event: &'e ::projections::AnyEvent,
            ) -> ::core::option::Option<&'e ::projections::Envelope<E>>;

            fn __projections_run(
                self,
                events: &[&::projections::AnyEvent],
            ) -> ::core::option::Option<::std::vec::Vec<::projections::Envelope<E>>>;
        }

        // Only reached when `E` is not an event, which is already a compile error.
        impl<E> __ProjectionsNotEvent<E> for &__ProjectionsProbe<E> {
            #[inline]
            fn __projections_downcast<'e>(
                self,
                _event: &'e ::projections::AnyEvent,
            ) -> ::core::option::Option<&'e ::projections::Envelope<E>> {
                ::core::option::Option::None
            }

            #[inline]
            fn __projections_run(
                self,
                _events: &[&::projections::AnyEvent],
            ) -> ::core::option::Option<::std::vec::Vec<::projections::Envelope<E>>> {
                ::core::option::Option::None
            }
        }
    }
}

fn reset_call(model: &Model) -> TokenStream {
    let Some(reset) = &model.reset else {
        return quote!(::core::result::Result::Ok(()));
    };
    let method = &reset.method;
    let args = match reset.connection {
        Some(_) => quote!(&mut *conn),
        None => quote!(),
    };
    let call = if model.sync {
        quote!(self.#method(#args))
    } else {
        awaited(method, &args)
    };
    into_result(call, &reset.output)
}

/// Converts a handler's return value. The conversion names the return type as written, so an
/// unsupported type is reported once, on that type.
fn into_result(call: TokenStream, output: &ReturnType) -> TokenStream {
    match output {
        ReturnType::Type(_, ty) if !mentions_impl(ty.to_token_stream()) => {
            quote_spanned! {at(ty)=>
                <#ty as ::projections::__private::IntoHandlerResult>::into_handler_result(#call)
            }
        }
        ReturnType::Type(_, ty) => quote_spanned! {at(ty)=>
            ::projections::__private::IntoHandlerResult::into_handler_result(#call)
        },
        ReturnType::Default => quote! {
            ::projections::__private::IntoHandlerResult::into_handler_result(#call)
        },
    }
}

/// Whether a type contains `impl Trait`, which cannot be named in a qualified path.
fn mentions_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "impl",
        TokenTree::Group(group) => mentions_impl(group.stream()),
        _ => false,
    })
}
