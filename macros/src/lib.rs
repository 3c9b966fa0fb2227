//! `#[rill_engine::record]`: makes a struct or enum a record type of rill without a
//! dependency on rkyv in the user's crate. It adds rkyv's `Archive`, `Serialize` and
//! `Deserialize` derives, named through `rill_engine::rkyv`, and tells them where rkyv
//! is (`#[rkyv(crate = ::rill_engine::rkyv)]`). Use it through `rill_engine`, not this
//! crate.

use proc_macro::TokenStream;

/// Derives what a record type needs (rkyv's `Archive`, `Serialize`, `Deserialize`
/// through `rill_engine::rkyv`). Takes no arguments; other derives (`Clone`, `Debug`,
/// serde) are written as usual.
///
/// ```ignore
/// #[rill_engine::record]
/// #[derive(Clone, Debug)]
/// pub struct Transaction { pub account: String, pub amount_cents: i64 }
/// ```
#[proc_macro_attribute]
pub fn record(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return "compile_error!(\"#[rill_engine::record] takes no arguments\");"
            .parse()
            .unwrap_or_default();
    }
    let mut out: TokenStream = "#[derive(::rill_engine::rkyv::Archive, \
         ::rill_engine::rkyv::Serialize, ::rill_engine::rkyv::Deserialize)] \
         #[rkyv(crate = ::rill_engine::rkyv)]"
        .parse()
        .unwrap_or_default();
    out.extend(item);
    out
}
