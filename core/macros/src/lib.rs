#![deny(missing_docs)]
//! Procedural macros for Redwood: `#[redwood::remote]` registers a function for remote calls,
//! `#[redwood::main]` lets a binary act as its own worker, `#[redwood::test]` a test binary.

mod test_attr;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{FnArg, ItemFn, ReturnType, Type, parse_macro_input, spanned::Spanned};

/// Marks a plain function as remote: callable through `Session::call` and `Session::map`.
///
/// The function keeps working as a local function (`hits(1, 2)`); its name becomes a
/// `redwood::RemoteFn` handle. Arguments and the result must be owned serde types (`String`,
/// not `&str`); a function returning `Result<T, E>` with `E: Display` yields `T`, and `Err(e)`
/// reaches the caller as a task error. Generic, async, unsafe and `self` functions are refused
/// at compile time, with a message saying what to do instead.
///
/// An associated function (no `self`) inside an inherent `impl` works too: `Type::name` is
/// then the handle. Its id is its module path and name, so two remote functions of one module
/// must not share a name (a `call` of such a function is refused with an error that says so);
/// its body cannot name `Self` (write the type's name).
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(Span::call_site(), "#[redwood::remote] takes no arguments")
            .to_compile_error()
            .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    match expand_remote(func.clone()) {
        Ok(tokens) => tokens.into(),
        // The function stays as written, so the one error is not followed by others about
        // a missing name.
        Err(e) => {
            let error = e.to_compile_error();
            quote!(#error #func).into()
        }
    }
}

fn expand_remote(func: ItemFn) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    if sig.asyncness.is_some() {
        return Err(syn::Error::new(
            sig.asyncness.span(),
            "remote functions must be plain (not async) functions",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let span = match (&sig.generics.where_clause, sig.generics.params.is_empty()) {
            (Some(w), true) => w.span(),
            _ => sig.generics.span(),
        };
        return Err(syn::Error::new(
            span,
            "remote functions cannot be generic: each needs one stable id and signature",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new(
            v.span(),
            "remote functions cannot be variadic",
        ));
    }
    if sig.unsafety.is_some() {
        return Err(syn::Error::new(
            sig.unsafety.span(),
            "remote functions cannot be unsafe",
        ));
    }
    let mut arg_types: Vec<Type> = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "remote functions cannot take self: take the value as an argument instead \
                     (an associated function without self, or a free function)",
                ));
            }
            FnArg::Typed(pat) => {
                check_owned(&pat.ty, "argument")?;
                arg_types.push((*pat.ty).clone());
            }
        }
    }
    if arg_types.len() > 8 {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "remote functions take at most 8 arguments: group more into a struct",
        ));
    }
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            check_owned(ty, "result")?;
            (**ty).clone()
        }
    };
    let fallible = is_result(&ret);

    let name = &sig.ident;
    let vis = &func.vis;
    let inner = format_ident!("__redwood_fn_{}", name);
    let invoke = format_ident!("__redwood_invoke_{}", name);
    let docs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    let other_attrs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| !a.path().is_ident("doc"))
        .collect();

    let signature_text = format!(
        "({}) -> {}",
        arg_types
            .iter()
            .map(|t| compact(quote!(#t)))
            .collect::<Vec<_>>()
            .join(","),
        compact(quote!(#ret))
    );
    let signature = fnv1a(signature_text.as_bytes());
    let name_text = name.to_string();

    let mut inner_fn = func.clone();
    inner_fn.sig.ident = inner.clone();
    inner_fn.vis = syn::Visibility::Inherited;
    inner_fn.attrs = other_attrs.into_iter().cloned().collect();

    let out_type = if fallible {
        quote!(<#ret as ::redwood::__private::Fallible>::Ok)
    } else {
        quote!(#ret)
    };
    let encode = if fallible {
        quote!(::redwood::__private::encode_fallible)
    } else {
        quote!(::redwood::__private::encode_output)
    };
    let vars: Vec<_> = (0..arg_types.len())
        .map(|i| format_ident!("__a{}", i))
        .collect();

    // One named const whose initializer holds the function, its invoke wrapper and its
    // registration as items of a block: valid where a module item is, and in an `impl` too.
    Ok(quote! {
        #(#docs)*
        #[allow(non_upper_case_globals)]
        #vis const #name: ::redwood::__private::RemoteFn<
            fn(#(#arg_types),*) -> #ret,
            (#(#arg_types,)*),
            #out_type,
        > = {
            #[allow(clippy::too_many_arguments)]
            #inner_fn

            fn #invoke(
                __input: &[u8],
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::redwood::__private::InvokeError>
            {
                let (#(#vars,)*): (#(#arg_types,)*) = ::redwood::__private::decode_args(__input)?;
                #encode(#inner(#(#vars),*))
            }

            ::redwood::__private::inventory::submit! {
                ::redwood::__private::Registration::new(
                    ::core::concat!(::core::module_path!(), "::", #name_text),
                    #signature,
                    #invoke,
                )
            }

            ::redwood::__private::RemoteFn::new(
                ::core::concat!(::core::module_path!(), "::", #name_text),
                #signature,
                #inner,
            )
        };
    })
}

/// Refuses borrowed and `impl Trait` types: a task's arguments are decoded into owned values
/// on the worker, and its result is encoded there and decoded on the client.
fn check_owned(ty: &Type, what: &str) -> syn::Result<()> {
    match ty {
        Type::Reference(r) => {
            let owned = match &*r.elem {
                Type::Path(p) if p.path.is_ident("str") => "String".to_string(),
                Type::Slice(s) => {
                    let elem = &s.elem;
                    format!("Vec<{}>", readable(quote!(#elem)))
                }
                Type::Path(p) if p.path.is_ident("Path") => "PathBuf".to_string(),
                other => readable(quote!(#other)),
            };
            let shown = readable(quote!(#ty));
            Err(syn::Error::new(
                ty.span(),
                format!(
                    "remote function {what}s must be owned: a task's values are decoded on \
                     another process, so take `{owned}` instead of `{shown}`"
                ),
            ))
        }
        Type::ImplTrait(_) => Err(syn::Error::new(
            ty.span(),
            format!(
                "remote functions cannot take or return `impl Trait`: name a concrete {what} type"
            ),
        )),
        Type::Paren(p) => check_owned(&p.elem, what),
        Type::Tuple(t) => t.elems.iter().try_for_each(|e| check_owned(e, what)),
        _ => Ok(()),
    }
}

/// Makes a binary able to act as its own Redwood worker: when a backend starts it in worker
/// mode, it serves tasks and exits before `main`'s body runs; otherwise the body runs (an
/// `async fn main` on a multi-threaded Tokio runtime). Also sets up `RUST_LOG` tracing.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(Span::call_site(), "#[redwood::main] takes no arguments")
            .to_compile_error()
            .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    if func.sig.ident != "main" || !func.sig.inputs.is_empty() {
        let error = syn::Error::new(
            func.sig.span(),
            "#[redwood::main] goes on `fn main()` or `async fn main()` without arguments",
        )
        .to_compile_error();
        // Keep a function of that name, so no second error says it is missing.
        let stand_in = if func.sig.ident == "main" {
            quote!(
                fn main() {}
            )
        } else {
            quote!(#func)
        };
        return quote!(#error #stand_in).into();
    }
    let attrs = &func.attrs;
    let output = &func.sig.output;
    let body = &func.block;
    let run = if func.sig.asyncness.is_some() {
        quote!(::redwood::__entry::block_on(async move #body))
    } else {
        quote!(#body)
    };
    quote! {
        #(#attrs)*
        fn main() #output {
            ::redwood::__entry::enter();
            #run
        }
    }
    .into()
}

/// A test (`async` or not) whose binary is its own Redwood worker, for tests that start
/// sessions: the backends start the test binary again as a worker, and this attribute makes it
/// serve tasks then instead of running the tests. An `async` body runs on a multi-threaded
/// Tokio runtime. Put it on every test of a binary whose tests start sessions (a plain
/// `#[test]` beside it would also run, once, in each worker process).
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    match test_attr::expand(attr.into(), func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}

fn compact(tokens: TokenStream2) -> String {
    tokens
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// Tokens as a person writes them: spaces only between two words (`&'a str`, `Vec<u8>`).
fn readable(tokens: TokenStream2) -> String {
    let text = tokens.to_string();
    let chars: Vec<char> = text.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let before = i.checked_sub(1).map(|j| chars[j]);
            let after = chars.get(i + 1).copied();
            if !(before.is_some_and(word) && after.is_some_and(word)) {
                continue;
            }
        }
        out.push(c);
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= *b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
