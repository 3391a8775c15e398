//! Code generation: the trait impl with the dispatch table.
//!
//! Every use of a user's type is spanned on that type, so a trait error (not an event, not
//! injectable, not a handler result) points where the user wrote it.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemImpl, ReturnType};

use super::model::{Handler, Model, Policy};

pub fn trait_impl(model: &Model, item: &ItemImpl) -> TokenStream {
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let name = &model.name;
    let subscribed = subscribed_list(model);
    let handler_table = handler_table(model);
    let policy = match model.policy {
        Policy::Ignore => quote!(Ignore),
        Policy::Warn => quote!(Warn),
        Policy::Error => quote!(Error),
    };
    let fallback = quote! {
        ::projections::UnregisteredEventPolicy::#policy.apply(#name, #subscribed, event)
    };
    let arms = model.handlers.iter().map(|h| dispatch_arm(h, model.sync));
    let common = quote! {
        fn name(&self) -> &str {
            #name
        }

        fn subscribed_to(&self) -> &[&'static str] {
            #subscribed
        }

        fn handlers(&self) -> &[::projections::HandlerInfo] {
            #handler_table
        }
    };
    let reset_call = reset_call(model);

    if model.sync {
        return quote! {
            impl #impl_generics ::projections::SyncProjection for #self_ty #where_clause {
                #common

                fn handle(
                    &mut self,
                    event: &::projections::AnyEvent,
                ) -> ::core::result::Result<(), ::projections::HandlerError> {
                    #(#arms)*
                    #fallback
                }

                fn reset(&mut self) -> ::core::result::Result<(), ::projections::HandlerError> {
                    #reset_call
                }
            }
        };
    }

    let future = quote! {
        impl ::core::future::Future<
            Output = ::core::result::Result<(), ::projections::HandlerError>,
        > + ::core::marker::Send
    };
    match model.connection() {
        None => quote! {
            impl #impl_generics ::projections::Projection for #self_ty #where_clause {
                #common

                fn handle(&mut self, event: &::projections::AnyEvent) -> #future {
                    async move {
                        #(#arms)*
                        #fallback
                    }
                }

                fn reset(&mut self) -> #future {
                    async move { #reset_call }
                }
            }
        },
        Some(connection) => {
            let connection_ty = quote_spanned!(connection.span()=> #connection);
            quote! {
                impl #impl_generics ::projections::DatabaseProjection for #self_ty #where_clause {
                    type Connection = #connection_ty;

                    #common

                    fn handle(
                        &mut self,
                        conn: &mut Self::Connection,
                        event: &::projections::AnyEvent,
                    ) -> #future {
                        async move {
                            #(#arms)*
                            #fallback
                        }
                    }

                    fn reset(&mut self, conn: &mut Self::Connection) -> #future {
                        async move { #reset_call }
                    }
                }
            }
        }
    }
}

fn subscribed_list(model: &Model) -> TokenStream {
    let names = model.handlers.iter().map(|h| event_type_const(&h.event));
    quote!(const { &[#(#names),*] })
}

fn event_type_const(event: &syn::Type) -> TokenStream {
    quote_spanned!(event.span()=> <#event as ::projections::Event>::EVENT_TYPE)
}

fn handler_table(model: &Model) -> TokenStream {
    let rows = model.handlers.iter().map(|h| {
        let method = h.method.to_string();
        let event_type = event_type_const(&h.event);
        let takes_connection = h.connection.is_some();
        quote! {
            ::projections::HandlerInfo {
                method: #method,
                event_type: #event_type,
                takes_connection: #takes_connection,
            }
        }
    });
    quote!(const { &[#(#rows),*] })
}

fn dispatch_arm(handler: &Handler, sync: bool) -> TokenStream {
    let Handler {
        method,
        event,
        connection,
        output,
    } = handler;
    let downcast = quote_spanned!(event.span()=> event.downcast::<#event>());
    let args = match connection {
        Some(_) => quote!(&mut *conn, typed),
        None => quote!(typed),
    };
    let call = if sync {
        quote!(self.#method(#args))
    } else {
        quote!(self.#method(#args).await)
    };
    let result = into_result(call, output);
    quote! {
        if let ::core::option::Option::Some(typed) = #downcast {
            return #result;
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
        quote!(self.#method(#args).await)
    };
    into_result(call, &reset.output)
}

/// Converts a handler's return value, reporting an unsupported type at the return type.
fn into_result(call: TokenStream, output: &ReturnType) -> TokenStream {
    let span = match output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => proc_macro2::Span::call_site(),
    };
    quote_spanned! {span=>
        ::projections::__private::IntoHandlerResult::into_handler_result(#call)
    }
}
