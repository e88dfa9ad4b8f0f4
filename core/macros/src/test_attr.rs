//! `#[redwood::test]`: a test whose binary is its own Redwood worker.

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::ItemFn;
use syn::spanned::Spanned;

/// Expands a test function: the body runs on a multi-threaded Tokio runtime (when `async`),
/// after the worker gate; a constructor run before `main` readies the binary for worker mode.
pub(crate) fn expand(attr: TokenStream2, func: ItemFn) -> syn::Result<TokenStream2> {
    if !attr.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[redwood::test] takes no arguments",
        ));
    }
    if !func.sig.inputs.is_empty() {
        return Err(syn::Error::new(
            func.sig.inputs.span(),
            "#[redwood::test] goes on a test function without arguments",
        ));
    }
    let attrs = &func.attrs;
    let vis = &func.vis;
    let name = &func.sig.ident;
    let output = &func.sig.output;
    let body = &func.block;
    let run = if func.sig.asyncness.is_some() {
        quote!(::redwood::testing::__block_on(async move #body))
    } else {
        quote!(#body)
    };
    Ok(quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis fn #name() #output {
            ::redwood::testing::__worker_gate();
            #run
        }

        // Before `main` (libtest's), a worker process moves its stdout aside for the worker's
        // replies and asks libtest for one thread and no capture; see `redwood::testing`.
        const _: () = {
            #[used]
            #[cfg_attr(
                any(target_os = "linux", target_os = "android", target_os = "freebsd"),
                unsafe(link_section = ".init_array")
            )]
            #[cfg_attr(target_vendor = "apple", unsafe(link_section = "__DATA,__mod_init_func"))]
            static BEFORE_MAIN: extern "C" fn() = {
                extern "C" fn before_main() {
                    ::redwood::testing::__before_main();
                }
                before_main
            };
        };
    })
}
