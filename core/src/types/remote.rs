//! [`RemoteFn`]: the handle `#[redwood::remote]` makes for a function, and the traits that turn
//! call arguments and return values into what travels.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::Serialize;

/// A function registered with `#[redwood::remote]`: its stable id, its signature hash and the
/// plain function itself. It dereferences to the function, so `hits(1, 2)` still runs locally.
///
/// `F` is the function pointer type, `Args` the tuple of its arguments, `Out` what a task of it
/// yields (the `Ok` type for functions returning `Result`).
pub struct RemoteFn<F, Args, Out> {
    id: &'static str,
    signature: u64,
    local: F,
    _marker: PhantomData<fn(Args) -> Out>,
}

impl<F, Args, Out> RemoteFn<F, Args, Out> {
    /// Used by `#[redwood::remote]`; not meant to be called by hand.
    #[doc(hidden)]
    pub const fn new(id: &'static str, signature: u64, local: F) -> Self {
        RemoteFn {
            id,
            signature,
            local,
            _marker: PhantomData,
        }
    }

    /// The stable id: module path and name, e.g. `pi::hits`.
    pub fn id(&self) -> &'static str {
        self.id
    }

    /// The signature hash (argument and return types).
    pub fn signature(&self) -> u64 {
        self.signature
    }
}

impl<F: Copy, Args, Out> Clone for RemoteFn<F, Args, Out> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Copy, Args, Out> Copy for RemoteFn<F, Args, Out> {}

impl<F, Args, Out> Deref for RemoteFn<F, Args, Out> {
    type Target = F;

    fn deref(&self) -> &F {
        &self.local
    }
}

impl<F, Args, Out> fmt::Debug for RemoteFn<F, Args, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteFn")
            .field("id", &self.id)
            .field("signature", &format_args!("{:016x}", self.signature))
            .finish()
    }
}

/// What can be passed as the arguments of a remote function whose argument tuple is `Args`:
/// the tuple itself, or for one-argument functions the bare value.
pub trait IntoArgs<Args> {
    /// Converts into the argument tuple.
    fn into_args(self) -> Args;
}

impl IntoArgs<()> for () {
    fn into_args(self) {}
}

impl<A> IntoArgs<(A,)> for A {
    fn into_args(self) -> (A,) {
        (self,)
    }
}

impl<A> IntoArgs<(A,)> for (A,) {
    fn into_args(self) -> (A,) {
        self
    }
}

macro_rules! tuple_into_args {
    ($($name:ident),+) => {
        impl<$($name),+> IntoArgs<($($name,)+)> for ($($name,)+) {
            fn into_args(self) -> ($($name,)+) {
                self
            }
        }
    };
}
tuple_into_args!(A, B);
tuple_into_args!(A, B, C);
tuple_into_args!(A, B, C, D);
tuple_into_args!(A, B, C, D, E);
tuple_into_args!(A, B, C, D, E, F);
tuple_into_args!(A, B, C, D, E, F, G);
tuple_into_args!(A, B, C, D, E, F, G, H);

/// A remote function's fallible return type: `Result<T, E>` with `E: Display`. A task of it
/// yields `T`; `Err(e)` reaches the caller as a task error with `e.to_string()`.
pub trait Fallible {
    /// The value a successful task yields.
    type Ok: Serialize;
    /// Splits into the value or the error text.
    fn into_outcome(self) -> Result<Self::Ok, String>;
}

impl<T: Serialize, E: fmt::Display> Fallible for Result<T, E> {
    type Ok = T;

    fn into_outcome(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}
