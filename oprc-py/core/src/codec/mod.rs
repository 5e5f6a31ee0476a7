//! The state codec's byte format (docs/format.md, "State codec"): MessagePack with the
//! smallest header for every value ([`msgpack`]) and the extension types 1-12, their codes,
//! payload layouts and limits ([`ext`]). Walking Python values is the bindings crate's job
//! (`oprc-py`'s `codec` module, one file per plan node); it calls these for the bytes.

pub mod ext;
pub mod msgpack;
