//! Example applications live beside this crate as `[[example]]` targets.
